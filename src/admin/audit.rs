//! `quire admin audit …`: check a tenant's audit chain, or hand the tenant its trail.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use quire_client::{self as client, Connection};

#[derive(Subcommand, Debug)]
pub(super) enum AuditCommand {
    /// Check a tenant's audit chain: every record's hash and link, and every signed
    /// checkpoint in the tenant's object store. Exits non-zero naming the first bad record.
    Verify {
        #[arg(long)]
        tenant: String,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A tenant's own audit trail as JSON lines: a header with the server's public audit
    /// keys, the records as logged, and the signed checkpoints that cover them (docs/AUDIT.md;
    /// `tests/interop/verify_audit.py` checks one independently).
    Export {
        #[arg(long)]
        tenant: String,
        /// Only records from this time: RFC 3339 (`2026-11-30T00:00:00Z`) or Unix seconds.
        #[arg(long)]
        since: Option<String>,
        /// Write here instead of standard output (an existing file is not overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(super) async fn audit(conn: &Connection, command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { tenant, json } => {
            let r = client::admin::verify_audit(conn, &tenant).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "tenant": r.tenant,
                        "records": r.records,
                        "legacy_records": r.legacy_records,
                        "head_seq": r.head_seq,
                        "checkpoints": r.checkpoints,
                        "last_checkpoint_seq": r.last_checkpoint_seq,
                        "problem": r.problem,
                    })
                );
            }
            if !r.problem.is_empty() {
                bail!(
                    "the audit chain of tenant {tenant} does not verify: {}",
                    r.problem
                );
            }
            if !json {
                println!(
                    "tenant {tenant}: {} records verified, {} checkpoints match (newest covers record {}; {} records after it not yet signed){}",
                    r.records,
                    r.checkpoints,
                    r.last_checkpoint_seq,
                    r.head_seq - r.last_checkpoint_seq,
                    if r.legacy_records > 0 {
                        format!("; {} earlier records predate chaining", r.legacy_records)
                    } else {
                        String::new()
                    }
                );
            }
        }
        AuditCommand::Export { tenant, since, out } => {
            let since_ms = match since {
                None => 0,
                Some(s) => parse_since(&s)?,
            };
            let written = match out {
                None => {
                    let mut stdout = std::io::stdout().lock();
                    client::admin::export_audit(conn, &tenant, since_ms, &mut stdout).await?
                }
                Some(path) => {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(file);
                    let n = client::admin::export_audit(conn, &tenant, since_ms, &mut w).await?;
                    std::io::Write::flush(&mut w)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("{n} bytes of audit trail written to {}", path.display());
                    n
                }
            };
            let _ = written;
        }
    }
    Ok(())
}

/// RFC 3339 or Unix seconds, as Unix milliseconds.
fn parse_since(s: &str) -> Result<u64> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs.saturating_mul(1000));
    }
    let ts: jiff::Timestamp = s.parse().with_context(|| {
        format!("--since {s:?} is neither an RFC 3339 time (2026-11-30T00:00:00Z) nor Unix seconds")
    })?;
    Ok(ts.as_millisecond().max(0) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_takes_rfc3339_or_unix_seconds() {
        assert_eq!(super::parse_since("1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(
            super::parse_since("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert!(super::parse_since("yesterday").is_err());
    }
}
