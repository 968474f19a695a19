//! Server addresses as operators write them: `host:port`, `[v6]:port` or `ip:port`. A name is
//! resolved (every address it has is tried) and is the name the server's certificate must
//! carry.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::ClientError;

/// How long an attempt has before the next address is tried beside it (RFC 8305's
/// connection attempt delay).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// How long a name lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    /// Parses `host:port`, `[v6]:port` or `ip:port`; the error says what a good one looks like.
    pub fn parse(s: &str) -> Result<ServerAddress, ClientError> {
        let bad = |why: &str| ClientError::Connect {
            addr: s.into(),
            message: format!(
                "{why}: write the server as host:port, e.g. ingest.example.com:4433, \
                 127.0.0.1:4433 or [::1]:4433"
            ),
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

    /// Every address the host has (an IP address is its own).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, ClientError> {
        if let Some(ip) = self.ip() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let failed = |message: String| ClientError::Connect {
            addr: format!("{}:{}", self.host, self.port),
            message,
        };
        let found = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| failed(format!("no DNS answer for {} within 10 s", self.host)))?
        .map_err(|e| failed(format!("cannot resolve {}: {e}", self.host)))?;
        let addrs: Vec<SocketAddr> = found.collect();
        if addrs.is_empty() {
            return Err(failed(format!("{} has no addresses", self.host)));
        }
        Ok(addrs)
    }
}

/// Runs `attempt` on each of `addrs` in order, starting the next one [`ATTEMPT_DELAY`] after
/// the last (or at once when it fails), and returns the first success. Only failures to reach
/// an address move on: a refusal or protocol error from a server that answered is returned
/// as it is. With no success, the last failure.
pub async fn first_to_connect<T, F, Fut>(addrs: &[SocketAddr], attempt: F) -> Result<T, ClientError>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut rest = addrs.iter().copied();
    let mut running = FuturesUnordered::new();
    let mut last = None;
    loop {
        if running.is_empty() {
            match rest.next() {
                Some(a) => running.push(attempt(a)),
                None => {
                    return Err(last.unwrap_or_else(|| ClientError::Connect {
                        addr: String::new(),
                        message: "no address to connect to".into(),
                    }))
                }
            }
        }
        tokio::select! {
            outcome = running.next() => match outcome {
                Some(Ok(connected)) => return Ok(connected),
                Some(Err(e @ ClientError::Connect { .. })) => {
                    last = Some(e);
                    if let Some(a) = rest.next() {
                        running.push(attempt(a));
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {}
            },
            _ = tokio::time::sleep(ATTEMPT_DELAY), if rest.len() > 0 => {
                if let Some(a) = rest.next() {
                    running.push(attempt(a));
                }
            }
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
            let e = ServerAddress::parse(bad).unwrap_err().to_string();
            assert!(e.contains("host:port"), "{bad}: {e}");
        }
        assert!(ServerAddress::parse(&format!("{}:1", "a".repeat(254))).is_err());
    }

    #[tokio::test]
    async fn a_name_resolves_to_its_addresses_and_an_unknown_one_says_so() {
        let local = ServerAddress::parse("localhost:4433").unwrap();
        let addrs = local.resolve().await.unwrap();
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 4433));
        let unknown = ServerAddress::parse("no-such-host.invalid:4433").unwrap();
        let e = unknown.resolve().await.unwrap_err().to_string();
        assert!(e.contains("no-such-host.invalid"), "{e}");
    }

    #[tokio::test]
    async fn the_first_address_that_answers_wins_and_a_refusal_is_not_retried_elsewhere() {
        let addrs: Vec<SocketAddr> = ["[::1]:1", "127.0.0.1:1", "127.0.0.2:1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        // The first never answers, the second does.
        let won = first_to_connect(&addrs, |a| async move {
            if a.is_ipv6() {
                std::future::pending::<()>().await;
            }
            if a.ip() == "127.0.0.1".parse::<IpAddr>().unwrap() {
                Ok(a)
            } else {
                Err(ClientError::Connect {
                    addr: a.to_string(),
                    message: "unreachable".into(),
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(won, addrs[1]);
        // A refusal from the first is final.
        let tried = std::sync::Mutex::new(Vec::new());
        let e = first_to_connect(&addrs, |a| {
            tried.lock().unwrap().push(a);
            async move {
                Err::<(), _>(ClientError::Refused {
                    code: quire_codecs::wire::ErrorCode::BadCredential,
                    message: "no".into(),
                })
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(e, ClientError::Refused { .. }));
        assert_eq!(tried.lock().unwrap().len(), 1);
        // All unreachable: the last failure.
        let e = first_to_connect(&addrs[1..], |a| async move {
            Err::<(), _>(ClientError::Connect {
                addr: a.to_string(),
                message: "unreachable".into(),
            })
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("127.0.0.2"), "{e}");
    }
}
