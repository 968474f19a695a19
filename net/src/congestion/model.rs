//! The controller's arithmetic, free of quinn's types so that tests can drive it with made-up
//! acknowledgements and losses (no sockets, no clock).

use std::time::{Duration, Instant};

/// Packets each flow aims to keep waiting in the bottleneck queue beyond [`TOLERANCE`]. The
/// same number for every flow is what makes flows converge to equal shares: a flow's rate
/// settles where its own queued packets take the common queueing delay to drain (FAST TCP's
/// rule).
pub const ALPHA_PACKETS: u64 = 16;

/// Queueing delay beyond [`TOLERANCE`] above which another kind of flow must be filling the
/// queue (a quarter of the minimum round trip if that is more): sixteen packets from each of a
/// few scanners queue a few milliseconds on a 100 Mbit/s link.
pub const COMPETING_QUEUE: Duration = Duration::from_millis(10);

/// Queueing delay not counted as a queue: delayed acknowledgements, a busy host, jitter. It
/// keeps a LAN, where these dwarf the path's round trip, from looking congested; on a WAN it
/// is a standing queue of a few milliseconds.
pub const TOLERANCE: Duration = Duration::from_millis(5);

/// How far each round moves the window toward its target (FAST's gamma).
pub const SMOOTHING: f64 = 0.5;

/// Share of a sample interval's packets that must be lost before the loss counts as
/// congestion. Random loss on a branch-office link (up to a few percent) stays below it; a
/// buffer overrun by a window far above the path's rate does not.
pub const LOSS_CEILING: f64 = 0.10;

/// How much a round with no counted queue grows the window at once (see `Model::steer`).
pub const EMPTY_PATH_GROWTH: f64 = 1.25;

/// What an overrun leaves of the window.
pub const OVERRUN_DECREASE: f64 = 0.7;

/// A window never shrinks below this many packets.
pub const MIN_WINDOW_PACKETS: u64 = 4;

/// Nor grows past this: 8 Gbit/s across a one-second round trip.
pub const MAX_WINDOW: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Doubling each round trip until a queue forms, losses pass the ceiling or the rate
    /// stops growing.
    Startup,
    /// Window from the queueing delay (see [`Model::on_end_acks`]).
    Steady,
}

/// The state of one connection's controller.
#[derive(Debug, Clone)]
pub struct Model {
    mtu: u64,
    window: u64,
    phase: Phase,
    min_rtt: Option<Duration>,
    /// Bytes this flow aims to keep queued (see `Model::adapt_alpha`).
    alpha: u64,
    /// The mean round trip of the last interval.
    mean_rtt: Option<Duration>,
    /// The newest delivery rate, bytes per second (for metrics and startup).
    rate: Option<u64>,
    interval: Interval,
    /// Losses of packets sent before this are part of an overrun already answered.
    recovery_start: Option<Instant>,
    /// Startup's progress: the best rate so far and samples since it grew by a quarter.
    startup_best: u64,
    startup_flat: u32,
}

/// The acknowledgements and losses since the last sample, one round trip long.
#[derive(Debug, Clone, Default)]
struct Interval {
    start: Option<Instant>,
    acked: u64,
    acks: u32,
    lost: u64,
    app_limited: bool,
    /// Sum and minimum of the round trips of the packets acknowledged (with ack delay).
    rtt_sum: Duration,
    rtt_min: Option<Duration>,
}

impl Model {
    pub fn new(mtu: u16) -> Self {
        let mtu = u64::from(mtu);
        Model {
            mtu,
            window: initial_window(mtu),
            phase: Phase::Startup,
            min_rtt: None,
            alpha: ALPHA_PACKETS * mtu,
            mean_rtt: None,
            rate: None,
            interval: Interval::default(),
            recovery_start: None,
            startup_best: 0,
            startup_flat: 0,
        }
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn initial_window(&self) -> u64 {
        initial_window(self.mtu)
    }

    /// The delivery rate of the last sample interval, bytes per second.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    pub fn set_mtu(&mut self, mtu: u16) {
        self.mtu = u64::from(mtu);
        self.window = self.window.max(self.min_window());
    }

    /// One packet of `bytes` sent at `sent` was acknowledged at `now`; `min_rtt` is the path's
    /// minimum round trip so far (without ack delay).
    pub fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        min_rtt: Duration,
    ) {
        self.min_rtt = Some(min_rtt);
        let rtt = now.saturating_duration_since(sent);
        let interval = &mut self.interval;
        interval.start.get_or_insert(now);
        interval.acked += bytes;
        interval.acks += 1;
        interval.app_limited |= app_limited;
        interval.rtt_sum += rtt;
        interval.rtt_min = Some(interval.rtt_min.map_or(rtt, |r| r.min(rtt)));
        if self.phase == Phase::Startup {
            self.window += bytes;
        }
    }

    /// The end of one batch of acknowledgements. Once per round trip (at least 1 ms)
    /// the interval is closed and, in the steady phase, the window moves halfway to
    ///
    /// `window × (min_rtt + TOLERANCE) / mean_rtt + ALPHA_PACKETS`
    ///
    /// (the first term only when the mean exceeds the tolerance): a flow whose packets wait in
    /// a queue gives up what queues, then adds back its fixed share, so every flow ends with
    /// the same few packets queued and the same rate.
    pub fn on_end_acks(&mut self, now: Instant, app_limited: bool) {
        self.interval.app_limited |= app_limited;
        let (Some(start), Some(min_rtt)) = (self.interval.start, self.min_rtt) else {
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        // Startup looks for a queue at every batch, not once an interval: at its pace an
        // interval's delay doubles the overshoot.
        let queue_in_startup = self.phase == Phase::Startup
            && self.interval.acks >= 8
            && self
                .interval
                .rtt_min
                .is_some_and(|r| r > min_rtt + queue_signal(min_rtt));
        // One interval per round trip as it is now (queue included), so that each change is
        // seen before the next one is made.
        let round_trip = self.mean_rtt.unwrap_or(min_rtt).max(min_rtt);
        let interval_over = elapsed >= round_trip.max(Duration::from_millis(1));
        if !(interval_over || queue_in_startup) || self.interval.acks == 0 {
            return;
        }
        let interval = std::mem::replace(
            &mut self.interval,
            Interval {
                start: Some(now),
                ..Interval::default()
            },
        );
        let mean_rtt = interval.rtt_sum / interval.acks;
        self.mean_rtt = Some(mean_rtt);
        let rate = (interval.acked as f64 / elapsed.as_secs_f64().max(1e-6)) as u64;
        self.rate = Some(rate);
        let overrun = interval.lost as f64 > LOSS_CEILING * (interval.acked + interval.lost) as f64;
        if overrun {
            self.recovery_start = Some(now);
        }
        // An app-limited interval's rate is the application's, not the path's.
        let startup_over = self.phase == Phase::Startup
            && (overrun
                || queue_in_startup
                || (!interval.app_limited && self.rate_stopped_growing(rate)));
        match self.phase {
            Phase::Startup if startup_over => {
                self.phase = Phase::Steady;
                // Drain what startup queued: the rate times the path's own round trip.
                let drained = rate as f64 * (min_rtt + TOLERANCE).as_secs_f64() + self.alpha as f64;
                self.window = (drained as u64).clamp(self.min_window(), self.window);
            }
            Phase::Startup => {}
            Phase::Steady if overrun => {
                self.window =
                    ((self.window as f64 * OVERRUN_DECREASE) as u64).max(self.min_window());
            }
            Phase::Steady => {
                // A flow that delivered under half its window in a round trip is held back by
                // something else (the receiver's flow control, the application): more window
                // would not be used, and growing it anyway compounds without bound.
                let held_elsewhere = interval.app_limited || interval.acked < self.window / 2;
                self.steer(min_rtt, mean_rtt, held_elsewhere, interval.lost > 0);
            }
        }
    }

    /// Moves the window halfway toward its target (see [`Model::on_end_acks`]). With no
    /// counted queue at all the path has room the flows have not found: the window then grows
    /// by a quarter at once, so that a long fat path fills in a few round trips rather than a
    /// few hundred.
    fn steer(&mut self, min_rtt: Duration, mean_rtt: Duration, held: bool, lost: bool) {
        let uncounted = min_rtt + TOLERANCE;
        self.adapt_alpha(mean_rtt.saturating_sub(uncounted), min_rtt, lost);
        let window = self.window as f64;
        let alpha = self.alpha as f64;
        let next = if mean_rtt <= uncounted {
            window * EMPTY_PATH_GROWTH + alpha
        } else {
            let target = window * uncounted.as_secs_f64() / mean_rtt.as_secs_f64() + alpha;
            (1.0 - SMOOTHING) * window + SMOOTHING * target
        };
        if held && next > window {
            // Not using the window says nothing about whether more would fit.
            return;
        }
        let most = self.window.saturating_mul(2).min(MAX_WINDOW);
        self.window = (next as u64).min(most).max(self.min_window());
    }

    /// A queue longer than flows of this kind keep (see [`COMPETING_QUEUE`]) means a flow that
    /// fills the buffer until it overflows shares the path: a delay-based flow would yield
    /// nearly all of it. While that lasts, the packets this flow keeps queued grow by half a
    /// packet each loss-free round and halve at a round with losses, like half a NewReno
    /// window: four scanners together take about what two TCP flows would, so one TCP flow on
    /// the same uplink keeps over 40 % of it. When the queue is short again the flow falls
    /// back to the fixed share.
    fn adapt_alpha(&mut self, queue: Duration, min_rtt: Duration, lost: bool) {
        let base = ALPHA_PACKETS * self.mtu;
        let competing = queue > COMPETING_QUEUE.max(min_rtt / 4);
        self.alpha = match (competing, lost) {
            (true, false) => (self.alpha + self.mtu / 2).min(self.window.max(base)),
            (true, true) => (self.alpha / 2).max(base),
            (false, _) => (self.alpha / 2).max(base),
        };
    }

    /// Startup also ends after three samples in a row without a quarter's growth.
    fn rate_stopped_growing(&mut self, rate: u64) -> bool {
        if rate as f64 >= self.startup_best as f64 * 1.25 {
            self.startup_best = rate;
            self.startup_flat = 0;
            false
        } else {
            self.startup_flat += 1;
            self.startup_flat >= 3
        }
    }

    /// Packets sent at or before `sent` were lost (`lost_bytes` in all), or the peer marked
    /// congestion (ECN, `lost_bytes` 0, counted as one packet).
    pub fn on_congestion(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        lost_bytes: u64,
    ) {
        if persistent {
            // Nothing got through for several round trips: start over from a small window.
            self.window = self.min_window();
            self.phase = Phase::Startup;
            self.rate = None;
            self.startup_best = 0;
            self.startup_flat = 0;
            self.recovery_start = Some(now);
            return;
        }
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        self.interval.lost += if lost_bytes == 0 {
            self.mtu
        } else {
            lost_bytes
        };
    }

    fn min_window(&self) -> u64 {
        MIN_WINDOW_PACKETS * self.mtu
    }
}

/// RFC 9002's initial window: ten packets, at least 14,720 bytes, at most two packets' worth
/// more than that.
fn initial_window(mtu: u64) -> u64 {
    14_720u64.clamp(2 * mtu, 10 * mtu)
}

/// How far the round trip must rise above its minimum before startup reads it as a queue:
/// an eighth of the minimum, within 4 to 16 ms (HyStart++'s bounds).
fn queue_signal(min_rtt: Duration) -> Duration {
    (min_rtt / 8).clamp(Duration::from_millis(4), Duration::from_millis(16))
}
