//! One sidecar's sync stream: handshake, catch-up, then a frame per commit until either side leaves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument as _;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout};
use tokio_util::codec::FramedRead;
use vexil_proto::frame::{FrameCodec, FrameError, MessageCodec};
use vexil_proto::sync::v1::{
    ClientFrame, Error as ErrorFrame, Guarded, Ping, ServerFrame, Subscribe, Welcome, client_frame,
    server_frame::Kind,
};

use super::feed::{Feed, Update};
use super::frames;
use super::hub::{Hub, Refusal};
use super::registry::{AckedDigest, SidecarEntry};

type Frames = FramedRead<quinn::RecvStream, MessageCodec<ClientFrame>>;

/// QUIC application close codes.
mod close {
    /// Normal end (shutdown, sidecar left).
    pub const DONE: u32 = 0;
    /// Ended after an `Error` frame.
    pub const REFUSED: u32 = 1;
}

/// Serves one QUIC connection: expects exactly one bidirectional stream carrying the conversation.
pub async fn serve_connection(hub: Arc<Hub>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match timeout(hub.settings().handshake_timeout, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "sync handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "sync handshake timed out");
            return;
        }
    };
    let (send, recv) = match timeout(hub.settings().handshake_timeout, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        _ => {
            conn.close(close::DONE.into(), b"no stream");
            return;
        }
    };
    let codec = FrameCodec {
        max_frame: hub.settings().max_client_frame,
        ..FrameCodec::default()
    };
    let mut session = Session {
        hub: hub.clone(),
        send,
        codec: hub.settings().frames,
        sent: 0,
        incarnation: Arc::from(""),
        repaired: false,
        last_write: Instant::now(),
        environment: Arc::from(""),
        usage_budget: super::usage::Budget::default(),
    };
    let mut frames = FramedRead::new(recv, MessageCodec::<ClientFrame>::new(codec));
    let outcome = session.converse(&mut frames, remote).await;
    match outcome {
        Ok(()) => conn.close(close::DONE.into(), b"bye"),
        Err(Ended::Refused(refusal)) => {
            tracing::info!(%remote, code = ?refusal.code(), reason = %refusal, "sync stream refused");
            hub.metrics().sync_refused(refusal.code().as_str_name());
            if matches!(refusal, Refusal::RateLimited(_)) {
                hub.metrics().auth_rate_limited("sync");
            }
            session.refuse(&refusal).await;
            conn.close(
                close::REFUSED.into(),
                refusal.code().as_str_name().as_bytes(),
            );
        }
        Err(Ended::Gone(reason)) => {
            tracing::debug!(%remote, reason, "sync stream ended");
            conn.close(close::DONE.into(), b"closed");
        }
    }
}

/// How a conversation ended other than by shutdown.
enum Ended {
    /// Control ends it with an `Error` frame.
    Refused(Refusal),
    /// The sidecar left or the connection broke.
    Gone(String),
}

impl From<Refusal> for Ended {
    fn from(r: Refusal) -> Self {
        Ended::Refused(r)
    }
}

impl From<super::feed::SyncError> for Ended {
    fn from(e: super::feed::SyncError) -> Self {
        Ended::Refused(e.into())
    }
}

struct Session {
    hub: Arc<Hub>,
    send: quinn::SendStream,
    codec: FrameCodec,
    /// Latest revision written on the stream.
    sent: i64,
    /// The environment incarnation `sent` counts in: the sidecar's (from its `Subscribe`) until a
    /// Full of the current one is written.
    incarnation: Arc<str>,
    /// A Full was sent to repair a digest mismatch (once per stream: never a loop).
    repaired: bool,
    last_write: Instant,
    /// The environment followed (once subscribed), for usage reports.
    environment: Arc<str>,
    /// The sidecar's allowance of usage entries.
    usage_budget: super::usage::Budget,
}

impl Session {
    async fn converse(&mut self, frames: &mut Frames, remote: SocketAddr) -> Result<(), Ended> {
        let subscribe = self.read_subscribe(frames).await?;
        let env = subscribe.environment.as_str();
        self.environment = Arc::from(env);
        self.hub
            .authorize_from(Some(remote.ip()), &subscribe.token, env)
            .await?;
        let (current, incarnation) = match self.hub.store().get_environment(env).await {
            Ok(e) => (e.revision, e.incarnation),
            Err(crate::store::StoreError::NotFound(_)) => {
                return Err(Refusal::UnknownEnvironment.into());
            }
            Err(e) => return Err(Refusal::Internal(e.to_string()).into()),
        };
        // Subscribe to the feed before catching up from the store: nothing falls in between.
        let (feed, mut updates) = self.hub.follow(env, current, &incarnation);
        let registration = self.hub.sidecars().register(
            &subscribe.client_id,
            &subscribe.version,
            env,
            remote,
            feed.head.clone(),
        );
        let entry = registration.entry();
        // Read after following the feed: a guard armed or removed later comes in its own Full.
        let guarded = self
            .hub
            .store()
            .guarded_flags(env)
            .await
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        tracing::info!(%remote, client_id = %subscribe.client_id, environment = env,
            last_revision = subscribe.last_revision, held_incarnation = %subscribe.incarnation,
            revision = current, %incarnation, "sidecar subscribed");
        self.write_message(&ServerFrame {
            kind: Some(Kind::Welcome(Welcome {
                server_id: self.hub.settings().server_id.clone(),
                revision: current,
                heartbeat_ms: self.hub.settings().heartbeat.as_millis() as u32,
                incarnation: incarnation.clone(),
                usage_max_entries: self.hub.settings().usage.max_entries,
                guarded: Some(Guarded { flags: guarded }),
            })),
        })
        .await?;
        self.sent = subscribe.last_revision;
        self.incarnation = Arc::from(subscribe.incarnation.as_str());
        self.catch_up(&feed).await?;
        entry.sent.store(self.sent, Ordering::Relaxed);
        self.stream(frames, &feed, &mut updates, entry, &subscribe)
            .await
    }

    /// The first frame must be a `Subscribe`, within the handshake timeout.
    async fn read_subscribe(&mut self, frames: &mut Frames) -> Result<Subscribe, Ended> {
        let first = timeout(self.hub.settings().handshake_timeout, frames.next())
            .await
            .map_err(|_| Refusal::Malformed("no Subscribe within the handshake timeout".into()))?;
        match first {
            Some(Ok(ClientFrame {
                kind: Some(client_frame::Kind::Subscribe(s)),
            })) => {
                if s.environment.is_empty() {
                    return Err(Refusal::Malformed("Subscribe.environment is empty".into()).into());
                }
                if s.last_revision < 0 {
                    return Err(
                        Refusal::Malformed("Subscribe.last_revision is negative".into()).into(),
                    );
                }
                Ok(s)
            }
            Some(Ok(_)) => {
                Err(Refusal::Malformed("the first frame must be a Subscribe".into()).into())
            }
            Some(Err(e)) => Err(frame_refusal(e)),
            None => Err(Ended::Gone("stream closed before Subscribe".into())),
        }
    }

    /// Brings the sidecar from `self.sent` to the environment's current revision: the deltas from
    /// the change log when they line up, are of the incarnation the sidecar holds and are not too
    /// many, else one `Full`. A sidecar holding another incarnation (the environment was deleted
    /// and created again, or restored and rotated), or one it cannot name, always gets a Full: its
    /// revision number counts another history.
    async fn catch_up(&mut self, feed: &Feed) -> Result<(), Ended> {
        let store = self.hub.store().clone();
        let env = store
            .get_environment(&feed.environment)
            .await
            .map_err(super::feed::SyncError::from)?;
        let current = env.revision;
        let same = *self.incarnation == *env.incarnation;
        // Revision 0 held means nothing held: a never-written environment (revision 0) still gets
        // its (empty) flag set as a Full, so the sidecar has a valid snapshot to serve.
        if same && self.sent == current && current > 0 {
            return Ok(());
        }
        let max = self.hub.settings().max_catch_up;
        if same && self.sent > 0 && self.sent < current && current - self.sent <= max {
            let changes = store
                .changes_in(&feed.environment, Some(&env.incarnation), self.sent, max)
                .await
                .map_err(super::feed::SyncError::from)?;
            if changes.first().is_some_and(|c| c.revision == self.sent + 1) {
                for change in &changes {
                    // A key rotation or a guard change needs the store's Full (below), which covers
                    // the rest too.
                    let Some(frame) = frames::for_change(self.sent, &env.incarnation, change)
                    else {
                        return self.send_full(feed, Some(&env.incarnation)).await;
                    };
                    self.write_message(&frame).await?;
                    self.sent = change.revision;
                }
                return Ok(());
            }
        }
        self.send_full(feed, Some(&env.incarnation)).await
    }

    /// Writes the environment's current Full; the sidecar holds its incarnation from then on.
    async fn send_full(&mut self, feed: &Feed, current: Option<&str>) -> Result<(), Ended> {
        let (revision, incarnation, frame) = feed.full_frame(self.hub.store(), current).await?;
        self.write_bytes(frame, "full").await?;
        self.sent = revision;
        self.incarnation = incarnation;
        Ok(())
    }

    /// The steady state: forward the feed, answer the sidecar, keep the stream alive.
    async fn stream(
        &mut self,
        frames: &mut Frames,
        feed: &Feed,
        updates: &mut broadcast::Receiver<Arc<Update>>,
        entry: &SidecarEntry,
        subscribe: &Subscribe,
    ) -> Result<(), Ended> {
        let heartbeat = self.hub.settings().heartbeat;
        let mut ping = tokio::time::interval(heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reauth_every = self.hub.settings().reauth_interval;
        let mut reauth = tokio::time::interval_at(Instant::now() + reauth_every, reauth_every);
        let cancel = self.hub.cancelled().clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                frame = frames.next() => match frame {
                    None => return Err(Ended::Gone("sidecar closed the stream".into())),
                    Some(Err(e)) => return Err(frame_refusal(e)),
                    Some(Ok(f)) => self.on_client_frame(f, feed, entry).await?,
                },
                update = updates.recv() => match update {
                    Ok(u) => self.on_update(&u, feed).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up(feed).await?,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = ping.tick() => {
                    if self.last_write.elapsed() >= heartbeat {
                        let frame = ServerFrame { kind: Some(Kind::Ping(Ping { revision: self.sent })) };
                        self.write_message(&frame).await?;
                    }
                }
                _ = reauth.tick() => self.recheck(subscribe).await?,
            }
            entry.sent.store(self.sent, Ordering::Relaxed);
        }
    }

    /// Checks the token again: a revoked token ends the stream; a store hiccup does not.
    async fn recheck(&self, subscribe: &Subscribe) -> Result<(), Ended> {
        match self
            .hub
            .authorize(&subscribe.token, &subscribe.environment)
            .await
        {
            Ok(_) => Ok(()),
            Err(Refusal::Internal(e)) => {
                tracing::warn!(error = %e, "could not re-check a sidecar token; keeping the stream");
                Ok(())
            }
            Err(r) => Err(r.into()),
        }
    }

    async fn on_client_frame(
        &mut self,
        frame: ClientFrame,
        feed: &Feed,
        entry: &SidecarEntry,
    ) -> Result<(), Ended> {
        match frame.kind {
            Some(client_frame::Kind::Ack(ack)) => {
                if ack.revision > self.sent || ack.revision < 0 {
                    return Err(Refusal::Malformed(format!(
                        "Ack.revision {} was never sent (latest sent: {})",
                        ack.revision, self.sent
                    ))
                    .into());
                }
                entry.ack(ack.revision);
                if !ack.digest.is_empty() {
                    self.check_digest(feed, entry, ack.revision, ack.digest)
                        .await?;
                }
                Ok(())
            }
            Some(client_frame::Kind::Resync(r)) => {
                tracing::info!(environment = %feed.environment, reason = %r.reason, "sidecar asked for a full snapshot");
                self.send_full(feed, None).await
            }
            Some(client_frame::Kind::Usage(report)) => {
                let usage = self.hub.usage();
                let now = crate::model::now_millis();
                if let Err(refusal) =
                    usage.accept(&self.environment, &report, &mut self.usage_budget, now)
                {
                    // The counts are lost; the stream goes on.
                    tracing::warn!(environment = %self.environment, client_id = %entry.client_id,
                        reason = refusal.label(), detail = %refusal, "usage report refused");
                }
                Ok(())
            }
            Some(client_frame::Kind::Subscribe(_)) => {
                Err(Refusal::Malformed("Subscribe sent twice".into()).into())
            }
            None => Err(Refusal::Malformed("a ClientFrame without a message".into()).into()),
        }
    }

    /// Compares an acknowledged digest with control's document at that revision: a mismatch (the
    /// right revision number, other content) is counted, shown in `/api/v1/sidecars`, and answered
    /// with a Full, once per stream.
    async fn check_digest(
        &mut self,
        feed: &Feed,
        entry: &SidecarEntry,
        revision: i64,
        digest: String,
    ) -> Result<(), Ended> {
        let expected = match feed
            .digest_at(self.hub.store(), revision, &self.incarnation)
            .await
        {
            Ok(expected) => expected,
            Err(e) => {
                tracing::warn!(error = %e, "could not compute the document digest; not checked");
                None
            }
        };
        let matches = expected.as_ref().map(|e| *e == digest);
        entry.acked_digest(AckedDigest {
            revision,
            digest: digest.clone(),
            matches,
        });
        if matches == Some(false) {
            self.hub.metrics().sync_digest_mismatch();
            tracing::warn!(environment = %feed.environment, client_id = %entry.client_id, revision,
                sidecar = %digest, control = ?expected, repairing = !self.repaired,
                "a sidecar holds the acknowledged revision with other content");
            if !self.repaired {
                self.repaired = true;
                self.send_full(feed, None).await?;
            }
        }
        Ok(())
    }

    async fn on_update(&mut self, update: &Update, feed: &Feed) -> Result<(), Ended> {
        match update {
            Update::Gone => Err(Refusal::UnknownEnvironment.into()),
            Update::Frame {
                from,
                to,
                frame,
                kind,
                incarnation,
            } => {
                let same = **incarnation == *self.incarnation;
                if *kind == "full" && (!same || *to > self.sent) {
                    // A whole set replaces anything, of any incarnation.
                    self.write_bytes(frame.clone(), kind).await?;
                    self.sent = *to;
                    self.incarnation = incarnation.clone();
                    Ok(())
                } else if same && *from == self.sent {
                    self.write_bytes(frame.clone(), kind).await?;
                    self.sent = *to;
                    Ok(())
                } else if same && *to <= self.sent {
                    // Already sent while catching up from the store.
                    Ok(())
                } else {
                    self.catch_up(feed).await
                }
            }
        }
    }

    async fn write_message(&mut self, frame: &ServerFrame) -> Result<(), Ended> {
        let bytes = self
            .codec
            .encode_frame(frame)
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        self.write_bytes(bytes, frame_kind(frame)).await
    }

    /// Writes one frame. A write that cannot complete within the re-authentication interval (the
    /// sidecar stopped reading and QUIC flow control holds the stream) ends the session: a blocked
    /// write would otherwise keep it, and a revoked token's stream, open for ever, since the token
    /// is re-checked only between writes.
    async fn write_bytes(&mut self, bytes: Bytes, kind: &'static str) -> Result<(), Ended> {
        let span = tracing::info_span!("sync.send", frame = kind, bytes = bytes.len());
        self.write_bytes_now(bytes, kind).instrument(span).await
    }

    async fn write_bytes_now(&mut self, bytes: Bytes, kind: &'static str) -> Result<(), Ended> {
        self.hub.metrics().sync_frames_sent(kind, 1);
        let limit = write_timeout(self.hub.settings().reauth_interval);
        match timeout(limit, self.send.write_chunk(bytes)).await {
            Ok(written) => written.map_err(|e| Ended::Gone(format!("write failed: {e}")))?,
            Err(_) => {
                tracing::warn!(timeout = ?limit, "a sync write did not complete in time: the \
                    sidecar is not reading; ending its stream");
                self.hub.metrics().sync_write_timeout();
                return Err(Ended::Gone(format!(
                    "a {kind} frame could not be written within {limit:?}"
                )));
            }
        }
        self.last_write = Instant::now();
        Ok(())
    }

    /// Sends the `Error` frame and waits (briefly) until the sidecar has it, so closing the
    /// connection does not discard it.
    async fn refuse(&mut self, refusal: &Refusal) {
        let frame = ServerFrame {
            kind: Some(Kind::Error(ErrorFrame {
                code: refusal.code() as i32,
                message: refusal.to_string(),
            })),
        };
        if self.write_message(&frame).await.is_ok() {
            let _ = self.send.finish();
            let _ = timeout(Duration::from_secs(2), self.send.stopped()).await;
        }
    }
}

/// How long one frame's write may take: the re-authentication interval, at least one second (so a
/// short interval in tests does not cut off a large `Full` on a busy machine).
fn write_timeout(reauth_interval: Duration) -> Duration {
    reauth_interval.max(Duration::from_secs(1))
}

/// The metrics label of a frame.
fn frame_kind(frame: &ServerFrame) -> &'static str {
    match frame.kind {
        Some(Kind::Full(_)) => "full",
        Some(Kind::Delta(_)) => "delta",
        Some(Kind::Ping(_)) => "ping",
        Some(Kind::Welcome(_)) => "welcome",
        Some(Kind::Error(_)) => "error",
        None => "empty",
    }
}

fn frame_refusal(e: FrameError) -> Ended {
    match e {
        FrameError::Io(e) => Ended::Gone(format!("read failed: {e}")),
        FrameError::TooLarge { .. } => Refusal::TooLarge(e.to_string()).into(),
        e => Refusal::Malformed(e.to_string()).into(),
    }
}
