//! Wiring: open the store, make sure an admin token exists, start the sync hub, serve the API,
//! the QUIC endpoint and the injection webhook until shutdown.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::auth::{Authenticator, generate_secret, hash_secret};
use crate::config::ControlConfig;
use crate::metrics::Metrics;
use crate::model::Role;
use crate::store::{Store, redact_url};
use crate::sync::{Hub, QuicTimers, QuicTls, SyncServer, SyncSettings};
use crate::webhook::{InjectConfig, TlsListener, WebhookState};
use vexil_settings::Secret;

/// A running control plane's shared parts. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    /// The API state (store, auth, metrics, connected sidecars).
    pub state: Arc<AppState>,
    /// The sync hub.
    pub hub: Arc<Hub>,
    cancel: CancellationToken,
    /// The fleet recorder's task, awaited by [`Control::finish`].
    recorder: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// The usage flusher's task (its last write), awaited by [`Control::finish`].
    usage_flusher: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Control {
    /// Opens the store and prepares the API.
    pub async fn open(config: &ControlConfig) -> anyhow::Result<Control> {
        let store = Store::connect_with(&config.database_url, config.database.store_options())
            .await
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", redact_url(&config.database_url)))?;
        tracing::info!(database = %redact_url(&config.database_url), backend = ?store.backend(), "store ready");
        bootstrap_admin_token(
            &store,
            config.admin_token.as_ref(),
            &config.admin_token_path(),
        )
        .await?;
        if config.dev_tls {
            let files = crate::tls::ensure_dev_tls(&config.tls_dir, &config.dev_tls_names)?;
            tracing::info!(ca = %files.ca_cert.display(), cert = %files.cert.display(),
                "development TLS ready (give ca.pem to sidecars)");
        }
        let auth = Authenticator::new(store.clone(), config.jwt_config().as_ref())
            .map_err(|e| anyhow::anyhow!("loading the JWT keys: {e}"))?
            .with_failure_limit(config.auth_failure_burst, config.auth_failure_refill);
        let cancel = CancellationToken::new();
        let mut state = AppState::new(store, auth, config.api_config(), Metrics::new());
        state.shutdown = cancel.clone();
        let state = Arc::new(state);
        let settings = SyncSettings {
            heartbeat: config.sync.heartbeat,
            poll_interval: config.sync.poll_interval,
            reauth_interval: config.sync.reauth_interval,
            max_catch_up: config.sync.max_catch_up,
            usage: crate::sync::usage::UsageSettings {
                max_entries: config.sync.usage_max_entries,
                flush_interval: config.sync.usage_flush_interval,
                max_pending: config.sync.usage_max_pending,
                max_entries_per_minute: config.sync.usage_max_entries_per_minute,
            },
            ..SyncSettings::default()
        };
        tokio::spawn(state.store.clone().run_retention(
            config.retention.retention(),
            config.retention.interval,
            {
                let metrics = state.metrics.clone();
                move |pruned| metrics.pruned(pruned)
            },
            cancel.clone(),
        ));
        tokio::spawn({
            let (state, cancel) = (state.clone(), cancel.clone());
            async move { state.auth.run_use_flush(cancel).await }
        });
        if config.sync.signing_key_max_age_days > 0 {
            let days = config.sync.signing_key_max_age_days;
            let max_age = i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
            tokio::spawn(state.store.clone().run_signing_key_rotation(
                max_age,
                std::time::Duration::from_secs(3600),
                cancel.clone(),
            ));
        }
        let recorder = tokio::spawn(crate::sync::fleet::run_recorder(
            state.store.clone(),
            state.sidecars.clone(),
            state.metrics.clone(),
            settings.server_id.clone(),
            settings.heartbeat,
            cancel.clone(),
        ));
        let hub = Hub::new(state.clone(), settings, cancel.clone());
        let usage_flusher = tokio::spawn(crate::sync::usage::run_flusher(
            state.store.clone(),
            hub.usage().clone(),
            state.config.write_limits(),
            cancel.clone(),
        ));
        tokio::spawn(hub.clone().follow_local_commits());
        if let Some(url) = &config.redis_url {
            crate::sync::fanout::start(hub.clone(), url)?;
            tracing::info!(redis = %redact_url(url), "fan-out between replicas through redis");
        }
        Ok(Control {
            state,
            hub,
            cancel,
            recorder: Arc::new(std::sync::Mutex::new(Some(recorder))),
            usage_flusher: Arc::new(std::sync::Mutex::new(Some(usage_flusher))),
        })
    }

    /// Binds the QUIC sync endpoint on `config.sync_addr` with the configured certificate (or the
    /// development one). Serve it with [`SyncServer::serve`]; it stops with [`Control::shutdown`].
    pub fn bind_sync(&self, config: &ControlConfig) -> anyhow::Result<SyncServer> {
        let tls = quic_tls(config)?;
        let timers = QuicTimers {
            idle_timeout: config.sync.idle_timeout,
            ..QuicTimers::default()
        };
        SyncServer::bind(config.sync_addr, &tls, timers, self.hub.clone())
    }

    /// Stops the sync hub: feeds, sessions, the Redis fan-out and the QUIC endpoint.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// After [`Control::shutdown`]: waits (at most 15 s) until the fleet recorder has marked this
    /// replica's sidecar sessions disconnected in the store. Call it before closing the store.
    pub async fn finish(&self) {
        self.cancel.cancel();
        finish_task(&self.recorder, "the fleet recorder").await;
        finish_task(&self.usage_flusher, "the last write of the flag usage").await;
    }

    /// Serves the admin API on `listener` until `shutdown` completes, then drains in-flight requests.
    pub async fn serve_api(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = api::router(self.state.clone());
        vexil_http::serve_http1(listener, app, self.state.config.http_bounds(), shutdown).await;
        Ok(())
    }

    /// Serves the injection webhook on `listener` (see [`crate::webhook::bind`]) until `shutdown`
    /// completes, then drains in-flight reviews.
    pub async fn serve_webhook(
        &self,
        listener: TlsListener,
        inject: InjectConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = Arc::new(WebhookState {
            inject,
            metrics: self.state.metrics.clone(),
            read_timeout: self.state.config.read_timeout,
            max_connections: self.state.config.max_connections,
        });
        crate::webhook::serve(listener, state, shutdown).await
    }
}

/// The QUIC endpoint's certificate: explicit files, else `TLS_DIR/server.pem` (where `--dev-tls`
/// generated it in [`Control::open`]).
fn quic_tls(config: &ControlConfig) -> anyhow::Result<QuicTls> {
    let cert = config
        .tls_cert
        .clone()
        .unwrap_or_else(|| config.tls_dir.join("server.pem"));
    let key = config
        .tls_key
        .clone()
        .unwrap_or_else(|| config.tls_dir.join("server.key"));
    if !cert.exists() || !key.exists() {
        anyhow::bail!(
            "the QUIC sync endpoint needs a TLS certificate: {} or {} is missing; pass \
             --tls-cert and --tls-key, or --dev-tls to generate a development CA into --tls-dir",
            cert.display(),
            key.display()
        );
    }
    Ok(QuicTls {
        cert,
        key,
        client_ca: config.tls_client_ca.clone(),
    })
}

/// On first start (no token at all), creates the admin token: `admin_token` (`VEXIL_ADMIN_TOKEN`),
/// or a random one written to a new file at `token_file` (mode 0600) whose path, never the secret,
/// goes to standard output and the log. The file is written before the token is stored: a start
/// that cannot write it fails without leaving behind a token nobody knows.
async fn bootstrap_admin_token(
    store: &Store,
    admin_token: Option<&Secret>,
    token_file: &Path,
) -> anyhow::Result<()> {
    if store.count_tokens().await? > 0 {
        return Ok(());
    }
    if let Some(secret) = admin_token {
        store
            .create_token(
                None,
                "admin",
                Role::Admin,
                &[],
                &hash_secret(secret.expose()),
            )
            .await?;
        tracing::info!("created the first admin token from VEXIL_ADMIN_TOKEN");
        return Ok(());
    }
    let secret = generate_secret();
    let path = std::path::absolute(token_file).unwrap_or_else(|_| token_file.to_path_buf());
    write_private(&path, &secret).map_err(|e| {
        anyhow::anyhow!(
            "writing the first admin token to {} (admin_token_file, VEXIL_ADMIN_TOKEN_FILE): {e}; \
             point admin_token_file at a writable directory, or set VEXIL_ADMIN_TOKEN",
            path.display()
        )
    })?;
    if let Err(e) = store
        .create_token(None, "admin", Role::Admin, &[], &hash_secret(&secret))
        .await
    {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    println!(
        "vexil-control: created the first admin token; its secret is in {} (mode 0600, shown \
         nowhere else)",
        path.display()
    );
    tracing::info!(file = %path.display(), "created the first admin token");
    Ok(())
}

/// Writes `text` to `path` readable by its owner only: a new temporary file beside it (mode 0600
/// from its creation, so the secret is never readable by others), synced, then renamed over
/// `path` (which replaces a symbolic link there instead of writing through it).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let tmp = dir.join(format!(
        ".{}.{:08x}.tmp",
        name.to_string_lossy(),
        rand::random::<u32>()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Waits (at most 15 s) for the task held in `slot`, if it is still there, to end; `what` names it
/// in the warning when it does not.
async fn finish_task(slot: &std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>, what: &str) {
    let task = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(task) = task
        && tokio::time::timeout(std::time::Duration::from_secs(15), task)
            .await
            .is_err()
    {
        tracing::warn!("{what} did not finish in time");
    }
}
