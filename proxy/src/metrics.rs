//! The sidecar's Prometheus metrics: one registry every part adds to, served on `/metrics`.
//!
//! [`Metrics`] owns the registry and the metrics of the lookup surfaces (evaluations by flag,
//! variant and reason for gRPC and OFREP). The snapshot's state (revision, flag count, seconds since
//! it was published, the sync state) is read from the [`SnapshotCell`] at scrape time by a
//! collector, so nothing on the hot path updates it. Other parts (the data plane, the sync client,
//! the file source) register their own metrics with [`Metrics::register`] or
//! [`Metrics::registry`].
//!
//! The sync state is whatever a [`SyncState`] reports: by default the kind of the current
//! snapshot's source (`file`, `control`, `persisted`) or `unloaded`; the QUIC sync client plugs in
//! its own with [`Metrics::set_sync_state`].

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};

use crate::snapshot::SnapshotCell;

/// The content type of the text exposition [`Metrics::render`] produces (OpenMetrics 1.0, which
/// Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reports the state of the flag source for `/metrics` and `/debug/snapshot`.
///
/// Implemented for closures, so a sync client can plug in with
/// `metrics.set_sync_state(move || state.label().to_string())`.
pub trait SyncState: Send + Sync + 'static {
    /// A short lowercase label such as `synced`, `connecting`, `stale` or `file`.
    fn sync_state(&self) -> Cow<'static, str>;
}

impl<F> SyncState for F
where
    F: Fn() -> String + Send + Sync + 'static,
{
    fn sync_state(&self) -> Cow<'static, str> {
        Cow::Owned(self())
    }
}

/// Which lookup surface answered an evaluation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Api {
    /// `flagd.evaluation.v1` over gRPC.
    GrpcV1,
    /// `flagd.evaluation.v2` over gRPC.
    GrpcV2,
    /// OFREP over HTTP.
    Ofrep,
}

/// The span of one lookup (a flagd gRPC call, an OFREP request), wanted only by traces (at `TRACE`
/// level under [`vexil_telemetry::OTEL_TARGET`]): its events are the `feature_flag.evaluation`s
/// [`Metrics::evaluation`] records. With no trace layer it is disabled after one check of its
/// callsite's cached interest.
pub fn lookup_span(api: Api, snapshot: &crate::snapshot::Snapshot) -> tracing::Span {
    tracing::trace_span!(target: vexil_telemetry::OTEL_TARGET, "lookup.evaluate",
        otel.kind = "server", vexil.api = api.as_str(),
        feature_flag.set.id = %snapshot.environment, feature_flag.version = snapshot.revision)
}

impl Api {
    /// The label value: `grpc_v1`, `grpc_v2` or `ofrep`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::GrpcV1 => "grpc_v1",
            Api::GrpcV2 => "grpc_v2",
            Api::Ofrep => "ofrep",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluationLabels {
    api: &'static str,
    flag: String,
    variant: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

/// The registry and the lookup metrics. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Mutex<Registry>,
    evaluations: Family<EvaluationLabels, Counter>,
    not_found: Family<ApiLabels, Counter>,
    sync_state: Arc<ArcSwapOption<Box<dyn SyncState>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry (prefix `vexil_proxy`) with the lookup metrics and the snapshot collector for
    /// `cell`.
    pub fn new(cell: Arc<SnapshotCell>) -> Self {
        let mut registry = Registry::with_prefix("vexil_proxy");
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        registry.register(
            "evaluations",
            "Flag evaluations answered by the lookup surfaces, by api, flag, variant and reason",
            evaluations.clone(),
        );
        let not_found = Family::<ApiLabels, Counter>::default();
        registry.register(
            "evaluations_flag_not_found",
            "Lookups of a flag key the current snapshot does not have, by api",
            not_found.clone(),
        );
        let sync_state = Arc::new(ArcSwapOption::empty());
        registry.register_collector(Box::new(SnapshotCollector {
            cell,
            sync_state: sync_state.clone(),
        }));
        Metrics {
            registry: Mutex::new(registry),
            evaluations,
            not_found,
            sync_state,
        }
    }

    /// Counts one evaluation of `flag` (`variant` is `None` when no variant was chosen).
    pub fn evaluation(&self, api: Api, flag: &str, variant: Option<&str>, reason: &'static str) {
        self.evaluations
            .get_or_create(&EvaluationLabels {
                api: api.as_str(),
                flag: flag.to_owned(),
                variant: variant.unwrap_or_default().to_owned(),
                reason,
            })
            .inc();
        // The `feature_flag.evaluation` event of the lookup's span (see `lookup_span`), wanted only
        // by traces: with none, one check of the callsite's cached interest.
        if tracing::enabled!(target: vexil_telemetry::FEATURE_FLAG_TARGET, tracing::Level::TRACE) {
            // The convention's reasons are flagd's, in lower case.
            let reason = reason.to_ascii_lowercase();
            tracing::event!(target: vexil_telemetry::FEATURE_FLAG_TARGET, tracing::Level::TRACE,
                "feature_flag.key" = flag,
                "feature_flag.result.variant" = variant.unwrap_or(""),
                "feature_flag.result.reason" = reason.as_str(),
                "feature_flag.provider.name" = "vexil",
                "feature_flag.evaluation");
        }
    }

    /// Counts one lookup of a flag that does not exist (kept apart from [`Metrics::evaluation`] so
    /// that unknown keys sent by clients cannot grow the label space).
    pub fn flag_not_found(&self, api: Api) {
        self.not_found
            .get_or_create(&ApiLabels { api: api.as_str() })
            .inc();
    }

    /// Registers another metric (its name gets the `vexil_proxy_` prefix).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// The registry itself, for sub-registries, units or collectors. Do not hold the guard across
    /// an `.await`.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the default sync state (the current snapshot's source kind).
    pub fn set_sync_state(&self, state: impl SyncState) {
        self.sync_state
            .store(Some(Arc::new(Box::new(state) as Box<dyn SyncState>)));
    }

    /// The current sync state label (see [`SyncState`]).
    pub fn sync_state(&self, cell: &SnapshotCell) -> Cow<'static, str> {
        current_sync_state(&self.sync_state, cell)
    }

    /// The text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry()) {
            tracing::error!("encoding metrics failed: {e}");
            out.clear();
        }
        out
    }
}

fn current_sync_state(
    slot: &ArcSwapOption<Box<dyn SyncState>>,
    cell: &SnapshotCell,
) -> Cow<'static, str> {
    match &*slot.load() {
        Some(state) => state.sync_state(),
        None => Cow::Borrowed(cell.load().map_or("unloaded", |s| s.source.kind())),
    }
}

/// Reads the snapshot's gauges at scrape time.
struct SnapshotCollector {
    cell: Arc<SnapshotCell>,
    sync_state: Arc<ArcSwapOption<Box<dyn SyncState>>>,
}

impl std::fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCollector").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.cell.load();
        let state = current_sync_state(&self.sync_state, &self.cell);
        gauge(
            &mut encoder,
            "snapshot_loaded",
            "1 while a flag set is served, else 0 (none loaded yet, or serving without flags \
             after the init timeout: see lifecycle_state)",
            i64::from(snapshot.as_ref().is_some_and(|s| s.is_flag_set())),
        )?;
        let one = ConstGauge::new(1i64);
        let mut metric = encoder.encode_descriptor(
            "sync_state",
            "The flag source's state, as a label of a gauge that is always 1",
            None,
            one.metric_type(),
        )?;
        one.encode(metric.encode_family(&StateLabels {
            state: state.into_owned(),
        })?)?;
        let Some(snapshot) = snapshot else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "snapshot_revision",
            "Revision of the flag set being served",
            snapshot.revision,
        )?;
        gauge(
            &mut encoder,
            "snapshot_flags",
            "Number of flags in the flag set being served",
            i64::try_from(snapshot.flags.len()).unwrap_or(i64::MAX),
        )?;
        let age = SystemTime::now()
            .duration_since(snapshot.loaded_at)
            .unwrap_or_default()
            .as_secs_f64();
        gauge(
            &mut encoder,
            "snapshot_age_seconds",
            "Seconds since the flag set being served was published",
            age,
        )
    }
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Snapshot, Source};
    use serde_json::json;
    use vexil_engine::FlagSet;

    #[test]
    fn renders_lookup_and_snapshot_metrics() {
        let cell = Arc::new(SnapshotCell::new());
        let metrics = Metrics::new(cell.clone());
        let text = metrics.render();
        assert!(text.contains("vexil_proxy_snapshot_loaded 0"), "{text}");
        assert!(text.contains("vexil_proxy_sync_state{state=\"unloaded\"} 1"));
        assert!(!text.contains("snapshot_revision"));

        let set = FlagSet::from_json(&json!({"flags": {}})).unwrap();
        cell.publish(Snapshot::new("prod", 7, set, Source::File("f.json".into())));
        metrics.evaluation(Api::Ofrep, "a", Some("on"), "STATIC");
        metrics.evaluation(Api::Ofrep, "a", Some("on"), "STATIC");
        metrics.flag_not_found(Api::GrpcV2);
        let text = metrics.render();
        assert!(text.contains("vexil_proxy_snapshot_revision 7"), "{text}");
        assert!(text.contains("vexil_proxy_sync_state{state=\"file\"} 1"));
        assert!(text.contains(
            "vexil_proxy_evaluations_total{api=\"ofrep\",flag=\"a\",variant=\"on\",reason=\"STATIC\"} 2"
        ));
        assert!(text.contains("vexil_proxy_evaluations_flag_not_found_total{api=\"grpc_v2\"} 1"));

        metrics.set_sync_state(|| "stale".to_string());
        assert_eq!(metrics.sync_state(&cell), "stale");
        assert!(
            metrics
                .render()
                .contains("vexil_proxy_sync_state{state=\"stale\"} 1")
        );
    }
}
