//! Wiring of the sidecar: the flag source (control or a file), the lookup servers, the admin
//! endpoints (and the data plane), started together and stopped together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::{ControlSource, FlagSource, ProxyConfig};
use crate::dataplane::{self, DataPlaneHandle};
use crate::file_source::{FileSource, FileSourceConfig};
use crate::lookup::grpc::{self, EvaluationService, GrpcConfig};
use crate::lookup::ofrep::{self, OfrepState};
use crate::lookup::{Limits, flagd_sync};
use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;
use crate::sync::{SyncClient, SyncConfig, SyncHandle};

/// The listeners of the lookup and admin servers, bound before anything is served so a busy port
/// fails the start with a clear message.
pub struct Bound {
    grpc: TcpListener,
    sync: TcpListener,
    ofrep: TcpListener,
    admin: TcpListener,
}

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener to {addr}"))
}

impl Bound {
    /// Binds the configured addresses.
    pub async fn bind(config: &ProxyConfig) -> anyhow::Result<Bound> {
        Ok(Bound {
            grpc: bind("gRPC evaluation", config.grpc_addr).await?,
            sync: bind("flagd sync", config.sync_addr).await?,
            ofrep: bind("OFREP", config.ofrep_addr).await?,
            admin: bind("admin", config.admin_addr).await?,
        })
    }
}

/// The flag source in service.
enum Running {
    Control(SyncHandle),
    File(tokio::task::JoinHandle<()>),
}

/// Starts the flag source: the persisted snapshot and the sync client, or the file.
fn start_source(
    config: &ProxyConfig,
    cell: &Arc<SnapshotCell>,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Running> {
    match config.source()? {
        FlagSource::Control(c) => {
            let handle = SyncClient::new(sync_config(&c, config, metrics))?.spawn(cell.clone());
            let usage = cell.usage().metrics();
            metrics.register(
                "usage_reports_sent",
                "Usage reports (evaluation counts by flag and variant) sent to control",
                usage.reports.clone(),
            );
            metrics.register(
                "usage_entries_sent",
                "Entries (flag, variant and count) of the usage reports sent to control",
                usage.entries.clone(),
            );
            metrics.register(
                "usage_entries_dropped",
                "Evaluation counts left out of the usage reports: more distinct (flag, variant) \
                 entries were pending than the sidecar keeps",
                usage.dropped.clone(),
            );
            metrics.register(
                "shadow_proposals_skipped",
                "Proposals (shadow evaluation) a new snapshot could not evaluate: a rule that \
                 does not compile here, a flag the snapshot does not have, variants other than \
                 the live flag's, or over the counters' budget",
                usage.shadows_skipped.clone(),
            );
            let status = handle.status();
            metrics.set_sync_state(move || status.borrow().state.as_str().to_ascii_lowercase());
            export_last_contact(metrics, handle.status(), stop.clone());
            Ok(Running::Control(handle))
        }
        FlagSource::File(path) => {
            let mut source =
                FileSource::new(FileSourceConfig::new(path), cell.clone()).with_metrics(metrics);
            if let Err(e) = source.load() {
                // Not ready until the file becomes usable; it is watched meanwhile.
                tracing::error!("{e}");
            }
            metrics.set_sync_state(|| "file".to_string());
            Ok(Running::File(tokio::spawn(
                source.run(stopped(stop.clone())),
            )))
        }
    }
}

/// `vexil_proxy_sync_last_contact_age_seconds`: seconds since the last frame from control
/// (pings included), -1 before the first; updated every second.
fn export_last_contact(
    metrics: &Metrics,
    status: watch::Receiver<crate::sync::SyncStatus>,
    mut stop: watch::Receiver<bool>,
) {
    use prometheus_client::metrics::gauge::Gauge;
    use std::sync::atomic::AtomicU64;
    let age: Gauge<f64, AtomicU64> = Gauge::default();
    metrics.register(
        "sync_last_contact_age_seconds",
        "Seconds since the last frame from control (pings included); -1 before the first",
        age.clone(),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let last = status.borrow().last_contact;
            age.set(last.map_or(-1.0, |t| t.elapsed().unwrap_or_default().as_secs_f64()));
        }
    });
}

/// Labels of `vexil_proxy_sync_frames_applied_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct FrameLabels {
    kind: &'static str,
}

fn sync_config(c: &ControlSource, config: &ProxyConfig, metrics: &Metrics) -> SyncConfig {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    let mut s = SyncConfig::new(&c.url, &c.environment, &c.token, c.ca_file.clone());
    s.client_cert = c.client_cert.clone();
    if let Some(id) = &c.client_id {
        s.client_id = id.clone();
    }
    s.state_dir = Some(config.state_dir.clone());
    s.bootstrap_file = config.bootstrap_file.clone();
    s.keep_alive = c.keep_alive;
    s.idle_timeout = c.idle_timeout;
    s.usage_interval = c.usage_interval;
    let applied = Family::<FrameLabels, Counter>::default();
    metrics.register(
        "sync_frames_applied",
        "Frames from control applied to the served snapshot, by kind (full, delta)",
        applied.clone(),
    );
    s.on_frame = Some(Arc::new(move |kind, _revision| {
        applied.get_or_create(&FrameLabels { kind }).inc();
    }));
    s
}

/// Starts pingora on its own thread (it blocks until its listeners accept).
async fn start_dataplane(
    config: &ProxyConfig,
    cell: &Arc<SnapshotCell>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<DataPlaneHandle> {
    let listeners = config.listeners();
    let (dataplane, threads, grace) = (
        config.dataplane.clone(),
        config.threads,
        config.shutdown_grace,
    );
    let (cell, metrics) = (cell.clone(), metrics.clone());
    let handle = tokio::task::spawn_blocking(move || {
        dataplane::start(dataplane, listeners, threads, grace, cell, metrics)
    })
    .await??;
    tracing::info!(outbound = %listeners.outbound, inbound = ?listeners.inbound,
        threads, "data plane listening");
    Ok(handle)
}

/// The environment a snapshot of this sidecar names: control's, or the flags file's name.
fn environment(config: &ProxyConfig) -> String {
    match (&config.environment, &config.flags_file) {
        (Some(env), _) => env.clone(),
        (None, Some(file)) => file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        (None, None) => String::new(),
    }
}

/// Resolves when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the sidecar until `shutdown` resolves, then stops accepting, drains within the grace
/// period, and returns.
pub async fn run(
    config: ProxyConfig,
    bound: Bound,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let cell = Arc::new(SnapshotCell::new());
    // Subscribed before the source starts, so the first snapshot's compile garbage is purged too.
    tokio::spawn(crate::memory::purge_after_publish(cell.subscribe()));
    let metrics = Arc::new(Metrics::new(cell.clone()));
    let (stop_tx, stop) = watch::channel(false);
    let source = start_source(&config, &cell, &metrics, &stop)?;
    let lifecycle = crate::lifecycle::spawn(
        config.start_policy(),
        cell.clone(),
        environment(&config),
        match &source {
            Running::Control(handle) => Some(handle.status()),
            Running::File(_) => None,
        },
        &metrics,
        stop.clone(),
    );

    let grpc_service = EvaluationService::new(cell.clone(), metrics.clone(), GrpcConfig::default())
        .with_lifecycle(lifecycle.clone());
    let ofrep_state = OfrepState::new(cell.clone(), metrics.clone(), Limits::default());
    let admin_state = AdminState::new(cell.clone(), metrics.clone()).with_lifecycle(lifecycle);
    let sync_service = flagd_sync::SyncService::new(cell.clone());
    // The data plane first: `/healthz` and `/readyz` answer only once the outbound (and inbound)
    // listeners accept, so a pod marked ready never refuses the application's requests.
    let dataplane = start_dataplane(&config, &cell, &metrics).await?;
    let a = &config;
    tracing::info!(grpc = %a.grpc_addr, flagd_sync = %a.sync_addr, ofrep = %a.ofrep_addr, admin = %a.admin_addr,
        "lookup and admin listeners ready");
    let servers = tokio::spawn({
        let s = || stopped(stop.clone());
        let (g, o, f, ad) = (s(), s(), s(), s());
        async move {
            let (r1, r2, r3, r4) = tokio::join!(
                grpc::serve_with_sync(bound.grpc, grpc_service.clone(), sync_service.clone(), g),
                ofrep::serve(bound.ofrep, ofrep_state, o),
                grpc::serve_with_sync(bound.sync, grpc_service, sync_service, f),
                admin::serve(bound.admin, admin_state, ad),
            );
            r1.context("gRPC server")?;
            r2.context("OFREP server")?;
            r3.context("flagd sync server")?;
            r4.context("admin server")?;
            anyhow::Ok(())
        }
    });

    shutdown.await;
    tracing::info!(
        grace_secs = config.shutdown_grace.as_secs(),
        "shutting down: draining"
    );
    stop_tx.send_replace(true);
    // The data plane stops accepting and drains on its own thread, alongside the servers here.
    let dataplane = tokio::task::spawn_blocking(move || dataplane.shutdown());
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        let served = servers.await;
        match source {
            Running::Control(h) => h.shutdown().await,
            Running::File(t) => {
                let _ = t.await;
            }
        }
        served
    })
    .await;
    if !dataplane.await.unwrap_or(false) {
        tracing::warn!("data plane: connections still open at the end of the grace period");
    }
    match drained {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(anyhow::anyhow!("server task failed: {e}")),
        Err(_) => {
            tracing::warn!("grace period over; exiting with requests in flight");
            Ok(())
        }
    }
}
