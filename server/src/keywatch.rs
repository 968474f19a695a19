//! Forgetting cached keys when another node rotates, retires or shreds a tenant's keys: the
//! node that makes the change updates its own cache; this drops the copies every other node
//! sharing the metadata store holds, within about a second instead of the cache's lifetime.

use std::sync::Arc;

use tracing::debug;

use crate::edge::State;

/// Follows the metadata store's key changes, if it has any to tell (a shared database), for
/// as long as the server's state lives.
pub(crate) fn spawn(state: &Arc<State>) {
    crate::cutoff::follow(state, state.meta.key_changes(), |state, tenant| {
        debug!(tenant = %tenant, "keys changed; cached keys dropped");
        state.pipeline.vault.forget(&tenant);
    });
}
