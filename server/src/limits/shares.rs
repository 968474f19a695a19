//! One rate, several nodes: each node limits with its share of every configured rate, and
//! the shares follow where the demand is.
//!
//! Every [`EXCHANGE_INTERVAL`] a node tells the others, through the shared database, what it
//! claims of each rate it used: the whole rate where its bucket made callers wait (it would
//! take more), else what it used plus headroom. Its share of a rate is then its claim over the
//! sum of every node's claims. A device connected to one node therefore keeps its whole rate;
//! a tenant whose devices are spread over nodes has its rate split by demand. The shares add up
//! to one, so the nodes together stay within the rate, apart from each node's burst and, for
//! one interval after demand appears on a node, that node's full rate (the tolerance
//! docs/DEPLOY.md states). Claims older than [`CLAIM_TTL`] are ignored: a node that died
//! stops holding shares within it.
//!
//! The arithmetic here is pure and tested without a database; the exchange runs in
//! [`spawn_exchange`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// How often nodes exchange their claims.
pub const EXCHANGE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a node's claims count without being renewed (in the database's queries).
pub const CLAIM_TTL: Duration = Duration::from_secs(3);
/// A node not waiting on a rate claims what it used times this, so that it can grow.
const HEADROOM: f64 = 1.5;
/// The least share a node with demand keeps, so that it is never starved outright.
const MIN_SHARE: f64 = 0.02;

/// What this node asked of one rate in the current interval.
#[derive(Debug, Clone, Copy, Default)]
struct Demand {
    asked: f64,
    waited: bool,
    rate: f64,
}

#[derive(Debug, Default)]
struct Inner {
    demand: HashMap<String, Demand>,
    /// This node's fraction of each rate; absent: all of it.
    share: HashMap<String, f64>,
}

/// This node's demand on each rate and its share of it.
#[derive(Debug, Default)]
pub struct Shares {
    inner: Mutex<Inner>,
    /// Whether other nodes share the rates (demand is only counted then).
    active: AtomicBool,
}

impl Shares {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's fraction of the rate limited under `key` (all of it, without a lock,
    /// while no other node shares the rates: every page and chunk asks).
    pub fn share(&self, key: &str) -> f64 {
        if !self.active.load(Ordering::Relaxed) {
            return 1.0;
        }
        self.inner().share.get(key).copied().unwrap_or(1.0)
    }

    /// Notes that `n` tokens of `key` (configured at `rate`) were asked for, and whether the
    /// caller had to wait for them.
    pub fn note(&self, key: &str, n: f64, waited: bool, rate: f64) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let mut inner = self.inner();
        let d = inner.demand.entry(key.to_string()).or_default();
        d.asked += n;
        d.waited |= waited;
        d.rate = rate;
    }

    /// This node's claims (tokens per second, by key) for the interval of `secs` that just
    /// ended; starts the next interval.
    pub fn take_claims(&self, secs: f64) -> Vec<(String, f64)> {
        let demand = std::mem::take(&mut self.inner().demand);
        demand
            .into_iter()
            .map(|(key, d)| (key, claim(d, secs)))
            .collect()
    }

    /// Sets this node's shares from its `claims` and the sum of the other nodes' claims (and
    /// from then on counts demand: there are other nodes to tell).
    pub fn apply(&self, claims: &[(String, f64)], others: &HashMap<String, f64>) {
        self.active.store(true, Ordering::Relaxed);
        self.inner().share = claims
            .iter()
            .filter_map(|(key, mine)| {
                let others = others.get(key).copied().unwrap_or(0.0);
                let s = share_of(*mine, others);
                (s < 1.0).then(|| (key.clone(), s))
            })
            .collect();
    }
}

/// What a node claims of a rate after asking `d` of it over `secs`.
fn claim(d: Demand, secs: f64) -> f64 {
    if d.waited {
        d.rate
    } else {
        (d.asked / secs.max(1e-3) * HEADROOM).min(d.rate)
    }
}

/// A node's fraction of a rate when it claims `mine` and the other nodes `others`.
fn share_of(mine: f64, others: f64) -> f64 {
    if others <= 0.0 || mine + others <= 0.0 {
        1.0
    } else {
        (mine / (mine + others)).clamp(MIN_SHARE, 1.0)
    }
}

/// Exchanges this node's claims with the other nodes' every [`EXCHANGE_INTERVAL`], for as
/// long as the metadata store has other nodes (the embedded store answers that it has none,
/// and the exchange stops).
pub(crate) fn spawn_exchange(state: Arc<crate::State>) {
    if !state.limits.has_rates() {
        return;
    }
    let mut id = [0u8; 8];
    if getrandom::fill(&mut id).is_err() {
        return;
    }
    let node = hex::encode(id);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXCHANGE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        let mut failing = false;
        loop {
            tick.tick().await;
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            let claims = state.limits.shares.take_claims(secs);
            let (meta, n, c) = (state.meta.clone(), node.clone(), claims.clone());
            let others = tokio::task::spawn_blocking(move || meta.exchange_claims(&n, &c)).await;
            match others {
                Ok(Ok(Some(others))) => {
                    if std::mem::take(&mut failing) {
                        info!("rate limits are shared with the other nodes again");
                    }
                    state.limits.shares.apply(&claims, &others);
                }
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    if !std::mem::replace(&mut failing, true) {
                        warn!(error = %e, "cannot share rate limits with the other nodes; each keeps its last shares until the database answers");
                    }
                }
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(asked: f64, waited: bool) -> Demand {
        Demand {
            asked,
            waited,
            rate: 100.0,
        }
    }

    #[test]
    fn a_node_that_waited_claims_the_whole_rate_and_one_that_did_not_what_it_used() {
        assert_eq!(claim(demand(10.0, true), 1.0), 100.0);
        assert_eq!(claim(demand(20.0, false), 1.0), 30.0);
        assert_eq!(claim(demand(20.0, false), 2.0), 15.0);
        // Never more than the rate itself.
        assert_eq!(claim(demand(500.0, false), 1.0), 100.0);
    }

    #[test]
    fn shares_follow_the_claims_and_add_up_to_the_rate() {
        assert_eq!(share_of(100.0, 0.0), 1.0);
        assert_eq!(share_of(100.0, 100.0), 0.5);
        let (a, b) = (share_of(30.0, 100.0), share_of(100.0, 30.0));
        assert!((a + b - 1.0).abs() < 1e-12);
        assert_eq!(share_of(0.0, 100.0), MIN_SHARE);
    }

    #[test]
    fn two_saturated_nodes_split_a_rate_and_an_idle_one_gives_its_share_back() {
        let (a, b) = (Shares::default(), Shares::default());
        let key = "bytes/t/acme";
        // Nothing is counted until an exchange has found other nodes.
        a.note(key, 500.0, true, 100.0);
        assert!(a.take_claims(1.0).is_empty());
        for node in [&a, &b] {
            node.apply(&[], &HashMap::new());
            node.note(key, 500.0, true, 100.0);
        }
        let (ca, cb) = (a.take_claims(1.0), b.take_claims(1.0));
        let sum = |c: &[(String, f64)]| c.iter().cloned().collect::<HashMap<_, _>>();
        a.apply(&ca, &sum(&cb));
        b.apply(&cb, &sum(&ca));
        assert_eq!((a.share(key), b.share(key)), (0.5, 0.5));
        // B's devices stop: A claims alone and takes the whole rate back.
        a.note(key, 50.0, true, 100.0);
        let ca = a.take_claims(1.0);
        a.apply(&ca, &HashMap::new());
        assert_eq!(a.share(key), 1.0);
        // A rate this node has not used is all its own until the next exchange.
        assert_eq!(a.share("bytes/t/other"), 1.0);
    }
}
