//! What the data plane precomputes once per snapshot, so a request only evaluates and copies.
//!
//! A [`Plan`] holds, for every flag of the snapshot and every variant, the serialized
//! `vexil-flags` member (`key=value`), the value it carries (to recognize an incoming member as one
//! of the flag's variants without allocating), the per-flag header value and the baggage member;
//! for every configured route, the indices of the flags it selects (explicit keys resolved,
//! metadata selectors applied) as a list and as a bit set; whether any of them is targeted (when
//! none is, no context is extracted); and the `vexil-revision` value. It is rebuilt by the first
//! request that sees a new snapshot.

use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use serde_json::{Map, Value};
use vexil_engine::{Flag, FlagState};

use crate::dataplane::config::{DataPlaneConfig, HeadersConfig, HostPattern, RouteConfig};
use crate::dataplane::context::ContextMapping;
use crate::dataplane::headers::{Carried, baggage_value};
use crate::dataplane::incoming::FlagBits;
use crate::dataplane::metrics::{DataPlaneMetrics, Listener};
use crate::snapshot::Snapshot;

/// Which flags a route selects.
#[derive(Clone, Debug)]
enum Selection {
    All,
    Keys(Box<[Box<str>]>),
    Metadata(Map<String, Value>),
}

impl Selection {
    fn of(route: &RouteConfig) -> Selection {
        match (&route.flags, &route.metadata) {
            (Some(keys), _) => Selection::Keys(keys.iter().map(|k| k.as_str().into()).collect()),
            (None, Some(meta)) => Selection::Metadata(meta.clone()),
            (None, None) => Selection::All,
        }
    }

    fn indices(&self, snapshot: &Snapshot) -> Box<[u32]> {
        let flags = &snapshot.flags;
        match self {
            Selection::All => (0..flags.len() as u32).collect(),
            Selection::Keys(keys) => {
                // The set lists its flags sorted by key.
                let sorted: Vec<&str> = flags.flags().map(Flag::key).collect();
                keys.iter()
                    .filter_map(|k| sorted.binary_search(&k.as_ref()).ok())
                    .map(|i| i as u32)
                    .collect()
            }
            Selection::Metadata(want) => flags
                .flags()
                .enumerate()
                .filter(|(_, f)| want.iter().all(|(k, v)| f.metadata().get(k) == Some(v)))
                .map(|(i, _)| i as u32)
                .collect(),
        }
    }
}

/// One `[[routes]]` entry, compiled.
#[derive(Clone, Debug)]
struct Rule {
    host: Option<HostPattern>,
    path_prefix: Option<Box<str>>,
    selection: Selection,
    override_existing: bool,
}

/// The route table: which rule a request takes.
#[derive(Clone, Debug)]
pub(crate) struct Router {
    rules: Box<[Rule]>,
}

/// The route a request took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// No routes configured: every flag, existing decisions kept.
    Default,
    /// Rule `n` of `[[routes]]`.
    Rule(usize),
    /// Routes are configured and none matched: nothing is injected.
    Unmatched,
}

impl Router {
    /// Compiles the routes of a validated configuration.
    pub(crate) fn new(config: &DataPlaneConfig) -> Router {
        let rules = config
            .routes
            .iter()
            .map(|r| Rule {
                host: r.host.clone(),
                path_prefix: r.path_prefix.as_deref().map(Into::into),
                selection: Selection::of(r),
                override_existing: r.override_existing,
            })
            .collect();
        Router { rules }
    }

    /// The route of a request to `host` (lowercase, without port) and `path`.
    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Route {
        if self.rules.is_empty() {
            return Route::Default;
        }
        self.rules
            .iter()
            .position(|r| {
                r.host
                    .as_ref()
                    .is_none_or(|p| host.is_some_and(|h| p.matches(h)))
                    && r.path_prefix
                        .as_deref()
                        .is_none_or(|prefix| path.starts_with(prefix))
            })
            .map_or(Route::Unmatched, Route::Rule)
    }

    /// True when `route` replaces existing decisions.
    pub(crate) fn overrides(&self, route: Route) -> bool {
        match route {
            Route::Rule(i) => self.rules[i].override_existing,
            Route::Default | Route::Unmatched => false,
        }
    }
}

/// One variant of a flag, ready to copy into headers.
#[derive(Debug)]
pub(crate) struct PlannedVariant {
    /// The variant's name.
    pub name: Box<str>,
    /// The value as `vexil-flags` carries it; `None` when it cannot be carried.
    pub carried: Option<Carried>,
    /// `key=item` for `vexil-flags`; `None` when the value cannot be carried.
    pub member: Option<Box<str>>,
    /// The value of the per-flag header (when enabled).
    pub item: Option<HeaderValue>,
    /// `prefix.key=value` for `baggage` (when enabled).
    pub baggage: Option<Box<str>>,
}

/// One flag of the snapshot, ready to copy into headers.
#[derive(Debug)]
pub(crate) struct PlannedFlag {
    /// The flag key.
    pub key: Box<str>,
    /// True when it has a targeting rule (needs a context).
    pub targeted: bool,
    /// True when the sidecar can give it a value (enabled and compiled).
    pub decided: bool,
    /// The item types of its carried variants ([`kind`](crate::dataplane::headers::kind) bits).
    pub kinds: u8,
    /// `<per_flag_prefix><key>` (when enabled).
    pub header_name: Option<HeaderName>,
    /// Variants in document order.
    pub variants: Box<[PlannedVariant]>,
    /// First evaluation-counter slot of this flag (one per variant, plus one for "no value").
    slot: usize,
}

/// Everything precomputed for one snapshot.
pub(crate) struct Plan {
    /// The snapshot the plan was built from.
    pub snapshot: Arc<Snapshot>,
    /// Flags in the snapshot's order.
    pub flags: Box<[PlannedFlag]>,
    /// Per route (`Route::Rule(i)` → `rules[i]`): selected flag indices, and whether one is
    /// targeted.
    rules: Box<[(Box<[u32]>, bool)]>,
    /// Per route, the selected flags as a bit set (routes that override incoming decisions).
    masks: Box<[FlagBits]>,
    /// Every flag (the default route) and whether one is targeted.
    all: (Box<[u32]>, bool),
    /// `vexil-revision` (when enabled).
    pub revision: Option<HeaderValue>,
    /// Lazily created evaluation counters by listener and slot.
    counters: [Box<[OnceLock<Counter>]>; 2],
    metrics: DataPlaneMetrics,
    /// Unique per plan built in this process: the decision cache's generation.
    pub id: u64,
    /// Per route, the context attributes (indices of the `[context]` mapping) a decision cache key
    /// holds; `None`: the route's decisions are not cached. Set by [`Plan::with_cache_keys`].
    cache_keys: CacheKeys,
}

/// The decision cache's key attributes of every route.
#[derive(Debug, Default)]
struct CacheKeys {
    rules: Box<[Option<Box<[usize]>>]>,
    all: Option<Box<[usize]>>,
}

/// Source of [`Plan::id`].
static PLANS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("revision", &self.snapshot.revision)
            .field("flags", &self.flags.len())
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Builds the plan of `snapshot`.
    pub(crate) fn build(
        snapshot: Arc<Snapshot>,
        router: &Router,
        headers: &HeadersConfig,
        metrics: &DataPlaneMetrics,
    ) -> Plan {
        let mut slot = 0;
        let flags: Box<[PlannedFlag]> = snapshot
            .flags
            .flags()
            .map(|f| {
                let planned = plan_flag(f, headers, slot);
                slot += planned.variants.len() + 1;
                planned
            })
            .collect();
        let with_targeting = |indices: Box<[u32]>| {
            let targeted = indices.iter().any(|&i| flags[i as usize].targeted);
            (indices, targeted)
        };
        let rules: Box<[(Box<[u32]>, bool)]> = router
            .rules
            .iter()
            .map(|r| with_targeting(r.selection.indices(&snapshot)))
            .collect();
        let masks = rules
            .iter()
            .map(|(indices, _)| {
                let mut bits = FlagBits::new();
                for &i in indices {
                    bits.insert(i);
                }
                bits
            })
            .collect();
        let all = with_targeting(Selection::All.indices(&snapshot));
        // Serving without flags (after the init timeout): no decisions, no revision either.
        let revision = (headers.revision && snapshot.is_flag_set())
            .then(|| {
                HeaderValue::from_str(&format!("{}@{}", snapshot.environment, snapshot.revision))
                    .ok()
            })
            .flatten();
        let slots = || (0..slot).map(|_| OnceLock::new()).collect();
        Plan {
            snapshot,
            flags,
            rules,
            masks,
            all,
            revision,
            counters: [slots(), slots()],
            metrics: metrics.clone(),
            id: PLANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cache_keys: CacheKeys::default(),
        }
    }

    /// Works out, for every route, which context attributes decide its flags: the union of what
    /// the selected flags read ([`Flag::context_reads`]), as indices of `mapping` (attributes it
    /// does not define are absent on every request and need no place in the key). A route is not
    /// cached when one of its flags reads what cannot be known, or an attribute with a `jwt:`
    /// source.
    pub(crate) fn with_cache_keys(mut self, mapping: &ContextMapping) -> Self {
        let flags: Vec<&Flag> = self.snapshot.flags.flags().collect();
        let keys = |indices: &[u32]| -> Option<Box<[usize]>> {
            let mut attributes = Vec::new();
            for &i in indices {
                for name in flags[i as usize].context_reads()? {
                    if let Some(a) = mapping.key_attribute(name).ok()? {
                        attributes.push(a);
                    }
                }
            }
            attributes.sort_unstable();
            attributes.dedup();
            Some(attributes.into())
        };
        self.cache_keys = CacheKeys {
            rules: self
                .rules
                .iter()
                .map(|(indices, _)| keys(indices))
                .collect(),
            all: keys(&self.all.0),
        };
        self
    }

    /// The attributes a decision cache key of `route` holds (`None`: not cached).
    pub(crate) fn cache_key(&self, route: Route) -> Option<&[usize]> {
        match route {
            Route::Default => self.cache_keys.all.as_deref(),
            Route::Rule(i) => self.cache_keys.rules.get(i)?.as_deref(),
            // Nothing to decide.
            Route::Unmatched => None,
        }
    }

    /// The flags `route` selects, and whether any of them is targeted.
    pub(crate) fn selected(&self, route: Route) -> (&[u32], bool) {
        match route {
            Route::Default => (&self.all.0, self.all.1),
            Route::Rule(i) => (&self.rules[i].0, self.rules[i].1),
            Route::Unmatched => (&[], false),
        }
    }

    /// True when `route` selects flag `index`.
    pub(crate) fn selects(&self, route: Route, index: u32) -> bool {
        match route {
            Route::Default => true,
            Route::Rule(i) => self.masks[i].contains(index),
            Route::Unmatched => false,
        }
    }

    /// The index of flag `key` (the snapshot lists its flags sorted by key).
    pub(crate) fn find(&self, key: &str) -> Option<u32> {
        self.flags
            .binary_search_by(|f| (*f.key).cmp(key))
            .ok()
            .map(|i| i as u32)
    }

    /// Counts one evaluation of flag `index` that chose `variant` (`None`: no value): in the
    /// snapshot's usage counters and the listener's metrics.
    pub(crate) fn count_evaluation(
        &self,
        listener: Listener,
        index: usize,
        variant: Option<usize>,
    ) {
        self.snapshot.usage.count(index, variant);
        let flag = &self.flags[index];
        // A cached interest: one load when no trace layer wants the event.
        if tracing::enabled!(target: vexil_telemetry::FEATURE_FLAG_TARGET, tracing::Level::TRACE) {
            tracing::event!(target: vexil_telemetry::FEATURE_FLAG_TARGET, tracing::Level::TRACE,
                "feature_flag.key" = %flag.key,
                "feature_flag.result.variant" = variant.map_or("", |v| &*flag.variants[v].name),
                "feature_flag.provider.name" = "vexil",
                "feature_flag.set.id" = %self.snapshot.environment,
                "feature_flag.version" = self.snapshot.revision,
                "feature_flag.evaluation");
        }
        let v = variant.unwrap_or(flag.variants.len());
        let counter = self.counters[listener as usize][flag.slot + v].get_or_init(|| {
            let name = variant.map_or("", |v| &flag.variants[v].name);
            self.metrics.evaluation_counter(listener, &flag.key, name)
        });
        counter.inc();
    }
}

fn plan_flag(flag: &Flag, headers: &HeadersConfig, slot: usize) -> PlannedFlag {
    let key = flag.key();
    let header_name = headers
        .per_flag
        .then(|| {
            HeaderName::from_bytes(format!("{}{key}", headers.per_flag_prefix).as_bytes()).ok()
        })
        .flatten();
    let variants: Box<[PlannedVariant]> = flag
        .variants()
        .map(|(name, value)| {
            let carried = match Carried::of(value, name) {
                Ok(carried) => Some(carried),
                Err(why) => {
                    tracing::warn!(flag = key, variant = name, "not injected in headers: {why}");
                    None
                }
            };
            let item = carried.as_ref().map(Carried::text);
            PlannedVariant {
                name: name.into(),
                carried,
                member: item.as_ref().map(|i| format!("{key}={i}").into()),
                item: item
                    .as_ref()
                    .filter(|_| headers.per_flag)
                    .and_then(|i| HeaderValue::from_str(i).ok()),
                baggage: headers
                    .baggage
                    .then(|| baggage_value(value, name))
                    .flatten()
                    .map(|v| format!("{}{key}={v}", headers.baggage_prefix).into()),
            }
        })
        .collect();
    PlannedFlag {
        key: key.into(),
        targeted: flag.is_targeted(),
        decided: flag.state() == FlagState::Enabled && !flag.is_broken(),
        kinds: variants
            .iter()
            .filter_map(|v| v.carried.as_ref())
            .fold(0, |kinds, c| kinds | c.kind()),
        header_name,
        variants,
        slot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Source;
    use serde_json::json;
    use vexil_engine::FlagSet;

    fn snapshot() -> Arc<Snapshot> {
        let set = FlagSet::from_json(&json!({"metadata": {"team": "core"}, "flags": {
            "a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
                  "metadata": {"team": "pay"}},
            "b": {"state": "ENABLED", "variants": {"x": "dark"}, "defaultVariant": "x"},
            "c": {"state": "ENABLED", "variants": {"s": 1, "l": 2}, "defaultVariant": "s",
                  "targeting": {"if": [{"var": "big"}, "l", null]}}
        }}))
        .unwrap();
        Arc::new(Snapshot::new("prod", 4, set, Source::File("f".into())))
    }

    fn config(toml: &str) -> DataPlaneConfig {
        DataPlaneConfig::from_toml_str(toml).unwrap()
    }

    #[test]
    fn routes_select_flags() {
        let c = config(
            r#"
[[routes]]
host = "*.pay.internal"
metadata = { team = "pay" }
[[routes]]
path_prefix = "/api"
flags = ["c", "missing", "a"]
override = true
"#,
        );
        let router = Router::new(&c);
        let metrics = DataPlaneMetrics::unregistered();
        let plan = Plan::build(snapshot(), &router, &c.headers, &metrics);
        let r = router.route(Some("x.pay.internal"), "/");
        assert_eq!(r, Route::Rule(0));
        assert_eq!(plan.selected(r), (&[0u32][..], false));
        let r = router.route(Some("other"), "/api/v1");
        assert!(router.overrides(r));
        assert_eq!(plan.selected(r), (&[2u32, 0][..], true));
        assert_eq!(router.route(None, "/"), Route::Unmatched);
        assert_eq!(plan.selected(Route::Unmatched).0.len(), 0);
    }

    #[test]
    fn members_are_precomputed() {
        let c = config("[headers]\nper_flag = true\nbaggage = true");
        let router = Router::new(&c);
        let plan = Plan::build(
            snapshot(),
            &router,
            &c.headers,
            &DataPlaneMetrics::unregistered(),
        );
        assert_eq!(router.route(None, "/"), Route::Default);
        assert_eq!(plan.selected(Route::Default), (&[0u32, 1, 2][..], true));
        let a = &plan.flags[0];
        let member = |name: &str| {
            let v = a.variants.iter().find(|v| &*v.name == name).unwrap();
            v.member.as_deref()
        };
        assert_eq!(member("on"), Some("a=?1"));
        assert_eq!(member("off"), Some("a=?0"));
        assert_eq!(a.header_name.as_ref().unwrap().as_str(), "vexil-flag-a");
        assert_eq!(plan.flags[1].variants[0].item.as_ref().unwrap(), "\"dark\"");
        assert_eq!(
            plan.flags[1].variants[0].baggage.as_deref(),
            Some("vexil.b=dark")
        );
        assert_eq!(plan.revision.as_ref().unwrap(), "prod@4");
        plan.count_evaluation(Listener::Outbound, 2, Some(1));
        plan.count_evaluation(Listener::Outbound, 2, None);
    }
}
