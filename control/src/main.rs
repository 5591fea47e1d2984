//! `vexil-control`: the control plane binary. Parses configuration and wires the library's parts.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vexil_control::config::ControlConfig;
use vexil_control::server::Control;
use vexil_control::webhook;

#[derive(Parser)]
#[command(name = "vexil-control", version, about = "Vexil control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: admin API, QUIC sync hub and injection webhook.
    Serve(vexil_settings::Cli<ControlConfig>),
    /// Run only the injection webhook (HTTPS `/inject` on --webhook-addr; `/healthz`, `/readyz`,
    /// `/metrics` on --admin-addr): no database, no QUIC, so injection does not depend on the
    /// store's health. Takes the same settings as `serve`; only the listeners, TLS and
    /// `[webhook]` ones are used.
    Webhook(vexil_settings::Cli<ControlConfig>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, program, standalone) = match &cli.command {
        Command::Serve(args) => (args, "vexil-control serve", false),
        Command::Webhook(args) => (args, "vexil-control webhook", true),
    };
    let config = match args.settings_or_exit(program) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // rustls (webhook TLS) on ring, never one picked at random (docs/adr/0006-ring-only-tls.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _telemetry = vexil_telemetry::init(&config.telemetry, "info", "vexil-control");
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                if standalone {
                    webhook::serve_standalone(&config, shutdown_signal()?).await
                } else {
                    serve(config).await
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ControlConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let control = Control::open(&config).await?;
    let listener = TcpListener::bind(config.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the admin API to {}: {e}", config.admin_addr))?;
    let sync = control.bind_sync(&config)?;
    tracing::info!(addr = %config.admin_addr, "admin API listening");
    tracing::info!(addr = %sync.local_addr()?, "QUIC sync listening (udp, ALPN vexil-sync/1)");
    let (stop_tx, stop_rx) = watch::channel(false);
    let webhook = start_webhook(&control, &config, stop_rx).await?;
    let grace = config.shutdown_grace;
    let sync = tokio::spawn(sync.serve(std::time::Duration::from_secs(2)));
    let stopping = control.clone();
    control
        .serve_api(listener, async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: draining requests"
            );
            // Sidecars keep serving their snapshots and reconnect (to another replica).
            stopping.shutdown();
            let _ = stop_tx.send(true);
            // Past the grace period, exit anyway.
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                tracing::warn!("grace period over; exiting with requests in flight");
                std::process::exit(0);
            });
        })
        .await?;
    control.shutdown();
    let _ = sync.await;
    if let Some(webhook) = webhook {
        webhook.await??;
    }
    control.finish().await;
    control.state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Binds and serves the injection webhook, unless it is switched off, until `stop` turns true.
async fn start_webhook(
    control: &Control,
    config: &ControlConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<anyhow::Result<()>>>> {
    let Some(addr) = config.webhook_addr.addr() else {
        tracing::info!("injection webhook off");
        return Ok(None);
    };
    let tls = config.webhook_tls();
    if !tls.configured && !tls.cert.exists() {
        tracing::warn!(cert = %tls.cert.display(),
            "injection webhook off: no TLS certificate (set --webhook-tls-cert and --webhook-tls-key, \
             or --dev-tls; --webhook-addr off silences this)");
        return Ok(None);
    }
    let listener = webhook::bind(addr, &tls.cert, &tls.key).await?;
    tracing::info!(%addr, "injection webhook listening (HTTPS, /inject)");
    let serving = control.clone();
    let inject = config.inject_config();
    Ok(Some(tokio::spawn(async move {
        serving
            .serve_webhook(listener, inject, async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
    })))
}

/// SIGTERM or Ctrl-C. The handlers are installed when this is called, before any listener is
/// bound, not when the future is first polled: a SIGTERM that follows the first answered request
/// (a readiness probe, then an orchestrator stopping the pod) must drain, not kill the process.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
