//! The quiet part of a fleet: scanners that connect, authenticate and then stay connected with
//! nothing to send (QUIC keep-alives every 2 s), as most of a real fleet is most of the time.
//! They connect before the measured run, retrying a failed connect as a real scanner does
//! (see `connects`), and are checked after it: a connection the server closed meanwhile
//! counts as dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_client::credential::Credential;
use quire_client::Connection;
use serde::Serialize;

use crate::connects::{backoff, ConnectLog, Who};

/// Attempts an idle scanner makes before it gives up (a real one never does; a load test
/// must end).
const CONNECT_ATTEMPTS: u32 = 10;

/// What became of the idle scanners.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub scanners: u32,
    /// Connected and authenticated, at the first attempt or a later one (the report's
    /// `connects` counts the attempts that failed).
    pub connected: u64,
    /// Gave up after `CONNECT_ATTEMPTS` failed attempts.
    pub gave_up: u64,
    /// Connected, but closed by the time the measured run ended.
    pub dropped: u64,
    /// Seconds from the first connect to the last one settled.
    pub ramp_seconds: f64,
}

/// Idle scanners, connected and holding their connections.
pub struct IdleFleet {
    connections: Vec<Connection>,
    report: IdleReport,
}

impl IdleFleet {
    /// Connects `n` scanners, started evenly over `ramp_up`, each retrying after a back-off
    /// until it is connected or has failed `CONNECT_ATTEMPTS` times, and waits for all.
    pub async fn connect(
        cred: &Credential,
        addr: std::net::SocketAddr,
        (n, ramp_up): (u32, Duration),
        log: &Arc<ConnectLog>,
    ) -> IdleFleet {
        let began = Instant::now();
        let step = ramp_up / n.max(1);
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (cred, log) = (cred.clone(), log.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(step * i).await;
                    let connect = || Connection::connect(&cred, Some(addr));
                    connect_retrying(&log, Who::Idle(i), connect, backoff).await
                })
            })
            .collect();
        let mut connections = Vec::with_capacity(n as usize);
        for t in tasks {
            if let Ok(Some(c)) = t.await {
                connections.push(c);
            }
        }
        let report = IdleReport {
            scanners: n,
            connected: connections.len() as u64,
            gave_up: u64::from(n) - connections.len() as u64,
            dropped: 0,
            ramp_seconds: began.elapsed().as_secs_f64(),
        };
        eprintln!(
            "{} idle scanners connected in {:.1} s, {} gave up",
            report.connected, report.ramp_seconds, report.gave_up
        );
        IdleFleet {
            connections,
            report,
        }
    }

    /// Counts the connections closed meanwhile, closes the rest, and reports.
    pub async fn finish(self) -> IdleReport {
        let mut report = self.report;
        report.dropped = self.connections.iter().filter(|c| c.is_closed()).count() as u64;
        let closing: Vec<_> = self.connections.into_iter().map(|c| c.close()).collect();
        futures::future::join_all(closing).await;
        report
    }
}

/// Connects with `connect`, logging every attempt as `who`'s, and tries again after
/// `pause(failures so far)` until it succeeds or has failed `CONNECT_ATTEMPTS` times.
async fn connect_retrying<C, E, F>(
    log: &ConnectLog,
    who: Who,
    connect: impl Fn() -> F,
    pause: impl Fn(u32) -> Duration,
) -> Option<C>
where
    F: std::future::Future<Output = Result<C, E>>,
    E: std::fmt::Display,
{
    for failures in 0..CONNECT_ATTEMPTS {
        let attempt = Instant::now();
        match connect().await {
            Ok(c) => {
                log.connected(who, attempt);
                return Some(c);
            }
            Err(e) => {
                log.failed(attempt, &e);
                if failures + 1 < CONNECT_ATTEMPTS {
                    tokio::time::sleep(pause(failures)).await;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failed_connect_is_tried_again_and_logged() {
        let log = ConnectLog::new(1);
        let tries = AtomicU32::new(0);
        let connect = || async {
            match tries.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err("timed out"),
                n => Ok(n),
            }
        };
        let got = connect_retrying(&log, Who::Idle(7), connect, |_| Duration::ZERO).await;
        assert_eq!(got, Some(2));
        let r = log.report();
        assert_eq!((r.connected, r.failed_during_ramp), (1, 2));
    }

    #[tokio::test]
    async fn a_scanner_gives_up_after_its_attempts() {
        let log = ConnectLog::new(1);
        let tries = AtomicU32::new(0);
        let connect = || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("refused")
        };
        let got = connect_retrying(&log, Who::Idle(0), connect, |_| Duration::ZERO).await;
        assert_eq!(got, None);
        assert_eq!(tries.load(Ordering::Relaxed), CONNECT_ATTEMPTS);
        let r = log.report();
        assert_eq!(
            (r.connected, r.failed_during_ramp),
            (0, u64::from(CONNECT_ATTEMPTS))
        );
        assert_eq!(r.ramped_up_after_s, None);
    }
}
