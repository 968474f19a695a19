//! Reaching a server named as operators write it (`host:port`, parsed by
//! [`quire_net::address`]): a name is resolved and every address it has is tried. Several
//! nodes of one deployment may be named at once (`a:4433,b:4433`): each client starts at one
//! chosen at random, so a fleet spreads over them, and moves on to the next when one cannot
//! be reached.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

pub use quire_net::address::ServerAddress;

use crate::ClientError;

/// How long an attempt has before the next address is tried beside it (RFC 8305's
/// connection attempt delay).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// How long a name lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `server` as `host:port`; a malformed one is a [`ClientError::Connect`] naming it.
pub fn parse(server: &str) -> Result<ServerAddress, ClientError> {
    ServerAddress::parse(server).map_err(|message| ClientError::Connect {
        addr: server.into(),
        message,
    })
}

/// Every address the host has (an IP address is its own).
pub async fn resolve(server: &ServerAddress) -> Result<Vec<SocketAddr>, ClientError> {
    if let Some(ip) = server.ip() {
        return Ok(vec![SocketAddr::new(ip, server.port)]);
    }
    let failed = |message: String| ClientError::Connect {
        addr: format!("{}:{}", server.host, server.port),
        message,
    };
    let found = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((server.host.as_str(), server.port)),
    )
    .await
    .map_err(|_| failed(format!("no DNS answer for {} within 10 s", server.host)))?
    .map_err(|e| failed(format!("cannot resolve {}: {e}", server.host)))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(failed(format!("{} has no addresses", server.host)));
    }
    Ok(addrs)
}

/// Where to connect: an address and the name its certificate must carry.
pub type Target = (SocketAddr, String);

/// Every address of every server `servers` names (one `host:port`, or several separated by
/// commas), each with the TLS name to check (`fallback` for an IP address), beginning at a
/// server chosen at random and going round from there. A server whose name does not resolve
/// is left out while another one does.
pub async fn resolve_all(servers: &str, fallback: &str) -> Result<Vec<Target>, ClientError> {
    let mut groups: Vec<Vec<Target>> = Vec::new();
    let mut last = None;
    for one in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let server = parse(one)?;
        match resolve(&server).await {
            Ok(addrs) => {
                let name = server.tls_name(fallback).to_string();
                groups.push(addrs.into_iter().map(|a| (a, name.clone())).collect());
            }
            Err(e) => last = Some(e),
        }
    }
    if groups.is_empty() {
        return Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: servers.to_string(),
            message: "no server address given (host:port, or several separated by commas)".into(),
        }));
    }
    let mut pick = [0u8; 8];
    getrandom::fill(&mut pick).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let start = (u64::from_le_bytes(pick) % groups.len() as u64) as usize;
    groups.rotate_left(start);
    Ok(groups.into_iter().flatten().collect())
}

/// Runs `attempt` on each of `addrs` in order, starting the next one [`ATTEMPT_DELAY`] after
/// the last (or at once when it fails), and returns the first success. Only failures to reach
/// an address move on: a refusal or protocol error from a server that answered is returned
/// as it is. With no success, the last failure.
pub async fn first_to_connect<A, T, F, Fut>(addrs: &[A], attempt: F) -> Result<T, ClientError>
where
    A: Clone,
    F: Fn(A) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut rest = addrs.iter().cloned();
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
    fn a_malformed_address_is_a_connect_error_naming_it() {
        let e = parse("ingest.example.com").unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }));
        let e = e.to_string();
        assert!(
            e.contains("ingest.example.com") && e.contains("host:port"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_name_resolves_to_its_addresses_and_an_unknown_one_says_so() {
        let local = parse("localhost:4433").unwrap();
        let addrs = resolve(&local).await.unwrap();
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 4433));
        let unknown = parse("no-such-host.invalid:4433").unwrap();
        let e = resolve(&unknown).await.unwrap_err().to_string();
        assert!(e.contains("no-such-host.invalid"), "{e}");
    }

    #[tokio::test]
    async fn several_servers_are_all_tried_from_a_random_one() {
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..64 {
            let t = resolve_all("127.0.0.1:1, 127.0.0.2:2,127.0.0.3:3", "localhost")
                .await
                .unwrap();
            let mut ports: Vec<u16> = t.iter().map(|(a, _)| a.port()).collect();
            firsts.insert(ports[0]);
            // Round from the first: 1,2,3 / 2,3,1 / 3,1,2.
            let at = ports.iter().position(|p| *p == 1).unwrap();
            ports.rotate_left(at);
            assert_eq!(ports, [1, 2, 3]);
            assert!(t.iter().all(|(_, name)| name == "localhost"));
        }
        assert_eq!(firsts.len(), 3, "the fleet would not spread: {firsts:?}");
        // One name that does not resolve is left out while another one does.
        let t = resolve_all("no-such-host.invalid:1,127.0.0.1:9", "x")
            .await
            .unwrap();
        assert_eq!(t, vec![("127.0.0.1:9".parse().unwrap(), "x".to_string())]);
        let e = resolve_all(" , ", "x").await.unwrap_err().to_string();
        assert!(e.contains("no server address"), "{e}");
        assert!(
            resolve_all("a:1,b", "x").await.is_err(),
            "a malformed one is refused"
        );
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
            if a.ip() == "127.0.0.1".parse::<std::net::IpAddr>().unwrap() {
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
