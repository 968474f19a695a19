//! `[tcp]`: the TCP port that carries QUIC over TLS for scanners whose network drops UDP.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TcpSection {
    /// `host:port`, or `"off"`; absent: the QUIC address and port, over TCP.
    listen: Option<String>,
}

/// Where the TCP port listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpListen {
    /// The same address and port number as QUIC (the default: one number for firewalls).
    #[default]
    SamePort,
    At(SocketAddr),
    /// No TCP port: scanners must reach the server over UDP.
    Off,
}

impl TcpSection {
    pub(super) fn resolve(self) -> Result<TcpListen, ConfigError> {
        match self.listen.as_deref() {
            None => Ok(TcpListen::SamePort),
            Some("off") => Ok(TcpListen::Off),
            Some(s) => s
                .parse()
                .map(TcpListen::At)
                .map_err(|e| ConfigError::Invalid {
                    key: "tcp.listen".into(),
                    reason: format!(
                        "{s:?} is neither \"off\" nor an address like 0.0.0.0:443 ({e})"
                    ),
                }),
        }
    }
}
