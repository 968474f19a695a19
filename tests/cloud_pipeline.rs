//! The whole pipeline into real S3 and Azure servers (started by scripts/test.sh): pages go
//! in sealed, a third-party client (boto3, azure-storage-blob) lists and downloads what Quire
//! wrote, and Quire opens exactly those downloaded bytes again.

use std::path::{Path, PathBuf};

use crate::common::moto::download_s3;
use crate::common::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test.sh"))
}

const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn round_trip_through(store_toml: &str, download: impl Fn(&str, &Path) -> usize) {
    let server = TestServer::start_with_config(store_toml);
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let job = server.push_ok(&samples, &["--no-progress"]);
    let out = server.path().join("out-cloud");
    server.get_ok(&job, &out);
    for f in walk(&samples) {
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(out.join(f.file_name().unwrap())).unwrap()
        );
    }

    // A third-party client downloads the job's objects into a local store layout.
    let local = server.path().join("downloaded");
    let n = download(&format!("tenants/dev/jobs/{job}/"), &local);
    assert_eq!(n, 6, "five pages and a manifest");
    for f in walk(&local) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(bytes.starts_with(b"QRSO"), "{} is not sealed", f.display());
    }

    // Quire, pointed at those bytes as a local store, opens them.
    std::fs::write(
        server.path().join("quire.toml"),
        with_dev_bootstrap(&format!(
            "[store]\nkind = \"local\"\npath = \"{}\"\n",
            local.display()
        )),
    )
    .unwrap();
    let mut server = server;
    server.restart();
    let again = server.path().join("out-local");
    server.get_ok(&job, &again);
    for f in walk(&samples) {
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(again.join(f.file_name().unwrap())).unwrap()
        );
    }
}

#[test]
fn pages_sealed_into_s3_are_readable_by_boto3_and_open_in_quire() {
    let endpoint = env("QUIRE_TEST_S3_ENDPOINT");
    let bucket = env("QUIRE_TEST_S3_BUCKET");
    let toml = format!(
        "[store]\nkind = \"s3\"\nendpoint = \"{endpoint}\"\nregion = \"eu-central-1\"\nbucket = \"{bucket}\"\naccess_key_id = \"quire-test\"\nsecret_access_key = \"quire-test-secret\"\n"
    );
    round_trip_through(&toml, |prefix, dest| {
        download_s3(&endpoint, &bucket, prefix, dest)
    });
}

#[test]
fn pages_sealed_into_azure_are_readable_by_the_azure_sdk_and_open_in_quire() {
    let endpoint = env("QUIRE_TEST_AZURE_ENDPOINT");
    let container = env("QUIRE_TEST_AZURE_CONTAINER");
    let toml = format!(
        "[store]\nkind = \"azure\"\nendpoint = \"{endpoint}\"\naccount = \"devstoreaccount1\"\naccess_key = \"{AZURITE_KEY}\"\ncontainer = \"{container}\"\n"
    );
    round_trip_through(&toml, |prefix, dest| {
        let script = r#"
import os, sys
from azure.storage.blob import BlobServiceClient
endpoint, container, prefix, dest, key = sys.argv[1:6]
conn = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint};"
c = BlobServiceClient.from_connection_string(conn).get_container_client(container)
names = [b.name for b in c.list_blobs(name_starts_with=prefix)]
for n in names:
    path = os.path.join(dest, n)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(c.download_blob(n).readall())
print(len(names))
"#;
        third_party(
            script,
            &[
                &endpoint,
                &container,
                prefix,
                dest.to_str().unwrap(),
                AZURITE_KEY,
            ],
        )
        .trim()
        .parse()
        .unwrap()
    });
}
