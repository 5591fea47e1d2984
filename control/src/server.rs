//! Wiring: open the store, make sure an admin token exists, serve the API and the injection webhook
//! until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::auth::{Authenticator, generate_secret, hash_secret};
use crate::config::ControlConfig;
use crate::metrics::Metrics;
use crate::model::Role;
use crate::store::{Store, redact_url};
use crate::webhook::{InjectConfig, TlsListener, WebhookState};

/// A running control plane's shared parts.
pub struct Control {
    /// The API state (store, auth, metrics).
    pub state: Arc<AppState>,
}

impl Control {
    /// Opens the store and prepares the API.
    pub async fn open(config: &ControlConfig) -> anyhow::Result<Control> {
        let store = Store::connect(&config.database_url)
            .await
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", redact_url(&config.database_url)))?;
        tracing::info!(database = %redact_url(&config.database_url), backend = ?store.backend(), "store ready");
        bootstrap_admin_token(&store).await?;
        if config.dev_tls {
            let files = crate::tls::ensure_dev_tls(&config.tls_dir, &config.dev_tls_names)?;
            tracing::info!(ca = %files.ca_cert.display(), cert = %files.cert.display(),
                "development TLS ready (give ca.pem to sidecars)");
        }
        let auth = Authenticator::new(store.clone(), config.jwt.clone());
        let state = Arc::new(AppState::new(
            store,
            auth,
            config.api.clone(),
            Metrics::new(),
        ));
        Ok(Control { state })
    }

    /// Serves the admin API on `listener` until `shutdown` completes, then drains in-flight requests.
    pub async fn serve_api(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = api::router(self.state.clone());
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
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
            app: self.state.clone(),
        });
        crate::webhook::serve(listener, state, shutdown).await
    }
}

/// On first start (no token at all), creates the admin token: from `VEXIL_ADMIN_TOKEN`, or a random
/// one printed once on standard output (never logged).
async fn bootstrap_admin_token(store: &Store) -> anyhow::Result<()> {
    if store.count_tokens().await? > 0 {
        return Ok(());
    }
    let (secret, generated) = match std::env::var("VEXIL_ADMIN_TOKEN") {
        Ok(s) if !s.trim().is_empty() => (s.trim().to_string(), false),
        _ => (generate_secret(), true),
    };
    store
        .create_token(None, "admin", Role::Admin, &[], &hash_secret(&secret))
        .await?;
    if generated {
        println!(
            "vexil-control: created the first admin token (shown once, store it now):\n{secret}"
        );
    } else {
        tracing::info!("created the first admin token from VEXIL_ADMIN_TOKEN");
    }
    Ok(())
}
