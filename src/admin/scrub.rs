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
    /// Print every finding as the JSON line the server sent.
    #[arg(long)]
    json: bool,
}

/// Prints the findings; fails if any object is missing, corrupt or orphaned.
pub(super) async fn scrub(conn: &Connection, a: ScrubArgs) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{pos}/{len} jobs {msg}")
            .expect("a valid template"),
    );
    let mut done = serde_json::Value::Null;
    client::admin::scrub(conn, &a.tenant, a.after.as_deref(), a.max_mb_per_s, |f| {
        if a.json {
            bar.suspend(|| println!("{f}"));
        }
        let key = f["key"].as_str().unwrap_or_default();
        match f["event"].as_str().unwrap_or_default() {
            "progress" => {
                bar.set_length(f["jobs"].as_u64().unwrap_or(0));
                bar.set_position(f["jobs_done"].as_u64().unwrap_or(0));
                bar.set_message(format!("(last: {})", f["job"].as_str().unwrap_or("")));
            }
            "done" => done = f,
            "corrupt" if !a.json => {
                bar.suspend(|| println!("corrupt\t{key}\t{}", f["reason"].as_str().unwrap_or("")))
            }
            event if !a.json => bar.suspend(|| println!("{event}\t{key}")),
            _ => {}
        }
    })
    .await?;
    bar.finish_and_clear();
    let count = |k: &str| done[k].as_u64().unwrap_or(0);
    let found = count("missing") + count("corrupt") + count("orphaned");
    eprintln!(
        "tenant {}: {} jobs, {} objects ({} bytes) read through; {} missing, {} corrupt, {} orphaned",
        a.tenant,
        count("jobs"),
        count("objects"),
        count("bytes"),
        count("missing"),
        count("corrupt"),
        count("orphaned")
    );
    if found > 0 {
        bail!("tenant {}: {found} problem(s) found (listed above; restore them from a backup or a replica)", a.tenant);
    }
    Ok(())
}
