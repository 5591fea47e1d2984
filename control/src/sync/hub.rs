//! The hub: one [`Feed`] per environment that has sidecars on this replica, the settings every
//! session shares, and the entry points notifications arrive through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use vexil_proto::frame::FrameCodec;

use super::feed::{Feed, SyncError, Update};
use super::registry::Sidecars;
use crate::api::AppState;
use crate::auth::{AuthError, Principal};
use crate::model::Role;
use crate::store::Store;

/// Settings of the sync hub.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// This replica's name in `Welcome.server_id`.
    pub server_id: String,
    /// `Ping` interval on an idle stream (sent in `Welcome.heartbeat_ms`).
    pub heartbeat: Duration,
    /// How often each feed checks the store for revisions it was not told about.
    pub poll_interval: Duration,
    /// Most deltas sent to catch a sidecar up; further behind, it gets a `Full`.
    pub max_catch_up: i64,
    /// How often a connected sidecar's token is checked again (a revoked one is disconnected).
    pub reauth_interval: Duration,
    /// Time a new connection has to send its `Subscribe`.
    pub handshake_timeout: Duration,
    /// Frame limits and compression for server frames.
    pub frames: FrameCodec,
    /// Largest frame a sidecar may send.
    pub max_client_frame: usize,
    /// The intake of usage reports.
    pub usage: super::usage::UsageSettings,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            server_id: default_server_id(),
            heartbeat: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            max_catch_up: 1000,
            reauth_interval: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            frames: FrameCodec::default(),
            max_client_frame: vexil_proto::frame::DEFAULT_MAX_CLIENT_FRAME,
            usage: super::usage::UsageSettings::default(),
        }
    }
}

/// `HOSTNAME` (the pod name in Kubernetes) or `control`, the process id and a random tag: unique
/// per hub, also for several hubs in one process (tests), so a replica can recognise its own Redis
/// announcements.
fn default_server_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "control".into());
    format!(
        "{host}/{}/{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// The sync hub of one control replica.
pub struct Hub {
    state: Arc<AppState>,
    settings: SyncSettings,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
    cancel: CancellationToken,
    usage: Arc<super::usage::UsageAggregator>,
}

impl Hub {
    /// A hub over the API's state (store, authenticator, sidecar registry). It stops its tasks
    /// when `cancel` fires.
    pub fn new(
        state: Arc<AppState>,
        settings: SyncSettings,
        cancel: CancellationToken,
    ) -> Arc<Hub> {
        let usage = Arc::new(super::usage::UsageAggregator::new(
            settings.usage.clone(),
            state.metrics.clone(),
        ));
        Arc::new(Hub {
            state,
            settings,
            feeds: Mutex::new(HashMap::new()),
            cancel,
            usage,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &SyncSettings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.state.metrics
    }

    /// The intake of usage reports (written to the store by `usage::run_flusher`).
    pub fn usage(&self) -> &Arc<super::usage::UsageAggregator> {
        &self.usage
    }

    /// The connected sidecars.
    pub fn sidecars(&self) -> &Arc<Sidecars> {
        &self.state.sidecars
    }

    /// Fires when the hub shuts down.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Checks a sync token for `environment`: a `sidecar` token bound to it, or an admin token.
    /// For a stream already admitted (the periodic re-check): no per-peer limit.
    pub async fn authorize(&self, token: &str, environment: &str) -> Result<Principal, Refusal> {
        self.authorize_from(None, token, environment).await
    }

    /// [`Hub::authorize`] for a `Subscribe` from `peer`: refused at once while that peer has used
    /// up its failed authentications (see [`crate::auth_limit`]); a refused token spends one.
    pub async fn authorize_from(
        &self,
        peer: Option<std::net::IpAddr>,
        token: &str,
        environment: &str,
    ) -> Result<Principal, Refusal> {
        let principal = self
            .state
            .auth
            .authenticate_from(peer, Some(&format!("Bearer {token}")))
            .await
            .map_err(|e| match e {
                AuthError::Missing | AuthError::Invalid | AuthError::Jwt(_) => {
                    Refusal::Unauthenticated
                }
                AuthError::RateLimited { retry_after } => Refusal::RateLimited(retry_after),
                AuthError::Store(e) => Refusal::Internal(e.to_string()),
            })?;
        let role_ok = matches!(principal.role, Role::Sidecar | Role::Admin);
        if !role_ok || !principal.allows_environment(environment) {
            return Err(Refusal::PermissionDenied);
        }
        Ok(principal)
    }

    /// The feed of `environment` (started on first use) and a receiver of its updates, taken
    /// under the same lock that retires idle feeds, so a feed is never retired under a session.
    pub fn follow(
        self: &Arc<Self>,
        environment: &str,
        head: i64,
        incarnation: &str,
    ) -> (Arc<Feed>, broadcast::Receiver<Arc<Update>>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(environment) {
            return (feed.clone(), feed.subscribe());
        }
        let feed = Arc::new(Feed::new(
            environment,
            head,
            incarnation,
            self.settings.frames,
        ));
        let rx = feed.subscribe();
        feeds.insert(environment.to_string(), feed.clone());
        drop(feeds);
        tokio::spawn(self.clone().drive(feed.clone()));
        (feed, rx)
    }

    /// Runs a feed until the hub stops or the feed has had no session for a while.
    async fn drive(self: Arc<Self>, feed: Arc<Feed>) {
        let cancel = self.cancel.child_token();
        let task = tokio::spawn(feed.clone().run(
            self.store().clone(),
            self.settings.poll_interval,
            cancel.clone(),
        ));
        let linger = Duration::from_secs(30);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(linger) => {}
            }
            let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            if feed.subscribers() == 0 {
                feeds.remove(&feed.environment);
                break;
            }
        }
        cancel.cancel();
        let _ = task.await;
    }

    /// A commit to `environment` at `revision` happened (here, or on another replica).
    pub fn notify(&self, environment: &str, revision: i64) {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(environment) {
            feed.wake(revision);
        }
    }

    /// Wakes every feed (after notifications may have been lost).
    pub fn notify_all(&self) {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        for feed in feeds.values() {
            feed.wake(i64::MAX);
        }
    }

    /// Forwards this replica's own commits to the feeds until the hub stops.
    pub async fn follow_local_commits(self: Arc<Self>) {
        let mut commits = self.store().subscribe();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                c = commits.recv() => match c {
                    Ok(c) => self.notify(&c.environment, c.revision),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.notify_all(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Every feed's head, for metrics.
    pub fn heads(&self) -> Vec<(String, i64)> {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds
            .values()
            .map(|f| {
                (
                    f.environment.clone(),
                    f.head.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Why a subscription was refused or a stream ended, as sent in an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Missing, unknown or revoked token.
    #[error("invalid or revoked token")]
    Unauthenticated,
    /// Too many failed authentications from this peer: refused with `UNAUTHENTICATED` (a sidecar
    /// retries that slowly) and a message saying when to retry.
    #[error("too many failed authentications from this address; retry in {} s", crate::auth::retry_secs(*.0))]
    RateLimited(Duration),
    /// The token may not sync this environment.
    #[error("the token may not sync this environment")]
    PermissionDenied,
    /// No such environment.
    #[error("unknown environment")]
    UnknownEnvironment,
    /// A malformed or out-of-order frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame over the size limit.
    #[error("frame too large: {0}")]
    TooLarge(String),
    /// Control failed (store unavailable...).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Refusal {
    /// The wire code.
    pub fn code(&self) -> vexil_proto::sync::v1::ErrorCode {
        use vexil_proto::sync::v1::ErrorCode;
        match self {
            Refusal::Unauthenticated | Refusal::RateLimited(_) => ErrorCode::Unauthenticated,
            Refusal::PermissionDenied => ErrorCode::PermissionDenied,
            Refusal::UnknownEnvironment => ErrorCode::UnknownEnvironment,
            Refusal::Malformed(_) => ErrorCode::MalformedFrame,
            Refusal::TooLarge(_) => ErrorCode::FrameTooLarge,
            Refusal::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<SyncError> for Refusal {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Store(crate::store::StoreError::NotFound(_)) => Refusal::UnknownEnvironment,
            e => Refusal::Internal(e.to_string()),
        }
    }
}
