//! `quire admin bootstrap`: the first service administrator of a server that makes no
//! development credentials, written on the data directory with the server stopped.

use anyhow::{bail, Result};
use quire_client::credential::CredentialFile;
use quire_server::config::ServerConfig;

use super::AdminCommand;

/// `quire admin bootstrap`: the first service administrator, on the data directory.
pub(super) fn bootstrap(command: &AdminCommand) -> Result<()> {
    let AdminCommand::Bootstrap {
        config,
        data_dir,
        server,
        tenant,
        device_id,
        out,
    } = command
    else {
        unreachable!("called for the bootstrap command only");
    };
    if out.exists() {
        bail!(
            "{} exists: the bootstrap writes a new credential and overwrites none",
            out.display()
        );
    }
    let config = ServerConfig::load(config.as_deref(), None, data_dir.clone())?;
    let cred = quire_server::bootstrap::first_admin(
        &config,
        &quire_server::bootstrap::FirstAdmin {
            server,
            tenant,
            device_id,
        },
    )?;
    cred.save(out)?;
    println!(
        "service admin {device_id} of tenant {tenant}: credential written to {} (mode 0600, \
         the only copy of its secret)",
        out.display()
    );
    Ok(())
}
