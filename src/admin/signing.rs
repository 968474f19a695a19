//! `quire admin signing-key …`: the public keys that check a tenant's signed manifests.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use quire_client::{self as client, Connection};

#[derive(Subcommand, Debug)]
pub(super) enum SigningKeyCommand {
    /// The tenant's public manifest signing keys as JSON, each with the period it signed in
    /// (older keys stay listed after rotation, so older manifests stay verifiable): what
    /// `quire verify --public-key` and `tests/interop/verify_manifest.py` take.
    Export {
        #[arg(long)]
        tenant: String,
        /// Write here instead of standard output (an existing file is not overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(super) async fn signing_key(conn: &Connection, command: SigningKeyCommand) -> Result<()> {
    match command {
        SigningKeyCommand::Export { tenant, out } => {
            let doc = client::verify::export_signing_keys(conn, &tenant).await?;
            match out {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    f.write_all(doc.as_bytes())
                        .and_then(|()| f.write_all(b"\n"))
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                None => println!("{doc}"),
            }
            Ok(())
        }
    }
}
