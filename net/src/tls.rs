//! TLS 1.3 for QUIC: the client's trust in the server (a CA file or a pinned certificate) and
//! what both ends share (the crypto provider, fingerprints, errors). 0-RTT is off on both sides: every Quire request changes state,
//! and replayable early data must never carry one.

use std::path::PathBuf;
use std::sync::Arc;

use quire_codecs::wire::ALPN;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

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
    Generate(String),
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

/// The one crypto provider both ends use (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The QUIC client configuration trusting exactly the certificates in `ca_pem`.
pub fn client_config(ca_pem: &str, alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
    let tls = rustls_client(ca_pem, alpn, &[&rustls::version::TLS13])?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// The TLS configuration of a tunnel over TCP (`crate::tunnel`): the same trust, TLS 1.3 or
/// 1.2 (what middleboxes on the way may insist on), ALPN `quire-tcp/1`.
pub fn tcp_client_config(ca_pem: &str) -> Result<rustls::ClientConfig, TlsError> {
    rustls_client(
        ca_pem,
        crate::tunnel::ALPN_TCP,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

fn rustls_client(
    ca_pem: &str,
    alpn: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut tls = trusting(ca_pem, "server_ca", versions)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_early_data = false;
    Ok(tls)
}

/// A TLS client configuration (TLS 1.3 or 1.2, no ALPN) trusting exactly the certificates in
/// `ca_pem` (from `source`, for messages), which checks the server's certificate against them
/// and the host name: for services Quire connects to, such as its PostgreSQL database.
pub fn service_client_config(ca_pem: &str, source: &str) -> Result<rustls::ClientConfig, TlsError> {
    trusting(
        ca_pem,
        source,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

/// A TLS client configuration that trusts nothing: for a connector the code needs but that is
/// never asked to encrypt (a database reached over a Unix socket or loopback).
pub fn service_client_config_empty() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

fn trusting(
    ca_pem: &str,
    source: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|_| TlsError::Pem {
            path: source.into(),
            what: "certificate",
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            path: source.into(),
            what: "certificate",
        });
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.enable_early_data = false;
    Ok(tls)
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

/// Trusts the certificate whose SHA-256 is `pin` (enrollment, before the device holds it):
/// either the server's own certificate, or a CA certificate the server presents in its chain,
/// in which case the server's certificate must chain to it and carry the server name, as
/// webpki checks any CA-issued certificate. Handshake signatures are still verified with the
/// server certificate's key, so only the holder of its private key passes.
#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// The certificate among `chain` whose SHA-256 is `pin`.
pub fn find_pinned<'a>(
    chain: &'a [CertificateDer<'a>],
    pin: &[u8; 32],
) -> Option<&'a CertificateDer<'a>> {
    chain.iter().find(|c| cert_fingerprint(c) == *pin)
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use subtle::ConstantTimeEq;
        if bool::from(cert_fingerprint(end_entity).ct_eq(&self.pin)) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        let Some(anchor) = find_pinned(intermediates, &self.pin) else {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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

/// The QUIC client configuration for enrollment: trusts only the pinned certificate (the
/// server's own, or a CA in its chain: see `PinnedCert`).
pub fn pinned_client_config(pin: [u8; 32]) -> Result<quinn::ClientConfig, TlsError> {
    let tls = pinned_rustls(pin, ALPN, &[&rustls::version::TLS13])?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// [`pinned_client_config`] for the tunnel over TCP (enrollment where UDP is dropped).
pub fn pinned_tcp_client_config(pin: [u8; 32]) -> Result<rustls::ClientConfig, TlsError> {
    pinned_rustls(
        pin,
        crate::tunnel::ALPN_TCP,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

fn pinned_rustls(
    pin: [u8; 32],
    alpn: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { pin, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_early_data = false;
    Ok(tls)
}
