//! A moto S3 server of a test's own, so that stopping it (SIGSTOP: an outage that accepts
//! connections and never answers) disturbs no other test.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{python, third_party};

pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
    pub bucket: String,
}

impl Moto {
    /// Starts moto on a free loopback port and creates `bucket` in it.
    pub fn start(bucket: &str) -> Moto {
        Moto::start_on(super::free_port(), bucket)
    }

    /// Starts moto on `port` (a restart where an earlier one ran) and creates `bucket`.
    pub fn start_on(port: u16, bucket: &str) -> Moto {
        let python = python();
        // `python -m`, not the venv's `moto_server` script: a script keeps the path its venv
        // was made at.
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto (run scripts/test.sh, which installs it)");
        let endpoint = format!("http://127.0.0.1:{port}");
        third_party(
            r#"
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="quire-test",
                  aws_secret_access_key="quire-test-secret", region_name="eu-central-1")
deadline = time.time() + 30
while True:
    try:
        s3.create_bucket(Bucket=sys.argv[2], CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
"#,
            &[&endpoint, bucket],
        );
        Moto {
            child,
            port,
            endpoint,
            bucket: bucket.to_string(),
        }
    }

    /// A `[store]`-style section body for this server (`kind` to `secret_access_key`).
    pub fn store_toml(&self) -> String {
        format!(
            "kind = \"s3\"\nendpoint = \"{}\"\nregion = \"eu-central-1\"\nbucket = \"{}\"\n\
             access_key_id = \"quire-test\"\nsecret_access_key = \"quire-test-secret\"\n",
            self.endpoint, self.bucket
        )
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} moto");
    }

    /// How many objects are under `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        third_party(
            r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="quire-test",
                  aws_secret_access_key="quire-test-secret", region_name="eu-central-1")
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2], Prefix=sys.argv[3])
print(sum(len(p.get("Contents", [])) for p in pages))
"#,
            &[&self.endpoint, &self.bucket, prefix],
        )
        .trim()
        .parse()
        .unwrap()
    }

    /// Stops the server for good (an outage that refuses connections). Once it is gone
    /// (stopped before, then dropped), its pid may be another process's: not signalled again.
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Downloads every object under `prefix` of `bucket` at the S3 `endpoint` (moto's static test
/// credentials) into `dest`, laid out as a local store lays them out; how many.
pub fn download_s3(endpoint: &str, bucket: &str, prefix: &str, dest: &Path) -> usize {
    third_party(
        r#"
import os, sys, boto3
endpoint, bucket, prefix, dest = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="quire-test",
                  aws_secret_access_key="quire-test-secret", region_name="eu-central-1")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
for k in keys:
    path = os.path.join(dest, k)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    s3.download_file(bucket, k, path)
print(len(keys))
"#,
        &[endpoint, bucket, prefix, dest.to_str().unwrap()],
    )
    .trim()
    .parse()
    .unwrap()
}
