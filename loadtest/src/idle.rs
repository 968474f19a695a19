//! The quiet part of a fleet: scanners that connect, authenticate and then stay connected with
//! nothing to send (QUIC keep-alives every 2 s), as most of a real fleet is most of the time.
//! They connect before the measured run and are checked after it: a connection the server
//! closed meanwhile counts as dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_client::credential::Credential;
use quire_client::Connection;
use serde::Serialize;

/// What became of the idle scanners.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub scanners: u32,
    /// Connected and authenticated (after the client's own retries while the server was busy).
    pub connected: u64,
    /// Gave up connecting; the first error's message.
    pub connect_failures: u64,
    pub first_failure: Option<String>,
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
    /// Connects `n` scanners, started evenly over `ramp_up`, and waits until each is
    /// connected or has given up.
    pub async fn connect(
        cred: &Credential,
        addr: std::net::SocketAddr,
        n: u32,
        ramp_up: Duration,
    ) -> IdleFleet {
        let began = Instant::now();
        let step = ramp_up / n.max(1);
        let failures = Arc::new(AtomicU64::new(0));
        let first_failure = Arc::new(std::sync::Mutex::new(None));
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (cred, failures, first) =
                    (cred.clone(), failures.clone(), first_failure.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(step * i).await;
                    match Connection::connect(&cred, Some(addr)).await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            first
                                .lock()
                                .expect("lock")
                                .get_or_insert_with(|| e.to_string());
                            None
                        }
                    }
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
            connect_failures: failures.load(Ordering::Relaxed),
            first_failure: first_failure.lock().expect("lock").take(),
            dropped: 0,
            ramp_seconds: began.elapsed().as_secs_f64(),
        };
        eprintln!(
            "{} idle scanners connected in {:.1} s, {} failed",
            report.connected, report.ramp_seconds, report.connect_failures
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
