//! `quire admin backup` (the server writes one now) and `quire admin restore` (a new node's
//! data directory from one, with the server stopped).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use quire_client::Connection;
use quire_codecs::wire::AdminRequest;
use quire_server::config::ServerConfig;

#[derive(Args, Debug)]
pub(super) struct RestoreArgs {
    /// The new node's configuration file: its default store holds the backups, its vault
    /// (the same master key file, KMS key or HSM as the backed-up node's) opens them.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory to fill (must not hold a node) [default: ./quire-data, or
    /// `data_dir` in the config].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Which backup [default: the newest complete one].
    #[arg(long)]
    from: Option<String>,
    /// Only list the complete backups in the store (id, time, parts), restoring nothing.
    #[arg(long)]
    list: bool,
}

/// Asks the server for a backup now and prints what it wrote.
pub(super) async fn backup(conn: &Connection) -> Result<()> {
    let json =
        quire_client::verify::document(conn, AdminRequest::BackupCreate {}, 16 << 20).await?;
    let index: quire_server::backup::BackupIndex =
        serde_json::from_slice(&json).context("the server's backup index")?;
    for p in &index.parts {
        println!("{}\t{}\t{}", p.name, p.size, p.sha256);
    }
    eprintln!(
        "backup {} written: {} parts (restore with `quire admin restore --from {}`)",
        index.id,
        index.parts.len(),
        index.id
    );
    Ok(())
}

/// Fills a new data directory from a backup.
pub(super) async fn restore(a: &RestoreArgs) -> Result<()> {
    let config = ServerConfig::load(a.config.as_deref(), None, a.data_dir.clone())?;
    if a.list {
        for b in quire_server::backup::available(&config).await? {
            println!("{}\t{}\t{} parts", b.id, b.created_unix_ms, b.parts.len());
        }
        return Ok(());
    }
    let done = quire_server::backup::restore(&config, a.from.as_deref()).await?;
    for f in &done.files {
        println!("{}", config.data_dir.join(f).display());
    }
    eprintln!(
        "restored backup {} (made at {} Unix ms) into {}: start `quire serve` on it",
        done.id,
        done.created_unix_ms,
        config.data_dir.display()
    );
    Ok(())
}
