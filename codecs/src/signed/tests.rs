use super::*;

fn pages() -> Vec<PageEntry> {
    vec![
        PageEntry {
            index: 0,
            name: "Rechnung-Müller-0001.tif".into(),
            size: 51_234,
            sha256: [0x11; 32],
        },
        PageEntry {
            index: 1,
            name: "契約書 2.pdf".into(),
            size: 7,
            sha256: [0x22; 32],
        },
    ]
}

fn signed() -> (ManifestSigner, SignedManifest) {
    let signer = ManifestSigner::derive(&[0x42; 32], 1);
    let seal = signer.sign("acme", "job-2026-11", &pages(), 1_796_000_000_123);
    let doc = SignedManifest::new("job-2026-11", &pages(), &seal, Some(signer.public_key()));
    (signer, doc)
}

fn trust(signer: &ManifestSigner) -> impl Fn(&str) -> Option<[u8; 32]> + '_ {
    move |id| (id == signer.key_id()).then(|| signer.public_key())
}

#[test]
fn a_signed_manifest_verifies_and_round_trips_as_json() {
    let (signer, doc) = signed();
    assert_eq!(doc.key_id, "sign-1");
    let parsed = SignedManifest::parse(doc.to_json().as_bytes()).unwrap();
    assert_eq!(parsed, doc);
    assert_eq!(parsed.verify(trust(&signer)).unwrap(), pages());
}

/// Changing any signed field breaks the signature: a page's name, size or digest, the job,
/// the tenant, the commit time, the key id; and a document naming a key nobody trusts is
/// refused as such.
#[test]
fn tampering_with_any_signed_field_fails() {
    let (signer, doc) = signed();
    type Change = Box<dyn Fn(&mut SignedManifest)>;
    let tampered: Vec<(&str, Change)> = vec![
        (
            "name",
            Box::new(|d| d.pages[0].name = "Rechnung-Meier-0001.tif".into()),
        ),
        ("size", Box::new(|d| d.pages[1].size += 1)),
        (
            "digest",
            Box::new(|d| d.pages[1].sha256 = hex::encode([0x23; 32])),
        ),
        ("job", Box::new(|d| d.job_id = "job-2026-12".into())),
        ("tenant", Box::new(|d| d.tenant = "other".into())),
        ("time", Box::new(|d| d.committed_unix_ms += 1)),
        ("dropped page", Box::new(|d| drop(d.pages.pop()))),
        (
            "signature",
            Box::new(|d| d.signature = hex::encode([7u8; 64])),
        ),
    ];
    for (what, change) in tampered {
        let mut d = doc.clone();
        change(&mut d);
        assert_eq!(
            d.verify(trust(&signer)),
            Err(SignedError::BadSignature),
            "{what}"
        );
    }
    let mut d = doc.clone();
    d.key_id = "sign-2".into();
    assert!(matches!(
        d.verify(trust(&signer)),
        Err(SignedError::UnknownKey { .. })
    ));
    // The key the document carries is never what it is checked with.
    let other = ManifestSigner::derive(&[0x43; 32], 1);
    assert_eq!(doc.verify(trust(&other)), Err(SignedError::BadSignature));
}

#[test]
fn malformed_documents_are_refused_before_any_check() {
    let (_, doc) = signed();
    let mut swapped = doc.clone();
    swapped.pages.swap(0, 1);
    let mut escaping = doc.clone();
    escaping.pages[0].name = "../etc/passwd".into();
    let mut short = doc.clone();
    short.pages[0].sha256 = "abcd".into();
    for d in [swapped, escaping, short] {
        assert!(matches!(
            SignedManifest::parse(d.to_json().as_bytes()),
            Err(SignedError::Malformed(_))
        ));
    }
    let extra = doc.to_json().replacen('{', "{\"extra\":1,", 1);
    assert!(SignedManifest::parse(extra.as_bytes()).is_err());
    assert!(SignedManifest::parse(b"[]").is_err());
}

#[test]
fn key_ids_name_a_vault_key_version() {
    assert_eq!(key_version(&key_id(7)), Some(7));
    for bad in [
        "sign-0",
        "sign-07",
        "sign-",
        "audit-1",
        "sign-x",
        "sign-4294967296",
    ] {
        assert_eq!(key_version(bad), None, "{bad}");
    }
}

/// The committed test vector (`tests/interop/vectors/signed-manifest.json`, also checked by
/// the Python verifier) is exactly what the signer makes from vault key 0x42 x 32, version 1:
/// the bytes signed and the key derivation cannot change unnoticed.
#[test]
fn the_committed_vector_is_what_the_signer_makes() {
    let (_, doc) = signed();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/interop/vectors/signed-manifest.json"
    );
    if std::env::var_os("QUIRE_WRITE_VECTORS").is_some() {
        std::fs::write(path, doc.to_json() + "\n").unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap();
    assert_eq!(committed.trim_end(), doc.to_json());
}

/// A time-stamp travels in v2 documents and v4 manifests; one over anything but this
/// signature fails verification, and a v1 document cannot smuggle one in.
#[test]
fn a_timestamp_must_be_over_this_signature() {
    let signer = ManifestSigner::derive(&[0x42; 32], 1);
    let mut seal = signer.sign("acme", "job-2026-11", &pages(), 1_796_000_000_123);
    // An openssl TSA's token, over the digest 07…07: a real token, for another signature.
    let (token, _) = crate::timestamp::token_from_response(
        include_bytes!("../../vectors/tsa-granted.tsr"),
        &[7; 32],
        0x4BE2_B077_D0AD_765A,
    )
    .unwrap();
    seal.timestamp = Some(token);
    let manifest = crate::manifest::Manifest {
        job_id: "job-2026-11".into(),
        pages: pages(),
        seal: Some(seal.clone()),
    };
    let bytes = manifest.encode();
    assert_eq!(bytes[4], crate::manifest::TIMESTAMPED_VERSION);
    assert_eq!(crate::manifest::Manifest::decode(bytes).unwrap(), manifest);

    let doc = SignedManifest::new("job-2026-11", &pages(), &seal, Some(signer.public_key()));
    assert_eq!(doc.v, TIMESTAMPED_DOCUMENT_VERSION);
    let parsed = SignedManifest::parse(doc.to_json().as_bytes()).unwrap();
    assert_eq!(parsed, doc);
    assert!(matches!(
        parsed.verify(trust(&signer)),
        Err(SignedError::Timestamp(
            crate::timestamp::TimestampError::WrongImprint
        ))
    ));
    let mut v1 = doc.clone();
    v1.v = DOCUMENT_VERSION;
    assert!(SignedManifest::parse(v1.to_json().as_bytes()).is_err());
    let mut bare = doc;
    bare.timestamp = None;
    assert!(SignedManifest::parse(bare.to_json().as_bytes()).is_err());
}
