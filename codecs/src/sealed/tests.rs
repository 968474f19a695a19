use super::*;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

fn kek_ref() -> KekRef {
    KekRef {
        tenant: "acme".into(),
        kek_id: "kek".into(),
        version: 3,
    }
}

fn sample(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn round_trips_at_every_chunk_boundary() {
    let kek = SecretKey::generate();
    let cs = MIN_CHUNK_SIZE as usize;
    for n in [0, 1, cs - 1, cs, cs + 1, 2 * cs, 3 * cs + 17] {
        let pt = sample(n);
        let sealed = seal_all(&kek, kek_ref(), "t/o", Compression::None, cs as u32, &pt);
        let (h, out) = open_all(&sealed, "t/o", |_| Some(kek.clone())).unwrap();
        assert_eq!(out, pt, "n={n}");
        assert_eq!(h.sealed_size(n as u64), sealed.len() as u64);
    }
}

/// A chunk sealed where it lies in a larger buffer is the same bytes as one sealed in its
/// own vector: same nonce, same tag.
#[test]
fn sealing_in_place_matches_sealing_a_chunk_vector() {
    let kek = SecretKey::generate();
    let cs = MIN_CHUNK_SIZE as usize;
    let (_, cipher) = ChunkCipher::create(&kek, kek_ref(), "t/o", Compression::None, cs as u32);
    for (index, last, n) in [(0, false, cs), (1, true, 5), (7, true, 0)] {
        let mut own = sample(n);
        cipher.seal_chunk(index, last, &mut own);
        let mut laid_out = [vec![1u8; 3], sample(n), vec![0u8; TAG_LEN], vec![2u8; 4]].concat();
        cipher.seal_chunk_in_place(index, last, &mut laid_out[3..3 + n + TAG_LEN]);
        assert_eq!(
            &laid_out[3..3 + n + TAG_LEN],
            own.as_slice(),
            "chunk {index}"
        );
        assert_eq!(
            (&laid_out[..3], &laid_out[3 + n + TAG_LEN..]),
            (&[1u8; 3][..], &[2u8; 4][..])
        );
    }
}

#[test]
fn wrong_key_object_key_or_kek_ref_fail() {
    let kek = SecretKey::generate();
    let sealed = seal_all(
        &kek,
        kek_ref(),
        "t/o",
        Compression::None,
        MIN_CHUNK_SIZE,
        b"secret",
    );
    assert_eq!(
        open_all(&sealed, "t/o", |_| Some(SecretKey::generate())).unwrap_err(),
        SealError::UnwrapFailed
    );
    assert_eq!(
        open_all(&sealed, "t/other", |_| Some(kek.clone())).unwrap_err(),
        SealError::ChunkAuthFailed(0)
    );
}

#[test]
fn truncation_at_a_chunk_boundary_is_detected() {
    let kek = SecretKey::generate();
    let cs = MIN_CHUNK_SIZE as usize;
    let sealed = seal_all(
        &kek,
        kek_ref(),
        "o",
        Compression::None,
        cs as u32,
        &sample(3 * cs),
    );
    let hlen = Header::parse(&sealed).unwrap().unwrap().encoded().len();
    for keep_chunks in 0..3 {
        let cut = hlen + keep_chunks * (cs + TAG_LEN);
        assert!(open_all(&sealed[..cut], "o", |_| Some(kek.clone())).is_err());
    }
}

#[test]
fn chunks_swapped_between_objects_or_reordered_fail() {
    let kek = SecretKey::generate();
    let cs = MIN_CHUNK_SIZE as usize;
    let pt = sample(3 * cs);
    let a = seal_all(&kek, kek_ref(), "o", Compression::None, cs as u32, &pt);
    let b = seal_all(&kek, kek_ref(), "o", Compression::None, cs as u32, &pt);
    let hlen = Header::parse(&a).unwrap().unwrap().encoded().len();
    let mut spliced = a.to_vec();
    spliced[hlen..hlen + cs + TAG_LEN].copy_from_slice(&b[hlen..hlen + cs + TAG_LEN]);
    assert!(open_all(&spliced, "o", |_| Some(kek.clone())).is_err());
    let mut reordered = a.to_vec();
    let (c0, c1) = (
        hlen..hlen + cs + TAG_LEN,
        hlen + cs + TAG_LEN..hlen + 2 * (cs + TAG_LEN),
    );
    let first = a[c0.clone()].to_vec();
    reordered[c0].copy_from_slice(&a[c1.clone()]);
    reordered[c1].copy_from_slice(&first);
    assert!(open_all(&reordered, "o", |_| Some(kek.clone())).is_err());
}

#[test]
fn every_single_bit_flip_is_an_error_never_wrong_plaintext() {
    let kek = SecretKey::generate();
    let cs = MIN_CHUNK_SIZE as usize;
    let pt = sample(cs + 100);
    let sealed = seal_all(&kek, kek_ref(), "o", Compression::Zstd, cs as u32, &pt);
    for bit in 0..sealed.len() * 8 {
        let mut bad = sealed.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(
            open_all(&bad, "o", |_| Some(kek.clone())).is_err(),
            "flip of bit {bit} went unnoticed"
        );
    }
}

#[test]
fn chunks_open_alone() {
    let kek = SecretKey::generate();
    let cs = MIN_CHUNK_SIZE as usize;
    let pt = sample(4 * cs + 5);
    let sealed = seal_all(&kek, kek_ref(), "o", Compression::None, cs as u32, &pt);
    let h = Header::parse(&sealed).unwrap().unwrap();
    let c = ChunkCipher::open(&kek, &h, "o").unwrap();
    let start = h.encoded().len() + 2 * (cs + TAG_LEN);
    let mut chunk = sealed[start..start + cs + TAG_LEN].to_vec();
    c.open_chunk(2, false, &mut chunk).unwrap();
    assert_eq!(chunk, pt[2 * cs..3 * cs]);
}

#[test]
fn ids_in_headers_that_are_not_identifiers_are_refused() {
    let kek = SecretKey::from_bytes([3; 32]);
    for (tenant, kek_id) in [
        ("../etc", "tenant"),
        ("acme", "a/b"),
        ("acme", "-x"),
        ("a b", "k"),
    ] {
        let kek_ref = KekRef {
            tenant: tenant.into(),
            kek_id: kek_id.into(),
            version: 1,
        };
        let sealed = seal_all(
            &kek,
            kek_ref,
            "obj",
            Compression::None,
            MIN_CHUNK_SIZE,
            b"x",
        );
        assert!(
            Header::parse(&sealed).is_err(),
            "{tenant:?}/{kek_id:?} was accepted"
        );
    }
}

#[test]
fn header_parser_is_bounded() {
    assert_eq!(Header::parse(b"QR").unwrap(), None);
    assert_eq!(Header::parse(b"XXXXXXXX").unwrap_err(), SealError::BadMagic);
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&[1, 1, 0xff, 0xff]);
    assert!(matches!(
        Header::parse(&h),
        Err(SealError::MalformedHeader(_))
    ));
}

/// ring (the fast path) and the `aes-gcm` crate must agree byte for byte on every chunk.
#[test]
fn ring_and_aes_gcm_agree_on_every_chunk() {
    let kek = SecretKey::generate();
    for len in [0usize, 1, 15, 16, 17, 1000, MIN_CHUNK_SIZE as usize] {
        for (index, last) in [(0u64, false), (1, true), (u32::MAX as u64, false)] {
            let (_, cipher) =
                ChunkCipher::create(&kek, kek_ref(), "obj", Compression::None, MIN_CHUNK_SIZE);
            let plain = sample(len);
            let mut fast = plain.clone();
            if !last && len != MIN_CHUNK_SIZE as usize {
                fast.resize(MIN_CHUNK_SIZE as usize, 0);
            }
            let reference_in = fast.clone();
            cipher.seal_chunk(index, last, &mut fast);

            let (key, aad) = cipher.dangerous_export_for_tests();
            let other = Aes256Gcm::new((&key).into());
            let mut slow = reference_in.clone();
            let tag = other
                .encrypt_inout_detached(
                    &Nonce::from(chunk_nonce(index, last)),
                    &aad,
                    slow.as_mut_slice().into(),
                )
                .unwrap();
            slow.extend_from_slice(&tag);
            assert_eq!(fast, slow, "len {len} index {index} last {last}");

            let mut back = fast.clone();
            cipher.open_chunk(index, last, &mut back).unwrap();
            assert_eq!(back, reference_in);
        }
    }
}

#[test]
fn rewrapping_keeps_the_body_and_changes_only_the_key_section() {
    let old = SecretKey::generate();
    let new = SecretKey::generate();
    let cs = MIN_CHUNK_SIZE as usize;
    let pt = sample(2 * cs + 9);
    let sealed = seal_all(&old, kek_ref(), "o", Compression::None, cs as u32, &pt);
    let h = Header::parse(&sealed).unwrap().unwrap();
    let mut new_ref = kek_ref();
    new_ref.version = 4;
    let h2 = h.rewrap(&old, &new, new_ref.clone()).unwrap();
    let mut rewrapped = h2.encoded().to_vec();
    rewrapped.extend_from_slice(&sealed[h.encoded().len()..]);
    let (_, out) = open_all(&rewrapped, "o", |r| (r == &new_ref).then(|| new.clone())).unwrap();
    assert_eq!(out, pt);
    assert!(open_all(&rewrapped, "o", |_| Some(old.clone())).is_err());
    assert_eq!(
        h.rewrap(&new, &new, kek_ref()).unwrap_err(),
        SealError::UnwrapFailed
    );
    let mut other = kek_ref();
    other.tenant = "beta".into();
    assert!(h.rewrap(&old, &new, other).is_err());
}

#[test]
fn debug_never_prints_keys() {
    let k = SecretKey::from_bytes([0xab; 32]);
    assert!(!format!("{k:?}").contains("ab"));
}
