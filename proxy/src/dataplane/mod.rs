//! The sidecar's HTTP data plane (pingora): an outbound proxy for the application's calls and an
//! optional inbound reverse proxy in front of it, both injecting the flag decisions of each
//! request as headers (docs/architecture.md, docs/headers.md).
//!
//! For each request: build the evaluation context from the configured mapping ([`context`]),
//! evaluate the flags its route selects against the current [`Snapshot`](crate::snapshot::Snapshot)
//! (one lock-free load), and write `vexil-flags` (plus the optional per-flag, `baggage` and
//! `vexil-revision` headers, [`headers`]). Decisions already on the request are kept when they could
//! be this sidecar's own (a variant value of a flag of its snapshot, `incoming`) unless the route
//! overrides them; inbound mode first strips `vexil-*` headers and `vexil.` baggage members from
//! untrusted peers.
//!
//! The binary calls [`start`] with the parsed [`DataPlaneConfig`] and the [`Listeners`]; pingora
//! then runs its `Server` on a thread of its own (it builds its own tokio runtimes and must never run
//! inside another one). On SIGTERM the binary calls [`DataPlaneHandle::shutdown`]: the listeners
//! stop accepting, open connections drain within the grace period, and it returns.
//!
//! No LRU of injected header values: measured with 20 flags (4 targeted) and a two-attribute
//! context, extracting the context, evaluating and writing every header takes 2.5 µs per request in
//! a release build (0.3 µs of which is the measurement cloning the request header). A cache would
//! still fingerprint the context (hashing the same attributes it saves extracting), take a lock
//! shared by the worker threads and copy the cached values into the request, to save at most
//! ~2 µs of a hop budgeted at 50 µs. Run `inject_cost` in this module's tests
//! (`--release -- --ignored --nocapture`) to repeat the measurement.

mod cache;
pub mod config;
mod context;
mod fast;
mod framing;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
mod incoming;
mod inject;
mod jwt;
pub mod metrics;
mod plan;
mod proxy;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::watch;

pub use config::{Cidr, DataPlaneConfig};
pub use metrics::Listener;

use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;
use inject::Injector;
use pingora::apps::HttpServerOptions;
use proxy::{Connections, Front, FrontLimits, Mode, Resolver, Sidecar, Timeouts};

/// Inbound mode: a reverse proxy on `addr` in front of the application at `upstream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// Where the inbound listener listens (conventionally `127.0.0.1:15106`).
    pub addr: SocketAddr,
    /// The application's own address.
    pub upstream: SocketAddr,
}

/// The data plane's listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listeners {
    /// The outbound proxy (`HTTP_PROXY` clients, transparent mode, `CONNECT`).
    pub outbound: SocketAddr,
    /// Inbound mode, off when `None`.
    pub inbound: Option<Inbound>,
}

/// A running data plane. Dropping it without [`DataPlaneHandle::shutdown`] also stops it (without
/// waiting).
#[derive(Debug)]
pub struct DataPlaneHandle {
    stop: watch::Sender<bool>,
    connections: Arc<Connections>,
    grace: Duration,
    thread: Option<JoinHandle<()>>,
    listeners: Listeners,
}

impl DataPlaneHandle {
    /// The listeners it serves.
    pub fn listeners(&self) -> Listeners {
        self.listeners
    }

    /// Client connections currently open.
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// Stops accepting, lets open connections finish within the grace period, and returns `true`
    /// when every one did (`false` when the grace period ran out first). Blocking, like
    /// [`start`]. Idle keep-alive connections are closed at once; `CONNECT` tunnels count as open
    /// until either side closes them.
    ///
    /// pingora's `Server` sleeps its whole grace period before tearing its runtimes down, even when
    /// nothing is left to drain, so this does not join its thread once the drain is complete: the
    /// thread ends with the process (or after the grace period, if the process lives on).
    pub fn shutdown(mut self) -> bool {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + self.grace;
        // Let the listeners see the signal before counting what is left.
        std::thread::sleep(Duration::from_millis(20));
        loop {
            if self.connections.open() == 0 {
                break;
            }
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished)
                || Instant::now() >= deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let drained = self.connections.open() == 0;
        if let Some(thread) = self.thread.take()
            && thread.is_finished()
        {
            let _ = thread.join();
        }
        drained
    }
}

/// Ends pingora's main loop when the handle says so (or is dropped). pingora's own signal handling
/// is not installed: the binary owns SIGTERM.
struct StopSignal(watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::GracefulTerminate
    }
}

/// Starts the data plane: checks the configuration (loading JWT keys), registers its metrics,
/// binds the listeners and runs pingora on its own thread with `threads` worker threads per
/// listener. Returns once every listener accepts connections.
///
/// Blocking (it waits for the listeners, up to 10 s): call it before entering async code or
/// through `tokio::task::spawn_blocking`. Until a snapshot is published in `cell`, requests are
/// forwarded without decisions.
///
/// `grace` bounds the drain on [`DataPlaneHandle::shutdown`] and becomes pingora's grace period
/// (rounded up to whole seconds; pingora's default would be 300 s).
pub fn start(
    config: DataPlaneConfig,
    listeners: Listeners,
    threads: usize,
    grace: Duration,
    cell: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<DataPlaneHandle> {
    let dp_metrics = metrics::DataPlaneMetrics::register(&metrics);
    let injector = Arc::new(Injector::new(&config, cell, dp_metrics)?);
    check_bindable(listeners.outbound, "outbound")?;
    if let Some(inbound) = listeners.inbound {
        check_bindable(inbound.addr, "inbound")?;
    }
    let mut server = Server::new_with_opt_and_conf(None, server_conf(&config, threads, grace));
    server.bootstrap();
    let shared = Shared {
        conf: server.configuration.clone(),
        limits: Limits {
            front: FrontLimits {
                max_connections: config.downstream.max_connections,
                first_byte: Duration::from_secs(config.downstream.idle_timeout_secs()),
                head: config.downstream.request_head_timeout,
                tunnel_idle: config.downstream.tunnel_idle_timeout,
            },
            max_h2_streams: config.downstream.max_h2_streams,
        },
        injector,
        resolver: Arc::new(Resolver::default()),
        connections: Arc::new(Connections::default()),
        timeouts: Timeouts {
            connect: config.upstream.connect_timeout,
            read: config.upstream.read_timeout,
            idle: config.upstream.idle_timeout,
            downstream_idle_secs: config.downstream.idle_timeout_secs(),
        },
        fast: config.downstream.fast_path,
        pool_size: config.upstream.pool_size,
    };
    server.add_service(shared.service(Listener::Outbound, listeners.outbound, Mode::Outbound));
    if let Some(inbound) = listeners.inbound {
        let mode = Mode::Inbound {
            upstream: inbound.upstream,
        };
        server.add_service(shared.service(Listener::Inbound, inbound.addr, mode));
    }
    let (stop, stop_rx) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("vexil-dataplane".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(StopSignal(stop_rx)),
            })
        })
        .context("spawning the data plane thread")?;
    let handle = DataPlaneHandle {
        stop,
        connections: shared.connections.clone(),
        grace,
        thread: Some(thread),
        listeners,
    };
    wait_listening(&handle)?;
    tracing::info!(?listeners, threads, "data plane started");
    Ok(handle)
}

/// The `[downstream]` limits of every listener.
#[derive(Clone, Copy, Debug)]
struct Limits {
    front: FrontLimits,
    max_h2_streams: u32,
}

/// What every listener's proxy shares.
struct Shared {
    conf: Arc<ServerConf>,
    limits: Limits,
    injector: Arc<Injector>,
    resolver: Arc<Resolver>,
    connections: Arc<Connections>,
    timeouts: Timeouts,
    /// `[downstream] fast_path`.
    fast: bool,
    /// `[upstream] pool_size`: idle upstream connections the fast path keeps per worker thread.
    pool_size: usize,
}

impl Shared {
    fn service(&self, listener: Listener, addr: SocketAddr, mode: Mode) -> Service<Front> {
        let sidecar = Sidecar {
            listener,
            mode,
            own_addr: addr,
            injector: self.injector.clone(),
            resolver: self.resolver.clone(),
            timeouts: self.timeouts,
        };
        let http = pingora::proxy::http_proxy(&self.conf, sidecar.clone());
        let mut h2c = pingora::proxy::http_proxy(&self.conf, sidecar.clone());
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        options.h2_idle_timeout = Some(self.timeouts.downstream_idle());
        h2c.server_options = Some(options);
        let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
        h2.max_concurrent_streams(self.limits.max_h2_streams);
        h2c.h2_options = Some(h2);
        let front = Front {
            http: Arc::new(http),
            h2c: Arc::new(h2c),
            connect: matches!(mode, Mode::Outbound),
            connections: self.connections.clone(),
            open: Arc::new(Connections::default()),
            limits: self.limits.front,
            resolver: self.resolver.clone(),
            injector: self.injector.clone(),
            listener,
            own_addr: addr,
            connect_timeout: self.timeouts.connect,
            fast: self.fast,
            sidecar,
            pool_size: self.pool_size,
        };
        let mut service = Service::new(format!("vexil {}", listener.as_str()), front);
        service.add_tcp(&addr.to_string());
        service
    }
}

fn server_conf(config: &DataPlaneConfig, threads: usize, grace: Duration) -> ServerConf {
    ServerConf {
        threads: threads.max(1),
        grace_period_seconds: Some(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.upstream.pool_size,
        ..ServerConf::default()
    }
}

/// Fails with a clear message when `addr` cannot be bound (pingora would panic in its thread).
fn check_bindable(addr: SocketAddr, which: &str) -> anyhow::Result<()> {
    TcpListener::bind(addr)
        .map(drop)
        .with_context(|| format!("cannot listen on {addr} ({which} listener)"))
}

/// Waits until every listener accepts a connection (or the server thread died).
fn wait_listening(handle: &DataPlaneHandle) -> anyhow::Result<()> {
    let mut addrs = vec![handle.listeners.outbound];
    addrs.extend(handle.listeners.inbound.map(|i| i.addr));
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in addrs {
        let probe = if addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        while TcpStream::connect_timeout(&probe, Duration::from_millis(100)).is_err() {
            if handle.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                anyhow::bail!("the data plane stopped while starting");
            }
            if Instant::now() >= deadline {
                anyhow::bail!("the data plane is not listening on {addr} after 10 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::inject::Target;
    use crate::snapshot::{Snapshot, Source};
    use pingora::http::RequestHeader;
    use serde_json::{Map, Value, json};
    use vexil_engine::FlagSet;

    /// Per-request cost of context extraction, evaluation and header building with 20 flags
    /// (4 targeted); run with `--release --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn inject_cost() {
        let mut flags = Map::new();
        for i in 0..20 {
            let targeting = if i % 5 == 0 {
                json!({"if": [{"in": [{"var": "country"}, ["de", "fr"]]}, "on", null]})
            } else {
                json!({})
            };
            flags.insert(
                format!("flag-{i:02}"),
                json!({"state": "ENABLED", "variants": {"on": true, "off": false},
                       "defaultVariant": "off", "targeting": targeting}),
            );
        }
        let set = FlagSet::from_json(&json!({ "flags": Value::Object(flags) })).unwrap();
        let cell = Arc::new(SnapshotCell::new());
        cell.publish(Snapshot::new("prod", 1, set, Source::File("f".into())));
        let config = DataPlaneConfig::from_toml_str(
            "[context]\ntargetingKey = [\"header:x-user\"]\ncountry = [\"header:x-country\"]\n",
        )
        .unwrap();
        let inj = Injector::new(&config, cell, metrics::DataPlaneMetrics::unregistered()).unwrap();
        let mut base = RequestHeader::build("GET", b"/checkout", None).unwrap();
        base.insert_header("x-user", "user-42").unwrap();
        base.insert_header("x-country", "de").unwrap();
        let target = Target {
            host: Some("svc"),
            scheme: "http",
        };
        // `VEXIL_INJECT_COST_N` iterations (100,000 by default); `VEXIL_INJECT_COST_ONLY=plain` or
        // `forwarded` runs one scenario (e.g. to count instructions under valgrind).
        let n: u32 = std::env::var("VEXIL_INJECT_COST_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let only = std::env::var("VEXIL_INJECT_COST_ONLY").unwrap_or_default();
        let cost = |base: &RequestHeader| {
            let start = Instant::now();
            for _ in 0..n {
                let mut req = base.clone();
                inj.inject(Listener::Outbound, &mut req, &target, None);
                std::hint::black_box(&req);
            }
            let per = start.elapsed() / n.max(1);
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(base.clone());
            }
            (per, start.elapsed() / n.max(1))
        };
        if only != "forwarded" {
            let (per, clone) = cost(&base);
            println!("inject: {per:?} per request (of which {clone:?} cloning the request header)");
        }
        // A forwarded `vexil-flags` with 10 of the 20 decisions (call-chain consistency).
        let forwarded: Vec<String> = (0..10).map(|i| format!("flag-{:02}=?1", i * 2)).collect();
        let mut chained = base.clone();
        chained
            .insert_header("vexil-flags", forwarded.join(", "))
            .unwrap();
        if only != "plain" {
            let (per, clone) = cost(&chained);
            println!(
                "inject, 10 decisions forwarded: {per:?} per request (of which {clone:?} cloning)"
            );
        }
    }
}
