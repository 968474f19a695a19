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
