use super::*;

const INITIAL: u64 = 1024 * 1024;

#[test]
fn the_receive_budget_is_shared_out_within_bounds() {
    assert_eq!(connection_window(1), MAX_CONNECTION_WINDOW);
    assert_eq!(connection_window(12), MAX_CONNECTION_WINDOW);
    assert_eq!(connection_window(13), 8 * 1024 * 1024);
    assert_eq!(connection_window(100), 1024 * 1024);
    assert_eq!(connection_window(1000), 128 * 1024);
    assert_eq!(connection_window(100_000), MIN_CONNECTION_WINDOW);
    for n in [1, 7, 13, 100, 999, 1000, 1500] {
        let w = connection_window(n);
        assert!(w.is_power_of_two(), "{n}: {w}");
        assert!(n as u64 * w <= RECEIVE_BUDGET.max(n as u64 * MIN_CONNECTION_WINDOW));
    }
}

/// A ledger with `n` connections (ids 0..n), all at the share.
fn fleet(n: usize, grown_budget: u64) -> Ledger {
    let mut l = Ledger::new(INITIAL, RECEIVE_BUDGET, grown_budget);
    for id in 0..n {
        l.connected(id, 0);
    }
    l
}

#[test]
fn a_connection_joins_with_the_share_and_a_fleet_shrinks_the_shares() {
    let mut l = Ledger::new(INITIAL, RECEIVE_BUDGET, GROWN_BUDGET);
    assert_eq!(l.connected(0, 0), vec![(0, MAX_CONNECTION_WINDOW)]);
    for id in 1..1000 {
        l.connected(id, 0);
    }
    assert_eq!(l.share(), 128 * 1024);
    assert!((0..1000).all(|id| l.window(id) == Some(128 * 1024)));
    // Credit granted under the larger shares stays owed until used: the ledger says so.
    assert!(l.credit() > 1000 * 128 * 1024, "{}", l.credit());
    // As the fleet leaves, the shares grow back.
    for id in 1..1000 {
        l.closed(id);
    }
    assert_eq!(l.window(0), Some(MAX_CONNECTION_WINDOW));
    assert_eq!(l.closed(0), Vec::new());
    assert_eq!(l.credit(), 0);
}

/// The scanner sends as fast as its window lets it: `rate` bytes per tick read.
fn read_all(consumed: &mut HashMap<usize, u64>, rate: impl Fn(usize) -> u64) {
    for (id, c) in consumed.iter_mut() {
        *c += rate(*id);
    }
}

#[test]
fn a_window_that_holds_its_scanner_back_doubles_each_tick_up_to_the_largest() {
    let mut l = fleet(1000, GROWN_BUDGET);
    let share = l.share();
    let mut consumed: HashMap<usize, u64> = (0..1000).map(|id| (id, 0)).collect();
    let mut windows = vec![share];
    for _ in 0..10 {
        // Connection 7 is held to its window (one window per 80 ms round trip); the rest idle.
        let w7 = l.window(7).unwrap();
        read_all(&mut consumed, |id| if id == 7 { w7 * 5 / 4 } else { 0 });
        l.tick(|id| consumed[&id], |id, _, _| id == 7);
        windows.push(l.window(7).unwrap());
    }
    assert_eq!(
        windows[..9],
        [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 16384].map(|k| k * 1024),
    );
    assert!((0..1000)
        .filter(|id| *id != 7)
        .all(|id| l.window(id) == Some(share)));
    assert_eq!(l.grown_credit(), MAX_CONNECTION_WINDOW - share);
}

#[test]
fn a_window_grows_only_for_a_scanner_that_is_both_held_back_and_sending() {
    let mut l = fleet(1000, GROWN_BUDGET);
    let share = l.share();
    let mut consumed: HashMap<usize, u64> = (0..3).map(|id| (id, 0)).collect();
    let mut asked = Vec::new();
    for _ in 0..5 {
        // 0 sends a window per tick but never reports DATA_BLOCKED (its link is the limit);
        // 1 reported DATA_BLOCKED but sends little (the pipeline or the scanner is slow);
        // 2 sends nothing.
        read_all(&mut consumed, |id| [share, share / 4, 0][id]);
        let changes = l.tick(
            |id| consumed.get(&id).copied().unwrap_or(0),
            |id, _, _| {
                asked.push(id);
                id != 0
            },
        );
        assert_eq!(changes, Vec::new());
    }
    assert!(asked.iter().all(|id| *id == 0), "asked {asked:?}");
    assert!((0..3).all(|id| l.window(id) == Some(share)));
}

#[test]
fn windows_grown_together_stay_within_the_grown_budget_smallest_first() {
    let mut l = fleet(1000, 8 * 1024 * 1024);
    let mut consumed: HashMap<usize, u64> = (0..1000).map(|id| (id, 0)).collect();
    for _ in 0..20 {
        let windows: HashMap<usize, u64> =
            (0..1000).map(|id| (id, l.window(id).unwrap())).collect();
        read_all(&mut consumed, |id| windows[&id]);
        l.tick(|id| consumed[&id], |_, _, _| true);
        assert!(l.grown_credit() <= 8 * 1024 * 1024, "{}", l.grown_credit());
    }
    // Growing the smallest first spreads the budget instead of giving it to a few.
    let grown = (0..1000)
        .filter(|id| l.window(*id).unwrap() > l.share())
        .count();
    assert!(grown >= 60, "only {grown} connections grew");
    assert!((0..1000).all(|id| l.window(id).unwrap() <= 256 * 1024));
}

#[test]
fn a_grown_window_left_unused_halves_back_and_its_credit_is_owed_until_used() {
    let mut l = fleet(1000, 4 * 1024 * 1024);
    let share = l.share();
    let mut consumed: HashMap<usize, u64> = (0..1000).map(|id| (id, 0)).collect();
    // Connection 1 grows to 4 MiB (the budget: 4 MiB + share... within 4 MiB beyond share).
    for _ in 0..6 {
        let w = l.window(1).unwrap();
        read_all(&mut consumed, |id| if id == 1 { w } else { 0 });
        l.tick(|id| consumed[&id], |id, _, _| id == 1);
    }
    let top = l.window(1).unwrap();
    assert_eq!(top, 4 * 1024 * 1024);
    assert_eq!(l.grown_credit(), top - share);
    // It stops sending: its window halves each tick back to the share.
    let mut seen = Vec::new();
    for _ in 0..8 {
        l.tick(|id| consumed[&id], |_, _, _| true);
        seen.push(l.window(1).unwrap());
    }
    assert_eq!(seen[..5], [top / 2, top / 4, top / 8, top / 16, share]);
    assert_eq!(l.grown_credit(), top - share);
    // What it was granted at 4 MiB is still its to send: connection 2, held back, grows by
    // what is left of the budget (one doubling) until connection 1 has used that credit.
    for _ in 0..3 {
        let w = l.window(2).unwrap();
        read_all(&mut consumed, |id| if id == 2 { w } else { 0 });
        l.tick(|id| consumed[&id], |id, _, _| id == 2);
    }
    assert_eq!(l.window(2), Some(2 * share));
    // Connection 1 sends all it was owed (what its share granted while the fleet connected
    // is paid first); connection 2 grows.
    let owed = l.accounts[&1].credit();
    assert!(owed > top, "{owed}");
    read_all(&mut consumed, |id| if id == 1 { owed } else { 0 });
    l.tick(|id| consumed[&id], |_, _, _| false);
    for _ in 0..3 {
        let w = l.window(2).unwrap();
        read_all(&mut consumed, |id| if id == 2 { w } else { 0 });
        l.tick(|id| consumed[&id], |id, _, _| id == 2);
    }
    assert!(l.window(2).unwrap() >= 1024 * 1024, "{:?}", l.window(2));
}

/// quinn-proto's connection flow control (0.11: `StreamsState::set_receive_window` and
/// `add_read_credits`), to hold the ledger to what the scanner is really allowed to send.
#[derive(Default)]
struct QuinnCredit {
    window: u64,
    local_max_data: u64,
    shrink_debt: u64,
    read: u64,
}

impl QuinnCredit {
    fn new(window: u64) -> Self {
        QuinnCredit {
            window,
            local_max_data: window,
            ..Default::default()
        }
    }

    fn set_receive_window(&mut self, w: u64) {
        if w > self.window {
            self.local_max_data += w - self.window;
        } else {
            self.shrink_debt += self.window - w;
        }
        self.window = w;
    }

    fn read(&mut self, n: u64) {
        self.read += n;
        if n > self.shrink_debt {
            self.local_max_data += n - self.shrink_debt;
            self.shrink_debt = 0;
        } else {
            self.shrink_debt -= n;
        }
    }

    /// What the scanner may send beyond what was read.
    fn outstanding(&self) -> u64 {
        self.local_max_data - self.read
    }
}

/// Scanners come and go, send what they may or nothing, report being blocked or not, in a
/// fixed pseudo-random order: the ledger's credit is at every step exactly what quinn lets
/// the scanners send, and growth never takes the credit beyond the shares past the budget.
#[test]
fn the_ledger_counts_exactly_the_credit_quinn_grants() {
    let budget = 8 * 1024 * 1024;
    let mut l = Ledger::new(INITIAL, RECEIVE_BUDGET, budget);
    let mut quinn: HashMap<usize, QuinnCredit> = HashMap::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut next_id = 0;
    for step in 0..3000 {
        let changes = match next(10) {
            0..=2 => {
                next_id += 1;
                quinn.insert(next_id, QuinnCredit::new(INITIAL));
                l.connected(next_id, 0)
            }
            3 if !quinn.is_empty() => {
                let ids: Vec<usize> = quinn.keys().copied().collect();
                let id = ids[next(ids.len() as u64) as usize];
                quinn.remove(&id);
                l.closed(id)
            }
            _ => {
                // Each scanner sends some or all of what it may, or nothing.
                for q in quinn.values_mut() {
                    let n = match next(3) {
                        0 => 0,
                        1 => next(q.outstanding() + 1),
                        _ => q.outstanding(),
                    };
                    q.read(n);
                }
                let before = l.grown_credit();
                let reads: HashMap<usize, u64> =
                    quinn.iter().map(|(id, q)| (*id, q.read)).collect();
                let changes = l.tick(|id| reads[&id], |_, _, _| next(2) == 0);
                assert!(
                    l.grown_credit() <= budget.max(before),
                    "step {step}: grown credit {} (budget {budget}, before {before})",
                    l.grown_credit()
                );
                changes
            }
        };
        for (id, w) in changes {
            quinn.get_mut(&id).unwrap().set_receive_window(w);
        }
        for (id, q) in &quinn {
            assert_eq!(l.window(*id), Some(q.window), "step {step}");
        }
        let granted: u64 = quinn.values().map(QuinnCredit::outstanding).sum();
        assert_eq!(l.credit(), granted, "step {step}");
    }
}

#[test]
fn only_a_window_that_a_round_trip_limits_counts_as_holding_its_scanner_back() {
    let w = 256 * 1024;
    // 80 ms away, a 256 KiB window passes 320 KiB per 100 ms tick: reading that, it is full.
    assert!(held_by_round_trip(320 * 1024, w, Duration::from_millis(80)));
    // A scanner on the LAN (1 ms) reading the same is held back by the reader, not the window.
    assert!(!held_by_round_trip(320 * 1024, w, Duration::from_millis(1)));
    // Nor is one 80 ms away that reads a tenth of what its window passes.
    assert!(!held_by_round_trip(32 * 1024, w, Duration::from_millis(80)));
}
