//! Cutting off scanners whose device another node disabled, revoked or rotated: the node
//! that makes a change closes the device's connections itself (`State::disconnect_device`);
//! this closes those open on every other node sharing the metadata store.

use std::sync::{Arc, Weak};

use tracing::info;

use crate::edge::State;

/// Follows the metadata store's device changes, if it has any to tell (a shared database),
/// for as long as the server's state lives.
pub(crate) fn spawn(state: &Arc<State>) {
    let Some(mut events) = state.meta.device_events() else {
        return;
    };
    let state: Weak<State> = Arc::downgrade(state);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Some(state) = state.upgrade() else {
                return;
            };
            if let Some(reason) = event.cut_off_reason() {
                info!(device = %event.device_id, change = event.change.as_str(), "device changed on another node");
                state.disconnect_device(&event.device_id, &reason);
            }
        }
    });
}
