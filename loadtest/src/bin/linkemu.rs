//! `linkemu`: an emulated WAN link between two TUN devices, for measuring how scanners in a
//! branch office fare (this kernel has no `netem`).
//!
//! It creates the TUN devices `--a` and `--b` and forwards every packet from one to the other
//! through a [`Link`] per direction: one-way delay, a bottleneck rate with a drop-tail queue,
//! and random loss. `loadtest/wan.sh` moves the two devices into network namespaces of their
//! own, so that QUIC and TCP between them cross the same link. It prints `ready` once the
//! devices exist and the link statistics every `--report-secs` and when stdin closes.

use std::io::{Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use quire_loadtest::link::{Link, LinkConfig, LinkStats};

#[derive(Parser, Debug)]
struct Args {
    /// Name of the first TUN device (the scanners' side).
    #[arg(long, default_value = "qlink-a")]
    a: String,
    /// Name of the second TUN device (the server's side).
    #[arg(long, default_value = "qlink-b")]
    b: String,
    /// Round-trip time in milliseconds (half of it each way).
    #[arg(long, default_value_t = 40.0)]
    rtt_ms: f64,
    /// Bottleneck rate in Mbit/s, each direction; 0 for unlimited.
    #[arg(long, default_value_t = 100.0)]
    rate_mbit: f64,
    /// Loss probability per packet, each direction (0.005 is 0.5 %).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Queue at the bottleneck in KiB; default one bandwidth-delay product.
    #[arg(long)]
    queue_kib: Option<usize>,
    /// Seed of the random losses.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the statistics this often (0: only at the end).
    #[arg(long, default_value_t = 0.0)]
    report_secs: f64,
}

fn device(name: &str) -> Result<tun::Device> {
    let mut c = tun::Configuration::default();
    c.tun_name(name).mtu(1500).layer(tun::Layer::L3);
    tun::create(&c).with_context(|| format!("creating TUN device {name} (needs root)"))
}

/// Reads packets from `from` and hands them to the scheduler of their direction.
fn reader(mut from: impl Read + Send + 'static, to: mpsc::SyncSender<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
}

/// Runs one direction: packets in from `rx`, out to `to` when the link delivers them.
fn scheduler(
    mut link: Link,
    rx: mpsc::Receiver<Vec<u8>>,
    mut to: impl Write + Send + 'static,
    stats: Arc<Mutex<LinkStats>>,
) {
    std::thread::spawn(move || loop {
        let now = Instant::now();
        while let Some(p) = link.pop_due(now) {
            let _ = to.write(&p);
        }
        let wait = link.next_due().map_or(Duration::from_millis(100), |t| {
            t.saturating_duration_since(now)
        });
        match rx.recv_timeout(wait) {
            Ok(p) => {
                link.offer(Instant::now(), p);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        *stats.lock().expect("stats lock") = link.stats();
    });
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rate_bps = (args.rate_mbit * 1e6) as u64;
    let delay = Duration::from_secs_f64(args.rtt_ms / 2000.0);
    let bdp = (rate_bps as f64 / 8.0 * args.rtt_ms / 1000.0) as usize;
    let config = LinkConfig {
        delay,
        rate_bps,
        loss: args.loss,
        queue_bytes: args.queue_kib.map_or(bdp.max(64 * 1024), |k| k * 1024),
    };
    let (a_read, a_write) = device(&args.a)?.split();
    let (b_read, b_write) = device(&args.b)?.split();
    let stats: [Arc<Mutex<LinkStats>>; 2] = Default::default();
    for ((from, to, seed), stats) in [
        (a_read, b_write, args.seed),
        (b_read, a_write, args.seed + 1),
    ]
    .into_iter()
    .zip(&stats)
    {
        let (tx, rx) = mpsc::sync_channel(4096);
        reader(from, tx);
        scheduler(Link::new(config, seed), rx, to, Arc::clone(stats));
    }
    println!("ready");
    std::io::stdout().flush()?;
    // Statistics until stdin closes (the script holds it open for as long as the link lives).
    let (eof_tx, eof_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = eof_tx.send(());
    });
    let mut last_report = Instant::now();
    loop {
        let ended = eof_rx.recv_timeout(Duration::from_millis(200)).is_ok();
        if ended
            || (args.report_secs > 0.0 && last_report.elapsed().as_secs_f64() >= args.report_secs)
        {
            for (name, s) in ["a->b", "b->a"].iter().zip(&stats) {
                let s = *s.lock().expect("stats lock");
                eprintln!(
                    "linkemu {name}: {} delivered, {} lost, {} dropped at the queue",
                    s.delivered, s.lost, s.queue_drops
                );
            }
            last_report = Instant::now();
        }
        if ended {
            return Ok(());
        }
    }
}
