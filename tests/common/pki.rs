//! A private CA for tests (root → intermediate → leaves for `localhost`) and reloading the
//! server's certificate with SIGHUP.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::TestServer;

/// A CA (root and intermediate) that issues leaves for `localhost`.
pub struct Pki {
    pub root_pem: String,
    pub root_der: Vec<u8>,
    pub intermediate_pem: String,
    pub intermediate: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params(&format!("{name} root"));
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let inter_key = KeyPair::generate().unwrap();
        let inter_params = ca_params(&format!("{name} intermediate"));
        let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
        Pki {
            root_pem: root.pem(),
            root_der: root.der().to_vec(),
            intermediate_pem: inter.pem(),
            intermediate: Issuer::new(inter_params, inter_key),
        }
    }

    /// A fresh key and a leaf for `localhost` from the intermediate, written as the server's
    /// chain (leaf, intermediate) and key; returns the leaf's DER.
    pub fn issue_leaf(&self, dir: &Path) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "quire ingest");
        let leaf = params.signed_by(&key, &self.intermediate).unwrap();
        std::fs::write(
            dir.join("chain.pem"),
            format!("{}{}", leaf.pem(), self.intermediate_pem),
        )
        .unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        leaf.der().to_vec()
    }
}

pub fn pem_der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}

pub fn hangup(server: &TestServer, reloads_before: usize) {
    server.signal("-HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = server.log_text();
        let done = log.matches("TLS certificate reloaded").count()
            + log.matches("TLS reload failed").count();
        if done > reloads_before {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no reload: {log}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub fn reload_count(server: &TestServer) -> usize {
    let log = server.log_text();
    log.matches("TLS certificate reloaded").count() + log.matches("TLS reload failed").count()
}
