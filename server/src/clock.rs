//! What time it is, for the decisions that depend on the calendar: when a retention period
//! ends, when an uncommitted upload is old enough to collect, when a delivery may delete.
//!
//! The server asks a [`Clock`] instead of the system directly so that a test can let years
//! pass (a 7- or 10-year legal retention) without waiting for them.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current Unix time in seconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_unix(&self) -> i64;
}

/// The system clock: what a server uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        crate::meta::now_unix()
    }
}

/// The system clock moved forward by an offset that can grow while the server runs: how a
/// test sees a retention period end.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_secs: AtomicI64,
}

impl ShiftedClock {
    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now_unix(&self) -> i64 {
        crate::meta::now_unix() + self.offset_secs.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_runs_ahead_by_what_it_was_advanced() {
        let c = ShiftedClock::default();
        let before = SystemClock.now_unix();
        c.advance(7 * 366 * 86_400);
        let ahead = c.now_unix() - before;
        assert!(
            (7 * 366 * 86_400..7 * 366 * 86_400 + 5).contains(&ahead),
            "{ahead}"
        );
    }
}
