//! Replicas against the real servers scripts/test.sh starts: a tenant whose primary store is
//! S3 (moto) and whose replica is Azure Blob (Azurite). Both hold the same sealed bytes; a
//! page lost from the primary is still served, and `scrub --repair` restores it byte for byte;
//! a copy damaged in the replica is named and repaired; deletion reaches both copies and a
//! legal hold keeps both; a replica outage holds `ack = "replicated"` back, acknowledging
//! nothing early.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common::background::BackgroundPush;
use crate::common::moto::{download_s3, Moto};
use crate::common::*;

const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Azurite container scripts/test.sh made, reached with the Azure SDK.
struct Azurite {
    endpoint: String,
    container: String,
}

impl Azurite {
    fn from_env() -> Azurite {
        Azurite {
            endpoint: required_env("QUIRE_TEST_AZURE_ENDPOINT"),
            container: required_env("QUIRE_TEST_AZURE_CONTAINER"),
        }
    }

    fn store_toml(&self) -> String {
        format!(
            "kind = \"azure\"\nendpoint = \"{}\"\naccount = \"devstoreaccount1\"\n\
             access_key = \"{AZURITE_KEY}\"\ncontainer = \"{}\"\n",
            self.endpoint, self.container
        )
    }

    /// Runs `body` with `c`, a client of the container, and `argv` after the first two.
    fn run(&self, body: &str, args: &[&str]) -> String {
        let script = format!(
            "import os, sys\nfrom azure.storage.blob import BlobServiceClient\n\
             endpoint, container, key = sys.argv[1:4]\nargv = sys.argv[4:]\n\
             conn = f\"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={{key}};BlobEndpoint={{endpoint}};\"\n\
             c = BlobServiceClient.from_connection_string(conn).get_container_client(container)\n{body}"
        );
        let mut all = vec![self.endpoint.as_str(), &self.container, AZURITE_KEY];
        all.extend_from_slice(args);
        third_party(&script, &all)
    }

    /// Downloads every blob under `prefix` into `dest` (as a local store lays them out).
    fn dump(&self, prefix: &str, dest: &Path) -> usize {
        self.run(
            r#"
names = [b.name for b in c.list_blobs(name_starts_with=argv[0])]
for n in names:
    path = os.path.join(argv[1], n)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(c.download_blob(n).readall())
print(len(names))
"#,
            &[prefix, dest.to_str().unwrap()],
        )
        .trim()
        .parse()
        .unwrap()
    }

    /// Overwrites blob `key` with the bytes of `file`.
    fn put(&self, key: &str, file: &Path) {
        self.run(
            "with open(argv[1], 'rb') as f:\n    c.upload_blob(argv[0], f.read(), overwrite=True)\n",
            &[key, file.to_str().unwrap()],
        );
    }
}

/// Downloads every object under `prefix` of `s3` into `dest`; how many.
fn dump_s3(s3: &Moto, prefix: &str, dest: &Path) -> usize {
    download_s3(&s3.endpoint, &s3.bucket, prefix, dest)
}

fn delete_s3(s3: &Moto, key: &str) {
    third_party(
        r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="quire-test",
                  aws_secret_access_key="quire-test-secret", region_name="eu-central-1")
s3.delete_object(Bucket=sys.argv[2], Key=sys.argv[3])
"#,
        &[&s3.endpoint, &s3.bucket, key],
    );
}

/// Every file under `a` is at the same place under `b`, with the same bytes.
fn same_tree(a: &Path, b: &Path) {
    for f in walk(a) {
        let other = b.join(f.strip_prefix(a).unwrap());
        assert!(
            std::fs::read(&f).unwrap() == std::fs::read(&other).unwrap(),
            "{} differs from {}",
            f.display(),
            other.display()
        );
    }
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn scrub(server: &TestServer, extra: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let mut args = vec!["admin", "scrub", "--tenant", "dev", "--json"];
    args.extend_from_slice(extra);
    let o = server.quire(&args);
    let found = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (o, found)
}

/// `(key, store kind)` of every finding of `event`, the store named by its scheme.
fn of(found: &[serde_json::Value], event: &str) -> Vec<(String, String)> {
    found
        .iter()
        .filter(|f| f["event"] == event)
        .map(|f| {
            let store = f["store"].as_str().unwrap();
            let kind = store.split(':').next().unwrap().to_string();
            (f["key"].as_str().unwrap().to_string(), kind)
        })
        .collect()
}

#[test]
fn a_replica_serves_what_the_primary_lost_and_scrub_repairs_either_copy() {
    let s3 = Moto::start("primary");
    let azure = Azurite::from_env();
    let server = TestServer::start_with_config(&format!(
        "[store]\n{}residency = \"eu\"\n[stores.azure-eu]\n{}residency = \"eu\"\n\
         [tenants.dev]\nresidency = \"eu\"\nreplicas = [\"azure-eu\"]\n\
         retention = \"delete-on-delivery\"\n[spool]\nack = \"replicated\"\n",
        s3.store_toml(),
        azure.store_toml()
    ));
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let job = unique("repl");
    server.push_ok(&samples, &["--no-progress", "--job", &job]);
    let prefix = format!("tenants/dev/jobs/{job}/");

    // Both stores hold the same sealed bytes: five pages and the manifest.
    let as_stored = server.path().join("s3-at-first");
    assert_eq!(dump_s3(&s3, &prefix, &as_stored), 6);
    let in_azure = server.path().join("azure-at-first");
    assert_eq!(azure.dump(&prefix, &in_azure), 6);
    same_tree(&as_stored, &in_azure);

    // The primary loses a page: get still delivers the job, from the replica.
    let lost = format!("{prefix}pages/000001");
    delete_s3(&s3, &lost);
    let out = server.path().join("out-1");
    server.get_ok(&job, &out);
    same_files(&samples, &out);

    // A page damaged in the replica.
    let damaged = format!("{prefix}pages/000002");
    let file = in_azure.join(&damaged);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    let spoiled = server.path().join("spoiled");
    std::fs::write(&spoiled, &bytes).unwrap();
    azure.put(&damaged, &spoiled);

    // A scrub names both, each in its store; without --repair it changes nothing.
    let (o, found) = scrub(&server, &[]);
    assert!(!o.status.success());
    assert_eq!(of(&found, "missing"), [(lost.clone(), "s3".to_string())]);
    assert_eq!(
        of(&found, "corrupt"),
        [(damaged.clone(), "azure".to_string())]
    );
    assert!(of(&found, "repaired").is_empty());

    // --repair copies each good copy over the bad one: byte for byte what was stored.
    let (o, found) = scrub(&server, &["--repair"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut repaired = of(&found, "repaired");
    repaired.sort();
    assert_eq!(
        repaired,
        [
            (lost.clone(), "s3".to_string()),
            (damaged.clone(), "azure".to_string())
        ]
    );
    let s3_now = server.path().join("s3-repaired");
    assert_eq!(dump_s3(&s3, &prefix, &s3_now), 6);
    let azure_now = server.path().join("azure-repaired");
    assert_eq!(azure.dump(&prefix, &azure_now), 6);
    same_tree(&as_stored, &s3_now);
    same_tree(&as_stored, &azure_now);
    let (o, found) = scrub(&server, &[]);
    assert!(o.status.success(), "{found:?}");
    let audit = std::fs::read_to_string(server.path().join("quire-data/audit.log")).unwrap();
    assert_eq!(audit.matches("object.repair").count(), 2, "{audit}");

    // Deletion reaches both copies; a legal hold keeps both.
    let held = unique("held");
    server.push_ok(&samples, &["--no-progress", "--job", &held]);
    server.quire_ok(&[
        "admin", "hold", "set", "--tenant", "dev", "--job", &held, "--reason", "case 7",
    ]);
    let delivered = server.path().join("delivered");
    server.quire_ok(&[
        "deliver",
        "--tenant",
        "dev",
        "--out",
        delivered.to_str().unwrap(),
    ]);
    let empty = server.path().join("after-delivery");
    assert_eq!(dump_s3(&s3, &prefix, &empty), 0, "deleted from the primary");
    assert_eq!(azure.dump(&prefix, &empty), 0, "deleted from the replica");
    let held_prefix = format!("tenants/dev/jobs/{held}/");
    assert_eq!(dump_s3(&s3, &held_prefix, &empty), 6, "held in the primary");
    assert_eq!(azure.dump(&held_prefix, &empty), 6, "held in the replica");
    let audit = std::fs::read_to_string(server.path().join("quire-data/audit.log")).unwrap();
    assert!(
        audit.contains(&format!("job={job} objects=12 copies=2")),
        "{audit}"
    );
}

#[test]
fn a_replica_outage_holds_the_acknowledgement_back() {
    let replica = Moto::start("replica");
    let server = TestServer::start_with_config(&format!(
        "[store]\nresidency = \"eu\"\n[stores.s3-eu]\n{}residency = \"eu\"\n\
         [tenants.dev]\nresidency = \"eu\"\nreplicas = [\"s3-eu\"]\n\
         [spool]\nack = \"replicated\"\nack_timeout_secs = 2\n",
        replica.store_toml()
    ));
    let job_dir = server.path().join("held");
    std::fs::create_dir_all(&job_dir).unwrap();
    for i in 0..3 {
        write_random_file(&job_dir.join(format!("p{i}.tif")), 150_000, 40 + i);
    }

    replica.signal("-STOP");
    let push = BackgroundPush::start(&server, &job_dir, "held", &[]);
    let retried = push.wait_for_line("retrying", Duration::from_secs(60));
    assert!(retried.contains("retry later"), "unclear: {retried}");
    let log = server.log_text();
    assert!(log.contains("a replica has not confirmed yet"), "{log}");
    // The primary has the pages; the scanner was told none of them is stored.
    let in_primary = walk(&server.store_dir().join("tenants/dev/jobs/held/pages")).len();
    assert!(in_primary >= 1, "the primary write does not wait");
    assert_eq!(push.acknowledged(), 0, "acknowledged early");

    replica.signal("-CONT");
    let pushed = push.finish();
    assert!(pushed.status.success(), "{:?}", pushed.lines);
    assert_eq!(pushed.acknowledged(), 3);
    assert_eq!(
        replica.count("tenants/dev/jobs/held/"),
        4,
        "3 pages and the manifest"
    );
}
