//! The client crate stays small enough to embed in a scanner: none of the server's storage,
//! parallelism or compression stack is in its normal dependency tree.

/// `cargo tree -p quire-client --offline ARGS…`, which must succeed.
fn cargo_tree(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "quire-client", "--offline"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_client_pulls_in_none_of_the_servers_stack() {
    let tree = cargo_tree(&["-e", "normal", "--prefix", "none"]);
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
    let tree = cargo_tree(&[
        "-e",
        "normal,features",
        "--target",
        "aarch64-unknown-linux-gnu",
        "-i",
        // The client's own sha2 (the PostgreSQL client of the server brings a newer one too).
        "sha2@0.10",
    ]);
    assert!(tree.contains("sha2 feature \"asm\""), "{tree}");
}
