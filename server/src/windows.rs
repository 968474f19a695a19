//! Receive windows: a share of the budget for every connection, more for those whose link
//! needs it, and never more credit out than the budget allows.
//!
//! QUIC buffers what a scanner sends, up to its connection's receive window, until the
//! pipeline reads it, so the windows together bound what a fleet can make the server hold.
//! Every authenticated connection has its share of [`RECEIVE_BUDGET`]. In a large fleet a
//! share is small (128 KiB with 1,000 connected), and a share holds a scanner 80 ms away to
//! 1.6 MB/s however idle the rest are. So a connection that its window holds back (its
//! scanner reports DATA_BLOCKED while the pipeline reads what it sends) has its window
//! doubled, tick by tick, out of [`GROWN_BUDGET`]; one that stops using it is halved back.
//!
//! What a window grants cannot be taken back: the scanner may send up to the limit it was
//! last told, and lowering the window only stops that limit from moving until the scanner
//! has used it up. The [`Ledger`] counts this debt the way quinn does, so the credit granted
//! beyond the shares never exceeds [`GROWN_BUDGET`], however scanners come and go. (Sharing
//! the budget among sending connections without counting the debt was tried: ten thousand
//! scanners then made the server hold 1,142 MiB; docs/PERFORMANCE.md.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Page bytes all connections' shares together may have in flight towards the server, not
/// yet read by the pipeline. A connection alone gets up to [`MAX_CONNECTION_WINDOW`].
pub const RECEIVE_BUDGET: u64 = 192 * 1024 * 1024;
/// Credit beyond the shares, for connections whose link needs a larger window: enough for
/// sixteen scanners with 4 MiB windows (a 1 Gbit/s, 80 ms link shared by four needs 1 MB in
/// flight each, twice that to ride out a loss).
pub const GROWN_BUDGET: u64 = 64 * 1024 * 1024;
/// The largest receive window of one connection.
pub const MAX_CONNECTION_WINDOW: u64 = 16 * 1024 * 1024;
/// The smallest share: below this a scanner on a long link would stall.
pub const MIN_CONNECTION_WINDOW: u64 = 128 * 1024;
/// How often windows are grown or shrunk: growing from the smallest share to 4 MiB takes
/// five ticks.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks a connection may go without a byte read while one of its pages waits for bytes,
/// before it counts as starved (see [`Flow`]).
pub const STARVED_TICKS: u32 = 10;

/// A connection's share of [`RECEIVE_BUDGET`], rounded down to a power of two so that it
/// changes, and every window is re-set, only a few times as a fleet connects.
pub fn connection_window(connections: usize) -> u64 {
    share_of(RECEIVE_BUDGET, connections)
}

/// A connection's share of `budget` among `connections`, as [`connection_window`].
fn share_of(budget: u64, connections: usize) -> u64 {
    let share = budget / connections.max(1) as u64;
    let pow2 = 1u64 << (63 - share.max(1).leading_zeros());
    pow2.clamp(MIN_CONNECTION_WINDOW, MAX_CONNECTION_WINDOW)
}

/// A window to set: the connection's id and its new size.
pub type Change = (usize, u64);

/// One connection's window and the credit it has been granted beyond it.
#[derive(Debug, Clone, Copy)]
struct Account {
    window: u64,
    /// Credit granted under a larger share and not yet used (quinn's "shrink debt", which
    /// the scanner may send beyond `window`). Shares shrink as a fleet connects; what they
    /// granted before is the count-share scheme's own, outside the grown budget.
    share_debt: u64,
    /// The same for credit granted under a grown window: it counts against the grown budget.
    grown_debt: u64,
    /// Bytes read from the connection at the last tick.
    consumed: u64,
}

impl Account {
    /// Sets the window; credit granted under a larger one becomes `share`d or grown debt.
    fn set(&mut self, window: u64, grown: bool) {
        let debt = self.window.saturating_sub(window);
        if grown {
            self.grown_debt += debt;
        } else {
            self.share_debt += debt;
        }
        self.window = window;
    }

    /// `used` bytes were read: they pay the debts (the share's first, which keeps the grown
    /// budget's count on the safe side).
    fn pay(&mut self, mut used: u64) {
        let paid = used.min(self.share_debt);
        self.share_debt -= paid;
        used -= paid;
        self.grown_debt = self.grown_debt.saturating_sub(used);
    }

    fn credit(&self) -> u64 {
        self.window + self.share_debt + self.grown_debt
    }

    fn grown(&self, share: u64) -> u64 {
        self.window.saturating_sub(share) + self.grown_debt
    }
}

/// The windows of every connection, as pure bookkeeping (no sockets): what to set, when.
#[derive(Debug)]
pub struct Ledger {
    accounts: HashMap<usize, Account>,
    share: u64,
    budget: u64,
    grown_budget: u64,
    /// The window a connection has before it joins (the pre-authentication window).
    initial: u64,
}

impl Ledger {
    /// No connections yet; each joins with `initial` as its window, gets its share of
    /// `budget` (the server's is [`RECEIVE_BUDGET`]) and may grow out of `grown_budget`.
    pub fn new(initial: u64, budget: u64, grown_budget: u64) -> Ledger {
        Ledger {
            accounts: HashMap::new(),
            share: share_of(budget, 0),
            budget,
            grown_budget,
            initial,
        }
    }

    /// Each connection's share now.
    pub fn share(&self) -> u64 {
        self.share
    }

    /// The window `id` has, if it is known.
    pub fn window(&self, id: usize) -> Option<u64> {
        self.accounts.get(&id).map(|a| a.window)
    }

    /// Credit granted to every connection together: what the scanners may send that the
    /// pipeline has not read.
    pub fn credit(&self) -> u64 {
        self.accounts.values().map(Account::credit).sum()
    }

    /// The part of [`Ledger::credit`] granted beyond the shares: growth keeps it within the
    /// grown budget (a share that shrinks under a grown window can take it past).
    pub fn grown_credit(&self) -> u64 {
        self.accounts.values().map(|a| a.grown(self.share)).sum()
    }

    /// A connection joins, having read `consumed` bytes so far; it gets the share.
    pub fn connected(&mut self, id: usize, consumed: u64) -> Vec<Change> {
        self.accounts.insert(
            id,
            Account {
                window: self.initial,
                share_debt: 0,
                grown_debt: 0,
                consumed,
            },
        );
        let mut changes = self.reshare();
        let share = self.share;
        let a = self.accounts.get_mut(&id).expect("just inserted");
        if a.window != share && !changes.iter().any(|(c, _)| *c == id) {
            a.set(share, false);
            changes.push((id, share));
        }
        changes
    }

    /// A connection is gone: its credit with it.
    pub fn closed(&mut self, id: usize) -> Vec<Change> {
        if self.accounts.remove(&id).is_none() {
            return Vec::new();
        }
        self.reshare()
    }

    /// Gives every connection the share for their number, if it changed: those at the old
    /// share or below the new one (a grown window stays until ticks shrink it).
    fn reshare(&mut self) -> Vec<Change> {
        let share = share_of(self.budget, self.accounts.len());
        let old = std::mem::replace(&mut self.share, share);
        if share == old {
            return Vec::new();
        }
        let mut changes = Vec::new();
        for (id, a) in &mut self.accounts {
            if a.window == old || a.window < share {
                a.set(share, false);
                changes.push((*id, share));
            }
        }
        changes
    }

    /// Once per [`TICK`]: `consumed(id)` is what has been read from each connection so far,
    /// `held(id, used, window)` whether its window is what holds it back, having read `used`
    /// bytes this tick (asked only of connections that used at least half their window).
    /// Grows the windows of held connections (doubling) within the grown budget, smallest
    /// first; halves, towards the share, those that used less than an eighth of theirs.
    pub fn tick(
        &mut self,
        mut consumed: impl FnMut(usize) -> u64,
        mut held: impl FnMut(usize, u64, u64) -> bool,
    ) -> Vec<Change> {
        let share = self.share;
        let mut changes = Vec::new();
        let mut busy = Vec::new();
        for (id, a) in &mut self.accounts {
            let now = consumed(*id);
            let used = now.saturating_sub(a.consumed);
            a.consumed = now;
            a.pay(used);
            if a.window > share && used < a.window / 8 {
                let w = (a.window / 2).max(share);
                a.set(w, true);
                changes.push((*id, w));
            } else if used >= a.window / 2 && a.window < MAX_CONNECTION_WINDOW {
                busy.push((a.window, *id, used));
            }
        }
        busy.sort_unstable();
        let mut grown = self.grown_credit();
        for (window, id, used) in busy {
            if !held(id, used, window) {
                continue;
            }
            let a = self.accounts.get_mut(&id).expect("listed above");
            let w = (a.window * 2).min(MAX_CONNECTION_WINDOW);
            let mut after = *a;
            after.set(w, true);
            let cost = after.grown(share) - a.grown(share);
            if grown + cost > self.grown_budget {
                continue;
            }
            grown += cost;
            *a = after;
            changes.push((id, w));
        }
        changes
    }
}

/// What a connection's requests share about its flow.
///
/// Pages the pipeline has not taken yet (it stores a few at a time) stop being read, and
/// what their scanner already sent stays in QUIC's buffers, on the connection's credit. If
/// such pages hold all of it, a page the pipeline did take can get no more bytes: the
/// connection is starved, and with it the pipeline's place. So when a page of a connection
/// waits for bytes and nothing at all is read from the connection for [`STARVED_TICKS`],
/// the pages not yet taken are told to give their place back (they are refused as busy,
/// their streams stopped, and the scanner sends them again).
#[derive(Debug, Default)]
pub struct Flow {
    /// Bytes read from the connection (added by its streams' readers).
    pub consumed: Arc<AtomicU64>,
    awaiting: AtomicUsize,
    starved: tokio::sync::Notify,
}

impl Flow {
    /// Counts a page as waiting for bytes until the guard is dropped.
    pub fn awaiting(&self) -> Awaiting<'_> {
        self.awaiting.fetch_add(1, Ordering::Relaxed);
        Awaiting(self)
    }

    /// Resolves the next time the connection starves.
    pub async fn starved(&self) {
        self.starved.notified().await
    }
}

/// A page waiting for bytes (see [`Flow::awaiting`]).
pub struct Awaiting<'a>(&'a Flow);

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        self.0.awaiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection the windows follow: its QUIC handle, its flow, and what was seen of it at
/// the last tick.
struct Followed {
    conn: quinn::Connection,
    flow: Arc<Flow>,
    /// DATA_BLOCKED frames its scanner had sent when last asked.
    blocked_seen: u64,
    consumed_seen: u64,
    /// Ticks in a row without a byte read while a page waited for bytes.
    stalled: u32,
}

impl Followed {
    /// Notes this tick's reading; tells the connection's pages when it has starved.
    fn watch_starvation(&mut self) {
        let now = self.flow.consumed.load(Ordering::Relaxed);
        let moved = std::mem::replace(&mut self.consumed_seen, now) != now;
        if moved || self.flow.awaiting.load(Ordering::Relaxed) == 0 {
            self.stalled = 0;
            return;
        }
        self.stalled += 1;
        if self.stalled >= STARVED_TICKS {
            self.flow.starved.notify_waiters();
            self.stalled = 0;
        }
    }
}

/// The [`Ledger`] applied to the server's QUIC connections.
pub struct Windows {
    inner: Mutex<(Ledger, HashMap<usize, Followed>)>,
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows").finish_non_exhaustive()
    }
}

impl Windows {
    /// Connections start with `initial` (the pre-authentication window): see [`Ledger::new`].
    pub fn new(initial: u64, budget: u64, grown_budget: u64) -> Arc<Windows> {
        Arc::new(Windows {
            inner: Mutex::new((Ledger::new(initial, budget, grown_budget), HashMap::new())),
        })
    }

    /// Follows `conn` from now on; its requests share the [`Flow`] returned (its streams'
    /// readers add what they read to `consumed`).
    pub fn connected(&self, conn: &quinn::Connection) -> Arc<Flow> {
        let flow = Arc::new(Flow::default());
        let mut inner = self.lock();
        let (ledger, conns) = &mut *inner;
        conns.insert(
            conn.stable_id(),
            Followed {
                conn: conn.clone(),
                flow: flow.clone(),
                blocked_seen: conn.stats().frame_rx.data_blocked,
                consumed_seen: 0,
                stalled: 0,
            },
        );
        let changes = ledger.connected(conn.stable_id(), 0);
        apply(conns, &changes);
        flow
    }

    /// Stops following `conn`.
    pub fn closed(&self, conn: &quinn::Connection) {
        let mut inner = self.lock();
        let (ledger, conns) = &mut *inner;
        conns.remove(&conn.stable_id());
        let changes = ledger.closed(conn.stable_id());
        apply(conns, &changes);
    }

    /// One [`Ledger::tick`] over the connections followed, and a look for starved ones.
    pub fn tick(&self) {
        let mut inner = self.lock();
        let (ledger, conns) = &mut *inner;
        let changes = {
            let read = |id: usize| conns[&id].flow.consumed.load(Ordering::Relaxed);
            let mut asked = Vec::new();
            let changes = ledger.tick(read, |id, used, window| {
                let f = &conns[&id];
                let stats = f.conn.stats();
                let now = stats.frame_rx.data_blocked;
                asked.push((id, now));
                now > f.blocked_seen && held_by_round_trip(used, window, stats.path.rtt)
            });
            for (id, now) in asked {
                conns.get_mut(&id).expect("followed").blocked_seen = now;
            }
            changes
        };
        conns.values_mut().for_each(Followed::watch_starvation);
        apply(conns, &changes);
    }

    /// The window `conn` has now.
    pub fn window(&self, conn: &quinn::Connection) -> Option<u64> {
        self.lock().0.window(conn.stable_id())
    }

    /// All credit granted, and the part of it beyond the shares (for `/metrics`).
    pub fn credit(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.0.credit(), inner.0.grown_credit())
    }

    /// Ticks every [`TICK`] while `windows` is alive.
    pub fn spawn_tuner(windows: &Arc<Windows>) {
        let windows: Weak<Windows> = Arc::downgrade(windows);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(w) = windows.upgrade() else { return };
                w.tick();
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Ledger, HashMap<usize, Followed>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a window, not the reader, holds a connection back: a window lets through at most one
/// window per round trip, and the connection read at least half that this tick. Its scanner
/// reporting the window closed is not enough: when the pipeline is what is slow (a loaded
/// server, a LAN scanner) the window fills too, and more of it would only buffer more (growing
/// those cost a ten-thousand-scanner run a third of its throughput).
fn held_by_round_trip(used: u64, window: u64, rtt: Duration) -> bool {
    used as f64 * rtt.as_secs_f64() >= 0.5 * window as f64 * TICK.as_secs_f64()
}

fn apply(conns: &HashMap<usize, Followed>, changes: &[Change]) {
    for (id, w) in changes {
        if let Some(f) = conns.get(id) {
            f.conn
                .set_receive_window(quinn::VarInt::from_u64(*w).expect("a window fits a VarInt"));
        }
    }
}

#[cfg(test)]
#[path = "windows_tests.rs"]
mod tests;
