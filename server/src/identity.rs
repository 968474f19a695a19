//! The server's TLS identity: a certificate chain and key from files (with the trust anchor
//! that scanners' credentials carry), or a generated development certificate; the QUIC server
//! configuration built from it, whose certificate can be swapped while connections live
//! (SIGHUP). 0-RTT is off: every Quire request changes state, and replayable early data must
//! never carry one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use quire_codecs::wire::ALPN;
use quire_net::tls::{provider, TlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the identity comes from, so that it can be read again.
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// `[tls] cert`, `key` and optionally `ca`.
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: Option<PathBuf>,
    },
    /// The generated development certificate in this directory.
    Dev(PathBuf),
}

impl IdentitySource {
    /// What `config` names: its `[tls]` files, or the development certificate in the data
    /// directory.
    pub fn of(config: &crate::config::ServerConfig) -> IdentitySource {
        match &config.tls {
            Some(files) => IdentitySource::Files {
                cert: files.cert.clone(),
                key: files.key.clone(),
                ca: files.ca.clone(),
            },
            None => IdentitySource::Dev(config.data_dir.join("tls")),
        }
    }
}

/// A certificate chain and its key, in PEM, and the trust anchor clients pin.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    key_pem: String,
    /// `[tls] ca`: the CA certificate scanners trust, so that a renewed certificate from the
    /// same CA keeps working. Without it they pin the server's own certificate.
    anchor_pem: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity { key: <redacted> }")
    }
}

impl Identity {
    /// Reads the identity from where `source` says.
    pub fn read(source: &IdentitySource) -> Result<Identity, TlsError> {
        match source {
            IdentitySource::Files { cert, key, ca } => {
                let mut id = Self::load(cert, key)?;
                if let Some(ca) = ca {
                    let pem = std::fs::read_to_string(ca).map_err(io_err(ca))?;
                    pem_certs(&pem, ca)?;
                    id.anchor_pem = Some(pem);
                }
                Ok(id)
            }
            IdentitySource::Dev(dir) => Self::dev(dir),
        }
    }

    /// Loads a PEM certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            cert_pem: std::fs::read_to_string(cert).map_err(io_err(cert))?,
            key_pem: std::fs::read_to_string(key).map_err(io_err(key))?,
            anchor_pem: None,
        })
    }

    /// Loads the development identity from `dir`, generating it on first use: a self-signed
    /// certificate for `localhost` and `127.0.0.1`, its key written with mode 0600.
    pub fn dev(dir: &Path) -> Result<Identity, TlsError> {
        let cert = dir.join("dev-cert.pem");
        let key = dir.join("dev-key.pem");
        if cert.exists() && key.exists() {
            return Self::load(&cert, &key);
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
        let id = Identity {
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
            anchor_pem: None,
        };
        quire_net::credential::write_private(&key, id.key_pem.as_bytes()).map_err(io_err(&key))?;
        std::fs::write(&cert, &id.cert_pem).map_err(io_err(&cert))?;
        Ok(id)
    }

    /// What credentials and enrollment tokens pin: the CA if one is configured, else the
    /// server's own certificate.
    pub fn trust_anchor_pem(&self) -> &str {
        self.anchor_pem.as_deref().unwrap_or(&self.cert_pem)
    }

    /// The chain the server presents: its own, then the trust anchor if that is not in it
    /// already (so that an enrolling scanner, which knows only the anchor's fingerprint,
    /// receives the anchor itself to keep).
    fn presented_chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let mut chain = pem_certs(&self.cert_pem, Path::new("tls.cert"))?;
        if let Some(anchor) = &self.anchor_pem {
            for cert in pem_certs(anchor, Path::new("tls.ca"))? {
                if !chain.contains(&cert) {
                    chain.push(cert);
                }
            }
        }
        Ok(chain)
    }

    fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let key =
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|_| TlsError::Pem {
                path: "tls.key".into(),
                what: "private key",
            })?;
        Ok(Arc::new(CertifiedKey::from_der(
            self.presented_chain()?,
            key,
            &provider(),
        )?))
    }
}

fn pem_certs(pem: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = || TlsError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
    };
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    Ok(certs)
}

/// The certificate every new handshake gets; [`CertResolver::replace`] swaps it without
/// touching connections already established.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(id: &Identity) -> Result<CertResolver, TlsError> {
        Ok(CertResolver {
            current: RwLock::new(id.certified_key()?),
        })
    }

    /// Checks `id` (key matches certificate, PEM parses) and makes it the one new handshakes
    /// get. On error the current certificate stays.
    pub fn replace(&self, id: &Identity) -> Result<(), TlsError> {
        let key = id.certified_key()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The certificate in use and where to read it again: what SIGHUP and `tls.reload` use.
#[derive(Debug)]
pub struct TlsReloader {
    pub certs: Arc<CertResolver>,
    pub source: IdentitySource,
}

impl TlsReloader {
    /// Reads the certificate and key again (renewed files) and gives them to every new
    /// handshake; connections already established keep theirs. On error (unreadable file, a
    /// key that does not match the certificate) the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let identity = Identity::read(&self.source)?;
        self.certs.replace(&identity)?;
        tracing::info!(source = ?self.source, "TLS certificate reloaded");
        Ok(())
    }
}

/// The TLS configuration of the TCP port (QUIC tunnelled for networks that drop UDP, see
/// `quire_net::tunnel`): TLS 1.3 or 1.2, ALPN `quire-tcp/1` required, the same certificate.
pub fn tcp_server_config(certs: Arc<CertResolver>) -> Result<rustls::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    tls.alpn_protocols = vec![quire_net::tunnel::ALPN_TCP.to_vec()];
    tls.max_early_data_size = 0;
    Ok(tls)
}

/// The QUIC server configuration: TLS 1.3 only, ALPN `quire/1` required, no 0-RTT, the
/// certificate from `certs`.
pub fn server_config(certs: Arc<CertResolver>) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}
