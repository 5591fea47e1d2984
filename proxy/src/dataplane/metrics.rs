//! The data plane's metrics, registered in the sidecar's [`Metrics`] registry (prefix
//! `vexil_proxy_`):
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `dataplane_requests_total` | `listener`, `status` | requests answered (CONNECT tunnels count as 200 or their error) |
//! | `dataplane_upstream_latency_seconds` | `listener` | request sent upstream → response header received |
//! | `dataplane_injected_bytes_total` | `listener` | bytes of header values the sidecar added |
//! | `dataplane_dropped_decisions_total` | `listener` | decisions left out of `vexil-flags` by the byte limit |
//! | `dataplane_evaluations_total` | `listener`, `flag`, `variant` | flag evaluations for injection (`variant=""`: no value) |
//! | `dataplane_invalid_incoming_total` | `listener` | incoming `vexil-flags` that were not a valid dictionary (replaced) |
//! | `dataplane_incoming_decisions_dropped_total` | `listener`, `reason` | incoming `vexil-flags` members dropped because they could not be this sidecar's decisions ([`DropReason`]) |
//! | `dataplane_stripped_total` | `listener` | requests whose `vexil-*` headers came from an untrusted peer and were removed |
//! | `dataplane_tunnels_total` | `listener`, `protocol` | `CONNECT` tunnels by what they carried: `http1` and `h2c` (proxied with decisions), `opaque` (bytes copied: TLS, anything else) |
//! | `dataplane_connections_closed_total` | `listener`, `reason` | connections the sidecar closed for a limit: `max_connections`, `request_head_timeout`, `tunnel_idle_timeout` |
//! | `dataplane_decision_cache_total` | `listener`, `result` | requests whose decisions were looked up in the decision cache: `hit` (reused) or `miss` (decided and kept) |
//! | `dataplane_decision_cache_entries` | | decisions held by the caches of all worker threads |
//! | `dataplane_signatures_total` | `listener`, `result` | incoming `vexil-signature` headers from untrusted peers: `valid` (decisions kept), `malformed`, `unknown_key`, `expired`, `invalid` |
//!
//! The hot path touches only atomics: counters by status and by (flag, variant) are looked up in
//! the registry's family once and kept in slots.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::metrics::Metrics;

/// Which listener handled a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The outbound HTTP proxy (127.0.0.1:15101).
    Outbound = 0,
    /// Inbound mode, in front of the application (127.0.0.1:15106).
    Inbound = 1,
}

impl Listener {
    /// The label value: `outbound` or `inbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Outbound => "outbound",
            Listener::Inbound => "inbound",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelLabels {
    listener: &'static str,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    listener: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignatureLabels {
    listener: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    listener: &'static str,
    reason: &'static str,
}

/// Why an incoming `vexil-flags` member was dropped (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The header is not a valid dictionary (one count for the header), or the member has
    /// parameters or is an inner list: never what a sidecar writes.
    Malformed = 0,
    /// No flag of that key in the current snapshot (or no snapshot yet).
    UnknownFlag = 1,
    /// The flag is disabled (or could not be compiled): this sidecar gives it no value.
    Disabled = 2,
    /// The value's type is not the type of any of the flag's variants.
    WrongType = 3,
    /// The value has the right type but is none of the flag's variant values.
    NotAVariant = 4,
    /// The key appeared earlier in the same header: only its first member is considered.
    Duplicate = 5,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 6] = [
        DropReason::Malformed,
        DropReason::UnknownFlag,
        DropReason::Disabled,
        DropReason::WrongType,
        DropReason::NotAVariant,
        DropReason::Duplicate,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownFlag => "unknown_flag",
            DropReason::Disabled => "disabled",
            DropReason::WrongType => "wrong_type",
            DropReason::NotAVariant => "not_a_variant",
            DropReason::Duplicate => "duplicate",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluationLabels {
    listener: &'static str,
    flag: String,
    variant: String,
}

/// Statuses with a slot; anything else (never produced by HTTP/1) is counted as 0.
const STATUS_SLOTS: usize = 600;

/// Per-listener metrics resolved once.
struct PerListener {
    latency: Histogram,
    injected_bytes: Counter,
    dropped: Counter,
    invalid_incoming: Counter,
    stripped: Counter,
    incoming_dropped: [Counter; DropReason::ALL.len()],
    statuses: Box<[OnceLock<Counter>]>,
}

struct Inner {
    requests: Family<RequestLabels, Counter>,
    evaluations: Family<EvaluationLabels, Counter>,
    latency: Family<ListenerLabels, Histogram, fn() -> Histogram>,
    injected_bytes: Family<ListenerLabels, Counter>,
    dropped: Family<ListenerLabels, Counter>,
    invalid_incoming: Family<ListenerLabels, Counter>,
    stripped: Family<ListenerLabels, Counter>,
    incoming_dropped: Family<DropLabels, Counter>,
    tunnels: Family<TunnelLabels, Counter>,
    closed: Family<ClosedLabels, Counter>,
    signatures: Family<SignatureLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    cache_entries: prometheus_client::metrics::gauge::Gauge,
    /// `cache` by listener and result (0 miss, 1 hit), resolved once.
    cache_slots: [[Counter; 2]; 2],
    listeners: [PerListener; 2],
}

/// Handles to the data plane's metrics; cheap to clone.
#[derive(Clone)]
pub(crate) struct DataPlaneMetrics(Arc<Inner>);

impl std::fmt::Debug for DataPlaneMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlaneMetrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl DataPlaneMetrics {
    /// Registers the data plane's metrics in `metrics`.
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let m = Self::unregistered();
        let i = &m.0;
        metrics.register(
            "dataplane_requests",
            "Proxied requests by listener and response status",
            i.requests.clone(),
        );
        metrics.register(
            "dataplane_evaluations",
            "Flag evaluations for header injection, by listener, flag and variant",
            i.evaluations.clone(),
        );
        metrics.register(
            "dataplane_upstream_latency_seconds",
            "From sending the request upstream to receiving the response header",
            i.latency.clone(),
        );
        metrics.register(
            "dataplane_injected_bytes",
            "Bytes of header values added to requests",
            i.injected_bytes.clone(),
        );
        metrics.register(
            "dataplane_dropped_decisions",
            "Decisions left out of vexil-flags because they did not fit the byte limit",
            i.dropped.clone(),
        );
        metrics.register(
            "dataplane_invalid_incoming",
            "Incoming vexil-flags headers that were not valid dictionaries and were replaced",
            i.invalid_incoming.clone(),
        );
        metrics.register(
            "dataplane_incoming_decisions_dropped",
            "Incoming vexil-flags members dropped because they could not be this sidecar's \
             decisions, by reason (the flags are evaluated anew)",
            i.incoming_dropped.clone(),
        );
        metrics.register(
            "dataplane_stripped",
            "Requests whose vexil-* headers came from an untrusted peer and were removed",
            i.stripped.clone(),
        );
        metrics.register(
            "dataplane_tunnels",
            "CONNECT tunnels by what they carried: http1 and h2c (proxied with decisions) or \
             opaque (bytes copied)",
            i.tunnels.clone(),
        );
        metrics.register(
            "dataplane_connections_closed",
            "Connections closed by the sidecar for a limit, by reason (max_connections, \
             request_head_timeout, tunnel_idle_timeout)",
            i.closed.clone(),
        );
        metrics.register(
            "dataplane_signatures",
            "Incoming vexil-signature headers from untrusted peers, by result (valid: the \
             decisions were kept; malformed, unknown_key, expired, invalid: stripped)",
            i.signatures.clone(),
        );
        metrics.register(
            "dataplane_decision_cache",
            "Requests whose decisions were looked up in the decision cache, by result (hit: \
             reused; miss: decided and kept)",
            i.cache.clone(),
        );
        metrics.register(
            "dataplane_decision_cache_entries",
            "Decisions held by the decision caches of all worker threads",
            i.cache_entries.clone(),
        );
        m
    }

    /// Metrics that are not registered anywhere (tests).
    pub(crate) fn unregistered() -> Self {
        let latency = Family::<ListenerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let injected_bytes = Family::<ListenerLabels, Counter>::default();
        let dropped = Family::<ListenerLabels, Counter>::default();
        let invalid_incoming = Family::<ListenerLabels, Counter>::default();
        let stripped = Family::<ListenerLabels, Counter>::default();
        let cache = Family::<CacheLabels, Counter>::default();
        let incoming_dropped = Family::<DropLabels, Counter>::default();
        let per_listener = |l: Listener| {
            let labels = ListenerLabels {
                listener: l.as_str(),
            };
            PerListener {
                latency: latency.get_or_create(&labels).clone(),
                injected_bytes: injected_bytes.get_or_create(&labels).clone(),
                dropped: dropped.get_or_create(&labels).clone(),
                invalid_incoming: invalid_incoming.get_or_create(&labels).clone(),
                stripped: stripped.get_or_create(&labels).clone(),
                incoming_dropped: DropReason::ALL.map(|reason| {
                    incoming_dropped
                        .get_or_create(&DropLabels {
                            listener: l.as_str(),
                            reason: reason.as_str(),
                        })
                        .clone()
                }),
                statuses: (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect(),
            }
        };
        let listeners = [
            per_listener(Listener::Outbound),
            per_listener(Listener::Inbound),
        ];
        DataPlaneMetrics(Arc::new(Inner {
            requests: Family::default(),
            evaluations: Family::default(),
            latency,
            injected_bytes,
            dropped,
            invalid_incoming,
            stripped,
            incoming_dropped,
            tunnels: Family::default(),
            closed: Family::default(),
            signatures: Family::default(),
            cache_slots: [Listener::Outbound, Listener::Inbound].map(|l| {
                ["miss", "hit"].map(|result| {
                    cache
                        .get_or_create(&CacheLabels {
                            listener: l.as_str(),
                            result,
                        })
                        .clone()
                })
            }),
            cache,
            cache_entries: Default::default(),
            listeners,
        }))
    }

    fn at(&self, listener: Listener) -> &PerListener {
        &self.0.listeners[listener as usize]
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, listener: Listener, status: u16) {
        let slot = usize::from(status).min(STATUS_SLOTS - 1);
        let status = if usize::from(status) == slot {
            status
        } else {
            0
        };
        self.at(listener).statuses[slot]
            .get_or_init(|| {
                self.0
                    .requests
                    .get_or_create(&RequestLabels {
                        listener: listener.as_str(),
                        status,
                    })
                    .clone()
            })
            .inc();
    }

    /// Records the upstream latency of one request.
    pub(crate) fn upstream_latency(&self, listener: Listener, latency: Duration) {
        self.at(listener).latency.observe(latency.as_secs_f64());
    }

    /// Counts injected header bytes and decisions dropped by the byte limit.
    pub(crate) fn injected(&self, listener: Listener, bytes: usize, dropped: u32) {
        let p = self.at(listener);
        if bytes > 0 {
            p.injected_bytes.inc_by(bytes as u64);
        }
        if dropped > 0 {
            p.dropped.inc_by(u64::from(dropped));
        }
    }

    /// Counts an incoming `vexil-flags` that was not a valid dictionary.
    pub(crate) fn invalid_incoming(&self, listener: Listener) {
        self.at(listener).invalid_incoming.inc();
    }

    /// Counts incoming `vexil-flags` members dropped, by reason (`drops[reason as usize]`).
    pub(crate) fn incoming_dropped(
        &self,
        listener: Listener,
        drops: &[u32; DropReason::ALL.len()],
    ) {
        let p = self.at(listener);
        for (counter, &n) in p.incoming_dropped.iter().zip(drops) {
            if n > 0 {
                counter.inc_by(u64::from(n));
            }
        }
    }

    /// Counts a tunnel by the protocol it carried (not on the hot path: once per tunnel).
    pub(crate) fn tunnel(&self, listener: Listener, protocol: &'static str) {
        let labels = TunnelLabels {
            listener: listener.as_str(),
            protocol,
        };
        self.0.tunnels.get_or_create(&labels).inc();
    }

    /// Counts a connection closed for the limit `reason`.
    pub(crate) fn closed(&self, listener: Listener, reason: &'static str) {
        let labels = ClosedLabels {
            listener: listener.as_str(),
            reason,
        };
        self.0.closed.get_or_create(&labels).inc();
    }

    /// Counts a decision cache lookup.
    pub(crate) fn cache(&self, listener: Listener, hit: bool) {
        self.0.cache_slots[listener as usize][usize::from(hit)].inc();
    }

    /// Adds `n` (negative: removes) to the entries held by the decision caches.
    pub(crate) fn cache_entries(&self, n: i64) {
        if n != 0 {
            self.0.cache_entries.inc_by(n);
        }
    }

    /// Counts an incoming signature by its verdict (`valid` or a [`Rejected`] label).
    ///
    /// [`Rejected`]: crate::signing::Rejected
    pub(crate) fn signature(&self, listener: Listener, result: &'static str) {
        let labels = SignatureLabels {
            listener: listener.as_str(),
            result,
        };
        self.0.signatures.get_or_create(&labels).inc();
    }

    /// Counts a request whose `vexil-*` headers were stripped.
    pub(crate) fn stripped(&self, listener: Listener) {
        self.at(listener).stripped.inc();
    }

    /// The evaluation counter of (`listener`, `flag`, `variant`), for [`crate::dataplane::plan`]'s
    /// slots.
    pub(crate) fn evaluation_counter(
        &self,
        listener: Listener,
        flag: &str,
        variant: &str,
    ) -> Counter {
        self.0
            .evaluations
            .get_or_create(&EvaluationLabels {
                listener: listener.as_str(),
                flag: flag.to_owned(),
                variant: variant.to_owned(),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotCell;

    #[test]
    fn renders_with_labels() {
        let metrics = Metrics::new(Arc::new(SnapshotCell::new()));
        let m = DataPlaneMetrics::register(&metrics);
        m.request(Listener::Outbound, 200);
        m.request(Listener::Outbound, 200);
        m.request(Listener::Inbound, 502);
        m.injected(Listener::Outbound, 40, 2);
        m.upstream_latency(Listener::Outbound, Duration::from_micros(300));
        m.evaluation_counter(Listener::Outbound, "a", "on").inc();
        m.stripped(Listener::Inbound);
        m.incoming_dropped(Listener::Outbound, &[0, 2, 0, 1, 0, 0]);
        let text = metrics.render();
        for want in [
            "vexil_proxy_dataplane_requests_total{listener=\"outbound\",status=\"200\"} 2",
            "vexil_proxy_dataplane_requests_total{listener=\"inbound\",status=\"502\"} 1",
            "vexil_proxy_dataplane_injected_bytes_total{listener=\"outbound\"} 40",
            "vexil_proxy_dataplane_dropped_decisions_total{listener=\"outbound\"} 2",
            "vexil_proxy_dataplane_upstream_latency_seconds_count{listener=\"outbound\"} 1",
            "vexil_proxy_dataplane_evaluations_total{listener=\"outbound\",flag=\"a\",variant=\"on\"} 1",
            "vexil_proxy_dataplane_stripped_total{listener=\"inbound\"} 1",
            "vexil_proxy_dataplane_incoming_decisions_dropped_total{listener=\"outbound\",reason=\"unknown_flag\"} 2",
            "vexil_proxy_dataplane_incoming_decisions_dropped_total{listener=\"outbound\",reason=\"wrong_type\"} 1",
            "vexil_proxy_dataplane_incoming_decisions_dropped_total{listener=\"inbound\",reason=\"malformed\"} 0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
