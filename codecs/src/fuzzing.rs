//! Harnesses shared by the cargo-fuzz targets in `fuzz/` and by the test that replays their
//! seed corpus, so the properties checked under the fuzzer are checked in every test run.
//! Each function must never panic on any input except to report a broken property.

use bytes::{Bytes, BytesMut};

use crate::sealed::{self, Compression, Header, KekRef, SecretKey, MIN_CHUNK_SIZE};
use crate::wire::{self, Decoder, Frame};

/// The header parser: bounded, and whatever it accepts it re-reads identically.
pub fn sealed_header(data: &[u8]) {
    if let Ok(Some(h)) = Header::parse(data) {
        assert_eq!(&data[..h.encoded().len()], h.encoded());
        assert_eq!(Header::parse(h.encoded()).unwrap().unwrap(), h);
    }
}

fn fixed_object() -> (SecretKey, Bytes, Vec<u8>) {
    let kek = SecretKey::from_bytes([7; 32]);
    let plain: Vec<u8> = (0..(2 * MIN_CHUNK_SIZE as usize + 100))
        .map(|i| (i * 31) as u8)
        .collect();
    let kek_ref = KekRef {
        tenant: "fuzz".into(),
        kek_id: "tenant".into(),
        version: 1,
    };
    let sealed = sealed::seal_all(
        &kek,
        kek_ref,
        "obj",
        Compression::None,
        MIN_CHUNK_SIZE,
        &plain,
    );
    (kek, sealed, plain)
}

/// The chunk opener: `data` is a list of (offset u16, xor u8) edits applied to a sealed
/// object, or, after a leading 0xff, a whole object. Opening must never panic, and must
/// never return plaintext other than the original unless no byte was changed.
pub fn chunk_open(data: &[u8]) {
    let (kek, sealed, plain) = fixed_object();
    if data.first() == Some(&0xff) {
        let _ = sealed::open_all(&data[1..], "obj", |_| Some(kek.clone()));
        return;
    }
    let mut edited = sealed.to_vec();
    for e in data.chunks_exact(3) {
        let at = u16::from_be_bytes([e[0], e[1]]) as usize;
        if at < edited.len() {
            edited[at] ^= e[2];
        }
    }
    // Truncate when the input length says so, to exercise short objects too.
    if data.len() % 3 == 1 {
        let keep = edited.len().saturating_sub(data[data.len() - 1] as usize);
        edited.truncate(keep);
    }
    match sealed::open_all(&edited, "obj", |_| Some(kek.clone())) {
        Ok((_, out)) => {
            assert_eq!(out, plain, "wrong plaintext released");
            assert_eq!(&edited[..], &sealed[..], "a modified object opened");
        }
        Err(_) => assert_ne!(&edited[..], &sealed[..], "the original failed to open"),
    }
}

/// The frame decoder: fed in pieces of any size it never panics, and every control frame it
/// yields encodes back to something that decodes to the same frame.
pub fn wire_decoder(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = (step as usize).max(1);
    let input = Bytes::copy_from_slice(rest);
    let mut d = Decoder::new();
    let mut at = 0;
    loop {
        if at < input.len() {
            let end = (at + step).min(input.len());
            d.feed(input.slice(at..end));
            at = end;
        }
        match d.next_frame() {
            Ok(Some(Frame::Data(_))) => {}
            Ok(Some(f)) => {
                let mut b = BytesMut::new();
                wire::encode(&f, &mut b);
                let mut again = Decoder::new();
                again.feed(b.freeze());
                assert_eq!(again.next_frame().unwrap(), Some(f));
            }
            Ok(None) if at >= input.len() => return,
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

/// The manifest parser (both versions): bounded, never panics, and whatever it accepts
/// survives a round trip through the current encoding.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = crate::manifest::Manifest::decode(Bytes::copy_from_slice(data)) {
        let again = crate::manifest::Manifest::decode(m.encode()).expect("own encoding decodes");
        assert_eq!(again, m);
    }
}

/// Joining split lists: frames decoded from `data` go through a reassembler; it never
/// panics, never joins beyond its limits, and a joined list crosses the wire (split again
/// and joined again) unchanged.
pub fn list_reassembly(data: &[u8]) {
    let mut d = Decoder::new();
    d.feed(Bytes::copy_from_slice(data));
    let mut r = crate::lists::Reassembler::new();
    let mut out = Vec::new();
    loop {
        match d.next_frame() {
            Ok(Some(f)) => match r.push(f) {
                Ok(done) => out.extend(done.into_iter().chain(r.take_ready())),
                Err(_) => return,
            },
            Ok(None) => break,
            Err(_) => return,
        }
    }
    out.extend(r.finish());
    for f in out.into_iter().filter(|f| !matches!(f, Frame::Data(_))) {
        let mut b = BytesMut::new();
        wire::encode(&f, &mut b);
        let mut again = Decoder::new();
        again.feed(b.freeze());
        let mut joined = crate::lists::Reassembler::new();
        let mut got = Vec::new();
        while let Some(part) = again.next_frame().expect("own encoding decodes") {
            got.extend(joined.push(part).expect("own parts join"));
            got.extend(joined.take_ready());
        }
        got.extend(joined.finish());
        assert_eq!(got, vec![f]);
    }
}

/// The spool commit record parser: bounded, never panics, and whatever it accepts
/// round-trips and stays under its tenant's prefix.
pub fn spool_record(data: &[u8]) {
    if let Ok(m) = crate::spool_record::RecordMeta::decode(data) {
        assert!(m.object_key.starts_with(&format!("tenants/{}/", m.tenant)));
        let again = crate::spool_record::RecordMeta::decode(&m.encode()).expect("own encoding");
        assert_eq!(again, m);
    }
}

/// The credential file parser: bounded, never panics, never quotes the secret in an error,
/// and whatever it accepts round-trips.
pub fn credential(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::credential::Credential::parse(text) {
        Ok(c) => {
            let again = crate::credential::Credential::parse(&c.to_toml()).expect("own encoding");
            assert_eq!(again.to_toml(), c.to_toml());
        }
        Err(e) => {
            // A 64-hex-digit run of the input is what a secret looks like: never echo one.
            for w in e.as_bytes().windows(64) {
                if w.iter().all(u8::is_ascii_hexdigit) {
                    let w = std::str::from_utf8(w).expect("hex digits are UTF-8");
                    assert!(!text.contains(w), "the error quotes a secret: {e}");
                }
            }
        }
    }
}
