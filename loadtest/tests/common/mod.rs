//! Running `quire-loadtest` in a test: the command, and the JSON report it prints.
#![allow(dead_code)] // each test file uses part of it

use std::process::Command;

/// `quire-loadtest` with `args`, run in `dir` (its work files and a started server's data go
/// there).
pub fn loadtest(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quire-loadtest"));
    c.args(args).current_dir(dir);
    c
}

/// Runs `command`, which must succeed, and returns the report it printed.
pub fn report(command: &mut Command) -> serde_json::Value {
    let o = command.output().expect("quire-loadtest runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let text = String::from_utf8_lossy(&o.stdout);
    let start = text.find('{').expect("a JSON report");
    serde_json::from_str(&text[start..]).unwrap_or_else(|e| panic!("{e}: {text}"))
}
