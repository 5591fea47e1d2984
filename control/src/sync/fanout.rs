//! Redis pub/sub between control replicas sharing one PostgreSQL database.
//!
//! After each local commit this replica publishes `{environment, revision, origin}` on
//! [`CHANNEL`]; every replica subscribes and wakes the feed of that environment, which reads the
//! change log and pushes what is new to its own sidecars. Redis only speeds propagation up: a lost
//! message or a Redis outage is covered by each feed's poll of the store, and after every
//! (re)subscription all feeds are woken to catch up at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::timeout;

use super::hub::Hub;

/// The pub/sub channel.
pub const CHANNEL: &str = "vexil:commits";

/// Longest wait for Redis before giving up on one attempt.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// One commit announcement.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Announcement {
    /// Environment key.
    pub environment: String,
    /// Its new revision.
    pub revision: i64,
    /// The replica that committed it (`Welcome.server_id`).
    pub origin: String,
}

/// Starts publishing this replica's commits and following the others'. Fails only on a malformed
/// URL; an unreachable Redis is retried in the background.
pub fn start(hub: Arc<Hub>, url: &str) -> anyhow::Result<()> {
    let client =
        redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid --redis-url: {e}"))?;
    tokio::spawn(publish(hub.clone(), client.clone()));
    tokio::spawn(subscribe(hub, client));
    Ok(())
}

/// Publishes every local commit. A commit that cannot be published is only logged: the other
/// replicas' polls will find it.
async fn publish(hub: Arc<Hub>, client: redis::Client) {
    let mut commits = hub.store().subscribe();
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let cancel = hub.cancelled().clone();
    loop {
        let commit = tokio::select! {
            _ = cancel.cancelled() => return,
            c = commits.recv() => match c {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let message = Announcement {
            environment: commit.environment,
            revision: commit.revision,
            origin: hub.settings().server_id.clone(),
        };
        let payload = serde_json::to_string(&message).expect("plain struct serializes");
        if conn.is_none() {
            conn = match timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection()).await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "redis unreachable; commits propagate through the store poll");
                    None
                }
                Err(_) => None,
            };
        }
        if let Some(c) = conn.as_mut() {
            let sent: Result<Result<i64, _>, _> =
                timeout(REDIS_TIMEOUT, c.publish(CHANNEL, payload)).await;
            if !matches!(sent, Ok(Ok(_))) {
                tracing::warn!("redis publish failed; commits propagate through the store poll");
                conn = None;
            }
        }
    }
}

/// Follows the channel, reconnecting with a capped backoff, and wakes feeds on each message.
async fn subscribe(hub: Arc<Hub>, client: redis::Client) {
    let cancel = hub.cancelled().clone();
    let mut delay = Duration::from_millis(100);
    loop {
        match connect_pubsub(&client).await {
            Some(pubsub) => {
                tracing::info!("following commits of other replicas through redis");
                delay = Duration::from_millis(100);
                // Whatever was announced while we were away: look now.
                hub.notify_all();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        m = messages.next() => match m {
                            Some(m) => on_message(&hub, m.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                tracing::warn!("lost the redis subscription; reconnecting");
            }
            None => tracing::debug!("redis unreachable; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn connect_pubsub(client: &redis::Client) -> Option<redis::aio::PubSub> {
    let mut pubsub = timeout(REDIS_TIMEOUT, client.get_async_pubsub())
        .await
        .ok()?
        .ok()?;
    timeout(REDIS_TIMEOUT, pubsub.subscribe(CHANNEL))
        .await
        .ok()?
        .ok()?;
    Some(pubsub)
}

fn on_message(hub: &Hub, payload: &[u8]) {
    match serde_json::from_slice::<Announcement>(payload) {
        Ok(a) if a.origin != hub.settings().server_id => hub.notify(&a.environment, a.revision),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "ignoring a malformed message on {CHANNEL}"),
    }
}
