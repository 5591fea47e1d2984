//! Prometheus metrics of the control plane.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::sync::registry::EnvironmentStats;
use std::collections::HashMap;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabels {
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The control plane's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    store_errors: Counter,
    sync_sidecars: Family<EnvLabels, Gauge>,
    sync_max_lag: Family<EnvLabels, Gauge>,
    sync_frames: Family<KindLabels, Counter>,
    sync_refused: Family<CodeLabels, Counter>,
    webhook_reviews: Family<OutcomeLabels, Counter>,
    auth_rate_limited: Family<ListenerLabels, Counter>,
    sync_digest_mismatches: Counter,
    pruned: Family<LogLabels, Counter>,
    sync_write_timeouts: Counter,
    fleet_write_failures: Counter,
    usage_reports: Family<ResultLabels, Counter>,
    guard_looks: Family<ResultLabels, Counter>,
    usage_entries: Counter,
    usage_rows: Counter,
    usage_flush_failures: Counter,
    usage_flush_seconds: Histogram,
    usage_pending: Gauge,
    shadow_entries: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabels {
    log: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vexil_control");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Admin API requests by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Admin API request latency by route",
            latency.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Requests that failed because the store failed or was unreachable",
            store_errors.clone(),
        );
        let sync_sidecars = Family::<EnvLabels, Gauge>::default();
        registry.register(
            "sync_sidecars",
            "Sidecars connected to this replica, by environment",
            sync_sidecars.clone(),
        );
        let sync_max_lag = Family::<EnvLabels, Gauge>::default();
        registry.register(
            "sync_max_lag_revisions",
            "Largest number of revisions a connected sidecar has yet to acknowledge, by environment",
            sync_max_lag.clone(),
        );
        let sync_frames = Family::<KindLabels, Counter>::default();
        registry.register(
            "sync_frames_sent",
            "Sync frames sent to sidecars, by kind (full, delta, ping)",
            sync_frames.clone(),
        );
        let sync_refused = Family::<CodeLabels, Counter>::default();
        registry.register(
            "sync_refused",
            "Sync streams ended with an Error frame, by error code",
            sync_refused.clone(),
        );
        let webhook_reviews = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_reviews",
            "Pod admission reviews answered by the injection webhook, by outcome",
            webhook_reviews.clone(),
        );
        let auth_rate_limited = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "auth_rate_limited",
            "Requests (api) and Subscribes (sync) refused because their peer had too many failed \
             authentications",
            auth_rate_limited.clone(),
        );
        let pruned = Family::<LogLabels, Counter>::default();
        registry.register(
            "log_rows_pruned",
            "Rows pruned by retention, by log (changes, audit, sidecar_sessions)",
            pruned.clone(),
        );
        let sync_digest_mismatches = Counter::default();
        registry.register(
            "sync_digest_mismatches",
            "Acks whose document digest differs from control's document at that revision (right \
             revision, wrong content); each is answered with a Full, once per stream",
            sync_digest_mismatches.clone(),
        );
        let sync_write_timeouts = Counter::default();
        registry.register(
            "sync_write_timeouts",
            "Sync streams ended because a write to the sidecar did not complete in time",
            sync_write_timeouts.clone(),
        );
        let fleet_write_failures = Counter::default();
        registry.register(
            "fleet_write_failures",
            "Writes of this replica's sidecar sessions to the store that failed (tried again; \
             the sessions go on)",
            fleet_write_failures.clone(),
        );
        let usage_reports = Family::<ResultLabels, Counter>::default();
        registry.register(
            "usage_reports",
            "Usage reports from sidecars, by result: accepted, or why refused (too_many_entries, \
             invalid, absurd_count, rate_limited, overloaded)",
            usage_reports.clone(),
        );
        let guard_looks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "guard_looks",
            "Looks of guards' sequential tests made by this replica, by result: pass (the rollout \
             is not worse beyond the threshold, or not yet shown to be) or trip",
            guard_looks.clone(),
        );
        let usage_entries = Counter::default();
        registry.register(
            "usage_entries",
            "Entries (flag, variant and count) of the accepted usage reports",
            usage_entries.clone(),
        );
        let usage_rows = Counter::default();
        registry.register(
            "usage_rows_written",
            "Flag usage rows (environment, flag, variant, hour) written to the store",
            usage_rows.clone(),
        );
        let usage_flush_failures = Counter::default();
        registry.register(
            "usage_flush_failures",
            "Writes of the flag usage to the store that failed (kept and tried again)",
            usage_flush_failures.clone(),
        );
        let usage_flush_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "usage_flush_duration_seconds",
            "Time one write of the flag usage to the store took",
            usage_flush_seconds.clone(),
        );
        let usage_pending = Gauge::default();
        registry.register(
            "usage_pending_entries",
            "Flag usage entries (environment, flag, variant, hour) added up in memory, not yet \
             written",
            usage_pending.clone(),
        );
        let shadow_entries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "shadow_entries",
            "Shadow-evaluation entries (flag, proposal, live and proposed variant, count) of the \
             usage reports, by result: accepted (taken into memory), written (rows added to the \
             store), unknown_proposal (rows of a proposal that is not the flag's current one, left \
             out when written)",
            shadow_entries.clone(),
        );
        Metrics {
            shadow_entries,
            usage_reports,
            guard_looks,
            usage_entries,
            usage_rows,
            usage_flush_failures,
            usage_flush_seconds,
            usage_pending,
            fleet_write_failures,
            pruned,
            sync_write_timeouts,
            registry,
            sync_digest_mismatches,
            auth_rate_limited,
            requests,
            latency,
            store_errors,
            sync_sidecars,
            sync_max_lag,
            sync_frames,
            sync_refused,
            webhook_reviews,
        }
    }

    /// Counts one request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Counts one store failure.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Counts `n` sync frames of `kind` sent.
    pub fn sync_frames_sent(&self, kind: &'static str, n: u64) {
        self.sync_frames
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc_by(n);
    }

    /// Counts a sync stream refused or ended with `code`.
    pub fn sync_refused(&self, code: &str) {
        self.sync_refused
            .get_or_create(&CodeLabels { code: code.into() })
            .inc();
    }

    /// Counts a request or Subscribe refused for its peer's failed authentications (`api`,
    /// `sync`).
    pub fn auth_rate_limited(&self, listener: &'static str) {
        self.auth_rate_limited
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// Counts an acknowledged digest that differs from control's.
    pub fn sync_digest_mismatch(&self) {
        self.sync_digest_mismatches.inc();
    }

    /// Replaces the per-environment sync gauges with `stats`.
    pub fn set_sync_stats(&self, stats: &HashMap<String, EnvironmentStats>) {
        self.sync_sidecars.clear();
        self.sync_max_lag.clear();
        for (env, s) in stats {
            let labels = EnvLabels {
                environment: env.clone(),
            };
            self.sync_sidecars.get_or_create(&labels).set(s.sidecars);
            self.sync_max_lag.get_or_create(&labels).set(s.max_lag);
        }
    }

    /// Counts one admission review (`injected`, `opted_out`, `already_injected`, `ignored`,
    /// `invalid`, `unparseable`).
    pub fn webhook_review(&self, outcome: &'static str) {
        self.webhook_reviews
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a sync stream ended by a write that did not complete in time.
    pub fn sync_write_timeout(&self) {
        self.sync_write_timeouts.inc();
    }

    /// Counts a failed write of the fleet sessions.
    pub fn fleet_write_failed(&self) {
        self.fleet_write_failures.inc();
    }

    /// Counts a usage report: `accepted` with its entries, or refused with the reason.
    pub fn usage_report(&self, result: &'static str, entries: u64) {
        self.usage_reports
            .get_or_create(&ResultLabels { result })
            .inc();
        if result == "accepted" {
            self.usage_entries.inc_by(entries);
        }
    }

    /// Counts one look of a guard's test.
    pub fn guard_look(&self, trips: bool) {
        let result = if trips { "trip" } else { "pass" };
        self.guard_looks
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Records one write of the flag usage: the rows written (`None`: it failed), its duration and
    /// what is still pending.
    pub fn usage_flushed(&self, rows: Option<u64>, seconds: f64, pending: usize) {
        match rows {
            Some(n) => {
                self.usage_rows.inc_by(n);
            }
            None => {
                self.usage_flush_failures.inc();
            }
        }
        self.usage_flush_seconds.observe(seconds);
        self.usage_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts `n` shadow-evaluation entries with `result` (`accepted`, `written`,
    /// `unknown_proposal`).
    pub fn shadow_entries(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.shadow_entries
                .get_or_create(&ResultLabels { result })
                .inc_by(n);
        }
    }

    /// Counts the rows a retention pass pruned.
    pub fn pruned(&self, pruned: crate::store::Pruned) {
        for (log, n) in [
            ("changes", pruned.changes),
            ("audit", pruned.audit),
            ("sidecar_sessions", pruned.sessions),
            ("flag_usage", pruned.usage),
        ] {
            self.pruned.get_or_create(&LogLabels { log }).inc_by(n);
        }
    }

    /// The registry, to add more metrics (the sync hub's).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
