//! Server addresses as operators write them: `host:port`, `[v6]:port` or `ip:port`. The host,
//! when it is a name, is what the server's certificate must carry. Parsing only: resolving
//! and connecting are the client's.

use std::net::IpAddr;

/// A server's `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    /// Parses `host:port`, `[v6]:port` or `ip:port`; the error says what a good one looks like.
    pub fn parse(s: &str) -> Result<ServerAddress, String> {
        let bad = |why: &str| {
            format!(
                "{why}: write the server as host:port, e.g. ingest.example.com:4433, \
                 127.0.0.1:4433 or [::1]:4433"
            )
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(|| bad("an unclosed ["))?,
            None if host.contains(':') => return Err(bad("an IPv6 address needs brackets")),
            None => host,
        };
        if host.is_empty() || host.len() > 253 {
            return Err(bad("the host is empty or longer than 253 bytes"));
        }
        if host.parse::<IpAddr>().is_err()
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(bad("the host is neither an IP address nor a DNS name"));
        }
        Ok(ServerAddress {
            host: host.into(),
            port,
        })
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The name the server's certificate is checked against: the host name, or for an IP
    /// address `fallback` (a credential's `server_name`).
    pub fn tls_name<'a>(&'a self, fallback: &'a str) -> &'a str {
        match self.ip() {
            Some(_) => fallback,
            None => &self.host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_operators_write_them() {
        let a = ServerAddress::parse("ingest.example.com:4433").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("ingest.example.com", 4433));
        assert_eq!(a.tls_name("localhost"), "ingest.example.com");
        let v4 = ServerAddress::parse("10.0.0.7:4433").unwrap();
        assert_eq!(v4.tls_name("ingest.internal"), "ingest.internal");
        let v6 = ServerAddress::parse("[::1]:4433").unwrap();
        assert_eq!(v6.ip(), Some("::1".parse().unwrap()));
        for bad in [
            "ingest.example.com",
            "host:99999",
            "::1:4433",
            "[::1:4433",
            ":4433",
            "bad host:4433",
            "überall.example:4433",
        ] {
            let e = ServerAddress::parse(bad).unwrap_err();
            assert!(e.contains("host:port"), "{bad}: {e}");
        }
        assert!(ServerAddress::parse(&format!("{}:1", "a".repeat(254))).is_err());
    }
}
