//! Replays the fuzzers' seed corpus (`fuzz/corpus/<target>/`) through the same harnesses the
//! fuzz targets run, so their properties hold in every test run, not only under the fuzzer.

use std::path::PathBuf;

fn replay(target: &str, harness: fn(&[u8]), at_least: usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        harness(&data);
        n += 1;
    }
    assert!(n >= at_least, "only {n} seeds for {target}");
}

#[test]
fn sealed_header_seeds() {
    replay("sealed_header", quire_codecs::fuzzing::sealed_header, 10);
}

#[test]
fn chunk_open_seeds() {
    replay("chunk_open", quire_codecs::fuzzing::chunk_open, 6);
}

#[test]
fn wire_decoder_seeds() {
    replay("wire_decoder", quire_codecs::fuzzing::wire_decoder, 20);
}

#[test]
fn manifest_seeds() {
    replay("manifest", quire_codecs::fuzzing::manifest, 9);
}

#[test]
fn list_reassembly_seeds() {
    replay("list_reassembly", quire_codecs::fuzzing::list_reassembly, 6);
}

#[test]
fn spool_record_seeds() {
    replay("spool_record", quire_codecs::fuzzing::spool_record, 7);
}

#[test]
fn credential_seeds() {
    replay("credential", quire_codecs::fuzzing::credential, 8);
}
