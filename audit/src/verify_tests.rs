//! Every way of tampering with a log that the issue names, against the pure verifier.

use super::*;
use crate::checkpoint::AuditSigner;
use crate::record::{Entry, Record};

/// A log of `n` records of `acme` interleaved with records of `other`, and checkpoints of
/// acme's chain at `signed` positions.
fn log(n: u64, signed: &[u64]) -> (Vec<String>, Vec<Checkpoint>) {
    let signer = AuditSigner::derive(&[5; 32], 1);
    let mut lines = Vec::new();
    let mut prev = GENESIS;
    let mut other_prev = GENESIS;
    let mut checkpoints = Vec::new();
    for seq in 1..=n {
        let detail = format!("step {seq}");
        let r = Record::chain(entry("acme", &detail), seq, 1000 + seq, prev);
        prev = r.hash;
        lines.push(r.to_line());
        if signed.contains(&seq) {
            checkpoints.push(signer.sign("acme", seq, r.hash, 5000 + seq));
        }
        let o = Record::chain(entry("other", &detail), seq, 1000 + seq, other_prev);
        other_prev = o.hash;
        lines.push(o.to_line());
    }
    (lines, checkpoints)
}

fn entry<'a>(tenant: &'a str, detail: &'a str) -> Entry<'a> {
    Entry {
        actor: "admin",
        role: "tenant-admin",
        action: "device.set-state",
        tenant,
        detail,
        outcome: "ok",
    }
}

fn check(lines: &[String], checkpoints: &[Checkpoint], start: Start) -> Report {
    let mut v = ChainVerifier::new("acme", start, checkpoints.to_vec());
    for (i, l) in lines.iter().enumerate() {
        v.feed(&LogLine::Line {
            number: i as u64 + 1,
            bytes: l.as_bytes().to_vec(),
        });
    }
    v.finish()
}

fn problem(lines: &[String], checkpoints: &[Checkpoint]) -> Problem {
    check(lines, checkpoints, Start::Genesis)
        .problem
        .expect("tampering must be detected")
}

/// acme's record `seq` is at line `2 * seq - 1`, i.e. index `2 * (seq - 1)`.
fn at(seq: u64) -> usize {
    2 * (seq as usize - 1)
}

fn edit(line: &str, f: impl FnOnce(&mut Record)) -> String {
    let mut r: Record = serde_json::from_str(line).unwrap();
    f(&mut r);
    r.to_line()
}

#[test]
fn an_intact_log_verifies_with_its_checkpoints() {
    let (lines, cps) = log(10, &[4, 8]);
    let r = check(&lines, &cps, Start::Genesis);
    assert_eq!(r.problem, None);
    assert_eq!(
        (
            r.records,
            r.head_seq,
            r.checkpoints_checked,
            r.last_checkpoint_seq
        ),
        (10, 10, 2, 8)
    );
}

#[test]
fn an_edited_record_is_named() {
    let (mut lines, cps) = log(10, &[8]);
    lines[at(3)] = edit(&lines[at(3)], |r| r.outcome = "refused: nothing".into());
    let p = problem(&lines, &cps);
    assert_eq!((p.line, p.seq), (5, Some(3)));
    assert!(p.what.contains("edited"), "{p}");
}

#[test]
fn a_consistently_rewritten_chain_is_caught_by_its_checkpoint() {
    // Whoever edits record 3 and recomputes every hash after it still cannot sign.
    let (mut lines, cps) = log(10, &[8]);
    let mut prev = GENESIS;
    for seq in 1..=10 {
        lines[at(seq)] = edit(&lines[at(seq)], |r| {
            if seq == 3 {
                r.detail = "nothing to see".into();
            }
            r.prev = prev;
            r.hash = r.computed_hash();
            prev = r.hash;
        });
    }
    let p = problem(&lines, &cps);
    assert_eq!(p.seq, Some(8));
    assert!(p.what.contains("rewritten"), "{p}");
}

#[test]
fn a_deleted_record_is_named() {
    let (mut lines, cps) = log(10, &[]);
    lines.remove(at(4));
    let p = problem(&lines, &cps);
    assert_eq!(p.seq, Some(5));
    assert!(p.what.contains("record 4 is missing"), "{p}");
}

#[test]
fn reordered_records_are_named() {
    let (mut lines, cps) = log(10, &[]);
    lines.swap(at(4), at(6));
    let p = problem(&lines, &cps);
    assert_eq!(p.seq, Some(6));
    assert!(
        p.what.contains("missing") || p.what.contains("reordered"),
        "{p}"
    );
}

#[test]
fn a_repeated_record_is_named() {
    let (mut lines, cps) = log(10, &[]);
    let copy = lines[at(4)].clone();
    lines.insert(at(5), copy);
    let p = problem(&lines, &cps);
    assert!(p.what.contains("reordered or repeated"), "{p}");
}

#[test]
fn a_truncated_log_is_caught_by_a_later_checkpoint() {
    let (mut lines, cps) = log(10, &[4, 9]);
    lines.truncate(at(7));
    let p = problem(&lines, &cps);
    assert_eq!(p.line, 0);
    assert!(p.what.contains("truncated"), "{p}");
    // Without a checkpoint past the cut, a truncation cannot be told from a shorter log:
    // that is what the checkpoint interval bounds.
    let (mut lines, cps) = log(10, &[4]);
    lines.truncate(at(7));
    assert_eq!(check(&lines, &cps, Start::Genesis).problem, None);
}

#[test]
fn an_older_copy_restored_and_written_to_is_caught() {
    let (full, cps) = log(10, &[9]);
    let mut lines: Vec<String> = full[..at(6)].to_vec();
    // The server reopened the old copy and went on from record 6.
    let last: Record = serde_json::from_str(&lines[at(5)]).unwrap();
    let mut prev = last.hash;
    for seq in 6..=12 {
        let r = Record::chain(entry("acme", "after restore"), seq, 9000 + seq, prev);
        prev = r.hash;
        lines.push(r.to_line());
    }
    let p = problem(&lines, &cps);
    assert_eq!(p.seq, Some(9));
    assert!(p.what.contains("older copy"), "{p}");
}

#[test]
fn inserted_and_damaged_lines_are_named() {
    let (mut lines, cps) = log(5, &[]);
    lines.insert(
        at(3),
        r#"{"ts_unix_ms":1,"actor":"a","role":"r","action":"x","tenant":"acme","detail":"","outcome":"ok"}"#.into(),
    );
    assert!(problem(&lines, &cps).what.contains("inserted"));
    let (mut lines, cps) = log(5, &[]);
    lines[at(2)].truncate(20);
    let p = problem(&lines, &cps);
    assert_eq!(p.line, 3);
    assert!(p.what.contains("damaged"), "{p}");
}

#[test]
fn other_chains_do_not_disturb_this_one() {
    let (mut lines, cps) = log(5, &[3]);
    // Tampering with another tenant's records is that chain's finding, not acme's.
    lines[1] = edit(&lines[1], |r| r.detail = "changed".into());
    assert_eq!(check(&lines, &cps, Start::Genesis).problem, None);
}

#[test]
fn an_export_from_a_given_time_verifies_from_where_it_starts() {
    let (lines, cps) = log(10, &[2, 7]);
    let from_five = &lines[at(5)..];
    let r = check(from_five, &cps, Start::Anywhere);
    assert_eq!(r.problem, None);
    assert_eq!((r.records, r.checkpoints_checked), (6, 1));
    // ...but a whole log must start at record 1.
    assert!(check(from_five, &cps, Start::Genesis).problem.is_some());
}

#[test]
fn a_checkpoint_of_a_record_the_chain_skips_is_named() {
    let (mut lines, _) = log(6, &[]);
    let signer = AuditSigner::derive(&[5; 32], 1);
    let r3: Record = serde_json::from_str(&lines[at(3)]).unwrap();
    let cps = vec![signer.sign("acme", 3, r3.hash, 1)];
    // Record 3 removed and the chain relinked around it (4 becomes 3, ...) cannot keep
    // record 3's signed hash.
    lines.remove(at(3));
    assert!(problem(&lines, &cps).seq.is_some());
}
