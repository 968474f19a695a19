//! `quire admin …`: the administrator's commands, each a thin layer over
//! `quire_client::admin` that prints what happened.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use quire_client::credential::{Credential, CredentialFile, DEV_ADMIN_CRED};
use quire_client::{self as client, Connection};
use quire_codecs::wire::{AdminRequest, DeviceState, Role};
use quire_server::config::ServerConfig;

use crate::{connect, ClientArgs};

mod audit;
mod backup;
mod bootstrap;
mod scrub;
mod signing;

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Any administrative operation by its audit name, fields as FIELD=VALUE (e.g. `call
    /// job.abort tenant=acme job_id=J`); `call --list` names them all. The commands below are
    /// friendlier; operations that issue a credential need theirs (its secret is not printed).
    Call {
        /// The operation, as the audit log names it (`tenant.create`, `hold.set`, …).
        #[arg(required_unless_present = "list")]
        action: Option<String>,
        /// Its fields, each FIELD=VALUE.
        fields: Vec<String>,
        /// List every operation and its fields.
        #[arg(long)]
        list: bool,
    },
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Devices (scanners) and admin credentials.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Read-only status of a tenant (operators, admins, and support partners with a grant).
    Status {
        #[arg(long)]
        tenant: String,
        /// Why you look; required of support partners, recorded in the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// A tenant's jobs and where each is: open, committed, delivered or deleted, held or not,
    /// pages, bytes and times.
    Jobs {
        #[arg(long)]
        tenant: String,
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// One JSON object per job, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Time-boxed, revocable access for a support partner.
    Grant {
        #[command(subcommand)]
        command: GrantCommand,
    },
    /// One-time enrollment tokens for new scanners.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Tenant keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Legal holds: nothing under a hold is deleted, by any policy, until it is released.
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Unfinished uploads.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// The tamper-evident audit trail: verify a tenant's chain, export it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Back up this node's metadata store, keyring files and audit log to its default
    /// object store now (service admin; `[backup] every` makes them on a schedule).
    Backup,
    /// Fill a new node's data directory from a backup (run with the server stopped; the
    /// node's vault must be the backed-up node's).
    Restore(backup::RestoreArgs),
    /// Read every stored object of a tenant through (no plaintext leaves the server) and
    /// report those missing, corrupt, or stored without a record. Exits non-zero if any.
    Scrub(scrub::ScrubArgs),
    /// The public keys that check a tenant's signed manifests.
    SigningKey {
        #[command(subcommand)]
        command: signing::SigningKeyCommand,
    },
    /// The server's TLS certificate.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Create the first service administrator of a server that makes no development
    /// credentials (one with a configuration file, or listening beyond loopback). Runs on the
    /// data directory with the server stopped, once: a server that has a service
    /// administrator refuses, and no existing device is overwritten.
    Bootstrap {
        /// The server's configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The server's data directory [default: ./quire-data, or `data_dir` in the config].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where administrators reach the server, host:port (the host, if a name, is what its
        /// certificate is issued for).
        #[arg(long)]
        server: String,
        /// The administrator's tenant (created if missing).
        #[arg(long, default_value = "ops")]
        tenant: String,
        #[arg(long, default_value = "admin")]
        device_id: String,
        /// Where to write the credential (mode 0600; an existing file is not overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// The key vault, checked on the data directory itself (run it where `quire serve`
    /// runs, with the server stopped: it is what to run when the server refuses to start).
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TlsCommand {
    /// Read the certificate and key files again after a renewal (as SIGHUP does): new
    /// connections get the new certificate, open ones keep theirs; if the files are bad the
    /// certificate in use stays and this says why. Service admin only.
    Reload,
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Abandon an uncommitted job (say, one a crashed scanner will never finish): its stored
    /// pages are deleted and its id is free again. Committed jobs cannot be aborted.
    Abort {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        job: String,
    },
}

#[derive(Subcommand, Debug)]
enum VaultCommand {
    /// Compare every tenant's keys with its data: the key versions the metadata records and
    /// the jobs it holds against the keys the vault holds. Exits non-zero on a mismatch.
    Check {
        /// The server's configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The server's data directory [default: ./quire-data, or `data_dir` in the config].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum HoldCommand {
    /// Place a hold on a tenant, or with --job on one job.
    Set {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        job: Option<String>,
        /// Why (e.g. the court order); recorded with the hold and in the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Release a hold; deletions the policy has due happen on the next sweep.
    Release {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        job: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum GrantCommand {
    /// Let a support partner see the tenant's status for some hours.
    Create {
        #[arg(long)]
        tenant: String,
        /// The support partner's device id.
        #[arg(long)]
        partner: String,
        #[arg(long, default_value_t = 4)]
        hours: u32,
        /// Why access is granted; recorded in the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Withdraw a support partner's access at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        partner: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Issue a token; it is printed as the last line.
    Create {
        #[arg(long)]
        tenant: String,
        /// Hours until the token expires.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u32,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Add a new key version; new objects use it, old ones still open.
    Rotate {
        #[arg(long)]
        tenant: String,
    },
    /// Re-wrap every stored data key under the newest key version (headers only).
    Rewrap {
        #[arg(long)]
        tenant: String,
    },
    /// Destroy an old key version once no stored object is under it (rewrap first).
    Retire {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        version: u32,
    },
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    /// Create a tenant.
    Create { name: String },
    /// Destroy every key of the tenant (crypto-shredding): its stored data can never be
    /// opened again, and its devices are revoked. Irreversible.
    Shred { name: String },
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Issue a credential for a new device; it stays pending until enabled.
    Create {
        #[arg(long)]
        tenant: String,
        /// Device id (letters, digits, '-' and '_').
        #[arg(long)]
        id: String,
        /// device, tenant-admin, operator, support-partner or service-admin.
        #[arg(long, default_value = "device")]
        role: String,
        /// Enable it at once.
        #[arg(long)]
        enable: bool,
        /// Where to write the credential file (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Allow a device to send.
    Enable { device_id: String },
    /// Stop a device from sending (reversible).
    Disable { device_id: String },
    /// Withdraw a device's credential for good.
    Revoke { device_id: String },
    /// Issue a new secret for a device; the old one stops working at once.
    Rotate {
        device_id: String,
        /// Where to write the new credential file (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// List a tenant's devices.
    List {
        #[arg(long)]
        tenant: String,
    },
}

pub async fn admin(a: AdminArgs) -> Result<()> {
    if let AdminCommand::Vault {
        command: VaultCommand::Check { config, data_dir },
    } = &a.command
    {
        let config = ServerConfig::load(config.as_deref(), None, data_dir.clone())?;
        let report = quire_server::keycheck::check_data_dir(&config)?;
        print!("{}", report.text);
        if !report.ok {
            bail!("the vault does not hold every key the data needs (see above)");
        }
        return Ok(());
    }
    if let AdminCommand::Bootstrap { .. } = &a.command {
        return bootstrap::bootstrap(&a.command);
    }
    if let AdminCommand::Restore(args) = &a.command {
        return backup::restore(args).await;
    }
    if let AdminCommand::Call { list: true, .. } = &a.command {
        for (action, fields) in AdminRequest::FIELDS {
            println!("{action}\t{}", fields.join(" "));
        }
        return Ok(());
    }
    let (conn, cred) = connect(&a.client, DEV_ADMIN_CRED).await?;
    match a.command {
        AdminCommand::Vault { .. }
        | AdminCommand::Bootstrap { .. }
        | AdminCommand::Restore(_)
        | AdminCommand::Call { list: true, .. } => {
            unreachable!("answered above without a connection")
        }
        AdminCommand::Call { action, fields, .. } => call(&conn, action, &fields).await?,
        AdminCommand::Hold { command } => hold(&conn, command).await?,
        AdminCommand::Audit { command } => audit::audit(&conn, command).await?,
        AdminCommand::SigningKey { command } => signing::signing_key(&conn, command).await?,
        AdminCommand::Scrub(a) => scrub::scrub(&conn, a).await?,
        AdminCommand::Backup => backup::backup(&conn).await?,
        AdminCommand::Tls {
            command: TlsCommand::Reload,
        } => {
            conn.call(&quire_codecs::wire::Frame::Admin(
                AdminRequest::TlsReload {},
            ))
            .await?;
            println!("TLS certificate reloaded: new connections get it");
        }
        AdminCommand::Job {
            command: JobCommand::Abort { tenant, job },
        } => {
            let req = AdminRequest::JobAbort {
                tenant: tenant.clone(),
                job_id: job.clone(),
            };
            conn.call(&quire_codecs::wire::Frame::Admin(req)).await?;
            println!(
                "job {job} of tenant {tenant} aborted: its pages are deleted and its id is free"
            );
        }
        AdminCommand::Tenant {
            command: TenantCommand::Create { name },
        } => {
            client::admin::create_tenant(&conn, &name).await?;
            println!("tenant {name} created");
        }
        AdminCommand::Tenant {
            command: TenantCommand::Shred { name },
        } => {
            client::admin::key_op(
                &conn,
                AdminRequest::TenantShred {
                    tenant: name.clone(),
                },
            )
            .await?;
            println!("tenant {name} shredded: its keys are destroyed and its data can no longer be opened");
        }
        AdminCommand::Jobs { tenant, job, json } => {
            let jobs = client::admin::list_jobs(&conn, &tenant, job.as_deref()).await?;
            print_jobs(&jobs, json);
        }
        AdminCommand::Status { tenant, reason } => {
            match conn.call(&quire_codecs::wire::Frame::Admin(AdminRequest::Status { tenant, reason })).await? {
                quire_codecs::wire::Frame::AdminStatus {
                    tenant,
                    devices,
                    jobs,
                    committed_jobs,
                    committed_bytes,
                } => println!(
                    "tenant {tenant}: {devices} devices, {jobs} jobs ({committed_jobs} committed, {committed_bytes} bytes)"
                ),
                other => bail!("unexpected answer {other:?}"),
            }
        }
        AdminCommand::Grant { command } => grant(&conn, command).await?,
        AdminCommand::Token {
            command: TokenCommand::Create { tenant, ttl_hours },
        } => {
            let ttl = ttl_hours.saturating_mul(3600);
            let (token, expires) = client::admin::create_token(&conn, &cred, &tenant, ttl).await?;
            eprintln!(
                "one-time enrollment token for tenant {tenant}, valid until Unix time {expires}:"
            );
            println!("{token}");
        }
        AdminCommand::Key { command } => match command {
            KeyCommand::Rotate { tenant } => {
                let (v, _) = client::admin::key_op(
                    &conn,
                    AdminRequest::KeyRotate {
                        tenant: tenant.clone(),
                    },
                )
                .await?;
                println!("tenant {tenant} now seals new objects under key version {v}");
            }
            KeyCommand::Rewrap { tenant } => {
                let (v, n) = client::admin::key_op(
                    &conn,
                    AdminRequest::KeyRewrap {
                        tenant: tenant.clone(),
                    },
                )
                .await?;
                println!("tenant {tenant}: {n} objects re-wrapped to key version {v}");
            }
            KeyCommand::Retire { tenant, version } => {
                client::admin::key_op(
                    &conn,
                    AdminRequest::KeyRetire {
                        tenant: tenant.clone(),
                        version,
                    },
                )
                .await?;
                println!("tenant {tenant}: key version {version} destroyed");
            }
        },
        AdminCommand::Device { command } => {
            let server = a.client.server.clone();
            device(&conn, &cred, server, command).await?
        }
    }
    conn.close().await;
    Ok(())
}

/// `quire admin device …`: `server` is the address to write into issued credentials (the
/// admin's own `--server`, else its credential's).
async fn device(
    conn: &Connection,
    cred: &Credential,
    server: Option<String>,
    command: DeviceCommand,
) -> Result<()> {
    match command {
        DeviceCommand::Create {
            tenant,
            id,
            role,
            enable,
            out,
        } => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role {role:?}: expected device, tenant-admin, service-admin, operator or support-partner")
            })?;
            let server = server.clone().unwrap_or_else(|| cred.server.clone());
            let issued =
                client::admin::create_device(conn, cred, &server, &tenant, &id, role, enable)
                    .await?;
            issued.save(&out)?;
            println!(
                "device {id} of tenant {tenant} is {}; credential written to {}",
                if enable {
                    "enabled"
                } else {
                    "pending (enable it with `quire admin device enable`)"
                },
                out.display()
            );
        }
        DeviceCommand::Enable { device_id } => {
            client::admin::set_device_state(conn, &device_id, DeviceState::Enabled).await?;
            println!("device {device_id} enabled");
        }
        DeviceCommand::Disable { device_id } => {
            client::admin::set_device_state(conn, &device_id, DeviceState::Disabled).await?;
            println!("device {device_id} disabled");
        }
        DeviceCommand::Rotate { device_id, out } => {
            let server = server.clone().unwrap_or_else(|| cred.server.clone());
            let fresh = client::admin::rotate_device(conn, cred, &server, &device_id).await?;
            fresh.save(&out)?;
            println!(
                "device {device_id} has a new credential in {}; the old one no longer works",
                out.display()
            );
        }
        DeviceCommand::Revoke { device_id } => {
            client::admin::set_device_state(conn, &device_id, DeviceState::Revoked).await?;
            println!("device {device_id} revoked");
        }
        DeviceCommand::List { tenant } => {
            for d in client::admin::list_devices(conn, &tenant).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    d.device_id,
                    d.tenant,
                    d.role.as_str(),
                    d.state.as_str()
                );
            }
        }
    }
    Ok(())
}

/// `quire admin hold set|release`.
async fn hold(conn: &Connection, command: HoldCommand) -> Result<()> {
    let (req, done) = match command {
        HoldCommand::Set {
            tenant,
            job,
            reason,
        } => (
            AdminRequest::HoldSet {
                tenant: tenant.clone(),
                job: job.clone(),
                reason,
            },
            format!(
                "legal hold placed on {}",
                job.map(|j| format!("job {j} of tenant {tenant}"))
                    .unwrap_or(format!("tenant {tenant}"))
            ),
        ),
        HoldCommand::Release { tenant, job } => (
            AdminRequest::HoldRelease {
                tenant: tenant.clone(),
                job: job.clone(),
            },
            format!(
                "legal hold released on {}",
                job.map(|j| format!("job {j} of tenant {tenant}"))
                    .unwrap_or(format!("tenant {tenant}"))
            ),
        ),
    };
    conn.call(&quire_codecs::wire::Frame::Admin(req)).await?;
    println!("{done}");
    Ok(())
}

/// `quire admin grant create|revoke`.
async fn grant(conn: &Connection, command: GrantCommand) -> Result<()> {
    let req = match &command {
        GrantCommand::Create {
            tenant,
            partner,
            hours,
            reason,
        } => AdminRequest::GrantCreate {
            tenant: tenant.clone(),
            partner: partner.clone(),
            hours: *hours,
            reason: reason.clone(),
        },
        GrantCommand::Revoke { tenant, partner } => AdminRequest::GrantRevoke {
            tenant: tenant.clone(),
            partner: partner.clone(),
        },
    };
    conn.call(&quire_codecs::wire::Frame::Admin(req)).await?;
    match command {
        GrantCommand::Create {
            tenant,
            partner,
            hours,
            ..
        } => {
            println!("{partner} may see tenant {tenant} for {hours} hours")
        }
        GrantCommand::Revoke { tenant, partner } => {
            println!("{partner} may no longer see tenant {tenant}")
        }
    }
    Ok(())
}

/// `quire admin call ACTION FIELD=VALUE…`: any operation of the table in `quire_codecs`,
/// its answer printed (with secrets left out).
async fn call(conn: &Connection, action: Option<String>, fields: &[String]) -> Result<()> {
    let action = action.context("name the operation (`quire admin call --list`)")?;
    let pairs = fields
        .iter()
        .map(|f| {
            f.split_once('=')
                .with_context(|| format!("{f:?} is not FIELD=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let req = AdminRequest::from_text(&action, &pairs).map_err(anyhow::Error::msg)?;
    let answer = conn.call(&quire_codecs::wire::Frame::Admin(req)).await?;
    println!("{answer:?}");
    Ok(())
}

/// `quire admin jobs`: a table for people, or one JSON object per line for scripts (times in
/// Unix seconds, `null` for not yet).
fn print_jobs(jobs: &[quire_codecs::wire::JobState], json: bool) {
    let when = |t: u64| (t > 0).then_some(t);
    if json {
        for j in jobs {
            let row = serde_json::json!({
                "job": j.job_id,
                "state": j.phase.as_str(),
                "held": j.held,
                "pages": j.pages,
                "bytes": j.bytes,
                "created_unix": when(j.created_unix),
                "committed_unix": when(j.committed_unix),
                "delivered_unix": when(j.delivered_unix),
                "deleted_unix": when(j.deleted_unix),
            });
            println!("{row}");
        }
        return;
    }
    println!(
        "{:<40} {:<10} {:>6} {:>14} {:>12} {:>12}",
        "job", "state", "pages", "bytes", "committed", "delivered"
    );
    for j in jobs {
        let state = if j.held {
            format!("{}+held", j.phase.as_str())
        } else {
            j.phase.as_str().to_string()
        };
        let t = |v: u64| when(v).map_or("-".to_string(), |v| v.to_string());
        println!(
            "{:<40} {:<10} {:>6} {:>14} {:>12} {:>12}",
            j.job_id,
            state,
            j.pages,
            j.bytes,
            t(j.committed_unix),
            t(j.delivered_unix)
        );
    }
}
