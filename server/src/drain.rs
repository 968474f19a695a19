//! Graceful shutdown: once draining, new connections, jobs and pages are refused (scanners are
//! told to retry: the server is restarting, or another node takes them), requests already
//! running finish, and the spool gets until a deadline to deliver what it holds.

use std::sync::Mutex;

use tokio::sync::Notify;

/// Whether the server is draining, and how many requests are running. A plain mutex, not
/// atomics: one uncontended lock per request costs nothing beside a request's metadata call,
/// and "no request starts once the drain has seen none running" then needs no argument about
/// memory orderings.
#[derive(Debug, Default)]
pub struct Drain {
    state: Mutex<DrainState>,
    idle: Notify,
}

#[derive(Debug, Default)]
struct DrainState {
    draining: bool,
    running: usize,
}

/// A running request; dropping it lets a drain go on.
#[derive(Debug)]
pub struct Running<'a>(&'a Drain);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.running -= 1;
        if s.running == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    fn lock(&self) -> std::sync::MutexGuard<'_, DrainState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request as running for as long as the guard lives. Once draining, `None` for
    /// new work (a job opened, a page sent); other requests (a commit, a read) still run, as
    /// they finish what is under way.
    pub fn enter(&self, new_work: bool) -> Option<Running<'_>> {
        let mut s = self.lock();
        if s.draining && new_work {
            return None;
        }
        s.running += 1;
        Some(Running(self))
    }

    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// From now on new work is refused.
    pub fn begin(&self) {
        self.lock().draining = true;
    }

    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Waits until no request is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_drain_waits_for_running_requests_and_no_longer() {
        let drain = Arc::new(Drain::default());
        let first = drain.enter(true).unwrap();
        let second = drain.enter(false).unwrap();
        drain.begin();
        assert!(drain.is_draining());
        assert!(
            drain.enter(true).is_none(),
            "new work accepted while draining"
        );
        let commit = drain.enter(false).expect("finishing work goes on");
        drop(commit);
        let waiting = {
            let d = drain.clone();
            tokio::spawn(async move { d.idle().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "idle with a request still running");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("idle once the last request ended")
            .unwrap();
        // Idle at once when nothing runs.
        tokio::time::timeout(Duration::from_secs(1), drain.idle())
            .await
            .unwrap();
    }
}
