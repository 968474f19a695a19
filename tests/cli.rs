//! The command line as a newcomer meets it: help, config errors, no server running.

use std::process::Command;

use crate::common::*;

#[test]
fn help_lists_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run(dir.path(), &["--help"]);
    assert!(ok);
    for cmd in ["serve", "push", "get", "admin"] {
        assert!(out.contains(cmd), "--help does not mention {cmd}: {out}");
    }
    let (ok, out, _) = run(dir.path(), &["push", "--help"]);
    assert!(
        ok && out.contains("--job") && out.contains("--server"),
        "{out}"
    );
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run(dir.path(), &["--version"]);
    assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let expected = head.unwrap_or_else(|| "unknown".into());
    assert!(out.contains(&format!("(commit {expected})")), "{out}");
}

#[test]
fn completions_and_the_manual_page_come_from_the_command_line_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, script, _) = run(dir.path(), &["completions", "bash"]);
    assert!(ok && script.contains("--credential") && script.contains("serve"));
    // bash itself accepts the script.
    let file = dir.path().join("quire.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).status().unwrap();
    assert!(syntax.success());
    for shell in ["zsh", "fish"] {
        let (ok, script, _) = run(dir.path(), &["completions", shell]);
        assert!(ok && script.contains("enroll"), "{shell}");
    }
    let (ok, page, _) = run(dir.path(), &["manpage"]);
    assert!(
        ok && page.contains(".TH quire 1") && page.contains(".SH NAME"),
        "{page}"
    );
    for cmd in ["serve", "push", "get", "admin", "deliver", "enroll"] {
        assert!(page.contains(cmd), "the manual page does not mention {cmd}");
    }
}

#[test]
fn exit_codes_tell_a_script_what_to_do() {
    use quire_client::credential::CredentialFile;
    let server = TestServer::in_process();
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("p.tif"), b"page").unwrap();
    let code = |args: &[&str]| server.quire(args).status.code();
    let job = job.to_str().unwrap();
    // 5: a local problem (here, no credential file).
    assert_eq!(
        code(&["push", job, "--credential", "/nonexistent.cred"]),
        Some(5)
    );
    // 3: the server cannot be reached: try again later.
    assert_eq!(
        code(&["push", job, "--server", "no-such-host.invalid:4433"]),
        Some(3)
    );
    // 4: the server refused: fix the credential.
    let mut wrong = server.device_cred();
    wrong.secret = "ab".repeat(32);
    let wrong_path = server.path().join("wrong.cred");
    wrong.save(&wrong_path).unwrap();
    assert_eq!(
        code(&["push", job, "--credential", wrong_path.to_str().unwrap()]),
        Some(4)
    );
    // 2: the command line itself.
    assert_eq!(code(&["push", "--no-such-flag"]), Some(2));
    // 0.
    assert_eq!(code(&["push", job, "--no-progress"]), Some(0));
}

#[test]
fn an_invalid_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[pipeline]\nchunk_size = 3\n", "pipeline.chunk_size"),
        ("listen = \"not an address\"\n", "listen"),
        ("[store]\nbukket = \"x\"\n", "bukket"),
        ("[store]\nkind = \"s3\"\n", "store.endpoint"),
    ] {
        std::fs::write(dir.path().join("quire.toml"), text).unwrap();
        let (ok, _, err) = run(dir.path(), &["serve", "--config", "quire.toml"]);
        assert!(!ok, "{text:?} was accepted");
        assert!(err.contains(key), "{text:?}: {err}");
    }
    assert!(
        !dir.path().join("quire-data").exists(),
        "a refused config must not create state"
    );
}

#[test]
fn a_config_file_sets_the_listen_address_and_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("quire.toml"),
        "listen = \"127.0.0.1:0\"\ndata_dir = \"elsewhere\"\n[dev]\nbootstrap = true\ntenant = \"acme\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", "quire.toml"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("quire listening on 127.0.0.1:"), "{line}");
    let cred = std::fs::read_to_string(dir.path().join("elsewhere/dev/device.cred")).unwrap();
    assert!(cred.contains("tenant = \"acme\""), "{cred}");
}

#[test]
fn push_without_a_server_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("job")).unwrap();
    let (ok, _, err) = run(dir.path(), &["push", "job"]);
    assert!(!ok);
    assert!(err.contains("quire serve"), "{err}");
}

#[test]
fn a_world_readable_master_key_stops_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("quire-data/vault");
    std::fs::create_dir_all(&vault).unwrap();
    std::fs::write(vault.join("master.key"), "ab".repeat(32)).unwrap();
    std::fs::set_permissions(
        vault.join("master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (ok, _, err) = run(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(
        !err.contains(&"ab".repeat(32)),
        "the key must never be printed"
    );
}

#[test]
fn every_admin_operation_can_be_called_by_its_audit_name() {
    let server = TestServer::in_process();
    let list = server.quire(&["admin", "call", "--list"]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.status.success());
    assert_eq!(
        listed.lines().count(),
        quire_codecs::wire::AdminRequest::ALL.len()
    );
    assert!(listed.contains("job.abort\ttenant job_id"), "{listed}");
    let created = server.quire(&["admin", "call", "tenant.create", "tenant=acme"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let devices = server.quire(&["admin", "call", "device.list", "tenant=acme"]);
    assert_eq!(
        String::from_utf8_lossy(&devices.stdout).trim(),
        "AdminDevices([])"
    );
    // The operation's own refusal, and a mistake in the call, each said plainly.
    let again = server.quire(&["admin", "call", "tenant.create", "tenant=acme"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let wrong = server.quire(&[
        "admin",
        "call",
        "token.create",
        "tenant=acme",
        "ttl_secs=soon",
    ]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("ttl_secs: \"soon\" is not a whole number"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}
