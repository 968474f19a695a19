//! Property tests: whatever goes in comes out, in any chunking.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use quire_codecs::sealed::{
    open_all, seal_all, ChunkCipher, Chunker, Compression, KekRef, SealedReader, SecretKey,
};
use quire_codecs::wire::{self, Decoder, Frame, PageEntry};

fn kek_ref() -> KekRef {
    KekRef {
        tenant: "t".into(),
        kek_id: "tenant".into(),
        version: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sealed_objects_round_trip(
        plain in proptest::collection::vec(any::<u8>(), 0..40_000),
        chunk_kib in 4u32..20,
        key in "[a-z0-9/]{1,40}",
    ) {
        let kek = SecretKey::generate();
        let sealed = seal_all(&kek, kek_ref(), &key, Compression::None, chunk_kib * 1024, &plain);
        let (_, out) = open_all(&sealed, &key, |_| Some(kek.clone())).unwrap();
        prop_assert_eq!(out, plain);
    }

    #[test]
    fn streamed_sealing_matches_any_split(
        plain in proptest::collection::vec(any::<u8>(), 0..30_000),
        splits in proptest::collection::vec(1usize..5000, 1..20),
        feed in 1usize..9000,
    ) {
        let kek = SecretKey::generate();
        let (header, cipher) = ChunkCipher::create(&kek, kek_ref(), "k", Compression::None, 4096);
        let mut chunker = Chunker::new(4096);
        let mut chunks = Vec::new();
        let mut rest = &plain[..];
        for s in splits.iter().cycle() {
            if rest.is_empty() { break; }
            let n = (*s).min(rest.len());
            chunks.extend(chunker.push(&rest[..n]));
            rest = &rest[n..];
        }
        chunks.push(chunker.finish());
        let mut sealed = header.encoded().to_vec();
        for mut c in chunks {
            cipher.seal_chunk(c.index, c.last, &mut c.data);
            sealed.extend_from_slice(&c.data);
        }
        // Read it back fed in pieces of `feed` bytes.
        let mut r = SealedReader::new();
        let mut out = Vec::new();
        let mut opener = None;
        let mut at = 0;
        loop {
            let end = (at + feed).min(sealed.len());
            r.feed(&sealed[at..end]);
            at = end;
            let eof = at == sealed.len();
            if opener.is_none() {
                if let Some(h) = r.header().unwrap() {
                    opener = Some(ChunkCipher::open(&kek, h, "k").unwrap());
                }
            }
            if let Some(o) = &opener {
                while let Some(mut c) = r.next_chunk(eof).unwrap() {
                    o.open_chunk(c.index, c.last, &mut c.data).unwrap();
                    out.extend_from_slice(&c.data);
                }
            }
            if eof { break; }
        }
        prop_assert!(r.is_done());
        prop_assert_eq!(out, plain);
    }

    #[test]
    fn frames_round_trip_in_any_split(
        names in proptest::collection::vec("[^/\\\\\\x00-\\x1f\\x7f]{1,40}", 1..8),
        sizes in proptest::collection::vec(any::<u64>(), 8),
        data in proptest::collection::vec(any::<u8>(), 0..5000),
        step in 1usize..300,
    ) {
        let pages: Vec<PageEntry> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| wire::validate_page_name(n).is_ok())
            .map(|(i, n)| PageEntry { index: i as u32, name: n.clone(), size: sizes[i], sha256: [i as u8; 32] })
            .collect();
        let frames = vec![
            Frame::JobStatus { committed: false, pages: pages.clone() },
            Frame::Manifest { job_id: "job.1".into(), pages },
            Frame::Data(Bytes::from(data.clone())),
            Frame::PageEnd,
        ];
        let mut wire_bytes = BytesMut::new();
        for f in &frames {
            wire::encode(f, &mut wire_bytes);
        }
        let wire_bytes = wire_bytes.freeze();
        let mut d = Decoder::new();
        let mut got = Vec::new();
        let mut payload = Vec::new();
        let mut at = 0;
        while at < wire_bytes.len() {
            let end = (at + step).min(wire_bytes.len());
            d.feed(wire_bytes.slice(at..end));
            at = end;
            while let Some(f) = d.next_frame().unwrap() {
                match f {
                    Frame::Data(b) => payload.extend_from_slice(&b),
                    other => got.push(other),
                }
            }
        }
        d.finish().unwrap();
        prop_assert_eq!(payload, data);
        prop_assert_eq!(got.len(), 3);
        prop_assert_eq!(&got[0], &frames[0]);
        prop_assert_eq!(&got[1], &frames[1]);
    }
}
