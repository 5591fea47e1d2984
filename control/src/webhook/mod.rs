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

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use tokio::net::TcpListener;

pub use listener::TlsListener;
pub use review::{Outcome, review};

use crate::api::AppState;

/// The pod annotation (or label) that opts a pod in (`enabled`) or out (`disabled`).
pub const ANNOTATION_INJECT: &str = "vexil.io/inject";
/// The pod annotation naming the environment the sidecar follows.
pub const ANNOTATION_ENVIRONMENT: &str = "vexil.io/environment";
/// The pod annotation with the sidecar's routes (passed as `VEXIL_ROUTES`).
pub const ANNOTATION_ROUTES: &str = "vexil.io/routes";
/// The annotation the webhook adds: what it injected (JSON).
pub const ANNOTATION_INJECTED: &str = "vexil.io/injected";
/// The sidecar container's name.
pub const SIDECAR_NAME: &str = "vexil-proxy";
/// The sidecar's outbound HTTP proxy port (on the pod's loopback).
pub const PROXY_PORT: u16 = 15001;
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
        }
    }
}

/// What the webhook's handler shares.
pub struct WebhookState {
    /// What injected pods get.
    pub inject: InjectConfig,
    /// The control plane's state (for its metrics).
    pub app: Arc<AppState>,
}

/// The webhook's routes: `POST /inject`.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/inject", post(inject_pod))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
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
    let header_timeout = state.app.config.read_timeout;
    vexil_http::serve_http1_on(listener, router(state), header_timeout, shutdown).await;
    Ok(())
}

/// `POST /inject`: one `AdmissionReview`.
async fn inject_pod(
    State(state): State<Arc<WebhookState>>,
    body: Bytes,
) -> axum::Json<review::AdmissionReviewResponse> {
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
    state.app.metrics.webhook_review(reviewed.outcome.label());
    axum::Json(reviewed.review)
}
