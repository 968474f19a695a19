//! Cutting off scanners whose device another node disabled, revoked or rotated: the node
//! that makes a change closes the device's connections itself (`State::disconnect_device`);
//! this closes those open on every other node sharing the metadata store.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc::UnboundedReceiver;
use tracing::info;

use crate::edge::State;

/// Follows the metadata store's device changes, if it has any to tell (a shared database),
/// for as long as the server's state lives.
pub(crate) fn spawn(state: &Arc<State>) {
    follow(state, state.meta.device_events(), |state, event| {
        if let Some(reason) = event.cut_off_reason() {
            info!(device = %event.device_id, change = event.change.as_str(), "device changed on another node");
            state.disconnect_device(&event.device_id, &reason);
        }
    });
}

/// Hands each change from `changes` (none if the store has none to tell) to `each`, for as
/// long as the server's state lives.
pub(crate) fn follow<E: Send + 'static>(
    state: &Arc<State>,
    changes: Option<UnboundedReceiver<E>>,
    each: fn(&State, E),
) {
    let Some(mut changes) = changes else {
        return;
    };
    let state: Weak<State> = Arc::downgrade(state);
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            let Some(state) = state.upgrade() else {
                return;
            };
            each(&state, change);
        }
    });
}
