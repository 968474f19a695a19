//! When each scanner of the fleet first connected, and which connects failed: before every
//! scanner had connected once (the ramp, when a fleet's handshakes queue behind each other
//! and behind the pages of those already pushing) or after it, which a ramped-up fleet must
//! not see. Every scanner, pushing or idle, retries a failed connect as a real one does, so
//! a failure during the ramp costs that scanner a few seconds, not its place in the fleet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{latency_histogram, Latency};

/// A scanner of the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    Pushing(u32),
    Idle(u32),
}

/// Every connect attempt of the run, as the scanners make them.
pub struct ConnectLog {
    scanners: u64,
    inner: Mutex<Attempts>,
}

struct Attempts {
    began: Instant,
    first_connected: HashMap<Who, Instant>,
    /// When each attempt that failed began.
    failed: Vec<Instant>,
    first_failure: Option<String>,
    /// Microseconds from an attempt's start to the connection's `Hello` answered.
    times: Histogram<u64>,
}

/// What [`ConnectLog::report`] found.
#[derive(Debug, Serialize)]
pub struct ConnectReport {
    /// Scanners in the fleet, pushing and idle.
    pub scanners: u64,
    /// Scanners that connected at least once.
    pub connected: u64,
    /// Seconds from the first attempt until every scanner had connected once; `None` while
    /// some never did.
    pub ramped_up_after_s: Option<f64>,
    /// Attempts begun before then that failed (each retried).
    pub failed_during_ramp: u64,
    /// Attempts begun once every scanner had connected that failed.
    pub failed_after_ramp: u64,
    pub first_failure: Option<String>,
    /// How long a successful attempt took: QUIC handshake (with the server's address check)
    /// and the credential's `Hello`, in milliseconds.
    pub connect_ms: Latency,
}

impl ConnectLog {
    /// A log for a fleet of `scanners`, pushing and idle together.
    pub fn new(scanners: u64) -> ConnectLog {
        ConnectLog {
            scanners,
            inner: Mutex::new(Attempts {
                began: Instant::now(),
                first_connected: HashMap::new(),
                failed: Vec::new(),
                first_failure: None,
                times: latency_histogram().expect("valid bounds"),
            }),
        }
    }

    /// `who` connected with the attempt begun at `attempt`.
    pub fn connected(&self, who: Who, attempt: Instant) {
        let now = Instant::now();
        let mut a = self.inner.lock().expect("connect log lock");
        a.first_connected.entry(who).or_insert(now);
        let us = now.saturating_duration_since(attempt).as_micros().max(1) as u64;
        a.times.record(us).ok();
    }

    /// The attempt begun at `attempt` failed with `error`.
    pub fn failed(&self, attempt: Instant, error: &dyn std::fmt::Display) {
        let mut a = self.inner.lock().expect("connect log lock");
        a.failed.push(attempt);
        if a.first_failure.is_none() {
            a.first_failure = Some(error.to_string());
        }
    }

    pub fn report(&self) -> ConnectReport {
        let a = self.inner.lock().expect("connect log lock");
        let firsts: Vec<Instant> = a.first_connected.values().copied().collect();
        let (ramp_end, during, after) = split_at_ramp(self.scanners, &firsts, &a.failed);
        ConnectReport {
            scanners: self.scanners,
            connected: firsts.len() as u64,
            ramped_up_after_s: ramp_end.map(|t| t.saturating_duration_since(a.began).as_secs_f64()),
            failed_during_ramp: during,
            failed_after_ramp: after,
            first_failure: a.first_failure.clone(),
            connect_ms: Latency::of(&a.times),
        }
    }
}

/// The moment the last of `scanners` first connected (`None` while some have not), and how
/// many of the `failed` attempts began before it and how many after.
fn split_at_ramp(
    scanners: u64,
    first_connected: &[Instant],
    failed: &[Instant],
) -> (Option<Instant>, u64, u64) {
    let ramp_end = match first_connected.len() as u64 >= scanners {
        true => first_connected.iter().max().copied(),
        false => None,
    };
    let after = match ramp_end {
        Some(end) => failed.iter().filter(|&&t| t >= end).count() as u64,
        None => 0,
    };
    (ramp_end, failed.len() as u64 - after, after)
}

/// Waits before a scanner's next connect attempt: from half a second, doubling to at most
/// eight, each delay drawn between half and all of that, so that scanners that failed
/// together do not come back together.
pub fn backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(500) * 2u32.pow(failures.min(4));
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_split_at_the_last_first_connect() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let firsts = [at(100), at(900), at(400)];
        let failed = [at(50), at(899), at(900), at(2000)];
        let (end, during, after) = split_at_ramp(3, &firsts, &failed);
        assert_eq!(end, Some(at(900)));
        assert_eq!((during, after), (2, 2));
    }

    #[test]
    fn a_fleet_that_never_all_connected_has_no_end_to_its_ramp() {
        let t0 = Instant::now();
        let firsts = [t0, t0 + Duration::from_secs(1)];
        let failed = [t0 + Duration::from_secs(5)];
        assert_eq!(split_at_ramp(3, &firsts, &failed), (None, 1, 0));
    }

    #[test]
    fn the_log_counts_each_scanner_once_and_every_attempt() {
        let log = ConnectLog::new(2);
        let t = Instant::now();
        log.failed(t, &"timed out");
        log.connected(Who::Idle(0), t);
        log.failed(Instant::now(), &"refused");
        log.connected(Who::Pushing(0), t);
        // A reconnect of a scanner already counted is not a new scanner.
        log.connected(Who::Idle(0), Instant::now());
        let r = log.report();
        assert_eq!((r.scanners, r.connected), (2, 2));
        assert_eq!((r.failed_during_ramp, r.failed_after_ramp), (2, 0));
        assert_eq!(r.first_failure.as_deref(), Some("timed out"));
        assert!(r.ramped_up_after_s.is_some());
        log.failed(Instant::now(), &"reset");
        assert_eq!(log.report().failed_after_ramp, 1);
    }

    #[test]
    fn backoff_grows_to_eight_seconds_and_is_spread() {
        for failures in 0..10 {
            let ceiling = Duration::from_millis(500) * 2u32.pow(failures.min(4));
            let d = backoff(failures);
            assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?}");
        }
        let draws: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(3)).collect();
        assert!(draws.len() > 1, "jitter");
    }
}
