//! Committed test vectors for the sealed object format, checked three ways: regenerating
//! them reproduces the committed bytes (the format has not drifted), Quire opens them, and an
//! independent Python decryptor written from docs/FORMAT.md alone opens them too.
//!
//! To change the format on purpose: bump the version, then
//! `QUIRE_REGENERATE_VECTORS=1 cargo test --test integration -- format_vectors::`.

use std::path::PathBuf;

use quire_codecs::sealed::{
    dangerous_wrap_key_with_nonce, open_all, ChunkCipher, Chunker, Compression, Header, KekRef,
    SecretKey, DEFAULT_CHUNK_SIZE, TAG_LEN,
};

struct Case {
    name: &'static str,
    compression: Compression,
    chunk_size: u32,
    original: Vec<u8>,
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "empty",
            compression: Compression::None,
            chunk_size: 4096,
            original: vec![],
        },
        Case {
            name: "one-byte",
            compression: Compression::None,
            chunk_size: 4096,
            original: vec![0x42],
        },
        Case {
            name: "exact-two-chunks",
            compression: Compression::None,
            chunk_size: 4096,
            original: pattern(8192),
        },
        Case {
            name: "three-chunks-partial-last",
            compression: Compression::None,
            chunk_size: 4096,
            original: pattern(10_000),
        },
        Case {
            name: "zstd-text",
            compression: Compression::Zstd,
            chunk_size: 4096,
            original: b"Lieferschein Nr. 5 \xe2\x80\x93 Gr\xc3\xb6\xc3\x9fe. ".repeat(600),
        },
        // The chunk size the server writes with, one byte into a second chunk.
        Case {
            name: "production-chunk-size",
            compression: Compression::None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            original: pattern(DEFAULT_CHUNK_SIZE as usize + 1),
        },
    ]
}

fn seal_deterministic(i: usize, case: &Case) -> (String, String, String) {
    let kek = SecretKey::from_bytes(std::array::from_fn(|b| b as u8));
    let dek = SecretKey::from_bytes(std::array::from_fn(|b| (0x80 + b + i) as u8));
    let salt: [u8; 32] = std::array::from_fn(|b| (0x40 + b * 3 + i) as u8);
    let nonce: [u8; 12] = std::array::from_fn(|b| (0xa0 + b + i) as u8);
    let kek_ref = KekRef {
        tenant: "acme".into(),
        kek_id: "tenant".into(),
        version: 2,
    };
    let object_key = format!("tenants/acme/jobs/vectors/pages/{i:06}");
    let wrapped = dangerous_wrap_key_with_nonce(&kek, &kek_ref, &dek, nonce);
    let (header, cipher) = ChunkCipher::create_with(
        &dek,
        salt,
        wrapped,
        kek_ref,
        &object_key,
        case.compression,
        case.chunk_size,
    );
    let body = match case.compression {
        Compression::None => case.original.clone(),
        Compression::Zstd => zstd::bulk::compress(&case.original, 1).unwrap(),
    };
    let mut sealed = header.encoded().to_vec();
    let mut chunker = Chunker::new(case.chunk_size);
    let mut chunks = chunker.push(&body);
    chunks.push(chunker.finish());
    for mut c in chunks {
        cipher.seal_chunk(c.index, c.last, &mut c.data);
        sealed.extend_from_slice(&c.data);
    }
    (hex::encode(kek.expose()), object_key, hex::encode(sealed))
}

fn generate() -> String {
    let mut out = String::from("[\n");
    let all = cases();
    for (i, case) in all.iter().enumerate() {
        let (kek, object_key, sealed) = seal_deterministic(i, case);
        out.push_str(&format!(
            "  {{\"name\": \"{}\", \"kek\": \"{kek}\", \"tenant\": \"acme\", \"kek_id\": \"tenant\", \"kek_version\": 2, \"object_key\": \"{object_key}\", \"compression\": {}, \"plaintext\": \"{}\", \"sealed\": \"{sealed}\"}}{}\n",
            case.name,
            match case.compression { Compression::None => 0, Compression::Zstd => 1 },
            hex::encode(&case.original),
            if i + 1 < all.len() { "," } else { "" }
        ));
    }
    out.push_str("]\n");
    out
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sealed-v1.json")
}

#[test]
fn committed_vectors_match_the_implementation() {
    let generated = generate();
    if std::env::var_os("QUIRE_REGENERATE_VECTORS").is_some() {
        std::fs::write(vectors_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(vectors_path()).expect("tests/vectors/sealed-v1.json");
    assert!(
        committed == generated,
        "the sealed format drifted from the committed vectors"
    );
}

#[test]
fn quire_opens_the_committed_vectors() {
    let text = std::fs::read_to_string(vectors_path()).unwrap();
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(vectors.len(), cases().len());
    for v in vectors {
        let field = |k: &str| v[k].as_str().unwrap().to_string();
        let kek = SecretKey::from_bytes(hex::decode(field("kek")).unwrap().try_into().unwrap());
        let sealed = hex::decode(field("sealed")).unwrap();
        let (header, body) =
            open_all(&sealed, &field("object_key"), |_| Some(kek.clone())).unwrap();
        let plain = match header.compression {
            Compression::None => body,
            Compression::Zstd => zstd::stream::decode_all(&body[..]).unwrap(),
        };
        assert_eq!(hex::encode(plain), field("plaintext"), "{}", field("name"));
    }
}

#[test]
fn an_independent_python_decryptor_opens_them_from_the_spec() {
    // scripts/test.sh installs the decryptor's packages into target/interop-venv.
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    let python = std::env::var("QUIRE_PYTHON").unwrap_or_else(|_| {
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".into()
        }
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/open_sealed.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(vectors_path())
        .arg(negatives_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python decryptor failed (scripts/test.sh installs its packages into target/interop-venv):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("{} vectors opened", cases().len())),
        "{stdout}"
    );
    assert!(stdout.contains("negative vectors refused"), "{stdout}");
}

/// Damaged versions of the committed vectors, each of which every reader must refuse.
fn negatives() -> String {
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&generate()).unwrap();
    let mut out = Vec::new();
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let sealed = hex::decode(v["sealed"].as_str().unwrap()).unwrap();
        let h = Header::parse(&sealed).unwrap().unwrap();
        let hlen = h.encoded().len();
        let chunk = h.chunk_size as usize + TAG_LEN;
        let body = sealed.len() - hlen;
        let mut cases: Vec<(String, Vec<u8>, String)> = Vec::new();
        let object_key = v["object_key"].as_str().unwrap().to_string();
        let flip = |at: usize| {
            let mut b = sealed.clone();
            b[at] ^= 0x01;
            b
        };
        cases.push((
            "flipped chunk-size field".into(),
            flip(13),
            object_key.clone(),
        ));
        cases.push((
            "flipped key commitment".into(),
            flip(50),
            object_key.clone(),
        ));
        cases.push(("flipped tenant byte".into(), flip(79), object_key.clone()));
        cases.push((
            "flipped last tag".into(),
            flip(sealed.len() - 1),
            object_key.clone(),
        ));
        cases.push((
            "header only".into(),
            sealed[..hlen].to_vec(),
            object_key.clone(),
        ));
        let mut longer = sealed.clone();
        longer.push(0);
        cases.push(("a trailing byte".into(), longer, object_key.clone()));
        cases.push((
            "another object key".into(),
            sealed.clone(),
            format!("{object_key}x"),
        ));
        if body > chunk {
            // Drop the final chunk: what is left ends on a chunk that is not marked last.
            let whole = hlen + (body - 1) / chunk * chunk;
            cases.push((
                "final chunk dropped".into(),
                sealed[..whole].to_vec(),
                object_key.clone(),
            ));
            if body >= 2 * chunk {
                let mut swapped = sealed.clone();
                let (a, b) = (hlen, hlen + chunk);
                let first = swapped[a..a + chunk].to_vec();
                let second = swapped[b..b + chunk].to_vec();
                swapped[a..a + chunk].copy_from_slice(&second);
                swapped[b..b + chunk].copy_from_slice(&first);
                cases.push((
                    "first two chunks swapped".into(),
                    swapped,
                    object_key.clone(),
                ));
            }
        }
        if body > 64 * 1024 {
            // Large vectors keep one damaged copy, so the file stays small.
            cases.retain(|(what, _, _)| what == "final chunk dropped");
        }
        for (what, bytes, key) in cases {
            out.push(format!(
                "  {{\"name\": \"{name}: {what}\", \"kek\": \"{}\", \"object_key\": \"{key}\", \"sealed\": \"{}\"}}",
                v["kek"].as_str().unwrap(),
                hex::encode(bytes)
            ));
        }
    }
    format!("[\n{}\n]\n", out.join(",\n"))
}

fn negatives_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sealed-v1-negative.json")
}

#[test]
fn committed_negative_vectors_match_and_are_all_refused() {
    let generated = negatives();
    if std::env::var_os("QUIRE_REGENERATE_VECTORS").is_some() {
        std::fs::write(negatives_path(), &generated).unwrap();
    }
    let committed =
        std::fs::read_to_string(negatives_path()).expect("tests/vectors/sealed-v1-negative.json");
    assert!(committed == generated, "the negative vectors drifted");
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&committed).unwrap();
    assert!(vectors.len() >= 40, "{} negative vectors", vectors.len());
    for v in vectors {
        let field = |k: &str| v[k].as_str().unwrap().to_string();
        let kek = SecretKey::from_bytes(hex::decode(field("kek")).unwrap().try_into().unwrap());
        let sealed = hex::decode(field("sealed")).unwrap();
        assert!(
            open_all(&sealed, &field("object_key"), |_| Some(kek.clone())).is_err(),
            "{} was opened",
            field("name")
        );
    }
}
