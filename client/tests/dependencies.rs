//! The client crate stays small enough to embed in a scanner: none of the server's storage,
//! parallelism or compression stack is in its normal dependency tree.

#[test]
fn the_client_pulls_in_none_of_the_servers_stack() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "quire-client",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(tree.contains("quinn"), "not a dependency tree:\n{tree}");
    let banned = [
        "redb",
        "object_store",
        "rayon",
        "zstd",
        "reqwest",
        "aws-lc-rs",
        "aws-lc-sys",
    ];
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| banned.contains(name))
        .collect();
    assert!(found.is_empty(), "quire-client depends on {found:?}");
}

/// Scanners are often ARM boxes: there, SHA-256 must take the ARMv8 SHA-2 instructions, which
/// `sha2` uses only with its `asm` feature.
#[test]
fn on_arm_the_client_hashes_with_the_sha2_instructions() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "quire-client",
            "-e",
            "normal,features",
            "--target",
            "aarch64-unknown-linux-gnu",
            "-i",
            "sha2",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(tree.contains("sha2 feature \"asm\""), "{tree}");
}
