//! How many pages a connection sends at once, cut when the server says it is busy.
//!
//! A server with no place for a page refuses it as "later" (busy, rate limit, full spool,
//! store outage) and the scanner sends it again after a back-off. Across a long link every
//! refused page crosses the link twice, and a scanner that keeps as many pages in flight as
//! before is refused again: with 64 pages in flight per scanner against a pipeline that
//! takes 32 at a time, 80 ms away, a quarter of the pages were sent twice
//! (docs/PERFORMANCE.md). So, as TCP does with its congestion window, a refusal halves the
//! pages the connection may have in flight (to half of those it had), and each time as many
//! pages as the limit allows have been delivered it grows by one again.

use std::sync::Mutex;

use tokio::sync::Notify;

/// The most pages a gate allows in flight, before any refusal: more than any caller asks.
pub const MAX_PAGES_IN_FLIGHT: usize = 4096;

/// The gate's arithmetic, without waiting (tested on its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLimit {
    /// Pages that may be in flight now.
    limit: usize,
    /// Pages in flight now.
    in_flight: usize,
    /// Pages delivered since the limit last grew.
    delivered: usize,
    /// Counts the cuts: a page taken before the last cut does not cut again (the pages
    /// refused in one burst cut once, as losses in one round trip do in TCP).
    epoch: u64,
}

impl Default for PageLimit {
    fn default() -> Self {
        PageLimit {
            limit: MAX_PAGES_IN_FLIGHT,
            in_flight: 0,
            delivered: 0,
            epoch: 0,
        }
    }
}

impl PageLimit {
    /// Takes a place if there is one; returns the epoch the page was taken in.
    pub fn take(&mut self) -> Option<u64> {
        (self.in_flight < self.limit).then(|| {
            self.in_flight += 1;
            self.epoch
        })
    }

    /// A page is done with its place (sent, refused or failed).
    pub fn give_back(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A page taken in `epoch` was refused as "later": unless a refusal since it was taken
    /// already cut the limit, it becomes half the pages in flight (at least one).
    pub fn refused(&mut self, epoch: u64) {
        if epoch == self.epoch {
            self.limit = (self.in_flight / 2).max(1);
            self.delivered = 0;
            self.epoch += 1;
        }
    }

    /// A page was delivered: a limit's worth of them make one more place, up to
    /// [`MAX_PAGES_IN_FLIGHT`] (growing by one per round of pages, not doubling, so that a
    /// scanner settles just under what the server takes instead of overshooting it again).
    pub fn delivered(&mut self) {
        self.delivered += 1;
        if self.delivered >= self.limit {
            self.delivered = 0;
            self.limit = (self.limit + 1).min(MAX_PAGES_IN_FLIGHT);
        }
    }

    /// Pages that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// A connection's [`PageLimit`], with waiting for a place.
#[derive(Debug, Default)]
pub struct PageGate {
    limit: Mutex<PageLimit>,
    freed: Notify,
}

/// A page's place in flight; given back when dropped.
#[derive(Debug)]
pub struct Place<'a> {
    gate: &'a PageGate,
    epoch: u64,
}

impl PageGate {
    /// Waits for a place for one more page.
    pub async fn place(&self) -> Place<'_> {
        loop {
            // Registered before looking, so that a place given back in between wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(epoch) = self.with(PageLimit::take) {
                return Place { gate: self, epoch };
            }
            freed.await;
        }
    }

    /// Pages that may be in flight now.
    pub fn limit(&self) -> usize {
        self.with(|l| l.limit())
    }

    fn with<T>(&self, f: impl FnOnce(&mut PageLimit) -> T) -> T {
        f(&mut self.limit.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Place<'_> {
    /// The server refused the page as "later".
    pub fn refused(&self) {
        self.gate.with(|l| l.refused(self.epoch));
    }

    /// The server acknowledged the page.
    pub fn delivered(&self) {
        self.gate.with(PageLimit::delivered);
        self.gate.freed.notify_one();
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.gate.with(PageLimit::give_back);
        self.gate.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(l: &mut PageLimit, n: usize) -> Vec<u64> {
        (0..n).map(|_| l.take().expect("a place")).collect()
    }

    #[test]
    fn a_refusal_halves_the_pages_in_flight_and_a_burst_of_them_cuts_once() {
        let mut l = PageLimit::default();
        let epochs = taken(&mut l, 64);
        // Twenty pages refused together (a starved connection's pages): one cut, to 32.
        for e in &epochs[..20] {
            l.refused(*e);
            l.give_back();
        }
        assert_eq!(l.limit(), 32);
        // 44 still in flight: no place until 13 more are done.
        assert_eq!(l.take(), None);
        for _ in 0..13 {
            l.give_back();
        }
        let e = l.take().expect("a place under the new limit");
        assert_eq!(l.take(), None);
        // A page taken after the cut and refused cuts again, to half of the 32 in flight.
        l.refused(e);
        assert_eq!(l.limit(), 16);
    }

    #[test]
    fn delivered_pages_give_places_back_up_to_the_most() {
        let mut l = PageLimit::default();
        let e = l.take().unwrap();
        l.refused(e);
        assert_eq!(l.limit(), 1);
        l.give_back();
        // One more place per limit's worth of pages delivered: 1, then 2, then 3 pages.
        let mut limits = Vec::new();
        for _ in 0..6 {
            l.take().unwrap();
            l.give_back();
            l.delivered();
            limits.push(l.limit());
        }
        assert_eq!(limits, [2, 2, 3, 3, 3, 4]);
        for _ in 0..MAX_PAGES_IN_FLIGHT * MAX_PAGES_IN_FLIGHT {
            l.delivered();
        }
        assert_eq!(l.limit(), MAX_PAGES_IN_FLIGHT);
    }

    #[test]
    fn never_less_than_one_page_in_flight() {
        let mut l = PageLimit::default();
        for _ in 0..10 {
            let e = l.take().unwrap();
            l.refused(e);
            l.give_back();
            assert_eq!(l.limit(), 1);
        }
        assert!(l.take().is_some());
    }

    #[tokio::test]
    async fn a_page_waiting_for_a_place_gets_the_one_given_back() {
        let gate = std::sync::Arc::new(PageGate::default());
        let first = gate.place().await;
        first.refused();
        assert_eq!(gate.limit(), 1);
        let g = gate.clone();
        let waiting = tokio::spawn(async move {
            let p = g.place().await;
            p.delivered();
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "took a place beyond the limit");
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the waiting page never got the place given back")
            .unwrap();
        assert_eq!(gate.limit(), 2);
    }
}
