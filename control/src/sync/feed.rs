//! One environment's change feed: reads new revisions from the change log once, encodes each as a
//! frame once, and broadcasts it to every session of the environment on this replica.
//!
//! The feed is woken by a local commit or a Redis message ([`Feed::wake`]) and also polls the
//! environment's revision every `poll_interval`, so a lost notification delays propagation but
//! never loses it: the store is the truth, notifications are only hints.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use vexil_proto::frame::FrameCodec;

use super::frames;
use crate::store::{Store, StoreError};

/// Changes read from the log per query.
const BATCH: i64 = 512;

/// What a feed broadcasts: one encoded frame that moves a sidecar from `from` to `to`.
#[derive(Debug)]
pub enum Update {
    /// A `Delta` (or a `Full` for a whole-set change, or after a gap) to send as is.
    Frame {
        /// The revision the frame applies on top of.
        from: i64,
        /// The revision it brings the sidecar to.
        to: i64,
        /// The encoded `ServerFrame`.
        frame: Bytes,
        /// `delta` or `full` (for metrics).
        kind: &'static str,
    },
    /// The environment was deleted: sessions end with `UNKNOWN_ENVIRONMENT`.
    Gone,
}

/// A feed's shared state. The task driving it is [`Feed::run`].
pub struct Feed {
    /// The environment key.
    pub environment: String,
    /// Latest revision broadcast (shared with the registry, for lag).
    pub head: Arc<AtomicI64>,
    updates: broadcast::Sender<Arc<Update>>,
    wake: Notify,
    /// The latest encoded `Full` frame and its revision, so a burst of (re)connecting sidecars
    /// costs one export, not one each.
    full: tokio::sync::Mutex<Option<(i64, Bytes)>>,
    codec: FrameCodec,
}

impl Feed {
    /// A feed for `environment`, starting at `head` (its revision now).
    pub fn new(environment: &str, head: i64, codec: FrameCodec) -> Feed {
        Feed {
            environment: environment.to_string(),
            head: Arc::new(AtomicI64::new(head)),
            updates: broadcast::channel(1024).0,
            wake: Notify::new(),
            full: tokio::sync::Mutex::new(None),
            codec,
        }
    }

    /// Updates from now on. Subscribe *before* reading the store to catch up, so nothing committed
    /// in between is missed (a duplicate is recognised by its revisions and skipped).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Update>> {
        self.updates.subscribe()
    }

    /// Sessions subscribed to this feed.
    pub fn subscribers(&self) -> usize {
        self.updates.receiver_count()
    }

    /// Asks the feed to read the change log now (a commit to `revision` happened somewhere).
    pub fn wake(&self, revision: i64) {
        if revision > self.head.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// The encoded `Full` frame of the environment at its latest revision, with that revision.
    pub async fn full_frame(&self, store: &Store) -> Result<(i64, Bytes), SyncError> {
        let mut cache = self.full.lock().await;
        if let Some((rev, bytes)) = cache.as_ref()
            && *rev >= self.head.load(Ordering::SeqCst)
        {
            return Ok((*rev, bytes.clone()));
        }
        let (env, doc) = store.export(&self.environment).await?;
        let bytes = self.codec.encode_frame(&frames::full(env.revision, &doc))?;
        *cache = Some((env.revision, bytes.clone()));
        Ok((env.revision, bytes))
    }

    /// Drives the feed until `cancel`: reads and broadcasts new revisions when woken and every
    /// `poll_interval`.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        poll_interval: Duration,
        cancel: CancellationToken,
    ) {
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let polled = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => false,
                _ = poll.tick() => true,
            };
            let result = if polled {
                self.poll(&store).await
            } else {
                self.advance(&store).await
            };
            match result {
                Ok(()) => {}
                Err(SyncError::Store(StoreError::NotFound(_))) => {
                    let _ = self.updates.send(Arc::new(Update::Gone));
                }
                Err(e) => {
                    tracing::warn!(environment = %self.environment, error = %e,
                        "sync feed could not read the change log; retrying at the next poll");
                }
            }
        }
    }

    /// The periodic check: the environment's revision, then the change log when it moved.
    async fn poll(&self, store: &Store) -> Result<(), SyncError> {
        let current = store.get_environment(&self.environment).await?.revision;
        let head = self.head.load(Ordering::SeqCst);
        if current < head {
            // Deleted and created again: its revisions started over. Everyone gets a full set.
            return self.broadcast_full(store).await;
        }
        if current > head {
            self.advance(store).await?;
        }
        Ok(())
    }

    /// Reads every change after the head and broadcasts one frame per revision.
    async fn advance(&self, store: &Store) -> Result<(), SyncError> {
        loop {
            let head = self.head.load(Ordering::SeqCst);
            let changes = store.changes_since(&self.environment, head, BATCH).await?;
            let Some(first) = changes.first() else {
                return Ok(());
            };
            if first.revision != head + 1 {
                // Only when the log was cut (environment recreated): restate everything.
                return self.broadcast_full(store).await;
            }
            let mut from = head;
            for change in &changes {
                let frame = frames::for_change(from, change);
                let kind = if frames::is_full(&frame) {
                    "full"
                } else {
                    "delta"
                };
                self.publish(
                    from,
                    change.revision,
                    self.codec.encode_frame(&frame)?,
                    kind,
                );
                from = change.revision;
            }
            if (changes.len() as i64) < BATCH {
                return Ok(());
            }
        }
    }

    async fn broadcast_full(&self, store: &Store) -> Result<(), SyncError> {
        let from = self.head.load(Ordering::SeqCst);
        // Invalidate the cache: its revision may be from the old incarnation.
        *self.full.lock().await = None;
        let (to, frame) = self.full_frame(store).await?;
        self.publish(from, to, frame, "full");
        Ok(())
    }

    /// Moves the head, then broadcasts: a session that reads the head after subscribing either
    /// sees the new head or receives the update.
    fn publish(&self, from: i64, to: i64, frame: Bytes, kind: &'static str) {
        self.head.store(to, Ordering::SeqCst);
        let _ = self.updates.send(Arc::new(Update::Frame {
            from,
            to,
            frame,
            kind,
        }));
    }
}

/// Why serving a sync stream failed on control's side.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A frame could not be encoded (too large).
    #[error(transparent)]
    Frame(#[from] vexil_proto::frame::FrameError),
}
