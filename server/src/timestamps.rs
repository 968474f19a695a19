//! Time-stamping manifest signatures by the tenant's RFC 3161 time-stamp authority (TSA).
//!
//! A tenant with `timestamp_url` has every commit's signature sent to its TSA (the SHA-256
//! of the Ed25519 signature, a fresh nonce, asking for the TSA's certificate in the token);
//! the token is checked against the request (status, imprint, nonce: `quire_codecs::timestamp`)
//! and kept in the seal. A TSA that does not answer, or answers wrongly, fails the commit with
//! a retryable refusal: a tenant that asked for time-stamps gets no job committed without one.

use std::collections::HashMap;
use std::time::Duration;

use quire_codecs::manifest::Manifest;
use quire_codecs::timestamp;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// How long one request to a TSA may take.
const TSA_TIMEOUT: Duration = Duration::from_secs(10);

/// The tenants' TSAs and the HTTP client that reaches them.
#[derive(Debug, Default)]
pub(crate) struct Timestamper {
    client: Option<reqwest::Client>,
    urls: HashMap<String, String>,
}

impl Timestamper {
    /// A time-stamper for the tenants in `urls` (tenant → TSA URL).
    pub(crate) fn new(urls: HashMap<String, String>) -> Result<Timestamper, reqwest::Error> {
        if urls.is_empty() {
            return Ok(Timestamper::default());
        }
        let client = reqwest::Client::builder()
            .timeout(TSA_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // Only the configured URL: no proxy from the environment.
            .no_proxy()
            .build()?;
        Ok(Timestamper {
            client: Some(client),
            urls,
        })
    }

    /// Adds the tenant's TSA's token to `manifest`'s seal, if the tenant has a TSA. The error
    /// says what went wrong, for the operator and the scanner.
    pub(crate) async fn stamp(&self, tenant: &str, manifest: &mut Manifest) -> Result<(), String> {
        let (Some(url), Some(client)) = (self.urls.get(tenant), &self.client) else {
            return Ok(());
        };
        let seal = manifest
            .seal
            .as_mut()
            .expect("signed before it is time-stamped");
        let digest: [u8; 32] = Sha256::digest(seal.signature).into();
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let nonce = u64::from_be_bytes(nonce);
        let failed = |why: String| {
            warn!(tenant, tsa = %url, error = %why, "time-stamp failed; the commit is refused");
            format!("the time-stamp authority did not time-stamp the job ({why}); commit again later (the operator has been told)")
        };
        let mut answer = client
            .post(url)
            .header("content-type", "application/timestamp-query")
            .body(timestamp::request(&digest, nonce))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| failed(e.to_string()))?;
        let mut body = Vec::new();
        while let Some(piece) = answer.chunk().await.map_err(|e| failed(e.to_string()))? {
            if body.len() + piece.len() > timestamp::MAX_RESPONSE_LEN {
                return Err(failed("its answer is too long".into()));
            }
            body.extend_from_slice(&piece);
        }
        let (token, stamp) = timestamp::token_from_response(&body, &digest, nonce)
            .map_err(|e| failed(e.to_string()))?;
        info!(tenant, job = %manifest.job_id, gen_time_unix = stamp.gen_time_unix, serial = %stamp.serial, "signature time-stamped");
        seal.timestamp = Some(token);
        Ok(())
    }
}
