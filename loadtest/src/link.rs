//! One direction of an emulated WAN link, as a pure model with no sockets and no clock of
//! its own: packets are offered at a time, and leave at the time the link would deliver
//! them. The `linkemu` binary drives two of these between TUN devices; tests drive them
//! with made-up times.
//!
//! The model is a bottleneck with a drop-tail queue: a packet waits for the packets before
//! it to be serialised at `rate_bps`, then for its own serialisation, then for the one-way
//! propagation `delay`. A packet that would push the queue past `queue_bytes` is dropped,
//! and any packet is lost with probability `loss` (independently, as random loss on a radio
//! or a congested peering link is usually modelled).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The shape of one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay (half the round-trip time of a symmetric link).
    pub delay: Duration,
    /// Bottleneck rate in bits per second; 0 means unlimited.
    pub rate_bps: u64,
    /// Probability that a packet is lost, 0.0 to 1.0.
    pub loss: f64,
    /// The most bytes waiting to be serialised before new packets are dropped.
    pub queue_bytes: usize,
}

/// What happened to an offered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Lost at random.
    Lost,
    /// Dropped at the tail of a full queue.
    QueueFull,
}

/// Counts since the link was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub delivered: u64,
    pub lost: u64,
    pub queue_drops: u64,
}

/// One direction of the link.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    /// Packets in flight, in order of delivery (each leaves after the one before it).
    in_flight: VecDeque<(Instant, Vec<u8>)>,
    /// When the bottleneck finishes serialising what it has been given.
    busy_until: Option<Instant>,
    rng: fastrand::Rng,
    stats: LinkStats,
}

impl Link {
    /// A link whose random losses follow `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Link {
        Link {
            config,
            in_flight: VecDeque::new(),
            busy_until: None,
            rng: fastrand::Rng::with_seed(seed),
            stats: LinkStats::default(),
        }
    }

    /// Time to serialise `len` bytes at the bottleneck rate.
    fn serialise(&self, len: usize) -> Duration {
        match self.config.rate_bps {
            0 => Duration::ZERO,
            r => Duration::from_nanos((len as u64 * 8).saturating_mul(1_000_000_000) / r),
        }
    }

    /// Bytes still waiting to be serialised at `now`.
    pub fn backlog_bytes(&self, now: Instant) -> usize {
        match (self.busy_until, self.config.rate_bps) {
            (Some(t), r) if t > now && r > 0 => {
                ((t - now).as_nanos() * u128::from(r) / 8 / 1_000_000_000) as usize
            }
            _ => 0,
        }
    }

    /// Offers a packet to the link at `now`.
    pub fn offer(&mut self, now: Instant, packet: Vec<u8>) -> Offer {
        if self.config.loss > 0.0 && self.rng.f64() < self.config.loss {
            self.stats.lost += 1;
            return Offer::Lost;
        }
        if self.backlog_bytes(now) + packet.len() > self.config.queue_bytes {
            self.stats.queue_drops += 1;
            return Offer::QueueFull;
        }
        let start = self.busy_until.map_or(now, |t| t.max(now));
        let done = start + self.serialise(packet.len());
        self.busy_until = Some(done);
        self.in_flight.push_back((done + self.config.delay, packet));
        Offer::Queued
    }

    /// When the next packet leaves the link, if any is in flight.
    pub fn next_due(&self) -> Option<Instant> {
        self.in_flight.front().map(|(t, _)| *t)
    }

    /// The next packet, if it has left the link by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_due()? <= now {
            self.stats.delivered += 1;
            self.in_flight.pop_front().map(|(_, p)| p)
        } else {
            None
        }
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(loss: f64) -> LinkConfig {
        LinkConfig {
            delay: Duration::from_millis(20),
            rate_bps: 100_000_000,
            loss,
            queue_bytes: 64 * 1024,
        }
    }

    #[test]
    fn a_packet_arrives_after_its_serialisation_and_the_delay() {
        let t0 = Instant::now();
        let mut link = Link::new(config(0.0), 1);
        assert_eq!(link.offer(t0, vec![0; 1250]), Offer::Queued);
        // 1,250 bytes at 100 Mbit/s take 100 µs.
        let due = t0 + Duration::from_micros(100) + Duration::from_millis(20);
        assert_eq!(link.next_due(), Some(due));
        assert_eq!(link.pop_due(due - Duration::from_micros(1)), None);
        assert_eq!(link.pop_due(due).map(|p| p.len()), Some(1250));
    }

    #[test]
    fn back_to_back_packets_leave_at_the_bottleneck_rate() {
        let t0 = Instant::now();
        let mut link = Link::new(config(0.0), 1);
        for _ in 0..10 {
            link.offer(t0, vec![0; 1250]);
        }
        let mut last = None;
        let mut gaps = Vec::new();
        while let Some(due) = link.next_due() {
            link.pop_due(due).unwrap();
            if let Some(l) = last {
                gaps.push(due - l);
            }
            last = Some(due);
        }
        assert_eq!(gaps.len(), 9);
        assert!(
            gaps.iter().all(|g| *g == Duration::from_micros(100)),
            "{gaps:?}"
        );
    }

    #[test]
    fn a_full_queue_drops_at_the_tail() {
        let t0 = Instant::now();
        let mut link = Link::new(config(0.0), 1);
        let mut queued = 0;
        for _ in 0..100 {
            if link.offer(t0, vec![0; 1250]) == Offer::Queued {
                queued += 1;
            }
        }
        // 64 KiB of queue holds 52 packets of 1,250 bytes.
        assert_eq!(queued, 52);
        assert_eq!(link.stats().queue_drops, 48);
        // Once the queue has drained, packets are taken again.
        assert_eq!(
            link.offer(t0 + Duration::from_millis(10), vec![0; 1250]),
            Offer::Queued
        );
    }

    #[test]
    fn random_loss_takes_about_its_share_and_follows_the_seed() {
        let t0 = Instant::now();
        let run = |seed| {
            let mut link = Link::new(
                LinkConfig {
                    rate_bps: 0,
                    queue_bytes: usize::MAX,
                    ..config(0.02)
                },
                seed,
            );
            for _ in 0..100_000 {
                link.offer(t0, vec![0; 10]);
            }
            link.stats().lost
        };
        let lost = run(7);
        assert!((1_700..2_300).contains(&lost), "{lost} of 100,000 at 2 %");
        assert_eq!(run(7), lost);
    }
}
