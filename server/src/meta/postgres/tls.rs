//! How a node reaches PostgreSQL, with or without TLS.
//!
//! With `[meta] ca`, every connection is TLS (`sslmode=require`) and the server's certificate
//! is checked against that CA and the host name (what libpq calls `verify-full`), so the
//! database may be across a network. Without it, connections are not encrypted, so they may
//! only stay on this machine: a Unix socket or a loopback address. Page names and digests are
//! document metadata and never cross a network in clear.

use std::path::Path;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::meta::MetaError;

/// The connection settings and the TLS connector every connection of a node uses.
#[derive(Clone)]
pub(super) struct Dial {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// A connection's stream (TLS, or plain when the connector is not asked to encrypt).
pub(super) type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

impl Dial {
    /// Settings for `config` (describing the database as `place`), with TLS when `ca` names
    /// the CA file that issued the server's certificate.
    pub(super) fn new(
        mut config: tokio_postgres::Config,
        ca: Option<&Path>,
        place: &str,
    ) -> Result<Dial, MetaError> {
        if config.get_hosts().is_empty() {
            return Err(MetaError::Db(
                "[meta] url names no host: give host=/run/postgresql (a socket directory) or \
                 127.0.0.1"
                    .into(),
            ));
        }
        let tls = match ca {
            Some(path) => {
                if config.get_ssl_mode() == SslMode::Disable {
                    return Err(MetaError::Db(
                        "[meta] url says sslmode=disable, but [meta] ca asks for TLS: remove one"
                            .into(),
                    ));
                }
                if config
                    .get_hosts()
                    .iter()
                    .any(|h| matches!(h, Host::Unix(_)))
                {
                    return Err(MetaError::Db(format!(
                        "[meta] ca is set, but {place} is a Unix socket, which carries no TLS: \
                         give the database's host name, or drop [meta] ca"
                    )));
                }
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    MetaError::Db(format!(
                        "[meta] ca {}: {e}: it should be the PEM file of the CA that issued the \
                         database server's certificate",
                        path.display()
                    ))
                })?;
                let tls = quire_net::tls::service_client_config(&pem, &path.display().to_string())
                    .map_err(|e| MetaError::Db(format!("[meta] ca: {e}")))?;
                config.ssl_mode(SslMode::Require);
                tls
            }
            None => {
                refuse_cleartext_network(&config, place)?;
                config.ssl_mode(SslMode::Disable);
                // Never used to encrypt (sslmode=disable); the pool wants one connector type.
                quire_net::tls::service_client_config_empty()
            }
        };
        Ok(Dial {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// One connection outside the pool (for listening, and for session locks).
    pub(super) async fn connect(
        &self,
    ) -> Result<(Client, Connection<Socket, Stream>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// Without TLS the database must be on this machine.
fn refuse_cleartext_network(config: &tokio_postgres::Config, place: &str) -> Result<(), MetaError> {
    for host in config.get_hosts() {
        let local = match host {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        };
        if !local {
            return Err(MetaError::Db(format!(
                "[meta] url points at {place}, across a network, without TLS: set [meta] ca to \
                 the PEM file of the CA that issued the database server's certificate (the \
                 connection is then encrypted and the certificate checked against it and the \
                 host name), or run the database on the node (a Unix socket or loopback)"
            )));
        }
    }
    Ok(())
}
