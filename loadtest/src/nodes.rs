//! `--server A,B,C`: the nodes of one deployment under load. Scanner `s` starts at node
//! `s mod n` (an even spread, which a load test wants, where real clients start at random)
//! and moves to the next node when a connection fails or drops; the report then says what
//! each node took.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::Latency;

/// The nodes, and what each has taken so far.
pub(crate) struct Nodes {
    addrs: Vec<SocketAddr>,
    taken: Vec<Mutex<Taken>>,
}

struct Taken {
    connections: u64,
    pages: u64,
    bytes: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

/// One node's part of a run.
#[derive(Serialize)]
pub(crate) struct NodeReport {
    addr: String,
    /// Scanner connections it accepted.
    connections: u64,
    pages: u64,
    bytes: u64,
    mb_per_s: f64,
    latency_ms: Latency,
    /// Pages refused or lost, and failed connections, on this node.
    errors: u64,
}

/// Parses `host:port[,host:port…]`; each name resolves to its first address.
pub(crate) fn parse(list: &str) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for one in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr = one
            .to_socket_addrs()
            .with_context(|| format!("--server {one}: not host:port"))?
            .next()
            .with_context(|| format!("--server {one}: resolves to no address"))?;
        out.push(addr);
    }
    if out.is_empty() {
        bail!("--server names no node");
    }
    Ok(out)
}

impl Nodes {
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Result<Nodes> {
        let taken = addrs
            .iter()
            .map(|_| {
                Ok(Mutex::new(Taken {
                    connections: 0,
                    pages: 0,
                    bytes: 0,
                    errors: 0,
                    latency_us: super::latency_histogram()?,
                }))
            })
            .collect::<Result<_>>()?;
        Ok(Nodes { addrs, taken })
    }

    /// The first node (where jobs are verified and idle scanners connect).
    pub(crate) fn first(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The node scanner `s` uses on its `attempt`-th connection, by index and address.
    pub(crate) fn for_scanner(&self, s: u32, attempt: u32) -> (usize, SocketAddr) {
        let k = (s as usize + attempt as usize) % self.addrs.len();
        (k, self.addrs[k])
    }

    fn at(&self, k: usize) -> std::sync::MutexGuard<'_, Taken> {
        self.taken[k].lock().expect("node stats lock")
    }

    pub(crate) fn connected(&self, k: usize) {
        self.at(k).connections += 1;
    }

    pub(crate) fn page(&self, k: usize, bytes: u64, latency_us: u64) {
        let mut t = self.at(k);
        t.pages += 1;
        t.bytes += bytes;
        t.latency_us.record(latency_us).ok();
    }

    pub(crate) fn error(&self, k: usize) {
        self.at(k).errors += 1;
    }

    /// Each node's part, when there are several.
    pub(crate) fn report(&self, seconds: f64) -> Option<Vec<NodeReport>> {
        if self.addrs.len() < 2 {
            return None;
        }
        Some(
            self.addrs
                .iter()
                .enumerate()
                .map(|(k, addr)| {
                    let t = self.at(k);
                    NodeReport {
                        addr: addr.to_string(),
                        connections: t.connections,
                        pages: t.pages,
                        bytes: t.bytes,
                        mb_per_s: t.bytes as f64 / seconds.max(1e-9) / 1e6,
                        latency_ms: Latency::of(&t.latency_us),
                        errors: t.errors,
                    }
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanners_spread_evenly_and_move_on_in_turn() {
        let nodes = Nodes::new(parse("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3").unwrap()).unwrap();
        let first: Vec<usize> = (0..6).map(|s| nodes.for_scanner(s, 0).0).collect();
        assert_eq!(first, [0, 1, 2, 0, 1, 2]);
        assert_eq!(nodes.for_scanner(2, 1).0, 0);
        nodes.connected(1);
        nodes.page(1, 1000, 2000);
        nodes.error(2);
        let r = nodes.report(1.0).unwrap();
        assert_eq!((r[1].connections, r[1].pages, r[1].bytes), (1, 1, 1000));
        assert_eq!((r[0].pages, r[2].errors), (0, 1));
        assert!(Nodes::new(parse("127.0.0.1:1").unwrap())
            .unwrap()
            .report(1.0)
            .is_none());
        assert!(parse(" , ").is_err());
    }
}
