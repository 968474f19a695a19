//! Quire's congestion controller for scanners on lossy branch-office links, and for what the
//! server sends back across them (downloads with `quire get` and `deliver`).
//!
//! quinn's Cubic and NewReno read every lost packet as congestion: at 0.5 % random loss on a
//! 40 ms link they hold four scanners to a tenth of it. quinn's BBR ignores random loss but
//! overruns a drop-tail buffer of one bandwidth-delay product (in `loadtest/wan.sh` the
//! bottleneck dropped more of its packets than it delivered). This controller steers by the
//! queueing delay instead, as FAST TCP does:
//!
//! - **Startup** doubles the window each round trip until a queue shows in the round trips,
//!   losses pass [`model::LOSS_CEILING`] of an interval, or the delivery rate stops growing;
//!   then it drains to the rate times the minimum round trip plus [`model::TOLERANCE`].
//! - **Steady**: once a round trip the window moves halfway to `window × (min RTT +
//!   TOLERANCE) / mean RTT + α`, with α [`model::ALPHA_PACKETS`] packets: every flow keeps the
//!   same few packets queued, so flows converge to equal shares with a short queue. With no
//!   queue at all the window grows by [`model::EMPTY_PATH_GROWTH`] a round trip.
//! - **Loss** changes nothing until an interval loses more than [`model::LOSS_CEILING`] of its
//!   packets (random loss of a few percent is not congestion); then the window is cut to
//!   [`model::OVERRUN_DECREASE`].
//! - **A buffer-filling competitor** (a queue beyond [`model::COMPETING_QUEUE`]) lets α grow
//!   by half a packet each loss-free round and halve at a lossy one, so a TCP flow on the same
//!   uplink neither starves the scanners nor is crowded out.
//!
//! quinn paces at 1.25 windows per smoothed round trip, so the window is also the rate.
//! The arithmetic lives in [`model`], free of quinn's types, and is tested by driving it with
//! a simulated bottleneck.

pub mod model;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// The controller both ends use for what they send: [`BdpConfig`], or quinn's own where
/// `QUIRE_CONGESTION` says `bbr`, `cubic` or `newreno` (for side-by-side measurements,
/// docs/PERFORMANCE.md, "Lossy links").
pub fn factory() -> Arc<dyn ControllerFactory + Send + Sync> {
    match std::env::var("QUIRE_CONGESTION").as_deref() {
        Ok("cubic") => Arc::new(quinn::congestion::CubicConfig::default()),
        Ok("newreno") => Arc::new(quinn::congestion::NewRenoConfig::default()),
        Ok("bbr") => Arc::new(quinn::congestion::BbrConfig::default()),
        _ => Arc::new(BdpConfig),
    }
}

/// Builds a [`BdpController`] per connection; give it to
/// `TransportConfig::congestion_controller_factory`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BdpConfig;

impl ControllerFactory for BdpConfig {
    fn build(self: Arc<Self>, _now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(BdpController {
            model: model::Model::new(current_mtu),
        })
    }
}

/// A window that follows the measured bandwidth-delay product (see the module docs).
#[derive(Debug, Clone)]
pub struct BdpController {
    model: model::Model,
}

impl Controller for BdpController {
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.model.on_ack(now, sent, bytes, app_limited, rtt.min());
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        _in_flight: u64,
        app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        self.model.on_end_acks(now, app_limited);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.model
            .on_congestion(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.model.set_mtu(new_mtu);
    }

    fn window(&self) -> u64 {
        self.model.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = ControllerMetrics::default();
        metrics.congestion_window = self.model.window();
        metrics.pacing_rate = self.model.rate().map(|b| b.saturating_mul(8));
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.model.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
