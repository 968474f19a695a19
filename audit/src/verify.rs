//! Verifying one chain: fed the log line by line (no I/O here), it names the first record
//! that was edited, removed, reordered or inserted, and compares the chain with its signed
//! checkpoints to catch a log that was rewritten consistently, truncated or restored from an
//! older copy.

use crate::checkpoint::Checkpoint;
use crate::lines::LogLine;
use crate::record::{parse_line, Line, GENESIS};

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The log line (from 1); 0 when the problem is the end of the log.
    pub line: u64,
    /// The chain position concerned, when known.
    pub seq: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.seq) {
            (0, _) => write!(f, "end of the log: {}", self.what),
            (l, Some(s)) => write!(f, "line {l}, record {s}: {}", self.what),
            (l, None) => write!(f, "line {l}: {}", self.what),
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub tenant: String,
    /// Chained records of the tenant read.
    pub records: u64,
    /// Records of the tenant written before chaining (by an earlier version): not covered.
    pub legacy_records: u64,
    /// The last record's position (0 for none).
    pub head_seq: u64,
    /// Checkpoints compared with the chain.
    pub checkpoints_checked: u64,
    /// The newest checkpoint's record (0 for none): records after it are not yet signed.
    pub last_checkpoint_seq: u64,
    pub problem: Option<Problem>,
}

/// Where a chain is expected to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At record 1 (a whole log).
    Genesis,
    /// Anywhere (an export from a given time): the first record's `prev` is taken on trust.
    Anywhere,
}

/// Verifies the chain of one tenant (empty: the service chain).
#[derive(Debug)]
pub struct ChainVerifier {
    tenant: String,
    start: Start,
    /// Signed heads not yet reached, the smallest `seq` last.
    pending: Vec<Checkpoint>,
    /// The next record's expected `seq` and `prev`, once known.
    next: Option<(u64, [u8; 32])>,
    chaining_began: bool,
    report: Report,
}

impl ChainVerifier {
    /// `checkpoints` must already be signature-checked ([`Checkpoint::verify`]).
    pub fn new(tenant: &str, start: Start, mut checkpoints: Vec<Checkpoint>) -> Self {
        checkpoints.retain(|c| c.tenant == tenant);
        checkpoints.sort_by_key(|c| std::cmp::Reverse(c.seq));
        let next = match start {
            Start::Genesis => Some((1, GENESIS)),
            Start::Anywhere => None,
        };
        ChainVerifier {
            tenant: tenant.to_string(),
            start,
            pending: checkpoints,
            next,
            chaining_began: false,
            report: Report {
                tenant: tenant.to_string(),
                records: 0,
                legacy_records: 0,
                head_seq: 0,
                checkpoints_checked: 0,
                last_checkpoint_seq: 0,
                problem: None,
            },
        }
    }

    /// Whether a problem was found (later lines change nothing).
    pub fn failed(&self) -> bool {
        self.report.problem.is_some()
    }

    fn fail(&mut self, line: u64, seq: Option<u64>, what: String) {
        if self.report.problem.is_none() {
            self.report.problem = Some(Problem { line, seq, what });
        }
    }

    /// Takes the next line of the log.
    pub fn feed(&mut self, line: &LogLine) {
        if self.failed() {
            return;
        }
        match line {
            LogLine::Line { number, bytes } => self.feed_line(*number, bytes),
            LogLine::TooLong { number } => self.fail(
                *number,
                None,
                "longer than any record: the log was damaged or tampered with".into(),
            ),
            // Cut short by a crash: the server removes it on start, before appending.
            LogLine::TornTail { .. } => {}
        }
    }

    fn feed_line(&mut self, number: u64, bytes: &[u8]) {
        let record = match parse_line(bytes) {
            Ok(Line::Chained(r)) => r,
            Ok(Line::Legacy { tenant, .. }) => {
                if tenant == self.tenant {
                    if self.chaining_began {
                        return self.fail(
                            number,
                            None,
                            "an unchained record after chaining began: it was inserted".into(),
                        );
                    }
                    self.report.legacy_records += 1;
                }
                return;
            }
            Err(e) => {
                return self.fail(
                    number,
                    None,
                    format!("{e}: the log was damaged or tampered with"),
                )
            }
        };
        self.chaining_began = true;
        if record.tenant != self.tenant {
            return;
        }
        let seq = record.seq;
        if record.computed_hash() != record.hash {
            return self.fail(
                number,
                Some(seq),
                "its content does not match its hash: the record was edited".into(),
            );
        }
        match self.next {
            Some((want, _)) if seq != want => {
                let what = if seq > want {
                    format!("record {want} is missing (deleted, or the records were reordered)")
                } else {
                    format!("expected record {want}: records were reordered or repeated")
                };
                return self.fail(number, Some(seq), what);
            }
            Some((_, prev)) if record.prev != prev => {
                return self.fail(
                    number,
                    Some(seq),
                    "it does not follow the record before it (its prev hash differs): records were replaced"
                        .into(),
                )
            }
            _ => {}
        }
        // In an export from a given time, checkpoints of earlier records do not apply.
        while self.pending.last().is_some_and(|c| c.seq < seq) {
            let c = self.pending.pop().expect("checked");
            if self.start == Start::Genesis || self.report.records > 0 {
                return self.fail(
                    number,
                    Some(seq),
                    format!(
                        "a checkpoint signed record {} but the chain has no such record",
                        c.seq
                    ),
                );
            }
        }
        if self.pending.last().is_some_and(|c| c.seq == seq) {
            let c = self.pending.pop().expect("checked");
            if c.hash != record.hash {
                return self.fail(
                    number,
                    Some(seq),
                    "differs from the signed checkpoint of this record: the log was rewritten (or an older copy restored and written to since)"
                        .into(),
                );
            }
            self.report.checkpoints_checked += 1;
            self.report.last_checkpoint_seq = seq;
        }
        self.report.records += 1;
        self.report.head_seq = seq;
        self.next = Some((seq + 1, record.hash));
    }

    /// The verdict, once every line was fed.
    pub fn finish(mut self) -> Report {
        if let Some(c) = self.pending.first().cloned() {
            let newest = c.seq;
            self.fail(
                0,
                Some(self.report.head_seq),
                format!(
                    "the chain ends at record {}, but a checkpoint signed record {newest}: records were removed from the end (truncated), or an older copy of the log was restored",
                    self.report.head_seq
                ),
            );
        }
        self.report
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
