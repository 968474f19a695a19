//! The server's TLS identity: a certificate chain and key from files, or a generated
//! development certificate; and the QUIC server configuration built from it. 0-RTT is off:
//! every Quire request changes state, and replayable early data must never carry one.

use std::path::Path;
use std::sync::Arc;

use quire_codecs::wire::ALPN;
use quire_net::tls::{provider, TlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A certificate chain and its key, in PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity { key: <redacted> }")
    }
}

impl Identity {
    /// Loads a PEM certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            cert_pem: std::fs::read_to_string(cert).map_err(io_err(cert))?,
            key_pem: std::fs::read_to_string(key).map_err(io_err(key))?,
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
        };
        quire_net::credential::write_private(&key, id.key_pem.as_bytes()).map_err(io_err(&key))?;
        std::fs::write(&cert, &id.cert_pem).map_err(io_err(&cert))?;
        Ok(id)
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::Pem {
                path: "certificate".into(),
                what: "certificate",
            })?;
        if certs.is_empty() {
            return Err(TlsError::Pem {
                path: "certificate".into(),
                what: "certificate",
            });
        }
        Ok(certs)
    }
}

/// The QUIC server configuration: TLS 1.3 only, ALPN `quire/1` required, no 0-RTT.
pub fn server_config(id: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).map_err(|_| TlsError::Pem {
        path: "key".into(),
        what: "private key",
    })?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(id.chain()?, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}
