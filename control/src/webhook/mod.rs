//! The Kubernetes sidecar-injection webhook: a mutating admission webhook for pods, served over HTTPS
//! (`POST /inject`, `AdmissionReview` v1 in and out).
//!
//! A pod it is asked about gets `vexil-proxy` as a native sidecar (an init container with
//! `restartPolicy: Always` whose startup probe waits for `/readyz`, so the app starts once flags are
//! loaded), `HTTP_PROXY`/`http_proxy`/`NO_PROXY`/`no_proxy` on its app containers, the sidecar token
//! and control plane CA from Secrets, and a `vexil.io/injected` annotation recording what was done.
//!
//! Which pods it is asked about is the `MutatingWebhookConfiguration`'s business (namespaces
//! labelled `vexil.io/inject: enabled`, or pods labelled so); the webhook itself injects every pod
//! it is sent unless the pod says `vexil.io/inject: disabled` (annotation, or label), already has
//! the sidecar, or asks for something impossible. It never rejects a pod: anything it cannot read
//! or do is answered `allowed: true` without a patch, logged, and counted.

pub mod inject;
mod listener;
pub mod review;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use listener::TlsListener;
pub use review::{Outcome, review};

use crate::config::ControlConfig;
use crate::metrics::Metrics;

/// The pod annotation (or label) that opts a pod in (`enabled`) or out (`disabled`).
pub const ANNOTATION_INJECT: &str = "vexil.io/inject";
/// The pod annotation naming the environment the sidecar follows.
pub const ANNOTATION_ENVIRONMENT: &str = "vexil.io/environment";
/// The pod annotation with the sidecar's routes (passed as `VEXIL_ROUTES`).
pub const ANNOTATION_ROUTES: &str = "vexil.io/routes";
/// The annotation the webhook adds: what it injected (JSON).
pub const ANNOTATION_INJECTED: &str = "vexil.io/injected";
/// The pod annotation naming a ConfigMap (in the pod's namespace) whose key `proxy.toml` is the
/// sidecar's configuration file.
pub const ANNOTATION_CONFIG: &str = "vexil.io/config";
/// The pod annotation for inbound mode: `"LISTEN_PORT:APP_PORT"`.
pub const ANNOTATION_INBOUND: &str = "vexil.io/inbound";
/// The sidecar container's name.
pub const SIDECAR_NAME: &str = "vexil-proxy";
/// The sidecar's outbound HTTP proxy port (on the pod's loopback) unless the pod says otherwise.
pub const PROXY_PORT: u16 = 15101;
/// The sidecar's admin port (`/healthz`, `/readyz`, `/metrics`), probed by the kubelet.
pub const ADMIN_PORT: u16 = 8014;

/// Largest `AdmissionReview` accepted (a pod is far smaller; etcd stores at most ~1.5 MiB).
const MAX_REVIEW_BYTES: usize = 8 << 20;

/// What injected pods get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectConfig {
    /// The sidecar image.
    pub sidecar_image: String,
    /// The control plane's QUIC address for the sidecar (`quic://HOST:PORT`).
    pub control_url: String,
    /// Secret with the sidecar token (key `token`), in the pod's namespace.
    pub token_secret: String,
    /// Secret with the control plane's CA (key `ca.pem`), in the pod's namespace.
    pub ca_secret: String,
    /// `NO_PROXY` entries besides loopback (the cluster's service domain by default).
    pub no_proxy: Vec<String>,
    /// The environment of pods without `vexil.io/environment`; `None`: the pod's namespace.
    pub default_environment: Option<String>,
    /// The ConfigMap (key `proxy.toml`) mounted, when it exists, into sidecars of pods without
    /// `vexil.io/config`: a namespace's defaults.
    pub namespace_config: String,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            sidecar_image: concat!("vexil/vexil-proxy:", env!("CARGO_PKG_VERSION")).into(),
            control_url: "quic://vexil-control.vexil.svc:7443".into(),
            token_secret: "vexil-sidecar".into(),
            ca_secret: "vexil-sidecar".into(),
            no_proxy: vec![".svc.cluster.local".into()],
            default_environment: None,
            namespace_config: "vexil-sidecar".into(),
        }
    }
}

/// What the webhook's handler shares.
pub struct WebhookState {
    /// What injected pods get.
    pub inject: InjectConfig,
    /// Metrics (control's own, or the standalone webhook's).
    pub metrics: Arc<Metrics>,
    /// How long a client may take to send a request head, and separately its body (else `408`).
    pub read_timeout: Duration,
    /// Connections served at once; one more is answered `503` and closed.
    pub max_connections: usize,
}

/// The webhook's routes: `POST /inject`.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/inject", post(inject_pod))
        .with_state(state)
}

/// Binds `addr` and serves TLS with the certificate chain and key of these PEM files.
pub async fn bind(addr: SocketAddr, cert: &Path, key: &Path) -> anyhow::Result<TlsListener> {
    let tls = crate::tls::server_config(cert, key)?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the webhook to {addr}: {e}"))?;
    Ok(TlsListener::new(
        tcp,
        tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
    )?)
}

/// Serves the webhook on `listener` until `shutdown` completes, then drains in-flight reviews.
pub async fn serve(
    listener: TlsListener,
    state: Arc<WebhookState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bounds = vexil_http::Bounds {
        header_timeout: state.read_timeout,
        max_connections: state.max_connections,
    };
    vexil_http::serve_http1_on(listener, router(state), bounds, shutdown).await;
    Ok(())
}

/// `vexil-control webhook`: the injection webhook on its own (no store, no QUIC), so that pods
/// are injected while the control plane or its database is down. Serves `/inject` (HTTPS) on
/// `webhook_addr` and `/healthz`, `/readyz`, `/metrics` (plain HTTP) on `admin_addr` until
/// `shutdown` completes.
pub async fn serve_standalone(
    config: &ControlConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = config.webhook_addr.addr().ok_or_else(|| {
        anyhow::anyhow!("--webhook-addr is off: the standalone webhook has nothing to serve")
    })?;
    let tls = config.webhook_tls();
    if config.dev_tls {
        crate::tls::ensure_dev_tls(&config.tls_dir, &config.dev_tls_names)?;
    }
    let listener = bind(addr, &tls.cert, &tls.key).await.map_err(|e| {
        anyhow::anyhow!(
            "{e:#} (the webhook's certificate: --webhook-tls-cert and --webhook-tls-key)"
        )
    })?;
    let admin = TcpListener::bind(config.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.admin_addr))?;
    tracing::info!(%addr, admin = %config.admin_addr,
        "injection webhook listening (HTTPS, /inject); no store, no sync");
    let state = Arc::new(WebhookState {
        inject: config.inject_config(),
        metrics: Arc::new(Metrics::new()),
        read_timeout: config.api_config().read_timeout,
        max_connections: config.api_config().max_connections,
    });
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(standalone_metrics))
        .with_state(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let read_timeout = state.read_timeout;
    let admin = tokio::spawn(vexil_http::serve_http1(
        admin,
        health,
        read_timeout,
        wait(stop_rx.clone()),
    ));
    let webhook = tokio::spawn(serve(listener, state, wait(stop_rx)));
    shutdown.await;
    tracing::info!("shutting down: draining reviews");
    let _ = stop_tx.send(true);
    let _ = admin.await;
    webhook.await??;
    tracing::info!("stopped");
    Ok(())
}

async fn standalone_metrics(State(state): State<Arc<WebhookState>>) -> axum::response::Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `POST /inject`: one `AdmissionReview`.
async fn inject_pod(
    State(state): State<Arc<WebhookState>>,
    body: Body,
) -> axum::response::Response {
    // The body within the read timeout (else `408`), at most MAX_REVIEW_BYTES (else `413`).
    let body = match crate::api::extract::read_body_within(
        body,
        MAX_REVIEW_BYTES,
        state.read_timeout,
    )
    .await
    {
        Ok(body) => body,
        Err(problem) => {
            tracing::warn!(status = problem.status, detail = %problem.detail, "webhook: review not read");
            return problem.into_response();
        }
    };
    let reviewed = review(&body, &state.inject);
    let uid = &reviewed.review.response.uid;
    match &reviewed.outcome {
        Outcome::Unparseable(why) => {
            tracing::warn!(%uid, reason = %why, "webhook: unreadable review allowed without a patch");
        }
        Outcome::Invalid(why) => {
            tracing::warn!(%uid, reason = %why, "webhook: pod allowed without a sidecar");
        }
        outcome => tracing::debug!(%uid, outcome = outcome.label(), "webhook: review"),
    }
    state.metrics.webhook_review(reviewed.outcome.label());
    axum::Json(reviewed.review).into_response()
}
