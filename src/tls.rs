//! TLS 1.3 for QUIC: the server's certificate (a generated development one by default) and
//! the client's trust in it. 0-RTT is off on both sides: every Quire request changes state,
//! and replayable early data must never carry one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quire_codecs::wire::ALPN;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("QUIC crypto: {0}")]
    Quic(String),
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
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
        ])?;
        let id = Identity {
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        };
        crate::credential::write_private(&key, id.key_pem.as_bytes()).map_err(io_err(&key))?;
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

/// The QUIC client configuration trusting exactly the certificates in `ca_pem`.
pub fn client_config(ca_pem: &str, alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|_| TlsError::Pem {
            path: "server_ca".into(),
            what: "certificate",
        })?;
        roots.add(cert)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// SHA-256 of a certificate's DER bytes: what an enrollment token pins.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}

/// The fingerprint of the first certificate in `pem`.
pub fn pem_fingerprint(pem: &str) -> Result<[u8; 32], TlsError> {
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or(TlsError::Pem {
            path: "server_ca".into(),
            what: "certificate",
        })?;
    Ok(cert_fingerprint(&cert))
}

/// PEM text of a DER certificate.
pub fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Trusts exactly the server certificate whose SHA-256 is `pin` (enrollment, before the
/// device has the certificate). Handshake signatures are still verified with that
/// certificate's key, so only the holder of its private key passes.
#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use subtle::ConstantTimeEq;
        if bool::from(cert_fingerprint(end_entity).ct_eq(&self.pin)) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The QUIC client configuration for enrollment: trusts only the pinned certificate.
pub fn pinned_client_config(pin: [u8; 32]) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { pin, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}
