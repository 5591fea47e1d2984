//! Shared fixture and servers of the lookup integration tests: every server bound to 127.0.0.1:0
//! in-process, shut down through one signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vexil_engine::{CompileOptions, FlagSet, Mode};
use vexil_proto::convert::json_to_struct;
use vexil_proto::flagd::evaluation::{v1, v2};
use vexil_proto::flagd::sync::v1::flag_sync_service_client::FlagSyncServiceClient;
use vexil_proto::prost_types::Struct;
use vexil_proto::tonic::transport::Channel;
use vexil_proxy::admin::{self, AdminState};
use vexil_proxy::lookup::grpc::{self, EvaluationService, GrpcConfig};
use vexil_proxy::lookup::ofrep::{self, OfrepState};
use vexil_proxy::lookup::{Limits, flagd_sync};
use vexil_proxy::metrics::Metrics;
use vexil_proxy::snapshot::{Snapshot, SnapshotCell, Source};

/// A flag set exercising every reason, type and error.
pub fn fixture() -> Value {
    let bool_variants = json!({"on": true, "off": false});
    json!({
        "metadata": {"team": "core", "version": 3},
        "$evaluators": {"is-eu": {"in": [{"var": "country"}, ["de", "fr"]]}},
        "flags": {
            "bool-static": {"state": "ENABLED", "variants": bool_variants,
                "defaultVariant": "on", "metadata": {"owner": "alice"}},
            "string-targeted": {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"},
                "defaultVariant": "red", "targeting": {"if": [{"$ref": "is-eu"}, "blue", null]}},
            "int-flag": {"state": "ENABLED", "variants": {"small": 10, "big": 1000},
                "defaultVariant": "small",
                "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "big", null]}},
            "float-flag": {"state": "ENABLED", "variants": {"half": 0.5, "one": 1.0},
                "defaultVariant": "one"},
            "object-flag": {"state": "ENABLED",
                "variants": {"a": {"size": 1, "tags": ["x", "y"]}, "b": {"size": 2}},
                "defaultVariant": "a"},
            "array-flag": {"state": "ENABLED", "variants": {"a": [1, 2]}, "defaultVariant": "a"},
            "disabled-flag": {"state": "DISABLED", "variants": bool_variants,
                "defaultVariant": "on", "metadata": {"owner": "bob"}},
            "no-default": {"state": "ENABLED", "variants": bool_variants, "defaultVariant": null,
                "targeting": {"if": [{"==": [{"var": "x"}, 1]}, "on", null]}},
            "bad-variant": {"state": "ENABLED", "variants": bool_variants,
                "defaultVariant": "off", "targeting": {"var": "pick"}},
            "broken": {"state": "ENABLED", "variants": bool_variants, "defaultVariant": "on",
                "targeting": {"no-such-operator": [1]}}
        }
    })
}

/// Compiles `doc` leniently (a broken flag answers PARSE_ERROR), as the file source does.
pub fn lenient(doc: &Value) -> FlagSet {
    let options = CompileOptions {
        mode: Mode::Lenient,
        ..CompileOptions::default()
    };
    FlagSet::compile(doc, &options).expect("a flag set")
}

/// Publishes `doc` at `revision`.
pub fn publish(cell: &SnapshotCell, revision: i64, doc: &Value) -> Arc<Snapshot> {
    cell.publish(Snapshot::new(
        "test-env",
        revision,
        lenient(doc),
        Source::File("fixture.json".into()),
    ))
}

/// An evaluation context as a Struct.
pub fn ctx(v: Value) -> Option<Struct> {
    match v {
        Value::Object(map) => Some(json_to_struct(&map)),
        _ => panic!("context must be an object"),
    }
}

/// A context with `n` attributes.
pub fn wide_context(n: usize) -> Value {
    let map: Map<String, Value> = (0..n).map(|i| (format!("a{i}"), Value::from(i))).collect();
    Value::Object(map)
}

/// The four servers on loopback, sharing one cell and one metrics registry.
pub struct Harness {
    pub cell: Arc<SnapshotCell>,
    pub metrics: Arc<Metrics>,
    pub grpc: SocketAddr,
    pub ofrep: SocketAddr,
    pub sync: SocketAddr,
    pub admin: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Knobs of [`Harness::start_with`].
#[derive(Clone, Copy)]
pub struct Options {
    pub keep_alive: Duration,
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_alive: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

impl Harness {
    /// Every server with default options and an empty cell.
    pub async fn start() -> Harness {
        Self::start_with(Options::default()).await
    }

    /// Every server with `options` and an empty cell.
    pub async fn start_with(options: Options) -> Harness {
        Self::start_on(Arc::new(SnapshotCell::new()), options).await
    }

    /// Every server answering from `cell`.
    pub async fn start_on(cell: Arc<SnapshotCell>, options: Options) -> Harness {
        let metrics = Arc::new(Metrics::new(cell.clone()));
        let (stop, _) = watch::channel(false);
        let signal = |stop: &watch::Sender<bool>| {
            let mut rx = stop.subscribe();
            async move {
                let _ = rx.wait_for(|v| *v).await;
            }
        };
        let mut tasks = Vec::new();

        let (listener, grpc_addr) = bind().await;
        let config = GrpcConfig {
            limits: options.limits,
            keep_alive: options.keep_alive,
        };
        let service = EvaluationService::new(cell.clone(), metrics.clone(), config);
        let shutdown = signal(&stop);
        tasks.push(tokio::spawn(async move {
            grpc::serve(listener, service, shutdown).await.unwrap();
        }));

        let (listener, ofrep_addr) = bind().await;
        let state = OfrepState::new(cell.clone(), metrics.clone(), options.limits);
        let shutdown = signal(&stop);
        tasks.push(tokio::spawn(async move {
            ofrep::serve(listener, state, shutdown).await.unwrap();
        }));

        let (listener, sync_addr) = bind().await;
        let service = flagd_sync::SyncService::new(cell.clone());
        let shutdown = signal(&stop);
        tasks.push(tokio::spawn(async move {
            flagd_sync::serve(listener, service, shutdown)
                .await
                .unwrap();
        }));

        let (listener, admin_addr) = bind().await;
        let state = AdminState::new(cell.clone(), metrics.clone())
            .with_read_timeout(options.limits.read_timeout);
        let shutdown = signal(&stop);
        tasks.push(tokio::spawn(async move {
            admin::serve(listener, state, shutdown).await.unwrap();
        }));

        Harness {
            cell,
            metrics,
            grpc: grpc_addr,
            ofrep: ofrep_addr,
            sync: sync_addr,
            admin: admin_addr,
            stop,
            tasks,
        }
    }

    pub async fn v1(&self) -> v1::service_client::ServiceClient<Channel> {
        v1::service_client::ServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    pub async fn v2(&self) -> v2::service_client::ServiceClient<Channel> {
        v2::service_client::ServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    pub async fn sync_client(&self) -> FlagSyncServiceClient<Channel> {
        FlagSyncServiceClient::connect(format!("http://{}", self.sync))
            .await
            .unwrap()
    }

    pub fn ofrep_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ofrep)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Signals shutdown and waits (bounded) for every server to return.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stopped within 10 s")
                .expect("server task");
        }
    }
}

/// Waits (bounded) for the next message of a stream.
pub async fn next<T>(stream: &mut vexil_proto::tonic::Streaming<T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .expect("stream ok")
}

/// The keys of `data.flags` of a configuration_change.
pub fn changed_flags(data: &Option<Struct>) -> Map<String, Value> {
    let data = vexil_proto::convert::struct_to_json(data.as_ref().expect("data"));
    match data.get("flags") {
        Some(Value::Object(flags)) => flags.clone(),
        other => panic!("data.flags missing: {other:?}"),
    }
}
