//! Refusals are logged at info level so an operator sees them, but a flood (a misconfigured
//! fleet retrying, a scan of the port) must not flood the log: at most [`PER_SECOND`] lines a
//! second, and the next line that is written says how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines allowed per one-second window.
pub const PER_SECOND: u32 = 20;

/// A budget of log lines per second.
#[derive(Debug)]
pub struct LogBudget {
    inner: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    written: u32,
    left_out: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            inner: Mutex::new(Window {
                start: Instant::now(),
                written: 0,
                left_out: 0,
            }),
        }
    }
}

impl LogBudget {
    /// At `now`: `Some(n)` if a line may be written (`n` lines were left out before it),
    /// `None` if it must be left out.
    pub fn take(&self, now: Instant) -> Option<u64> {
        let mut w = self.inner.lock().expect("log budget lock");
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.written = 0;
        }
        if w.written >= PER_SECOND {
            w.left_out += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_gap_is_reported() {
        let b = LogBudget::default();
        let t0 = Instant::now();
        let written = (0..100).filter(|_| b.take(t0).is_some()).count();
        assert_eq!(written, PER_SECOND as usize);
        // The next second: the first line says 80 were left out, the next none.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.take(t1), Some(100 - u64::from(PER_SECOND)));
        assert_eq!(b.take(t1), Some(0));
    }
}
