//! Signing committed jobs' manifests, and publishing the public keys that check them.
//!
//! A tenant's signing key is derived from its vault key (`quire_codecs::signed`), so a key
//! rotation brings a new signing key (`sign-N` for vault key version N) and a shred destroys
//! it. Its public key is written once to the tenant's object store the first time it signs,
//! with the time it began to sign, outside the `tenants/` prefix (so deleting or shredding the
//! tenant's documents leaves it, and manifests signed earlier stay verifiable after the vault
//! key version is retired):
//!
//! `signing/tenant/<tenant>/<version, 10 digits>.json`

use std::collections::HashSet;
use std::sync::Mutex;

use quire_codecs::manifest::Manifest;
use quire_codecs::sealed::KekRef;
use quire_codecs::signed::{self, ManifestSigner, SignedManifest};
use quire_pipeline::{Pipeline, PipelineError};
use quire_storage::StoreError;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// The wall clock in milliseconds: what a signature says a job was committed at.
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a tenant's public signing keys are listed.
pub(crate) fn key_prefix(tenant: &str) -> String {
    format!("signing/tenant/{tenant}/")
}

fn key_object(tenant: &str, version: u32) -> String {
    format!("{}{version:010}.json", key_prefix(tenant))
}

/// A published public signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PublishedKey {
    pub v: u32,
    pub tenant: String,
    pub key_id: String,
    pub public_key: String,
    /// When the key first signed (the first node to publish it wins).
    pub valid_from_unix_ms: u64,
}

/// A public key as `quire admin signing-key export` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ExportedKey {
    pub key_id: String,
    pub public_key: String,
    pub valid_from_unix_ms: u64,
    /// When the next key took over; `None` for the key in use.
    pub valid_until_unix_ms: Option<u64>,
}

/// Which keys this process has seen published, so a commit writes nothing extra after the
/// first with each key.
#[derive(Debug, Default)]
pub(crate) struct Published(Mutex<HashSet<(String, u32)>>);

/// The tenant's signing key in use (its vault key's newest version).
async fn signer(pipeline: &Pipeline, tenant: &str) -> Result<(ManifestSigner, u32), PipelineError> {
    let (kek, key) = pipeline.current_key(tenant).await?;
    Ok((
        ManifestSigner::derive(key.expose(), kek.version),
        kek.version,
    ))
}

/// Signs `manifest` of `tenant` as committed now, publishing the key first if it is new.
pub(crate) async fn sign(
    pipeline: &Pipeline,
    published: &Published,
    tenant: &str,
    manifest: &mut Manifest,
    now_unix_ms: u64,
) -> Result<(), PipelineError> {
    let (signer, version) = signer(pipeline, tenant).await?;
    publish(pipeline, published, tenant, &signer, version, now_unix_ms).await?;
    manifest.seal = Some(signer.sign(tenant, &manifest.job_id, &manifest.pages, now_unix_ms));
    Ok(())
}

async fn publish(
    pipeline: &Pipeline,
    published: &Published,
    tenant: &str,
    signer: &ManifestSigner,
    version: u32,
    now_unix_ms: u64,
) -> Result<(), PipelineError> {
    let id = (tenant.to_string(), version);
    if published.0.lock().expect("not poisoned").contains(&id) {
        return Ok(());
    }
    let record = PublishedKey {
        v: 1,
        tenant: tenant.to_string(),
        key_id: signer.key_id().to_string(),
        public_key: hex::encode(signer.public_key()),
        valid_from_unix_ms: now_unix_ms,
    };
    let json = bytes::Bytes::from(serde_json::to_vec(&record).expect("a key record serialises"));
    // The primary must have it before anything is signed; a replica that cannot take it now
    // gets it at a later commit.
    let mut everywhere = true;
    for (i, store) in pipeline.copies_for(tenant).into_iter().enumerate() {
        match store
            .put_new(&key_object(tenant, version), json.clone())
            .await
        {
            Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) if i == 0 => return Err(e.into()),
            Err(e) => {
                warn!(tenant, store = store.name(), error = %e, "cannot publish the signing key to a replica yet");
                everywhere = false;
            }
        }
    }
    if everywhere {
        published.0.lock().expect("not poisoned").insert(id);
    }
    Ok(())
}

/// The public key `derive` makes from vault key `version` of `owner`, derived again from the
/// vault; `None` if the vault has no such version (never issued, or retired).
pub(crate) async fn derived_public_key(
    pipeline: &Pipeline,
    owner: &str,
    version: u32,
    derive: impl FnOnce(&[u8; 32]) -> [u8; 32],
) -> Result<Option<[u8; 32]>, PipelineError> {
    let kek = KekRef {
        tenant: owner.into(),
        kek_id: quire_pipeline::vault::KEK_ID.into(),
        version,
    };
    match pipeline.key_named(&kek).await {
        Ok(key) => Ok(Some(derive(key.expose()))),
        Err(PipelineError::Vault(quire_pipeline::vault::VaultError::UnknownKey { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The public key of the tenant's `key_id`: derived again from the vault while it holds
/// that version, else as published (a retired version).
pub(crate) async fn public_key(
    pipeline: &Pipeline,
    tenant: &str,
    key_id: &str,
) -> Result<Option<[u8; 32]>, PipelineError> {
    let Some(version) = signed::key_version(key_id) else {
        return Ok(None);
    };
    let derive = |key: &[u8; 32]| ManifestSigner::derive(key, version).public_key();
    if let Ok(Some(key)) = derived_public_key(pipeline, tenant, version, derive).await {
        return Ok(Some(key));
    }
    let copies = pipeline.copies_for(tenant);
    for (i, store) in copies.iter().enumerate() {
        let last = i + 1 == copies.len();
        match store.get(&key_object(tenant, version)).await {
            Ok(bytes) => {
                return Ok(
                    parse_published(&bytes, tenant).and_then(|k| signed::hex32(&k.public_key).ok())
                )
            }
            Err(StoreError::NotFound(_)) if last => return Ok(None),
            Err(e) if last => return Err(e.into()),
            Err(_) => {} // a replica may have it
        }
    }
    Ok(None)
}

fn parse_published(bytes: &[u8], tenant: &str) -> Option<PublishedKey> {
    match serde_json::from_slice::<PublishedKey>(bytes) {
        Ok(k) if k.tenant == tenant && signed::key_version(&k.key_id).is_some() => Some(k),
        _ => {
            warn!(
                tenant,
                "a published signing key record does not parse; skipped"
            );
            None
        }
    }
}

/// The tenant's public signing keys, oldest first, with the periods they signed in. The key
/// in use is published first if no commit has yet.
pub(crate) async fn export(
    pipeline: &Pipeline,
    published: &Published,
    tenant: &str,
    now_unix_ms: u64,
) -> Result<Vec<ExportedKey>, PipelineError> {
    let (signer, version) = signer(pipeline, tenant).await?;
    publish(pipeline, published, tenant, &signer, version, now_unix_ms).await?;
    let store = pipeline.store_for(tenant);
    let mut keys = Vec::new();
    for object in store.list(&key_prefix(tenant)).await? {
        if let Some(k) = parse_published(&store.get(&object.key).await?, tenant) {
            keys.push(k);
        }
    }
    keys.sort_by_key(|k| signed::key_version(&k.key_id));
    let untils: Vec<Option<u64>> = keys
        .iter()
        .skip(1)
        .map(|k| Some(k.valid_from_unix_ms))
        .chain([None])
        .collect();
    Ok(keys
        .into_iter()
        .zip(untils)
        .map(|(k, until)| ExportedKey {
            key_id: k.key_id,
            public_key: k.public_key,
            valid_from_unix_ms: k.valid_from_unix_ms,
            valid_until_unix_ms: until,
        })
        .collect())
}

/// What `quire get` and `quire verify` check: the job's signed manifest. `Ok(None)` for a
/// job committed before manifests were signed.
pub(crate) async fn signed_manifest(
    pipeline: &Pipeline,
    tenant: &str,
    job_id: &str,
) -> Result<Option<SignedManifest>, PipelineError> {
    let manifest = pipeline.read_manifest(tenant, job_id).await?;
    let Some(seal) = &manifest.seal else {
        return Ok(None);
    };
    if seal.tenant != tenant {
        return Err(PipelineError::Corrupt {
            key: quire_pipeline::keys::manifest_key(tenant, job_id),
            source: quire_codecs::sealed::SealError::MalformedHeader(
                "the manifest is signed for another tenant",
            ),
        });
    }
    let public = public_key(pipeline, tenant, &seal.key_id).await?;
    Ok(Some(SignedManifest::new(
        job_id,
        &manifest.pages,
        seal,
        public,
    )))
}
