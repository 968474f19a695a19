//! Hearing of changes other nodes make, within a second: devices disabled, revoked or
//! rotated (to close their connections), and tenants' keys rotated, retired or shredded (to
//! drop the cached keys).
//!
//! A change takes the next number of its sequence and sends a `NOTIFY` on the feed's channel
//! when its transaction commits. Each node keeps one connection of its own listening per
//! feed; a notification wakes it to read every change numbered after the last it saw. The
//! numbers make missed notifications harmless: while the listening connection is down the
//! node polls every [`POLL_WITHOUT_LISTEN`], and it polls every [`POLL_ANYWAY`] even when
//! listening, so a lost connection or notification costs delay, not a change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Row};
use tracing::{info, warn};

use super::pg;
use crate::meta::{DeviceChange, DeviceEvent, MetaError};

/// How often changes are read while no connection is listening.
const POLL_WITHOUT_LISTEN: Duration = Duration::from_millis(500);
/// How often they are read even while one is.
const POLL_ANYWAY: Duration = Duration::from_secs(10);
/// Wait before listening again after the connection failed.
const RELISTEN_AFTER: Duration = Duration::from_secs(2);

/// One kind of change to follow.
pub(super) struct Feed<E> {
    /// What changes, for the log.
    what: &'static str,
    pub(super) channel: &'static str,
    /// The newest change's number.
    latest: &'static str,
    /// `(number, …)` of the changes after `$1`, in order.
    after: &'static str,
    event: fn(&Row) -> Option<E>,
}

/// Device changes (schema 2): the node closes the device's connections.
pub(super) const DEVICES: Feed<DeviceEvent> = Feed {
    what: "device changes",
    channel: "quire_devices",
    latest: "SELECT COALESCE(max(change_seq), 0) FROM devices",
    after: "SELECT change_seq, device_id, last_change FROM devices \
            WHERE change_seq > $1 ORDER BY change_seq",
    event: |r| {
        Some(DeviceEvent {
            device_id: r.get(1),
            change: DeviceChange::parse(r.get(2))?,
        })
    },
};

/// Key changes (schema 6): the node forgets the tenant's cached keys.
pub(super) const KEYS: Feed<String> = Feed {
    what: "key changes",
    channel: "quire_keys",
    latest: "SELECT COALESCE(max(seq), 0) FROM key_changes",
    after: "SELECT seq, tenant FROM key_changes WHERE seq > $1 ORDER BY seq",
    event: |r| Some(r.get(1)),
};

/// Starts watching (on the client's runtime); changes from now on arrive on the receiver.
/// The watch ends when the receiver is dropped.
pub(super) fn start<E: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    pool: Pool,
    dial: super::tls::Dial,
    feed: &'static Feed<E>,
) -> mpsc::UnboundedReceiver<E> {
    let (events, receiver) = mpsc::unbounded_channel();
    let (wake, woken) = mpsc::unbounded_channel();
    let listening = Arc::new(AtomicBool::new(false));
    runtime.spawn(listen(
        dial,
        feed.channel,
        feed.what,
        wake,
        listening.clone(),
    ));
    runtime.spawn(read_changes(pool, feed, events, woken, listening));
    receiver
}

/// Reads the changes numbered after the last one seen whenever woken or the poll is due.
async fn read_changes<E>(
    pool: Pool,
    feed: &'static Feed<E>,
    events: mpsc::UnboundedSender<E>,
    mut woken: mpsc::UnboundedReceiver<()>,
    listening: Arc<AtomicBool>,
) {
    // Changes from before the watch began are not news.
    let mut last = loop {
        match latest(&pool, feed).await {
            Ok(n) => break n,
            Err(e) => {
                warn!(error = %e, what = feed.what, "cannot read changes yet; trying again");
                tokio::time::sleep(POLL_WITHOUT_LISTEN).await;
            }
        }
    };
    while !events.is_closed() {
        let wait = match listening.load(Ordering::Relaxed) {
            true => POLL_ANYWAY,
            false => POLL_WITHOUT_LISTEN,
        };
        tokio::select! {
            _ = woken.recv() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = events.closed() => return,
        }
        match changes_after(&pool, feed, last).await {
            Ok(changes) => {
                for (seq, event) in changes {
                    last = last.max(seq);
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
            Err(e) => warn!(error = %e, what = feed.what, "cannot read changes; trying again"),
        }
    }
}

async fn latest<E>(pool: &Pool, feed: &Feed<E>) -> Result<i64, MetaError> {
    let c = pool.get().await.map_err(|e| MetaError::Db(e.to_string()))?;
    let r = c.query_one(feed.latest, &[]).await.map_err(pg)?;
    Ok(r.get(0))
}

async fn changes_after<E>(
    pool: &Pool,
    feed: &Feed<E>,
    last: i64,
) -> Result<Vec<(i64, E)>, MetaError> {
    let c = pool.get().await.map_err(|e| MetaError::Db(e.to_string()))?;
    let rows = c.query(feed.after, &[&last]).await.map_err(pg)?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get(0), (feed.event)(r)?)))
        .collect())
}

/// Keeps one connection listening on `channel`, reconnecting when it fails; every
/// notification (and every new start of listening, which may have missed some) wakes
/// [`read_changes`].
async fn listen(
    dial: super::tls::Dial,
    channel: &'static str,
    what: &'static str,
    wake: mpsc::UnboundedSender<()>,
    listening: Arc<AtomicBool>,
) {
    while !wake.is_closed() {
        match dial.connect().await {
            Ok((client, mut connection)) => {
                let notify = wake.clone();
                let messages = tokio::spawn(async move {
                    let mut stream =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = stream.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => {
                                let _ = notify.send(());
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {channel}")).await {
                    Ok(()) => {
                        listening.store(true, Ordering::Relaxed);
                        info!(what, "listening for changes of other nodes");
                        let _ = wake.send(());
                        let _ = messages.await;
                        warn!(what, "stopped listening for changes; polling until back");
                    }
                    Err(e) => {
                        warn!(error = %super::schema::describe(&e), what, "cannot listen for changes; polling");
                        messages.abort();
                    }
                }
                listening.store(false, Ordering::Relaxed);
                // The reader waits on the slow poll while listening: start the fast one now.
                let _ = wake.send(());
                drop(client);
            }
            Err(e) => {
                warn!(error = %super::schema::describe(&e), what, "cannot listen for changes; polling");
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}
