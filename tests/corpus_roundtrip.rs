//! Every job of the shared corpus, pushed through the real server into the real local store
//! and fetched back: byte-identical, matching MANIFEST.tsv, and never stored in clear.

use std::collections::HashMap;

use crate::common::*;

#[test]
fn every_corpus_job_round_trips_and_is_sealed() {
    let corpus = corpus();
    let manifest = std::fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
    let mut expected: HashMap<(String, String), String> = HashMap::new();
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        expected.insert(
            (cols[0].to_string(), cols[1].to_string()),
            cols[3].to_string(),
        );
    }
    assert!(
        expected.len() >= 31,
        "manifest lists {} files",
        expected.len()
    );

    let server = TestServer::start();
    let out_root = server.path().join("restored");
    let mut jobs: Vec<_> = std::fs::read_dir(corpus.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    jobs.sort();
    let mut checked = 0;
    let mut probes: Vec<(String, Vec<u8>)> = Vec::new();
    for job_dir in &jobs {
        let job_name = job_dir.file_name().unwrap().to_str().unwrap().to_string();
        let job_id = server.push_ok(job_dir, &["--no-progress"]);
        let out = out_root.join(&job_name);
        server.get_ok(&job_id, &out);
        for f in walk(job_dir) {
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            let original = std::fs::read(&f).unwrap();
            let restored = std::fs::read(out.join(&name))
                .unwrap_or_else(|e| panic!("{job_name}/{name} not restored: {e}"));
            assert!(
                original == restored,
                "{job_name}/{name} differs after the round trip"
            );
            let want = expected
                .get(&(job_name.clone(), name.clone()))
                .unwrap_or_else(|| panic!("{job_name}/{name} not in MANIFEST.tsv"));
            assert_eq!(&sha256_hex(&restored), want, "{job_name}/{name} hash");
            checked += 1;
            // A run of plaintext from the middle of each page must appear in no stored file.
            if original.len() >= 64 {
                let mid = original.len() / 2;
                probes.push((
                    format!("{job_name}/{name}"),
                    original[mid..mid + 32].to_vec(),
                ));
            }
        }
    }
    assert_eq!(checked, expected.len(), "every manifest file was checked");

    let stored = server.stored_files();
    assert!(
        stored.len() >= checked,
        "one sealed object per page at least"
    );
    for path in &stored {
        let sealed = std::fs::read(path).unwrap();
        assert!(
            sealed.starts_with(b"QRSO"),
            "{} is not a sealed object",
            path.display()
        );
        for (what, probe) in &probes {
            assert!(
                !contains(&sealed, probe),
                "plaintext of {what} found in {}",
                path.display()
            );
        }
    }
}
