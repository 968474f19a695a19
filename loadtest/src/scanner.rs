//! One scanner of the load: a connection (re-made if it drops) and its lanes, each pushing
//! one job after another, every page's acknowledgement timed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio::time::{Interval, MissedTickBehavior};

use indicatif::ProgressBar;
use quire_client::push::{new_job_id, send_with_retry, LocalPage, Upload};
use quire_client::Connection;
use quire_codecs::wire::Frame;

use super::Ctx;
use crate::connects::{backoff, Who};
use anyhow::{bail, Context, Result};
use quire_client::push::scan_dir;
use std::path::{Path, PathBuf};

pub(crate) async fn run_scanner(ctx: Arc<Ctx>, s: u32) {
    let next_job = AtomicU32::new(0);
    let (mut attempt, mut failures) = (0, 0);
    while ctx.more_jobs(next_job.load(Ordering::Relaxed)) {
        // Each new connection goes to the next node (one node: the same one again).
        let (node, addr) = ctx.nodes.for_scanner(s, attempt);
        attempt += 1;
        let began = Instant::now();
        let conn = match Connection::connect(&ctx.cred, Some(addr)).await {
            Ok(c) => {
                failures = 0;
                ctx.connects.connected(Who::Pushing(s), began);
                ctx.nodes.connected(node);
                let way = format!("{:?}", c.transport).to_lowercase();
                *ctx.connections
                    .lock()
                    .expect("lock")
                    .entry(way)
                    .or_default() += 1;
                c
            }
            Err(e) => {
                ctx.connects.failed(began, &e);
                ctx.nodes.error(node);
                if ctx.deadline.is_none() {
                    // Its jobs will not be pushed: work the run did not do.
                    ctx.error(&format!("scanner {s}"), &e);
                    return;
                }
                // Tried again, as a scanner does: in the report's `connects`, not an error.
                eprintln!("scanner {s}: {e}; connecting again");
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
                continue;
            }
        };
        let lanes = (0..ctx.jobs_in_flight).map(|_| run_lane(&ctx, s, node, &conn, &next_job));
        futures::future::join_all(lanes).await;
        ctx.transport
            .lock()
            .expect("lock")
            .add(&conn.transport_stats());
        if !conn.is_closed() {
            conn.close().await;
            return;
        }
    }
}

/// What the scanners' connections sent and received: how many packets a megabyte of pages
/// costs, and how many acknowledgements came back for them.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct TransportTotals {
    /// UDP datagrams sent (several QUIC packets may share one).
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// ACK frames received from the server.
    pub acks_received: u64,
    /// Packets the scanners' loss detection declared lost.
    pub packets_lost: u64,
}

impl TransportTotals {
    fn add(&mut self, stats: &quinn::ConnectionStats) {
        self.datagrams_sent += stats.udp_tx.datagrams;
        self.datagrams_received += stats.udp_rx.datagrams;
        self.acks_received += stats.frame_rx.acks;
        self.packets_lost += stats.path.lost_packets;
    }
}

/// Pushes the scanner's next job, then the next, until there are no more or the connection
/// ends (the scanner then reconnects).
async fn run_lane(ctx: &Ctx, s: u32, node: usize, conn: &Connection, next_job: &AtomicU32) {
    let pacer = ctx.page_interval.map(|every| Mutex::new(pacer(every)));
    while !conn.is_closed() {
        let j = next_job.fetch_add(1, Ordering::Relaxed);
        if !ctx.more_jobs(j) {
            return;
        }
        let idx = corpus_job(j, s, ctx.scanners, ctx.corpus.len());
        let pages = &ctx.corpus[idx];
        let upload = Upload::new(new_job_id());
        let job_id = upload.job_id.clone();
        let mut results = Vec::with_capacity(pages.len());
        {
            // A hand-rolled window: stream combinators over borrowed closures trip the
            // compiler's `Send` inference inside a spawned task.
            use futures::stream::{FuturesUnordered, StreamExt};
            let mut inflight = FuturesUnordered::new();
            let mut next = pages.iter();
            loop {
                while inflight.len() < ctx.concurrency.max(1) {
                    match next.next() {
                        Some(p) => {
                            inflight.push(push_one(ctx, (node, conn), &upload, p, pacer.as_ref()))
                        }
                        None => break,
                    }
                }
                match inflight.next().await {
                    Some(ok) => results.push(ok),
                    None => break,
                }
            }
        }
        if !results.iter().all(|ok| *ok) {
            continue;
        }
        let commit = conn
            .call(&Frame::JobCommit {
                tenant: conn.tenant.clone(),
                job_id: job_id.clone(),
                page_count: pages.len() as u32,
                upload: Some(upload.id),
            })
            .await;
        match commit {
            Ok(_) => ctx.committed.lock().expect("lock").push((job_id, idx)),
            Err(e) => {
                ctx.nodes.error(node);
                ctx.error(&format!("scanner {s} commit {job_id}"), &e)
            }
        }
    }
}

/// A lane's schedule with `--page-interval`: a page every `every`, the first after a random
/// part of one, and never two at once to catch up after a slow one (a scanner feeds the next
/// page when it has scanned it, not earlier).
fn pacer(every: Duration) -> Interval {
    let first = tokio::time::Instant::now() + every.mul_f64(fastrand::f64());
    let mut pacer = tokio::time::interval_at(first, every);
    pacer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    pacer
}

/// The corpus job that scanner `s` (of `scanners`) pushes as its `j`-th: round `j` of all
/// scanners takes the next `scanners` jobs of the corpus in turn (so with scanners x jobs =
/// corpus size every job is pushed exactly once), and who takes which one rotates from round
/// to round, so that every scanner pushes the same mix. (Without the rotation, scanner `s`
/// got only the jobs at `s` modulo the scanner count: with 4 scanners and the corpus's 14
/// jobs, two scanners got 105 MB each of 240 and the other two 15 MB, and the run measured
/// two scanners for most of its length.)
pub(crate) fn corpus_job(j: u32, s: u32, scanners: u32, corpus: usize) -> usize {
    let scanners = scanners.max(1) as usize;
    let (j, s) = (j as usize, s as usize);
    (j * scanners + (s + j) % scanners) % corpus.max(1)
}

/// Pushes one page (sending it again after a "later", as `quire push` does) and records its
/// acknowledgement latency, retries included.
async fn push_one(
    ctx: &Ctx,
    (node, conn): (usize, &Connection),
    upload: &Upload,
    p: &LocalPage,
    pacer: Option<&Mutex<Interval>>,
) -> bool {
    if let Some(pacer) = pacer {
        pacer.lock().await.tick().await;
    }
    let t = Instant::now();
    ctx.in_flight.fetch_add(1, Ordering::Relaxed);
    let r = send_with_retry(conn, upload, p, &ProgressBar::hidden(), |_, _| {
        ctx.retries.fetch_add(1, Ordering::Relaxed);
    })
    .await;
    ctx.in_flight.fetch_sub(1, Ordering::Relaxed);
    match r {
        Ok(_) => {
            let us = t.elapsed().as_micros().max(1) as u64;
            ctx.hist.lock().expect("histogram lock").record(us).ok();
            ctx.interval_hist
                .lock()
                .expect("histogram lock")
                .record(us)
                .ok();
            ctx.pages_done.fetch_add(1, Ordering::Relaxed);
            ctx.nodes.page(node, p.entry.size, us);
            ctx.bytes_done.fetch_add(p.entry.size, Ordering::Relaxed);
            ctx.bar.inc(1);
            true
        }
        Err(e) => {
            ctx.nodes.error(node);
            ctx.error(&format!("job {} page {}", upload.job_id, p.entry.index), &e);
            false
        }
    }
}

/// The corpus: each folder under `dir` with pages in it is one job, in name order.
pub(crate) fn load_corpus(dir: &Path) -> Result<Vec<Vec<LocalPage>>> {
    let mut jobs = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading corpus {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let pages = scan_dir(&d)?;
        if !pages.is_empty() {
            jobs.push(pages);
        }
    }
    if jobs.is_empty() {
        bail!("no job folders with pages under {}", dir.display());
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::corpus_job;

    #[test]
    fn scanners_times_jobs_equal_to_the_corpus_push_every_job_once() {
        for (scanners, jobs) in [(2u32, 7u32), (7, 2), (1, 14), (14, 1)] {
            let mut taken: Vec<usize> = (0..scanners)
                .flat_map(|s| (0..jobs).map(move |j| corpus_job(j, s, scanners, 14)))
                .collect();
            taken.sort_unstable();
            assert_eq!(taken, (0..14).collect::<Vec<_>>(), "{scanners} x {jobs}");
        }
    }

    /// Every scanner gets jobs of every residue modulo the scanner count, not only its own.
    #[test]
    fn each_scanner_pushes_the_whole_mix() {
        let (scanners, corpus) = (4u32, 14usize);
        for s in 0..scanners {
            let mut residues: Vec<usize> = (0..56)
                .map(|j| corpus_job(j, s, scanners, corpus) % scanners as usize)
                .collect();
            residues.sort_unstable();
            residues.dedup();
            assert_eq!(residues, vec![0, 1, 2, 3], "scanner {s}");
            let mut jobs: Vec<usize> = (0..56)
                .map(|j| corpus_job(j, s, scanners, corpus))
                .collect();
            jobs.sort_unstable();
            jobs.dedup();
            assert_eq!(jobs.len(), corpus, "scanner {s} sees every job");
        }
    }
}
