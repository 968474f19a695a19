//! `quire admin scrub`: are a tenant's stored objects all there, and do they all open?

use anyhow::{bail, Result};
use clap::Args;
use quire_client::{self as client, Connection};

#[derive(Args, Debug)]
pub(super) struct ScrubArgs {
    #[arg(long)]
    tenant: String,
    /// Go on after this job (the last `progress` line of a stopped scrub names it).
    #[arg(long)]
    after: Option<String>,
    /// Read at most this many MB/s of stored objects (0: as fast as the store goes).
    #[arg(long, default_value_t = 50)]
    max_mb_per_s: u32,
    /// Replace every missing or corrupt copy (primary store or replica) with the stored
    /// bytes of a good copy.
    #[arg(long)]
    repair: bool,
    /// Print every finding as the JSON line the server sent.
    #[arg(long)]
    json: bool,
}

/// Prints the findings; fails if any object is missing, corrupt or orphaned and was not
/// repaired.
pub(super) async fn scrub(conn: &Connection, a: ScrubArgs) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{pos}/{len} jobs {msg}")
            .expect("a valid template"),
    );
    let mut done = serde_json::Value::Null;
    let after = a.after.as_deref();
    client::admin::scrub(conn, &a.tenant, after, a.max_mb_per_s, a.repair, |f| {
        if a.json {
            bar.suspend(|| println!("{f}"));
        }
        let key = f["key"].as_str().unwrap_or_default();
        let store = f["store"].as_str().unwrap_or_default();
        match f["event"].as_str().unwrap_or_default() {
            "progress" => {
                bar.set_length(f["jobs"].as_u64().unwrap_or(0));
                bar.set_position(f["jobs_done"].as_u64().unwrap_or(0));
                bar.set_message(format!("(last: {})", f["job"].as_str().unwrap_or("")));
            }
            "done" => done = f,
            "corrupt" | "not_repaired" if !a.json => bar.suspend(|| {
                let (event, reason) = (&f["event"], f["reason"].as_str().unwrap_or(""));
                println!("{}\t{key}\t{store}\t{reason}", event.as_str().unwrap_or(""))
            }),
            "repaired" if !a.json => bar.suspend(|| {
                println!(
                    "repaired\t{key}\t{store}\tfrom {}",
                    f["from"].as_str().unwrap_or("")
                )
            }),
            event if !a.json => bar.suspend(|| println!("{event}\t{key}\t{store}")),
            _ => {}
        }
    })
    .await?;
    bar.finish_and_clear();
    let count = |k: &str| done[k].as_u64().unwrap_or(0);
    let found = count("missing") + count("corrupt") + count("orphaned");
    let repaired = if a.repair {
        format!(
            "; {} repaired, {} not repaired",
            count("repaired"),
            count("not_repaired")
        )
    } else {
        String::new()
    };
    eprintln!(
        "tenant {}: {} jobs, {} objects ({} bytes) read through; {} missing, {} corrupt, {} orphaned{repaired}",
        a.tenant,
        count("jobs"),
        count("objects"),
        count("bytes"),
        count("missing"),
        count("corrupt"),
        count("orphaned")
    );
    let left = found - count("repaired").min(found);
    if left > 0 {
        let what_to_do = if a.repair {
            "orphans are left for you to look at; a copy with no good copy anywhere must come from a backup"
        } else {
            "scrub --repair mends a copy from a good one in another store; otherwise restore it from a backup"
        };
        bail!(
            "tenant {}: {left} problem(s) left (listed above): {what_to_do}",
            a.tenant
        );
    }
    Ok(())
}
