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
        /// The environment incarnation the revisions belong to.
        incarnation: Arc<str>,
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
    /// The environment incarnation whose revisions the feed follows; when the store names
    /// another (the environment was created again, or rotated), the feed restates everything.
    incarnation: std::sync::Mutex<Arc<str>>,
    /// The latest encoded `Full` frame, its revision and incarnation, so a burst of (re)connecting
    /// sidecars costs one export, not one each.
    full: tokio::sync::Mutex<Option<(i64, Arc<str>, Bytes)>>,
    /// Control's digest of the document at one revision of one incarnation, computed once for
    /// every sidecar acknowledging it.
    digest: tokio::sync::Mutex<Option<(i64, Arc<str>, String)>>,
    codec: FrameCodec,
}

impl Feed {
    /// A feed for `environment`, starting at `head` (its revision now) of `incarnation`.
    pub fn new(environment: &str, head: i64, incarnation: &str, codec: FrameCodec) -> Feed {
        Feed {
            environment: environment.to_string(),
            head: Arc::new(AtomicI64::new(head)),
            updates: broadcast::channel(1024).0,
            wake: Notify::new(),
            incarnation: std::sync::Mutex::new(Arc::from(incarnation)),
            full: tokio::sync::Mutex::new(None),
            digest: tokio::sync::Mutex::new(None),
            codec,
        }
    }

    /// The incarnation the feed follows.
    pub fn incarnation(&self) -> Arc<str> {
        self.incarnation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_incarnation(&self, incarnation: &str) {
        let mut current = self.incarnation.lock().unwrap_or_else(|e| e.into_inner());
        if &**current != incarnation {
            *current = Arc::from(incarnation);
        }
    }

    /// Control's digest (`vexil_proto::digest`) of the document at `revision` of `incarnation`, when
    /// that is still the environment's current state (else `None`: it cannot be checked any more).
    pub async fn digest_at(
        &self,
        store: &Store,
        revision: i64,
        incarnation: &str,
    ) -> Result<Option<String>, SyncError> {
        let mut cache = self.digest.lock().await;
        if let Some((rev, inc, digest)) = cache.as_ref()
            && *rev == revision
            && &**inc == incarnation
        {
            return Ok(Some(digest.clone()));
        }
        let (env, doc) = store.export(&self.environment).await?;
        if env.revision != revision || env.incarnation != incarnation {
            return Ok(None);
        }
        let digest = vexil_proto::digest::document_digest(&doc);
        *cache = Some((revision, Arc::from(incarnation), digest.clone()));
        Ok(Some(digest))
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

    /// The encoded `Full` frame of the environment at its latest revision, with that revision and
    /// its incarnation. The cached frame serves only while it is of the incarnation the feed
    /// follows and not behind its head.
    ///
    /// `current` is the incarnation the caller just read from the store, if it did: a cached frame
    /// of another one is not used even before the feed's next poll has noticed the change.
    pub async fn full_frame(
        &self,
        store: &Store,
        current: Option<&str>,
    ) -> Result<(i64, Arc<str>, Bytes), SyncError> {
        let mut cache = self.full.lock().await;
        let wanted = current.map_or_else(|| self.incarnation(), Arc::from);
        if let Some((rev, inc, bytes)) = cache.as_ref()
            && *rev >= self.head.load(Ordering::SeqCst)
            && *inc == wanted
        {
            return Ok((*rev, inc.clone(), bytes.clone()));
        }
        let (env, doc) = store.export(&self.environment).await?;
        // Read after the document: keys at least as new as its revision (a rotation in between
        // is followed by its own Full).
        let keys = store.signing_keys(&self.environment).await?;
        let guarded = store.guarded_flags(&self.environment).await?;
        // Likewise the proposals (a change of them is followed by its own Full).
        let proposals = store.proposals(&self.environment).await?;
        let bytes = self.codec.encode_frame(&frames::full(
            env.revision,
            &env.incarnation,
            &doc,
            Some(frames::Attached {
                keys: &keys,
                guarded: &guarded,
                proposals: &proposals,
            }),
        ))?;
        let inc: Arc<str> = Arc::from(env.incarnation.as_str());
        *cache = Some((env.revision, inc.clone(), bytes.clone()));
        Ok((env.revision, inc, bytes))
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
        let env = store.get_environment(&self.environment).await?;
        let current = env.revision;
        let head = self.head.load(Ordering::SeqCst);
        if env.incarnation != *self.incarnation() || current < head {
            // Created again (or rotated after a restore): its revisions are not the ones the feed
            // followed, whatever their numbers. Everyone gets a full set.
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
            let incarnation = self.incarnation();
            // Only this incarnation's changes: another's are found by the poll, which restates.
            let changes = store
                .changes_in(&self.environment, Some(&incarnation), head, BATCH)
                .await?;
            let Some(first) = changes.first() else {
                return Ok(());
            };
            if first.revision != head + 1 {
                // Only when the log was cut (environment recreated): restate everything.
                return self.broadcast_full(store).await;
            }
            let mut from = head;
            for change in &changes {
                let Some(frame) = frames::for_change(from, &incarnation, change) else {
                    // A key rotation: the store's Full at its latest revision covers it and every
                    // change after it.
                    return self.broadcast_full(store).await;
                };
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
                    incarnation.clone(),
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
        let (to, incarnation, frame) = self.full_frame(store, None).await?;
        self.set_incarnation(&incarnation);
        self.publish(from, to, frame, "full", incarnation);
        Ok(())
    }

    /// Moves the head, then broadcasts: a session that reads the head after subscribing either
    /// sees the new head or receives the update.
    fn publish(&self, from: i64, to: i64, frame: Bytes, kind: &'static str, incarnation: Arc<str>) {
        self.head.store(to, Ordering::SeqCst);
        let _ = self.updates.send(Arc::new(Update::Frame {
            from,
            to,
            frame,
            kind,
            incarnation,
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
