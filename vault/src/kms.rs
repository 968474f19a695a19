//! AWS KMS: one symmetric KMS key per tenant, alias `alias/quire/<tenant>`, created on first
//! use; intermediate keys are wrapped with `Encrypt` and unwrapped with `Decrypt`, the tenant
//! and key version as encryption context. A shred disables the key (every use refused at
//! once) and schedules its deletion after the shortest window KMS allows (7 days).
//!
//! Requests are the KMS JSON API signed with SigV4 by object_store's `AwsAuthorizer` over its
//! HTTP client (no AWS SDK). Credentials are static and the endpoint explicit: the client
//! never looks for instance metadata or a default endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{ClientOptions, HttpClient, HttpConnector, ReqwestConnector};
use quire_codecs::sealed::SecretKey;
use serde_json::{json, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::backend::{BackendError, KeyBackend, KeyName, MAX_WRAPPED_LEN};

/// Shortest deletion window KMS accepts, in days.
const DELETION_WINDOW_DAYS: u32 = 7;
/// Longest KMS answer read.
const MAX_RESPONSE: usize = 64 * 1024;
/// Waits before each retry of a repeatable call that failed transiently (about 4 s in all).
const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Where and as whom to reach KMS.
#[derive(Clone)]
pub struct AwsKmsOptions {
    /// e.g. `https://kms.eu-central-1.amazonaws.com`; `http://` only for a loopback test server.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for AwsKmsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    endpoint: String,
    region: String,
    credential: AwsCredential,
    client: HttpClient,
    /// Tenant → KMS key id, once resolved.
    key_ids: Mutex<HashMap<String, String>>,
}

/// The AWS KMS backend.
pub struct AwsKms {
    inner: Arc<Inner>,
    /// The HTTP client's own runtime: callers block on it from any thread, async or not.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms")
            .field("endpoint", &self.inner.endpoint)
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

impl Drop for AwsKms {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A KMS error answer: its `__type` (without namespace) and message.
#[derive(Debug)]
struct KmsError {
    kind: String,
    message: String,
}

impl KmsError {
    /// Worth another try: the service was unreachable, throttled us, or failed on its side.
    fn is_transient(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "Unreachable"
                | "ThrottlingException"
                | "KMSInternalException"
                | "DependencyTimeoutException"
        ) || self.kind.starts_with("HTTP 5")
    }

    fn into_backend(self) -> BackendError {
        let what = format!("{}: {}", self.kind, self.message);
        match self.kind.as_str() {
            "DisabledException" | "KMSInvalidStateException" | "NotFoundException" => {
                BackendError::Disabled(what)
            }
            "InvalidCiphertextException" | "IncorrectKeyException" => BackendError::Refused,
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "ValidationException" => BackendError::Denied(what),
            _ => BackendError::Unavailable(what),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> KmsError {
    KmsError {
        kind: "Unreachable".into(),
        message: e.to_string(),
    }
}

/// The alias of a tenant's key. Tenant ids are ASCII letters, digits, `_` and `-`, all
/// allowed in alias names.
fn alias(tenant: &str) -> String {
    format!("alias/quire/{tenant}")
}

fn context(name: KeyName<'_>) -> Value {
    json!({ "quire:tenant": name.tenant, "quire:key-version": name.version.to_string() })
}

impl AwsKms {
    /// A client for `options`; nothing is sent until the first key is needed.
    pub fn new(options: AwsKmsOptions) -> Result<AwsKms, BackendError> {
        let url: http::Uri = options
            .endpoint
            .parse()
            .map_err(|e| BackendError::Denied(format!("endpoint {}: {e}", options.endpoint)))?;
        let client_options = ClientOptions::new()
            .with_allow_http(url.scheme_str() == Some("http"))
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(15));
        let client = ReqwestConnector::default()
            .connect(&client_options)
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quire-kms")
            .enable_all()
            .build()
            .map_err(|e| BackendError::Unavailable(format!("starting the KMS client: {e}")))?;
        Ok(AwsKms {
            inner: Arc::new(Inner {
                endpoint: options.endpoint,
                region: options.region,
                credential: AwsCredential {
                    key_id: options.access_key_id,
                    secret_key: options.secret_access_key.to_string(),
                    token: options.session_token.map(|t| t.to_string()),
                },
                client,
                key_ids: Mutex::new(HashMap::new()),
            }),
            runtime: Some(runtime),
        })
    }

    /// Runs one KMS call to completion from synchronous code on any thread. Calls that may be
    /// repeated safely are retried on a transient failure (unreachable, throttled, a KMS-side
    /// error) after [`RETRY_DELAYS`]; creating a key or an alias is not (a lost answer would
    /// make a second key).
    fn call(&self, op: &'static str, body: Value) -> Result<Value, KmsError> {
        let repeatable = !matches!(op, "CreateKey" | "CreateAlias");
        let mut delays = RETRY_DELAYS.iter();
        loop {
            let inner = self.inner.clone();
            let rt = self.runtime.as_ref().expect("runtime lives until drop");
            let body = body.clone();
            let task = rt.spawn(async move { inner.call(op, body).await });
            let result = futures::executor::block_on(task).map_err(unavailable)?;
            match (result, delays.next()) {
                (Err(e), Some(delay)) if repeatable && e.is_transient() => {
                    tracing::debug!(op, error = %e.message, "KMS call failed; retrying");
                    std::thread::sleep(*delay);
                }
                (result, _) => return result,
            }
        }
    }

    /// The tenant's KMS key id; with `create`, makes the key and its alias if there is none.
    fn key_id(&self, tenant: &str, create: bool) -> Result<Option<String>, KmsError> {
        if let Some(id) = self.inner.key_ids.lock().expect("kms lock").get(tenant) {
            return Ok(Some(id.clone()));
        }
        let id = match self.describe(tenant)? {
            Some(id) => id,
            None if !create => return Ok(None),
            None => self.create_key(tenant)?,
        };
        self.inner
            .key_ids
            .lock()
            .expect("kms lock")
            .insert(tenant.to_string(), id.clone());
        Ok(Some(id))
    }

    fn describe(&self, tenant: &str) -> Result<Option<String>, KmsError> {
        Ok(self.describe_state(tenant)?.map(|(id, _)| id))
    }

    /// The tenant's key id and state (`Enabled`, `Disabled`, `PendingDeletion`, …).
    fn describe_state(&self, tenant: &str) -> Result<Option<(String, String)>, KmsError> {
        match self.call("DescribeKey", json!({ "KeyId": alias(tenant) })) {
            Ok(v) => Ok(v["KeyMetadata"]["KeyId"].as_str().map(|id| {
                let state = v["KeyMetadata"]["KeyState"].as_str().unwrap_or("Enabled");
                (id.to_string(), state.to_string())
            })),
            Err(e) if e.kind == "NotFoundException" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The tenant's key, only if it is enabled. KMS itself refuses a disabled key; asking
    /// first makes the refusal name the state, and holds with KMS emulators that do not.
    fn enabled_key(&self, tenant: &str) -> Result<String, BackendError> {
        match self
            .describe_state(tenant)
            .map_err(KmsError::into_backend)?
        {
            Some((id, state)) if state == "Enabled" => Ok(id),
            Some((_, state)) => Err(BackendError::Disabled(format!(
                "KMS key {} is {state}",
                alias(tenant)
            ))),
            None => Err(BackendError::Disabled(format!(
                "no KMS key {}",
                alias(tenant)
            ))),
        }
    }

    fn create_key(&self, tenant: &str) -> Result<String, KmsError> {
        let made = self.call(
            "CreateKey",
            json!({
                "Description": format!("Quire: keys of tenant {tenant}"),
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "Tags": [{ "TagKey": "quire:tenant", "TagValue": tenant }],
            }),
        )?;
        let id = made["KeyMetadata"]["KeyId"]
            .as_str()
            .ok_or_else(|| unavailable("CreateKey answered without a KeyId"))?
            .to_string();
        match self.call(
            "CreateAlias",
            json!({ "AliasName": alias(tenant), "TargetKeyId": id }),
        ) {
            Ok(_) => Ok(id),
            // Another node made the tenant's key first: use that one, drop ours (unless the
            // alias is ours after all: an earlier answer that got lost).
            Err(e) if e.kind == "AlreadyExistsException" => {
                let winner = self
                    .describe(tenant)?
                    .ok_or_else(|| unavailable("the alias vanished after it was taken"))?;
                if winner != id {
                    let _ = self.call(
                        "ScheduleKeyDeletion",
                        json!({ "KeyId": id, "PendingWindowInDays": DELETION_WINDOW_DAYS }),
                    );
                }
                Ok(winner)
            }
            Err(e) => Err(e),
        }
    }

    fn existing_key(&self, tenant: &str) -> Result<String, BackendError> {
        self.key_id(tenant, false)
            .map_err(KmsError::into_backend)?
            .ok_or_else(|| BackendError::Disabled(format!("no KMS key {}", alias(tenant))))
    }
}

impl Inner {
    async fn call(&self, op: &str, body: Value) -> Result<Value, KmsError> {
        let mut payload = serde_json::to_vec(&body).map_err(unavailable)?;
        let mut request = http::Request::builder()
            .method("POST")
            .uri(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("TrentService.{op}"))
            .body(payload.clone().into())
            .map_err(unavailable)?;
        // The request body may hold a key in clear (Encrypt): wipe our copy.
        payload.zeroize();
        AwsAuthorizer::new(&self.credential, "kms", &self.region)
            .try_authorize(&mut request, None)
            .map_err(unavailable)?;
        let response = self.client.execute(request).await.map_err(unavailable)?;
        let status = response.status();
        let bytes = response.into_body().bytes().await.map_err(unavailable)?;
        if bytes.len() > MAX_RESPONSE {
            return Err(unavailable(format!(
                "an answer of {} bytes, more than a KMS answer can be",
                bytes.len()
            )));
        }
        // A Decrypt answer holds a key in clear: parse from a buffer we wipe.
        let mut text = Zeroizing::new(bytes.to_vec());
        drop(bytes);
        let value: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        text.zeroize();
        if status.is_success() {
            return Ok(value);
        }
        let kind = value["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = value["message"]
            .as_str()
            .or_else(|| value["Message"].as_str())
            .unwrap_or("")
            .to_string();
        Err(KmsError { kind, message })
    }
}

impl KeyBackend for AwsKms {
    fn kind(&self) -> &'static str {
        "aws-kms"
    }

    fn probe(&self) -> Result<(), BackendError> {
        self.call("ListKeys", json!({ "Limit": 1 }))
            .map(drop)
            .map_err(KmsError::into_backend)
    }

    fn prepare(&self, name: KeyName<'_>) -> Result<(), BackendError> {
        self.key_id(name.tenant, true)
            .map(drop)
            .map_err(KmsError::into_backend)
    }

    fn wrap(&self, name: KeyName<'_>, key: &SecretKey) -> Result<Vec<u8>, BackendError> {
        let key_id = self.existing_key(name.tenant)?;
        let plaintext = Zeroizing::new(B64.encode(key.expose()));
        let answer = self
            .call(
                "Encrypt",
                json!({
                    "KeyId": key_id,
                    "Plaintext": plaintext.as_str(),
                    "EncryptionContext": context(name),
                }),
            )
            .map_err(KmsError::into_backend)?;
        let blob = answer["CiphertextBlob"]
            .as_str()
            .ok_or_else(|| BackendError::Unavailable("Encrypt answered without a blob".into()))?;
        let wrapped = B64
            .decode(blob)
            .map_err(|e| BackendError::Unavailable(format!("Encrypt answered a bad blob: {e}")))?;
        if wrapped.len() > MAX_WRAPPED_LEN {
            return Err(BackendError::Unavailable(format!(
                "Encrypt answered a {}-byte blob",
                wrapped.len()
            )));
        }
        Ok(wrapped)
    }

    fn unwrap(&self, name: KeyName<'_>, wrapped: &[u8]) -> Result<SecretKey, BackendError> {
        let key_id = self.enabled_key(name.tenant)?;
        let mut answer = self
            .call(
                "Decrypt",
                json!({
                    "KeyId": key_id,
                    "CiphertextBlob": B64.encode(wrapped),
                    "EncryptionContext": context(name),
                }),
            )
            .map_err(KmsError::into_backend)?;
        let mut text = match answer["Plaintext"].take() {
            Value::String(s) => Zeroizing::new(s),
            _ => {
                return Err(BackendError::Unavailable(
                    "Decrypt answered no plaintext".into(),
                ))
            }
        };
        let bytes = Zeroizing::new(
            B64.decode(text.as_bytes())
                .map_err(|_| BackendError::Refused)?,
        );
        text.zeroize();
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| BackendError::Refused)?;
        Ok(SecretKey::from_bytes(key))
    }

    fn retire(&self, _name: KeyName<'_>) -> Result<(), BackendError> {
        // One KMS key serves all of a tenant's versions; the keyring destroys the version's
        // wrapped copy, which only that key opens.
        Ok(())
    }

    fn shred(&self, tenant: &str) -> Result<(), BackendError> {
        let Some(key_id) = self.key_id(tenant, false).map_err(KmsError::into_backend)? else {
            return Ok(());
        };
        self.call("DisableKey", json!({ "KeyId": key_id }))
            .map_err(KmsError::into_backend)?;
        match self.call(
            "ScheduleKeyDeletion",
            json!({ "KeyId": key_id, "PendingWindowInDays": DELETION_WINDOW_DAYS }),
        ) {
            Ok(_) => {}
            // Already pending deletion (a shred run twice).
            Err(e) if e.kind == "KMSInvalidStateException" => {}
            Err(e) => return Err(e.into_backend()),
        }
        self.inner.key_ids.lock().expect("kms lock").remove(tenant);
        Ok(())
    }
}
