//! The controller against a simulated bottleneck: flows send packets through one drop-tail
//! queue served at a fixed rate, with a fixed propagation delay and random loss, and hear
//! of each packet one round trip later (an ack, or a loss three packets' time after it
//! would have arrived). Time moves in 100 µs steps; nothing touches a socket or a clock.

use super::model::{Model, Phase};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const MTU: u16 = 1200;
const STEP: Duration = Duration::from_micros(100);

struct Link {
    rate: f64,
    rtt: Duration,
    queue_cap: u64,
    loss: f64,
    /// A delay at the receiver that the path's minimum round trip does not show (a busy host).
    extra_delay: Duration,
}

impl Link {
    fn wan(rtt_ms: u64, mbit: f64, loss: f64) -> Link {
        let rate = mbit * 1e6 / 8.0;
        let rtt = Duration::from_millis(rtt_ms);
        Link {
            rate,
            rtt,
            queue_cap: (rate * rtt.as_secs_f64()) as u64,
            loss,
            extra_delay: Duration::ZERO,
        }
    }
}

struct Flow {
    model: Model,
    /// A loss-based competitor instead (Cubic, RFC 9438, as Linux runs it by default),
    /// standing in for a TCP flow sharing the office's uplink.
    cubic: Option<Cubic>,
    in_flight: u64,
    delivered: u64,
    /// Bytes delivered before the measuring window opened.
    delivered_at_mark: u64,
    tokens: f64,
}

struct Cubic {
    /// Window in packets.
    window: f64,
    ssthresh: f64,
    /// The window at the last loss, and when growth toward it restarted.
    w_max: f64,
    epoch: Option<Instant>,
    /// Losses of packets sent before this belong to the cut already made.
    recovery_start: Option<Instant>,
}

impl Cubic {
    const C: f64 = 0.4;
    const BETA: f64 = 0.7;

    fn on_ack(&mut self, now: Instant) {
        if self.window < self.ssthresh {
            self.window += 1.0;
            return;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let k = (self.w_max * (1.0 - Self::BETA) / Self::C).cbrt();
        let t = now.duration_since(epoch).as_secs_f64();
        let target = Self::C * (t - k).powi(3) + self.w_max;
        // At most half a packet more per ack (the window may at most grow by half a round).
        self.window += ((target - self.window) / self.window).clamp(0.0, 0.5);
    }

    fn on_loss(&mut self, now: Instant, sent: Instant) {
        if self.recovery_start.is_some_and(|t| sent <= t) {
            return;
        }
        self.w_max = self.window;
        self.window = (self.window * Self::BETA).max(2.0);
        self.ssthresh = self.window;
        self.epoch = None;
        self.recovery_start = Some(now);
    }
}

impl Flow {
    fn quire() -> Flow {
        Flow {
            model: Model::new(MTU),
            cubic: None,
            in_flight: 0,
            delivered: 0,
            delivered_at_mark: 0,
            tokens: 0.0,
        }
    }

    fn cubic() -> Flow {
        Flow {
            cubic: Some(Cubic {
                window: 10.0,
                ssthresh: f64::INFINITY,
                w_max: 10.0,
                epoch: None,
                recovery_start: None,
            }),
            ..Flow::quire()
        }
    }

    fn window(&self) -> u64 {
        match &self.cubic {
            Some(c) => (c.window * f64::from(MTU)) as u64,
            None => self.model.window(),
        }
    }

    fn on_ack(&mut self, now: Instant, sent: Instant, min_rtt: Duration) {
        match &mut self.cubic {
            Some(c) => c.on_ack(now),
            None => self.model.on_ack(now, sent, u64::from(MTU), false, min_rtt),
        }
    }

    fn on_loss(&mut self, now: Instant, sent: Instant) {
        match &mut self.cubic {
            Some(c) => c.on_loss(now, sent),
            None => self.model.on_congestion(now, sent, false, u64::from(MTU)),
        }
    }
}

/// Either an acknowledgement or a loss notice, due at a time.
struct Event {
    due: Instant,
    flow: usize,
    sent: Instant,
    lost: bool,
}

struct Sim {
    link: Link,
    flows: Vec<Flow>,
    /// Packets waiting at the bottleneck: (flow, sent time).
    queue: VecDeque<(usize, Instant)>,
    queued_bytes: u64,
    service_credit: f64,
    events: VecDeque<Event>,
    now: Instant,
    rng: u64,
    queue_drops: u64,
    sent_packets: u64,
    /// Fixed-rate senders that do not react (bytes per second), sharing the queue.
    cross_traffic: f64,
    cross_credit: f64,
}

impl Sim {
    fn new(link: Link, flows: usize) -> Sim {
        Sim {
            link,
            flows: (0..flows).map(|_| Flow::quire()).collect(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            service_credit: 0.0,
            events: VecDeque::new(),
            now: Instant::now(),
            rng: 0x9E37_79B9_7F4A_7C15,
            queue_drops: 0,
            sent_packets: 0,
            cross_traffic: 0.0,
            cross_credit: 0.0,
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*: deterministic, good enough for drop decisions.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Starts counting delivered bytes afresh (to leave startup out of a measurement).
    fn mark(&mut self) {
        for f in &mut self.flows {
            f.delivered_at_mark = f.delivered;
        }
    }

    fn goodput(&self, flow: usize, over: Duration) -> f64 {
        let f = &self.flows[flow];
        (f.delivered - f.delivered_at_mark) as f64 / over.as_secs_f64()
    }

    fn total_goodput(&self, over: Duration) -> f64 {
        (0..self.flows.len()).map(|i| self.goodput(i, over)).sum()
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        self.deliver_events(now);
        self.send(now);
        self.serve(now);
    }

    fn deliver_events(&mut self, now: Instant) {
        let mut touched = vec![false; self.flows.len()];
        while self.events.front().is_some_and(|e| e.due <= now) {
            let e = self.events.pop_front().expect("checked");
            let flow = &mut self.flows[e.flow];
            flow.in_flight -= u64::from(MTU);
            if e.lost {
                flow.on_loss(now, e.sent);
            } else {
                flow.delivered += u64::from(MTU);
                flow.on_ack(now, e.sent, self.link.rtt);
            }
            touched[e.flow] = true;
        }
        for (i, t) in touched.into_iter().enumerate() {
            if t {
                self.flows[i].model.on_end_acks(now, false);
            }
        }
    }

    /// Each flow sends while its window allows, paced as quinn paces (1.25 windows per round
    /// trip as the flow currently sees it).
    fn send(&mut self, now: Instant) {
        let srtt = self.link.rtt + self.queue_delay();
        for i in 0..self.flows.len() {
            let window = self.flows[i].window();
            let flow = &mut self.flows[i];
            flow.tokens = (flow.tokens
                + 1.25 * window as f64 * STEP.as_secs_f64() / srtt.as_secs_f64())
            .min(window as f64 / 4.0 + f64::from(MTU));
            while self.flows[i].in_flight + u64::from(MTU) <= window
                && self.flows[i].tokens >= f64::from(MTU)
            {
                self.flows[i].tokens -= f64::from(MTU);
                self.flows[i].in_flight += u64::from(MTU);
                self.sent_packets += 1;
                let lost = self.random() < self.link.loss;
                self.enqueue(i, now, lost);
            }
        }
        self.cross_credit += self.cross_traffic * STEP.as_secs_f64();
        while self.cross_credit >= f64::from(MTU) {
            self.cross_credit -= f64::from(MTU);
            self.enqueue(usize::MAX, now, false);
        }
    }

    fn enqueue(&mut self, flow: usize, now: Instant, randomly_lost: bool) {
        let flow_ref = self.flows.get(flow).is_some();
        if self.queued_bytes + u64::from(MTU) > self.link.queue_cap {
            self.queue_drops += 1;
            if flow_ref {
                self.notice_loss(flow, now);
            }
            return;
        }
        if randomly_lost {
            self.notice_loss(flow, now);
            return;
        }
        self.queue.push_back((flow, now));
        self.queued_bytes += u64::from(MTU);
    }

    /// The sender learns of a lost packet about when three later ones are acknowledged.
    fn notice_loss(&mut self, flow: usize, sent: Instant) {
        let due = sent + self.link.rtt + self.queue_delay() + 3 * self.packet_time();
        self.push_event(Event {
            due,
            flow,
            sent,
            lost: true,
        });
    }

    fn serve(&mut self, now: Instant) {
        self.service_credit += self.link.rate * STEP.as_secs_f64();
        while self.service_credit >= f64::from(MTU) {
            let Some((flow, sent)) = self.queue.pop_front() else {
                self.service_credit = self.service_credit.min(f64::from(MTU));
                break;
            };
            self.service_credit -= f64::from(MTU);
            self.queued_bytes -= u64::from(MTU);
            if flow < self.flows.len() {
                let due = now + self.link.rtt + self.link.extra_delay;
                self.push_event(Event {
                    due,
                    flow,
                    sent,
                    lost: false,
                });
            }
        }
    }

    fn push_event(&mut self, event: Event) {
        let at = self.events.partition_point(|e| e.due <= event.due);
        self.events.insert(at, event);
    }

    fn queue_delay(&self) -> Duration {
        Duration::from_secs_f64(self.queued_bytes as f64 / self.link.rate)
    }

    fn packet_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(MTU) / self.link.rate)
    }
}

fn share_of_link(sim: &Sim, over: Duration) -> f64 {
    sim.total_goodput(over) / sim.link.rate
}

#[test]
fn one_scanner_fills_a_clean_branch_office_link() {
    let mut sim = Sim::new(Link::wan(40, 100.0, 0.0), 1);
    sim.run(Duration::from_secs(2));
    assert_eq!(sim.flows[0].model.phase(), Phase::Steady);
    sim.mark();
    let drops_before = sim.queue_drops;
    sim.run(Duration::from_secs(8));
    let share = share_of_link(&sim, Duration::from_secs(8));
    assert!(share > 0.95, "used {share:.3} of the link");
    assert_eq!(
        sim.queue_drops - drops_before,
        0,
        "steady state overran the queue"
    );
}

#[test]
fn random_loss_of_two_percent_is_not_read_as_congestion() {
    for loss in [0.005, 0.02] {
        let mut sim = Sim::new(Link::wan(40, 100.0, loss), 4);
        sim.run(Duration::from_secs(2));
        sim.mark();
        sim.run(Duration::from_secs(8));
        let share = share_of_link(&sim, Duration::from_secs(8));
        // What random loss itself takes, and a little more, but nothing like Cubic's collapse.
        assert!(
            share > 0.93 - loss,
            "at {loss} loss four flows used {share:.3} of the link"
        );
    }
}

#[test]
fn four_scanners_share_a_link_without_overrunning_its_queue() {
    let mut sim = Sim::new(Link::wan(40, 100.0, 0.0), 4);
    sim.run(Duration::from_secs(3));
    sim.mark();
    let drops_before = sim.queue_drops;
    let sent_before = sim.sent_packets;
    sim.run(Duration::from_secs(10));
    let over = Duration::from_secs(10);
    assert!(share_of_link(&sim, over) > 0.95);
    let drops = (sim.queue_drops - drops_before) as f64 / (sim.sent_packets - sent_before) as f64;
    assert!(drops < 0.001, "{drops:.4} of packets dropped at the queue");
    for i in 0..4 {
        let share = sim.goodput(i, over) / sim.link.rate;
        assert!(share > 0.08, "flow {i} starved: {share:.3}");
    }
}

#[test]
fn leaves_room_for_traffic_that_does_not_back_off() {
    // Another sender pushing 60 % of the link: the scanner takes what is left, and does not
    // keep the queue overflowing.
    let mut sim = Sim::new(Link::wan(40, 100.0, 0.0), 1);
    sim.cross_traffic = 0.6 * sim.link.rate;
    sim.run(Duration::from_secs(3));
    sim.mark();
    let drops_before = sim.queue_drops;
    sim.run(Duration::from_secs(10));
    let share = sim.goodput(0, Duration::from_secs(10)) / sim.link.rate;
    assert!((0.3..=0.42).contains(&share), "took {share:.3} of the link");
    let drops = (sim.queue_drops - drops_before) as f64;
    let offered = 10.0 * sim.link.rate / f64::from(MTU);
    assert!(drops / offered < 0.01, "{drops} drops");
}

#[test]
fn a_busy_receiver_on_a_lan_does_not_starve_the_window() {
    // 1 Gbit/s, 200 µs minimum round trip, and a receiver that answers 3 ms late under load:
    // the window must cover the late answers (HEADROOM), not just the minimum round trip.
    let mut link = Link::wan(0, 1000.0, 0.0);
    link.rtt = Duration::from_micros(200);
    link.queue_cap = 1 << 20;
    link.extra_delay = Duration::from_millis(3);
    let mut sim = Sim::new(link, 1);
    sim.run(Duration::from_secs(1));
    sim.mark();
    sim.run(Duration::from_secs(2));
    let share = share_of_link(&sim, Duration::from_secs(2));
    assert!(share > 0.9, "used {share:.3} of a LAN");
}

#[test]
fn startup_exits_when_the_queue_builds() {
    let mut sim = Sim::new(Link::wan(40, 100.0, 0.0), 1);
    let bdp = sim.link.rate * 0.040;
    while sim.flows[0].model.phase() == Phase::Startup {
        sim.step();
        assert!(
            (sim.flows[0].model.window() as f64) < 6.0 * bdp,
            "startup overshot to {} bytes",
            sim.flows[0].model.window()
        );
    }
    let window = sim.flows[0].model.window() as f64;
    assert!(
        window >= bdp && window <= 2.0 * bdp,
        "left startup at {window}"
    );
}

/// Drives a lone model at a steady 10 MB/s over a clean 40 ms path until it is steady.
fn steady_model() -> (Model, Instant) {
    let min_rtt = Duration::from_millis(40);
    let mut m = Model::new(MTU);
    let mut now = Instant::now();
    for _ in 0..40 {
        for _ in 0..333 {
            m.on_ack(now, now - min_rtt, 1200, false, min_rtt);
        }
        now += min_rtt;
        m.on_end_acks(now, false);
    }
    assert_eq!(m.phase(), Phase::Steady);
    (m, now)
}

#[test]
fn losses_below_the_ceiling_leave_the_window_alone_and_an_overrun_cuts_it() {
    let min_rtt = Duration::from_millis(40);
    let (mut m, mut now) = steady_model();
    let before = m.window();
    // 2 % of an interval's packets lost: random loss, not congestion.
    for _ in 0..326 {
        m.on_ack(now, now - min_rtt, 1200, false, min_rtt);
    }
    m.on_congestion(now, now - Duration::from_millis(1), false, 7 * 1200);
    now += min_rtt;
    m.on_end_acks(now, false);
    assert!(m.window() >= before, "{before} -> {}", m.window());
    // Half of one interval's packets lost: the queue overflowed.
    let before = m.window();
    for _ in 0..166 {
        m.on_ack(now, now - min_rtt, 1200, false, min_rtt);
    }
    m.on_congestion(now, now - Duration::from_millis(1), false, 166 * 1200);
    now += min_rtt;
    m.on_end_acks(now, false);
    let cut = m.window();
    assert!(
        (cut as f64) <= before as f64 * (1.0 - (1.0 - 0.7) * 0.99),
        "{before} -> {cut}"
    );
    // Losses of packets sent before that answer are the same overrun: not counted again.
    for _ in 0..166 {
        m.on_ack(now, now - min_rtt, 1200, false, min_rtt);
    }
    m.on_congestion(now, now - 2 * min_rtt, false, 500 * 1200);
    now += min_rtt;
    m.on_end_acks(now, false);
    assert!(m.window() >= cut);
}

#[test]
fn persistent_congestion_starts_over_from_a_small_window() {
    let (mut m, now) = steady_model();
    m.on_congestion(now, now - Duration::from_millis(1), true, 100 * 1200);
    assert_eq!(m.phase(), Phase::Startup);
    assert_eq!(m.window(), 4 * 1200);
    assert_eq!(m.rate(), None);
}

#[test]
fn an_idle_sender_does_not_grow_its_window() {
    let min_rtt = Duration::from_millis(40);
    let (mut m, mut now) = steady_model();
    let before = m.window();
    for _ in 0..20 {
        m.on_ack(now, now - min_rtt, 1200, true, min_rtt);
        now += min_rtt;
        m.on_end_acks(now, true);
    }
    assert_eq!(m.window(), before);
}

/// A sender its receiver's flow control holds to less than half its window, on a clean path,
/// keeps its window: growing it each round trip (as it did) overflowed after a minute on
/// loopback and killed the connection.
#[test]
fn a_sender_held_back_by_flow_control_does_not_grow_its_window() {
    let min_rtt = Duration::from_millis(40);
    let (mut m, mut now) = steady_model();
    let before = m.window();
    for _ in 0..10_000 {
        // A quarter of the window acknowledged per round trip, none of it queued.
        for _ in 0..before / 4 / 1200 {
            m.on_ack(now, now - min_rtt, 1200, false, min_rtt);
        }
        now += min_rtt;
        m.on_end_acks(now, false);
        assert!(m.window() <= before, "{before} -> {}", m.window());
    }
}

/// A path that keeps taking more never takes the window past its ceiling.
#[test]
fn the_window_stops_at_its_ceiling() {
    let min_rtt = Duration::from_millis(40);
    let (mut m, mut now) = steady_model();
    for _ in 0..1_000 {
        // The whole window acknowledged each round trip, in 64 KB acks.
        for _ in 0..m.window().div_ceil(65_536) {
            m.on_ack(now, now - min_rtt, 65_536, false, min_rtt);
        }
        now += min_rtt;
        m.on_end_acks(now, false);
    }
    assert_eq!(m.window(), super::model::MAX_WINDOW);
}

#[test]
fn a_late_joiner_gets_an_equal_share() {
    let mut sim = Sim::new(Link::wan(40, 100.0, 0.0), 2);
    // The second flow sends nothing for the first 5 s.
    let late = std::mem::replace(&mut sim.flows[1].model, Model::new(MTU));
    sim.flows.truncate(1);
    sim.run(Duration::from_secs(5));
    sim.flows.push(Flow {
        model: late,
        ..Flow::quire()
    });
    sim.run(Duration::from_secs(5));
    sim.mark();
    sim.run(Duration::from_secs(5));
    let over = Duration::from_secs(5);
    let (a, b) = (sim.goodput(0, over), sim.goodput(1, over));
    assert!((a / b - 1.0).abs() < 0.15, "shares {a:.0} and {b:.0}");
    assert!(share_of_link(&sim, over) > 0.95);
}

#[test]
fn four_scanners_fill_a_long_fat_lossy_link() {
    // 80 ms, 1 Gbit/s, 0.5 % random loss: the second WAN case.
    let mut sim = Sim::new(Link::wan(80, 1000.0, 0.005), 4);
    sim.run(Duration::from_secs(3));
    sim.mark();
    sim.run(Duration::from_secs(4));
    let share = share_of_link(&sim, Duration::from_secs(4));
    assert!(share > 0.9, "used {share:.3} of the link");
}

#[test]
fn scanners_and_a_cubic_flow_both_keep_a_fair_part_of_the_link() {
    // A delay-based flow alone would yield nearly everything to a flow that fills the queue
    // until it overflows; the scanner must keep a useful share, and leave the other its own.
    let mut sim = Sim::new(Link::wan(40, 100.0, 0.0), 4);
    sim.flows.push(Flow::cubic());
    sim.run(Duration::from_secs(5));
    sim.mark();
    sim.run(Duration::from_secs(20));
    let over = Duration::from_secs(20);
    let quire: f64 = (0..4).map(|i| sim.goodput(i, over)).sum();
    let cubic = sim.goodput(4, over);
    let rate = sim.link.rate;
    assert!(cubic > 0.4 * rate, "the Cubic flow got {:.3}", cubic / rate);
    assert!(quire > 0.3 * rate, "four scanners got {:.3}", quire / rate);
}
