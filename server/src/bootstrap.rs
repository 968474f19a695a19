//! The first service administrator of a server that makes no development credentials (one
//! with a configuration file, or listening beyond loopback): `quire admin bootstrap` writes it
//! on the data directory itself, with the server stopped, once. Existing devices are never
//! overwritten, and a server that has a service administrator already refuses a second
//! bootstrap (that administrator creates the others).

use std::net::SocketAddr;
use std::path::Path;

use quire_codecs::wire::{validate_id, DeviceState, Role};
use quire_net::address::ServerAddress;
use quire_net::credential::{Credential, CredentialFile, DEV_ADMIN_CRED, DEV_DEVICE_CRED};

use crate::auth::DeviceRecord;
use crate::config::ServerConfig;
use crate::edge::ServeError;
use crate::identity::{Identity, IdentitySource};

/// Who the first administrator is and how it reaches the server.
#[derive(Debug, Clone)]
pub struct FirstAdmin<'a> {
    /// `host:port` scanners and administrators reach the server at; the host, if a name, is
    /// what the server's certificate must be issued for.
    pub server: &'a str,
    /// The tenant the administrator belongs to (created if missing).
    pub tenant: &'a str,
    pub device_id: &'a str,
}

/// Creates the first service administrator and returns its credential (the only copy of its
/// secret: the caller writes it with mode 0600 and prints where).
pub fn first_admin(config: &ServerConfig, who: &FirstAdmin<'_>) -> Result<Credential, ServeError> {
    let refuse = |message: String| ServeError::Bootstrap(message);
    validate_id("tenant", who.tenant).map_err(|e| refuse(e.to_string()))?;
    validate_id("device id", who.device_id).map_err(|e| refuse(e.to_string()))?;
    // The development certificate is issued for `localhost`: the name for an IP address.
    let server_name = ServerAddress::parse(who.server)
        .map_err(|e| refuse(format!("--server {:?}: {e}", who.server)))?
        .tls_name("localhost")
        .to_string();
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| ServeError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let meta = config.meta.open(dir)?;
    let admins: Vec<String> = meta
        .all_devices()?
        .into_iter()
        .filter(|d| d.role == Role::ServiceAdmin && d.state != DeviceState::Revoked)
        .map(|d| d.device_id)
        .collect();
    if !admins.is_empty() {
        return Err(refuse(format!(
            "this server has a service administrator already ({}): use its credential \
             (`quire admin device create --role service-admin`) to make more",
            admins.join(", ")
        )));
    }
    if meta.device(who.device_id)?.is_some() {
        return Err(refuse(format!(
            "a device {} exists already and is never overwritten: choose another --device-id",
            who.device_id
        )));
    }
    let trust_anchor = Identity::read(&IdentitySource::of(config))?
        .trust_anchor_pem()
        .to_string();
    meta.ensure_tenant(who.tenant)?;
    let secret = quire_net::random_secret();
    meta.put_device(&DeviceRecord {
        device_id: who.device_id.into(),
        tenant: who.tenant.into(),
        role: Role::ServiceAdmin,
        state: DeviceState::Enabled,
        secret_hash: crate::auth::hash_secret(&secret),
    })?;
    crate::audit::AuditLog::open_for(dir, meta.as_ref(), config.audit.checkpoint_records)?
        .record(
            who.device_id,
            Role::ServiceAdmin.as_str(),
            "admin.bootstrap",
            who.tenant,
            &format!("device={}", who.device_id),
            "ok",
        )
        .map_err(|e| ServeError::AuditTrail(format!("cannot write the audit trail: {e}")))?;
    Ok(Credential {
        server: who.server.into(),
        server_name,
        tenant: who.tenant.into(),
        device_id: who.device_id.into(),
        role: Role::ServiceAdmin.as_str().into(),
        secret: hex::encode(*secret),
        server_ca: trust_anchor,
    })
}

/// Creates the development tenant, an enabled scanner and a service admin, and writes
/// their credential files under `dir/dev/`, for a server at `addr` whose clients trust
/// `trust_anchor_pem`. Existing credentials are kept (only the server address in them is
/// refreshed) so a restart does not invalidate them.
pub(crate) fn dev_credentials(
    meta: &dyn crate::meta::MetaStore,
    addr: SocketAddr,
    trust_anchor_pem: &str,
    dir: &Path,
    tenant: &str,
) -> Result<(), ServeError> {
    meta.ensure_tenant(tenant)?;
    let connect_ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let server = SocketAddr::new(connect_ip, addr.port()).to_string();
    for (file, device_id, role) in [
        (DEV_DEVICE_CRED, "dev-scanner", Role::Device),
        (DEV_ADMIN_CRED, "dev-admin", Role::ServiceAdmin),
    ] {
        let path = dir.join(file);
        let existing = Credential::load(&path).ok().filter(|c| {
            let rec = meta.device(&c.device_id).ok().flatten();
            match (rec, c.secret_bytes()) {
                (Some(rec), Some(secret)) => rec.secret_hash == crate::auth::hash_secret(&secret),
                _ => false,
            }
        });
        let cred = match existing {
            Some(mut c) => {
                c.server = server.clone();
                c.server_ca = trust_anchor_pem.to_string();
                c
            }
            None => {
                let secret = quire_net::random_secret();
                meta.put_device(&DeviceRecord {
                    device_id: device_id.into(),
                    tenant: tenant.into(),
                    role,
                    state: DeviceState::Enabled,
                    secret_hash: crate::auth::hash_secret(&secret),
                })?;
                Credential {
                    server: server.clone(),
                    server_name: "localhost".into(),
                    tenant: tenant.into(),
                    device_id: device_id.into(),
                    role: role.as_str().into(),
                    secret: hex::encode(*secret),
                    server_ca: trust_anchor_pem.to_string(),
                }
            }
        };
        cred.save(&path)?;
    }
    Ok(())
}
