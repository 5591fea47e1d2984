//! Serves a flagd flags file over every lookup surface, as the sidecar does in offline mode, without
//! the data plane: how `main.rs` wires the parts, and a quick way to try OpenFeature clients.
//!
//! ```text
//! cargo run -p vexil-proxy --example lookup_servers -- config/flags/demo.json
//! ```
//!
//! gRPC evaluation on 127.0.0.1:8013, admin on :8014, flagd sync on :8015, OFREP on :8016
//! (override the host with `VEXIL_LOOKUP_HOST`). Stops on Ctrl-C.

use std::sync::Arc;

use tokio::net::TcpListener;
use vexil_proxy::admin::{self, AdminState};
use vexil_proxy::file_source::{FileSource, FileSourceConfig};
use vexil_proxy::lookup::grpc::{self, EvaluationService, GrpcConfig};
use vexil_proxy::lookup::ofrep::{self, OfrepState};
use vexil_proxy::lookup::{Limits, flagd_sync};
use vexil_proxy::metrics::Metrics;
use vexil_proxy::snapshot::SnapshotCell;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: lookup_servers FLAGS_FILE"))?;
    let host = std::env::var("VEXIL_LOOKUP_HOST").unwrap_or_else(|_| "127.0.0.1".into());

    let cell = Arc::new(SnapshotCell::new());
    let metrics = Arc::new(Metrics::new(cell.clone()));
    let mut source =
        FileSource::new(FileSourceConfig::new(&path), cell.clone()).with_metrics(&metrics);
    if let Err(e) = source.load() {
        // Keep going: the servers answer "not ready" until the file becomes usable.
        tracing::error!("{e}");
    }

    let (stop, _) = tokio::sync::watch::channel(false);
    let shutdown = || {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };
    let bind = |port: u16| TcpListener::bind((host.clone(), port));
    let grpc_service = EvaluationService::new(cell.clone(), metrics.clone(), GrpcConfig::default());
    let ofrep_state = OfrepState::new(cell.clone(), metrics.clone(), Limits::default());
    let admin_state = AdminState::new(cell.clone(), metrics.clone());
    let sync_service = flagd_sync::SyncService::new(cell.clone());
    let (grpc_l, admin_l, sync_l, ofrep_l) = (
        bind(8013).await?,
        bind(8014).await?,
        bind(8015).await?,
        bind(8016).await?,
    );
    tracing::info!("serving {path}: gRPC :8013, admin :8014, flagd sync :8015, OFREP :8016");

    let servers = tokio::spawn({
        let (a, b, c, d, e) = (shutdown(), shutdown(), shutdown(), shutdown(), shutdown());
        async move {
            let (r1, r2, r3, r4, ()) = tokio::join!(
                grpc::serve(grpc_l, grpc_service, a),
                ofrep::serve(ofrep_l, ofrep_state, b),
                flagd_sync::serve(sync_l, sync_service, c),
                admin::serve(admin_l, admin_state, d),
                source.run(e),
            );
            r1?;
            r2?;
            r3?;
            r4?;
            anyhow::Ok(())
        }
    });
    tokio::signal::ctrl_c().await?;
    stop.send_replace(true);
    servers.await??;
    Ok(())
}
