//! `quire verify`, and the signature check `quire get` makes: does a folder hold exactly the
//! pages of a job's signed manifest, signed by a key the tenant published?

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use quire_client::verify::{self, FolderReport, TrustedKeys};
use quire_client::{self as client, Connection};
use quire_codecs::signed::SignedManifest;

use super::{connect, ClientArgs, DEV_DEVICE_CRED};

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The folder to check offline, with --manifest and --public-key.
    dir: Option<PathBuf>,
    /// Fetch the job's signed manifest from the server, then check --out against it.
    #[arg(long)]
    job: Option<String>,
    /// The folder the job was fetched or delivered into (with --job).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The signed manifest (`quire get --manifest` writes one).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Trusted public keys: a file `quire admin signing-key export` wrote, or `sign-N=HEX`
    /// [with --job: the key the server names].
    #[arg(long)]
    public_key: Option<String>,
    /// The tenant whose job it is [default: the credential's].
    #[arg(long)]
    tenant: Option<String>,
    /// Why you read (with --job): required of operators and support partners, as for `get`.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Trusted keys from `--public-key` (a file or `sign-N=HEX`).
fn trusted_from(arg: &str) -> Result<TrustedKeys> {
    let text = match Path::new(arg).is_file() {
        true => std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?,
        false => arg.to_string(),
    };
    TrustedKeys::parse(&text).map_err(|e| anyhow::anyhow!("--public-key {arg}: {e}"))
}

/// The keys to check with: those given, else the one the server names in the manifest.
fn trusted(doc: &SignedManifest, given: Option<&str>) -> Result<TrustedKeys> {
    match given {
        Some(arg) => trusted_from(arg),
        None => TrustedKeys::named_by(doc).map_err(|e| anyhow::anyhow!("{e}: give --public-key")),
    }
}

pub(crate) async fn verify_cmd(a: VerifyArgs) -> Result<()> {
    let (doc, trusted, dir) = match (&a.job, &a.dir) {
        (Some(job), _) => {
            let Some(dir) = a.out.clone().or(a.dir.clone()) else {
                bail!("--job needs --out: the folder to check");
            };
            let (conn, _) = connect(&a.client, DEV_DEVICE_CRED).await?;
            let tenant = a.tenant.clone().unwrap_or_else(|| conn.tenant.clone());
            let doc = match verify::signed_manifest(&conn, &tenant, job, &a.reason).await? {
                Ok(doc) => doc,
                Err(why) => bail!("job {job} cannot be verified: {why}"),
            };
            conn.close().await;
            let trusted = trusted(&doc, a.public_key.as_deref())?;
            (doc, trusted, dir)
        }
        (None, Some(dir)) => {
            let (Some(key), Some(path)) = (&a.public_key, &a.manifest) else {
                bail!(
                    "checking a folder offline needs --manifest (from `quire get --manifest`) \
                     and --public-key (from `quire admin signing-key export`)"
                );
            };
            (
                verify::read_manifest(path)?,
                trusted_from(key)?,
                dir.clone(),
            )
        }
        (None, None) => bail!("give a folder (offline) or --job and --out"),
    };
    let report = verify::verify_folder(&doc, &trusted, &dir)
        .with_context(|| format!("job {} of tenant {}", doc.job_id, doc.tenant))?;
    print_report(&doc, &report, &dir)
}

fn print_report(doc: &SignedManifest, report: &FolderReport, dir: &Path) -> Result<()> {
    for name in &report.missing {
        println!("missing\t{name}");
    }
    for name in &report.different {
        println!("altered\t{name}");
    }
    for name in &report.unlisted {
        println!("unlisted\t{name}");
    }
    if !report.proves() {
        bail!(
            "{} does not match job {} as signed: {} missing, {} altered",
            dir.display(),
            doc.job_id,
            report.missing.len(),
            report.different.len()
        );
    }
    eprintln!(
        "{}: all {} pages of job {} (tenant {}) match the manifest signed by {} at {} (Unix ms){}{}",
        dir.display(),
        report.matching,
        doc.job_id,
        doc.tenant,
        doc.key_id,
        doc.committed_unix_ms,
        time_stamped(doc)?,
        match report.unlisted.len() {
            0 => String::new(),
            n => format!("; {n} other files are not part of it"),
        }
    );
    Ok(())
}

/// What the document's RFC 3161 time-stamp says (already shown to be over its signature by
/// `verify`), as the end of a sentence; empty without one.
fn time_stamped(doc: &SignedManifest) -> Result<String> {
    Ok(match doc.stamp()? {
        None => String::new(),
        Some(s) => format!(
            ", time-stamped at {} (Unix s) under TSA policy {}, serial {} (check the TSA's \
             signature with `openssl ts -verify`, docs/SIGNING.md)",
            s.gen_time_unix, s.policy, s.serial
        ),
    })
}

/// What `quire get` was asked for, for the signature check after it.
pub(crate) struct Fetch<'a> {
    pub tenant: &'a str,
    pub job: &'a str,
    pub reason: &'a str,
    pub public_key: Option<&'a str>,
    /// Where to write the signed manifest.
    pub manifest: Option<&'a Path>,
}

/// After `quire get`: checks the job's signature and that the pages fetched are the ones it
/// lists, and writes it where asked. A job committed before signing (or an older server)
/// is said, not refused: its pages were still checked against their digests.
pub(crate) async fn after_get(
    conn: &Connection,
    asked: Fetch<'_>,
    fetched: &[client::get::Fetched],
) -> Result<()> {
    let job = asked.job;
    let doc = match verify::signed_manifest(conn, asked.tenant, job, asked.reason).await? {
        Ok(doc) => doc,
        Err(why) => {
            if asked.manifest.is_some() {
                bail!("no signed manifest to write: {why}");
            }
            eprintln!("warning: no signature checked: {why}");
            return Ok(());
        }
    };
    let trusted = trusted(&doc, asked.public_key)?;
    let pages = doc
        .verify(|id| trusted.get(id))
        .with_context(|| format!("job {job}"))?;
    for f in fetched {
        if pages.get(f.entry.index as usize) != Some(&f.entry) {
            bail!(
                "page {} ({}) is not the page the signed manifest of job {job} lists",
                f.entry.index,
                f.entry.name
            );
        }
    }
    if let Some(path) = asked.manifest {
        std::fs::write(path, doc.to_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "manifest signed by {} of tenant {} at {} (Unix ms){}: verified",
        doc.key_id,
        doc.tenant,
        doc.committed_unix_ms,
        time_stamped(&doc)?
    );
    Ok(())
}
