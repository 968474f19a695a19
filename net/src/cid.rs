//! The connection IDs Quire's endpoints hand out.
//!
//! quinn's default generator makes 8-byte IDs of which only 3 bytes are random; the other 5
//! are a keyed hash, so that short packets with made-up IDs can be dropped unanswered. The
//! IDs a connection hands out are checked against those in use, but the one a stateless
//! Retry picks is not (quinn-proto 0.11.19, `Endpoint::retry`), and the server answers every
//! scanner's first packet with a Retry (see the server's gate). With 9,000 scanners connected,
//! about 45,000 IDs are in use (five per connection): one Retry in about 370 picked one of
//! them, the scanner's next packets went to that other connection, which dropped them, and
//! its handshake timed out 10 s later. The ten-thousand-scanner load test lost 8 to 16 of
//! 9,000 connects that way against an otherwise idle server (docs/PERFORMANCE.md, "Connects
//! that timed out").
//!
//! So IDs are 8 random bytes: at that fleet size a Retry meets an ID in use about once in
//! 2^48. Packets with an ID no connection holds now get a stateless reset (at most one per
//! 20 ms, each smaller than the packet that caused it) instead of silence.

use quinn::{ConnectionIdGenerator, EndpointConfig};
use quinn_proto::RandomConnectionIdGenerator;

/// Bytes in a connection ID Quire hands out, every one of them random.
pub const CID_LEN: usize = 8;

/// A generator of the connection IDs Quire's endpoints hand out.
pub fn generator() -> Box<dyn ConnectionIdGenerator> {
    Box::new(RandomConnectionIdGenerator::new(CID_LEN))
}

/// quinn's endpoint settings with Quire's connection IDs: for every endpoint, server or
/// client, UDP or tunnelled over TCP.
pub fn endpoint_config() -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config.cid_generator(generator);
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Half a million IDs, about ten fleets' worth in use at once, without one repeated. With
    /// quinn's default (3 random bytes) about 7,400 of them would repeat.
    #[test]
    fn ids_do_not_repeat_at_fleet_scale() {
        let mut g = generator();
        assert_eq!(g.cid_len(), CID_LEN);
        let mut seen = HashSet::new();
        for _ in 0..500_000 {
            let id = g.generate_cid();
            assert_eq!(id.len(), CID_LEN);
            assert!(
                seen.insert(id.to_vec()),
                "connection ID {id} handed out twice"
            );
        }
    }
}
