//! Receive windows, shared out among the connections that are sending.
//!
//! QUIC buffers what a scanner sends, up to its connection's receive window, until the
//! pipeline reads it; the windows together bound what a fleet can make the server hold
//! ([`RECEIVE_BUDGET`]). Shared among every *connected* scanner, a large fleet that is mostly
//! idle left each one little: with 1,000 connected, 128 KiB, which holds a scanner 80 ms away
//! to 1.6 MB/s however idle the rest are. A connection sends page bytes only inside requests,
//! so the budget is shared among the connections with a request open; one without gets
//! [`IDLE_WINDOW`], enough for the first frames of its next request (the stream that carries
//! them makes the connection active as soon as the server accepts it).

use std::collections::HashMap;
use std::sync::Mutex;

/// Page bytes all connections together may have in flight towards the server, not yet read by
/// the pipeline. A connection sending alone gets up to [`MAX_CONNECTION_WINDOW`].
pub const RECEIVE_BUDGET: u64 = 192 * 1024 * 1024;
/// The largest receive window of one connection.
pub const MAX_CONNECTION_WINDOW: u64 = 16 * 1024 * 1024;
/// The smallest of a sending connection (from 6,144 sending at once; the server cannot serve
/// that many at more than this anyway).
pub const MIN_CONNECTION_WINDOW: u64 = 32 * 1024;
/// The window of a connection with no request open.
pub const IDLE_WINDOW: u64 = 64 * 1024;

/// A sending connection's share of [`RECEIVE_BUDGET`] when `sending` share it, rounded down to
/// a power of two so that it changes, and every sender's window is re-set, only a few times as
/// a fleet gets busy.
pub fn connection_window(sending: usize) -> u64 {
    let share = RECEIVE_BUDGET / sending.max(1) as u64;
    let pow2 = 1u64 << (63 - share.max(1).leading_zeros());
    pow2.clamp(MIN_CONNECTION_WINDOW, MAX_CONNECTION_WINDOW)
}

/// Something with a receive window: a QUIC connection (tests record the windows set).
pub trait Window: Clone {
    /// Sets the connection's receive window to `bytes`.
    fn set(&self, bytes: u64);
    /// Tells connections apart.
    fn id(&self) -> usize;
}

impl Window for quinn::Connection {
    fn set(&self, bytes: u64) {
        self.set_receive_window(quinn::VarInt::from_u64(bytes).expect("a window fits a VarInt"));
    }

    fn id(&self) -> usize {
        self.stable_id()
    }
}

/// The connections with requests open, and the share each has.
#[derive(Debug)]
pub struct Windows<C> {
    sending: Mutex<Sending<C>>,
}

#[derive(Debug)]
struct Sending<C> {
    /// Each sending connection and how many requests it has open.
    conns: HashMap<usize, (C, usize)>,
    share: u64,
}

impl<C> Default for Windows<C> {
    fn default() -> Self {
        Windows {
            sending: Mutex::new(Sending {
                conns: HashMap::new(),
                share: 0,
            }),
        }
    }
}

/// A request in progress; ending it (dropping this) gives the connection back its idle
/// window once it has no other request open.
#[must_use = "the request counts as open until this is dropped"]
pub struct OpenRequest<'a, C: Window> {
    windows: &'a Windows<C>,
    conn: C,
}

impl<C: Window> Drop for OpenRequest<'_, C> {
    fn drop(&mut self) {
        self.windows.request_ended(&self.conn);
    }
}

impl<C: Window> Windows<C> {
    /// A connection that has just authenticated: idle until its first request.
    pub fn connected(&self, conn: &C) {
        conn.set(IDLE_WINDOW);
    }

    /// A request of `conn` begins; it is open until the returned guard is dropped.
    pub fn request<'a>(&'a self, conn: &C) -> OpenRequest<'a, C> {
        let mut s = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        let open = &mut s
            .conns
            .entry(conn.id())
            .or_insert_with(|| (conn.clone(), 0))
            .1;
        *open += 1;
        if *open == 1 {
            s.reshare(Some(conn));
        }
        OpenRequest {
            windows: self,
            conn: conn.clone(),
        }
    }

    fn request_ended(&self, conn: &C) {
        let mut s = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        let Some((_, open)) = s.conns.get_mut(&conn.id()) else {
            return;
        };
        *open -= 1;
        if *open == 0 {
            s.conns.remove(&conn.id());
            conn.set(IDLE_WINDOW);
            s.reshare(None);
        }
    }

    /// Connections with a request open.
    pub fn sending(&self) -> usize {
        self.sending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conns
            .len()
    }
}

impl<C: Window> Sending<C> {
    /// Gives every sender the share for their number if it changed, else only `newcomer`.
    fn reshare(&mut self, newcomer: Option<&C>) {
        let share = connection_window(self.conns.len());
        if share != self.share {
            self.share = share;
            for (c, _) in self.conns.values() {
                c.set(share);
            }
        } else if let Some(c) = newcomer {
            c.set(share);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Debug)]
    struct Recorded(usize, Arc<AtomicU64>);

    impl Window for Recorded {
        fn set(&self, bytes: u64) {
            self.1.store(bytes, Ordering::Relaxed);
        }
        fn id(&self) -> usize {
            self.0
        }
    }

    impl Recorded {
        fn window(&self) -> u64 {
            self.1.load(Ordering::Relaxed)
        }
    }

    fn fleet(n: usize) -> Vec<Recorded> {
        (0..n).map(|i| Recorded(i, Arc::default())).collect()
    }

    #[test]
    fn the_receive_budget_is_shared_out_within_bounds() {
        assert_eq!(connection_window(1), MAX_CONNECTION_WINDOW);
        assert_eq!(connection_window(12), MAX_CONNECTION_WINDOW);
        assert_eq!(connection_window(13), 8 * 1024 * 1024);
        assert_eq!(connection_window(100), 1024 * 1024);
        assert_eq!(connection_window(1000), 128 * 1024);
        assert_eq!(connection_window(100_000), MIN_CONNECTION_WINDOW);
        for n in [1, 7, 13, 100, 999, 1000, 1500, 6144] {
            let w = connection_window(n);
            assert!(w.is_power_of_two(), "{n}: {w}");
            assert!(n as u64 * w <= RECEIVE_BUDGET, "{n}: {w}");
        }
    }

    /// A few scanners sending among a thousand idle ones get the windows of a few, not of a
    /// thousand; the rest keep the idle window.
    #[test]
    fn the_budget_is_shared_among_the_connections_sending() {
        let windows = Windows::default();
        let conns = fleet(1000);
        for c in &conns {
            windows.connected(c);
        }
        let open: Vec<_> = conns[..4].iter().map(|c| windows.request(c)).collect();
        assert_eq!(windows.sending(), 4);
        for c in &conns[..4] {
            assert_eq!(c.window(), MAX_CONNECTION_WINDOW);
        }
        assert!(conns[4..].iter().all(|c| c.window() == IDLE_WINDOW));
        // A second request of a connection that is sending changes nothing; its end neither.
        let again = windows.request(&conns[0]);
        drop(again);
        assert_eq!(conns[0].window(), MAX_CONNECTION_WINDOW);
        drop(open);
        assert_eq!(windows.sending(), 0);
        assert!(conns.iter().all(|c| c.window() == IDLE_WINDOW));
    }

    /// However many send at once, the windows of those sending stay within the budget (down
    /// to the smallest window), and shrink and grow back as senders come and go.
    #[test]
    fn many_senders_share_the_budget_and_get_it_back() {
        let windows = Windows::default();
        let conns = fleet(3000);
        let open: Vec<_> = conns.iter().map(|c| windows.request(c)).collect();
        let total: u64 = conns.iter().map(Recorded::window).sum();
        assert!(total <= RECEIVE_BUDGET, "{total}");
        assert!(conns.iter().all(|c| c.window() == connection_window(3000)));
        let mut open = open;
        open.truncate(10); // all but the first ten end their requests
        assert_eq!(windows.sending(), 10);
        for c in &conns[..10] {
            assert_eq!(c.window(), connection_window(10));
        }
        assert!(conns[10..].iter().all(|c| c.window() == IDLE_WINDOW));
    }
}
