//! The connection loop of the sync client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use vexil_engine::FlagSet;
use vexil_proto::frame::{FrameCodec, FrameError, MessageCodec};
use vexil_proto::sync::v1::{
    Ack, ClientFrame, ErrorCode, Resync, ServerFrame, Subscribe, client_frame, server_frame::Kind,
};

use super::apply::{ApplyError, Held, apply_delta, compile, compile_after, parse_full};
use super::{SyncConfig, SyncState, SyncStatus, persist};
use crate::shadow::Proposals;
use crate::signing::SigningKeys;
use crate::snapshot::{Snapshot, SnapshotCell, Source};

type Frames = FramedRead<quinn::RecvStream, MessageCodec<ServerFrame>>;

/// A configured sync client, ready to [`spawn`](SyncClient::spawn).
pub struct SyncClient {
    config: SyncConfig,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
}

/// A running sync client.
pub struct SyncHandle {
    status: watch::Receiver<SyncStatus>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl SyncHandle {
    /// The client's status, updated as it changes.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Closes the connection and waits for the task to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

impl SyncClient {
    /// A client with its own QUIC endpoint on an ephemeral UDP port.
    pub fn new(config: SyncConfig) -> anyhow::Result<SyncClient> {
        let bind: SocketAddr = "0.0.0.0:0".parse().expect("valid address");
        let endpoint = quinn::Endpoint::client(bind)?;
        Self::with_endpoint(config, endpoint)
    }

    /// A client that shares `endpoint` (one UDP socket for many clients, as in the benchmarks).
    pub fn with_endpoint(
        config: SyncConfig,
        endpoint: quinn::Endpoint,
    ) -> anyhow::Result<SyncClient> {
        config.addresses()?;
        let client = super::client_config(
            &config.ca_file,
            config
                .client_cert
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
            config.keep_alive,
            config.idle_timeout,
        )?;
        Ok(SyncClient {
            config,
            endpoint,
            client,
        })
    }

    /// Loads the persisted snapshot (publishing it at once, so the sidecar can serve before
    /// control answers), then follows control in a background task.
    pub fn spawn(self, cell: Arc<SnapshotCell>) -> SyncHandle {
        let held = self.load_persisted(&cell);
        if held.is_none() {
            // Served, but not held: the subscription asks for a whole set, which replaces it.
            self.load_bootstrap(&cell);
        }
        let (status_tx, status) = watch::channel(SyncStatus {
            revision: held.as_ref().map_or(0, |h| h.revision),
            ..SyncStatus::default()
        });
        let cancel = CancellationToken::new();
        let runner = Runner {
            client: self,
            cell,
            status: status_tx,
            held,
            cancel: cancel.clone(),
            next: 0,
            current: String::new(),
        };
        let task = tokio::spawn(runner.run());
        SyncHandle {
            status,
            cancel,
            task,
        }
    }

    /// Publishes the bootstrap file, if there is one and it is usable (else logs why not).
    fn load_bootstrap(&self, cell: &SnapshotCell) {
        let Some(path) = self.config.bootstrap_file.as_deref() else {
            return;
        };
        let env = &self.config.environment;
        let loaded = std::fs::read(path)
            .map_err(|e| format!("reading it: {e}"))
            .and_then(|bytes| bootstrap_document(&bytes, env));
        let (revision, flags) = match loaded.and_then(|(revision, doc)| {
            compile(&doc)
                .map(|flags| (revision, flags))
                .map_err(|e| e.to_string())
        }) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e,
                    "bootstrap file unusable; waiting for control");
                return;
            }
        };
        cell.publish(Snapshot::new(
            env,
            revision,
            flags,
            Source::Bootstrap(path.display().to_string()),
        ));
        tracing::info!(environment = %env, revision, file = %path.display(),
            "no persisted snapshot: serving the bootstrap file until control answers");
    }

    /// The persisted snapshot, if there is a valid one; a damaged one is set aside.
    fn load_persisted(&self, cell: &SnapshotCell) -> Option<Held> {
        let dir = self.config.state_dir.as_deref()?;
        let env = &self.config.environment;
        let loaded = match persist::load(dir, env) {
            Ok(p) => p?,
            Err(e) => {
                tracing::error!(error = %e, "persisted snapshot unusable; waiting for control");
                if let persist::LoadError::Corrupt { .. } = e
                    && let Ok(to) = persist::set_aside(dir, env)
                {
                    tracing::warn!(moved_to = %to.display(), "damaged snapshot set aside");
                }
                return None;
            }
        };
        match compile(&loaded.document) {
            Ok(flags) => {
                let path = persist::path(dir, env).display().to_string();
                // The keys saved with this incarnation (an unusable file: none, control resends).
                let signing = match persist::load_keys(dir, env, &loaded.incarnation) {
                    Ok(keys) => Arc::new(keys),
                    Err(e) => {
                        tracing::warn!(error = %e, "persisted signing keys unusable; signing waits for control");
                        SigningKeys::none()
                    }
                };
                // Likewise the proposals (unusable: none, shadowing waits for control).
                let proposals = match persist::load_proposals(dir, env, &loaded.incarnation) {
                    Ok(proposals) => Arc::new(proposals),
                    Err(e) => {
                        tracing::warn!(error = %e, "persisted proposals unusable; shadow evaluation waits for control");
                        Proposals::none()
                    }
                };
                let snapshot = cell.publish(
                    Snapshot::new(env, loaded.revision, flags, Source::Persisted(path))
                        .with_signing(signing.clone())
                        .with_shadows(&proposals),
                );
                cell.usage()
                    .metrics()
                    .shadows_skipped
                    .inc_by(snapshot.shadows.skipped as u64);
                tracing::info!(environment = %env, revision = loaded.revision,
                    "serving the persisted snapshot until control answers");
                Some(Held {
                    revision: loaded.revision,
                    incarnation: loaded.incarnation,
                    document: loaded.document,
                    signing,
                    proposals,
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "persisted snapshot does not compile; waiting for control");
                None
            }
        }
    }
}

/// The revision and flagd document of a bootstrap file: a persisted-snapshot file (checked, and
/// of `environment`) or a bare flagd document (revision 0).
fn bootstrap_document(bytes: &[u8], environment: &str) -> Result<(i64, serde_json::Value), String> {
    use vexil_proto::snapshot_file;
    if snapshot_file::looks_like(bytes) {
        let file = snapshot_file::decode(bytes)?;
        if file.environment != environment {
            return Err(format!(
                "a snapshot of environment {:?}, not {environment:?}",
                file.environment
            ));
        }
        return Ok((file.revision, file.document));
    }
    let doc = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    Ok((0, doc))
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("control refused the subscription: {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("{0}")]
    Transport(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl SessionError {
    /// Refusals that retrying soon cannot fix.
    fn is_lasting(&self) -> bool {
        matches!(
            self,
            SessionError::Refused {
                code: ErrorCode::Unauthenticated
                    | ErrorCode::PermissionDenied
                    | ErrorCode::UnknownEnvironment
                    | ErrorCode::UnsupportedVersion,
                ..
            }
        )
    }
}

impl From<FrameError> for SessionError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => SessionError::Transport(e.to_string()),
            e => SessionError::Protocol(e.to_string()),
        }
    }
}

struct Runner {
    client: SyncClient,
    cell: Arc<SnapshotCell>,
    status: watch::Sender<SyncStatus>,
    held: Option<Held>,
    cancel: CancellationToken,
    /// Index of the control address to try next (several replicas: tried in turn).
    next: usize,
    /// The control address of the current connection, `quic://HOST:PORT`.
    current: String,
}

/// One connection's state.
struct Stream {
    send: quinn::SendStream,
    frames: Frames,
    /// The revision control said it had at Welcome: synced once we hold it.
    target: i64,
    /// The environment's incarnation control named at Welcome (empty from an older control).
    incarnation: String,
    heartbeat: Duration,
    /// A Resync was sent and no Full has arrived since.
    resync_pending: bool,
    /// Entries per `UsageReport` control takes (`Welcome.usage_max_entries`; 0: send none).
    usage_max_entries: usize,
}

impl Runner {
    async fn run(mut self) {
        let mut backoff = self.client.config.backoff.clone();
        let cancel = self.cancel.clone();
        loop {
            // The session watches for shutdown itself: while connecting it gives up at once,
            // once subscribed it sends its last usage report first.
            let (result, welcomed) = self.session().await;
            if cancel.is_cancelled() {
                return;
            }
            let error = match result {
                Ok(()) => return, // shutdown
                Err(e) => e,
            };
            if welcomed {
                backoff.reset();
            }
            // With several replicas, the next attempt goes to the next one: the one that failed or
            // went away may be down.
            self.next = self.next.wrapping_add(1);
            let delay = if error.is_lasting() {
                tracing::error!(error = %error, "sync refused; retrying slowly");
                self.client.config.refused_delay
            } else {
                tracing::warn!(error = %error, "sync connection lost; reconnecting");
                backoff.next_delay()
            };
            self.status.send_modify(|s| {
                s.state = SyncState::Stale;
                s.last_error = Some(error.to_string());
            });
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection: `Ok` only on shutdown. The flag says whether control welcomed us.
    async fn session(&mut self) -> (Result<(), SessionError>, bool) {
        let cancel = self.cancel.clone();
        let connected = tokio::select! {
            c = self.connect() => c,
            // Shutdown never waits for a connect timeout.
            _ = cancel.cancelled() => return (Ok(()), false),
        };
        let (conn, mut stream) = match connected {
            Ok(c) => c,
            Err(e) => return (Err(e), false),
        };
        let result = self.follow(&mut stream).await;
        match &result {
            Ok(()) => conn.close(0u32.into(), b"sidecar shutting down"),
            Err(_) => conn.close(1u32.into(), b"sidecar error"),
        }
        (result, true)
    }

    /// Connects, subscribes and reads the `Welcome`.
    async fn connect(&mut self) -> Result<(quinn::Connection, Stream), SessionError> {
        let config = &self.client.config;
        let addresses = config
            .addresses()
            .map_err(|e| SessionError::Protocol(e.to_string()))?;
        let index = self.next % addresses.len();
        let (host, port) = addresses[index].clone();
        // As configured (the list's item), for the snapshot's source and the logs.
        self.current = config
            .control
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .nth(index)
            .unwrap_or_default()
            .to_string();
        let server_name = config.server_name.clone().unwrap_or_else(|| host.clone());
        let limit = config.connect_timeout;
        let addr = timeout(limit, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| SessionError::Transport(format!("resolving {host} timed out")))?
            .map_err(|e| SessionError::Transport(format!("resolving {host}: {e}")))?
            .next()
            .ok_or_else(|| SessionError::Transport(format!("{host} has no address")))?;
        let connecting = self
            .client
            .endpoint
            .connect_with(self.client.client.clone(), addr, &server_name)
            .map_err(|e| SessionError::Transport(format!("connecting to {addr}: {e}")))?;
        let conn = timeout(limit, connecting)
            .await
            .map_err(|_| SessionError::Transport(format!("connecting to {addr} timed out")))?
            .map_err(|e| SessionError::Transport(format!("connecting to {addr}: {e}")))?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| SessionError::Transport(e.to_string()))?;
        let codec = FrameCodec {
            max_frame: config.max_frame,
            ..FrameCodec::default()
        };
        let mut stream = Stream {
            send,
            frames: FramedRead::new(recv, MessageCodec::<ServerFrame>::new(codec)),
            target: 0,
            incarnation: String::new(),
            heartbeat: Duration::from_secs(5),
            resync_pending: false,
            usage_max_entries: 0,
        };
        let subscribe = Subscribe {
            token: config.token.clone(),
            environment: config.environment.clone(),
            last_revision: self.held.as_ref().map_or(0, |h| h.revision),
            client_id: config.client_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            incarnation: self
                .held
                .as_ref()
                .map(|h| h.incarnation.clone())
                .unwrap_or_default(),
        };
        send_frame(&mut stream, client_frame::Kind::Subscribe(subscribe)).await?;
        let first = timeout(limit, stream.frames.next())
            .await
            .map_err(|_| SessionError::Transport("no Welcome from control in time".into()))?;
        match first {
            Some(Ok(ServerFrame {
                kind: Some(Kind::Welcome(w)),
            })) => {
                stream.target = w.revision;
                stream.incarnation = w.incarnation.clone();
                stream.heartbeat = Duration::from_millis(u64::from(w.heartbeat_ms.max(100)));
                stream.usage_max_entries = w.usage_max_entries as usize;
                // The flags whose outcomes to report (none from an older control).
                let guarded = w.guarded.map(|g| g.flags).unwrap_or_default();
                self.cell
                    .usage()
                    .set_guarded(guarded, self.cell.load().as_deref());
                tracing::info!(control = %self.current, server = %w.server_id, revision = w.revision,
                    "subscribed to control");
                self.contact(|s| s.server_id = Some(w.server_id.clone()));
                self.mark_synced_if_caught_up(&stream);
                // Already at control's revision of the same incarnation: nothing will follow, so
                // acknowledge what is held now, with its digest, for control to check the content
                // (a snapshot restored or edited behind our back has the right number only).
                if let Some(held) = &self.held
                    && held.revision == w.revision
                    && held.revision > 0
                    && held.incarnation == w.incarnation
                {
                    let ack = Ack {
                        revision: held.revision,
                        digest: vexil_proto::digest::document_digest(&held.document),
                    };
                    send_frame(&mut stream, client_frame::Kind::Ack(ack)).await?;
                }
                Ok((conn, stream))
            }
            Some(Ok(ServerFrame {
                kind: Some(Kind::Error(e)),
            })) => Err(refused(&e)),
            Some(Ok(other)) => Err(SessionError::Protocol(format!(
                "expected Welcome, got {other:?}"
            ))),
            Some(Err(e)) => Err(e.into()),
            None => Err(SessionError::Transport(
                "control closed the stream before Welcome".into(),
            )),
        }
    }

    /// Applies frames until shutdown or failure.
    async fn follow(&mut self, stream: &mut Stream) -> Result<(), SessionError> {
        // Control pings every heartbeat on an idle stream: several missed means it is gone.
        let silence = stream.heartbeat * 3;
        let mut heard = tokio::time::Instant::now();
        // Usage reports, when control takes them.
        let mut reports = self
            .client
            .config
            .usage_interval
            .filter(|_| stream.usage_max_entries > 0)
            .map(|every| {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick
            });
        loop {
            let frame = tokio::select! {
                _ = self.cancel.cancelled() => {
                    if reports.is_some() {
                        // The last counts, when control can take them in a moment.
                        let last = async {
                            self.report_usage(stream).await?;
                            let _ = stream.send.finish();
                            let _ = stream.send.stopped().await;
                            Ok::<(), SessionError>(())
                        };
                        if let Ok(Err(e)) = timeout(super::FINAL_REPORT_TIMEOUT, last).await {
                            tracing::debug!(error = %e, "the last usage report was not sent");
                        }
                    }
                    return Ok(());
                }
                _ = async { reports.as_mut().expect("guarded").tick().await }, if reports.is_some() => {
                    self.report_usage(stream).await?;
                    continue;
                }
                f = tokio::time::timeout_at(heard + silence, stream.frames.next()) => f,
            };
            heard = tokio::time::Instant::now();
            let frame = match frame {
                Err(_) => {
                    return Err(SessionError::Transport(format!(
                        "no frame from control for {silence:?}"
                    )));
                }
                Ok(None) => {
                    return Err(SessionError::Transport("control closed the stream".into()));
                }
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(f))) => f,
            };
            self.contact(|_| {});
            match frame.kind {
                Some(Kind::Full(mut full)) => {
                    stream.resync_pending = false;
                    // The Full names its incarnation; one from an older control, the Welcome's.
                    let incarnation = if full.incarnation.is_empty() {
                        stream.incarnation.clone()
                    } else {
                        full.incarnation.clone()
                    };
                    stream.incarnation = incarnation.clone();
                    // Guarded flags when the Full carries them, else those held.
                    if let Some(guarded) = full.guarded.take() {
                        self.cell
                            .usage()
                            .set_guarded(guarded.flags, self.cell.load().as_deref());
                    }
                    // Keys when the Full carries them, else those held.
                    let signing = match &full.signing_keys {
                        Some(keys) => SigningKeys::from_proto(keys)
                            .map(Arc::new)
                            .map_err(ApplyError::Invalid),
                        None => Ok(self
                            .held
                            .as_ref()
                            .map_or_else(SigningKeys::none, |h| h.signing.clone())),
                    };
                    // Proposals likewise.
                    let proposals = match &full.shadows {
                        Some(shadows) => Arc::new(Proposals::from_proto(shadows)),
                        None => self
                            .held
                            .as_ref()
                            .map_or_else(Proposals::none, |h| h.proposals.clone()),
                    };
                    let applied = signing.and_then(|signing| {
                        let doc = parse_full(&full.flag_set)?;
                        // The very snapshot already served (a resync answered after the
                        // missing delta arrived, or a reconnect): acknowledge, do not reinstall.
                        if let Some(held) = &mut self.held
                            && held.revision == full.revision
                            && held.document == doc
                            && held.signing == signing
                            && held.proposals == proposals
                        {
                            if held.incarnation != incarnation {
                                held.incarnation = incarnation;
                                self.persist();
                                self.persist_keys();
                                self.persist_proposals();
                            }
                            return Ok(full.revision);
                        }
                        let flags = compile(&doc)?;
                        self.install(
                            Held {
                                revision: full.revision,
                                incarnation,
                                document: doc,
                                signing,
                                proposals,
                            },
                            flags,
                            "full",
                        )
                    });
                    self.after_apply(stream, applied).await?;
                }
                Some(Kind::Delta(delta)) => {
                    let Some(mut held) = self.held.take() else {
                        self.resync(stream, "a delta arrived but no snapshot is held")
                            .await?;
                        continue;
                    };
                    // Revisions of another incarnation of the environment (deleted and created
                    // again, restored) are not ours: only a Full can replace what is held.
                    if !held.incarnation.is_empty()
                        && !stream.incarnation.is_empty()
                        && held.incarnation != stream.incarnation
                    {
                        let reason = format!(
                            "a delta of incarnation {} but the snapshot held is of {}",
                            stream.incarnation, held.incarnation
                        );
                        self.held = Some(held);
                        if !stream.resync_pending {
                            self.resync(stream, &reason).await?;
                        }
                        continue;
                    }
                    // The set compiled at the delta's base, when that is what is being served.
                    let base = self.cell.load().filter(|s| s.revision == delta.from);
                    let applied = match apply_delta(&mut held, &delta) {
                        Ok(()) => compile_after(&delta, &held, base.as_deref().map(|s| &s.flags))
                            .and_then(|flags| self.install(held, flags, "delta")),
                        Err(e) => {
                            // Keep what we hold; ask for a full snapshot.
                            self.held = Some(held);
                            Err(e)
                        }
                    };
                    self.after_apply(stream, applied).await?;
                }
                Some(Kind::Ping(ping)) => {
                    let held = self.held.as_ref().map_or(0, |h| h.revision);
                    if ping.revision != held && !stream.resync_pending {
                        let reason = format!(
                            "ping at revision {} but revision {held} is held",
                            ping.revision
                        );
                        self.resync(stream, &reason).await?;
                    }
                }
                Some(Kind::Error(e)) => return Err(refused(&e)),
                Some(Kind::Welcome(_)) | None => {
                    return Err(SessionError::Protocol(
                        "unexpected frame after Welcome".into(),
                    ));
                }
            }
        }
    }

    /// Acks an applied revision, or asks for a full snapshot when the frame did not apply.
    async fn after_apply(
        &mut self,
        stream: &mut Stream,
        applied: Result<i64, ApplyError>,
    ) -> Result<(), SessionError> {
        match applied {
            Ok(revision) => {
                let digest = self
                    .held
                    .as_ref()
                    .map(|h| vexil_proto::digest::document_digest(&h.document))
                    .unwrap_or_default();
                send_frame(stream, client_frame::Kind::Ack(Ack { revision, digest })).await?;
                self.mark_synced_if_caught_up(stream);
                Ok(())
            }
            Err(e) => {
                if stream.resync_pending {
                    return Ok(());
                }
                tracing::warn!(error = %e, "frame not applied; asking for a full snapshot");
                self.resync(stream, &e.to_string()).await
            }
        }
    }

    /// Sends the evaluation counts not reported yet, in reports of at most the entries control
    /// takes; what cannot be written is put back for the next report.
    async fn report_usage(&mut self, stream: &mut Stream) -> Result<(), SessionError> {
        let usage = self.cell.usage().clone();
        let tally = usage.take(self.cell.load().as_deref());
        if tally.is_empty() {
            return Ok(());
        }
        let reports = tally.reports(stream.usage_max_entries);
        for (i, report) in reports.iter().enumerate() {
            let entries =
                report.flags.iter().map(|f| f.variants.len()).sum::<usize>() + report.shadow.len();
            if let Err(e) = send_frame(stream, client_frame::Kind::Usage(report.clone())).await {
                // This report and the ones after it come again with the next.
                let mut unsent = crate::usage::Tally::default();
                for r in &reports[i..] {
                    unsent.add_report(r);
                }
                usage.restore(unsent);
                return Err(e);
            }
            usage.sent(entries);
        }
        tracing::debug!(
            reports = reports.len(),
            entries = tally.len(),
            "usage reported"
        );
        Ok(())
    }

    async fn resync(&mut self, stream: &mut Stream, reason: &str) -> Result<(), SessionError> {
        stream.resync_pending = true;
        self.status.send_modify(|s| s.state = SyncState::Stale);
        send_frame(
            stream,
            client_frame::Kind::Resync(Resync {
                reason: reason.to_string(),
            }),
        )
        .await
    }

    /// Swaps in `flags` (compiled from `held`, brought by a frame of `kind`), persists `held`;
    /// returns its revision.
    fn install(
        &mut self,
        held: Held,
        flags: FlagSet,
        kind: &'static str,
    ) -> Result<i64, ApplyError> {
        let config = &self.client.config;
        let revision = held.revision;
        let _span = tracing::info_span!("sync.apply", frame = kind, revision,
            environment = %config.environment)
        .entered();
        let source = Source::Control(self.current.clone());
        let keys_changed = self.held.as_ref().is_none_or(|h| h.signing != held.signing)
            || self.cell.load().is_none_or(|s| s.signing != held.signing);
        // The file names its incarnation: written again when either changes.
        let proposals_changed = self
            .held
            .as_ref()
            .is_none_or(|h| h.proposals != held.proposals || h.incarnation != held.incarnation);
        let snapshot = self.cell.publish(
            Snapshot::new(&config.environment, revision, flags, source)
                .with_signing(held.signing.clone())
                .with_shadows(&held.proposals),
        );
        self.shadows_skipped(snapshot.shadows.skipped);
        self.held = Some(held);
        if keys_changed {
            self.persist_keys();
        }
        if proposals_changed {
            self.persist_proposals();
        }
        self.persist();
        self.status.send_modify(|s| s.revision = revision);
        if let Some(f) = &config.on_frame {
            f(kind, revision);
        }
        if let Some(f) = &config.on_apply {
            f(revision);
        }
        Ok(revision)
    }

    /// Writes the held snapshot (with its incarnation) to the state directory, if there is one.
    fn persist(&self) {
        let config = &self.client.config;
        if let (Some(dir), Some(held)) = (&config.state_dir, &self.held) {
            let text = held.document.to_string();
            if let Err(e) = persist::save_incarnation(
                dir,
                &config.environment,
                &held.incarnation,
                held.revision,
                &text,
            ) {
                tracing::error!(error = %e, dir = %dir.display(), "could not persist the snapshot");
            }
        }
    }

    /// Writes the held signing keys (readable by the sidecar's user only) beside the snapshot.
    fn persist_keys(&self) {
        let config = &self.client.config;
        if let (Some(dir), Some(held)) = (&config.state_dir, &self.held)
            && let Err(e) =
                persist::save_keys(dir, &config.environment, &held.incarnation, &held.signing)
        {
            tracing::error!(error = %e, dir = %dir.display(), "could not persist the signing keys");
        }
    }

    /// Writes the held proposals beside the snapshot.
    fn persist_proposals(&self) {
        let config = &self.client.config;
        if let (Some(dir), Some(held)) = (&config.state_dir, &self.held)
            && let Err(e) = persist::save_proposals(
                dir,
                &config.environment,
                &held.incarnation,
                &held.proposals,
            )
        {
            tracing::error!(error = %e, dir = %dir.display(), "could not persist the proposals");
        }
    }

    /// Counts the proposals a new snapshot could not shadow.
    fn shadows_skipped(&self, skipped: usize) {
        if skipped > 0 {
            self.cell
                .usage()
                .metrics()
                .shadows_skipped
                .inc_by(skipped as u64);
        }
    }

    fn mark_synced_if_caught_up(&self, stream: &Stream) {
        // Revision 0 counts once held: a never-written environment is an empty set.
        let Some(held) = self.held.as_ref().map(|h| h.revision) else {
            return;
        };
        if held >= stream.target && !stream.resync_pending {
            self.status.send_if_modified(|s| {
                let changed = s.state != SyncState::Synced;
                s.state = SyncState::Synced;
                s.last_error = None;
                changed
            });
        }
    }

    fn contact(&self, f: impl FnOnce(&mut SyncStatus)) {
        self.status.send_modify(|s| {
            s.last_contact = Some(SystemTime::now());
            f(s);
        });
    }
}

fn refused(e: &vexil_proto::sync::v1::Error) -> SessionError {
    SessionError::Refused {
        code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
        message: e.message.clone(),
    }
}

async fn send_frame(stream: &mut Stream, kind: client_frame::Kind) -> Result<(), SessionError> {
    let bytes = FrameCodec::default().encode_frame(&ClientFrame { kind: Some(kind) })?;
    stream
        .send
        .write_all(&bytes)
        .await
        .map_err(|e| SessionError::Transport(format!("writing to control: {e}")))
}

#[cfg(test)]
mod tests {
    use super::bootstrap_document;
    use serde_json::json;

    #[test]
    fn a_bootstrap_file_is_a_flagd_document_or_a_snapshot_file() {
        let doc = json!({"flags": {}});
        assert_eq!(
            bootstrap_document(doc.to_string().as_bytes(), "prod").unwrap(),
            (0, doc.clone())
        );
        let file = vexil_proto::snapshot_file::encode("prod", 12, &doc.to_string(), 0);
        assert_eq!(bootstrap_document(&file, "prod").unwrap(), (12, doc));
        let e = bootstrap_document(&file, "dev").unwrap_err();
        assert!(e.contains("not \"dev\""), "{e}");
        let damaged = &file[..file.len() - 1];
        assert!(
            bootstrap_document(damaged, "prod")
                .unwrap_err()
                .contains("checksum")
        );
        assert!(
            bootstrap_document(b"nope", "prod")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }
}
