//! The per-request work: choose the flags of the request's route, evaluate the ones not already
//! decided, and write the headers.
//!
//! One snapshot load per request ([`SnapshotCell::load`]) and one plan load; the context is
//! extracted only when a selected flag is targeted; members, per-flag values and baggage members
//! are copied from the [`Plan`]. The only allocations are the context's values and the new header
//! values.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use vexil_engine::EvaluationContext;

use vexil_settings::{Problems, Settings as _};

use crate::dataplane::config::{Cidr, DataPlaneConfig, HeadersConfig};
use crate::dataplane::context::{ContextMapping, RequestView};
use crate::dataplane::headers::{
    BAGGAGE_HEADER, BAGGAGE_MAX_BYTES, FLAGS_HEADER, FlagsBuilder, REVISION_HEADER,
    dictionary_keys, members_except,
};
use crate::dataplane::metrics::{DataPlaneMetrics, Listener};
use crate::dataplane::plan::{Plan, Router};
use crate::snapshot::SnapshotCell;

/// Where a request goes, as routing and the `request:` sources see it (the path and query are
/// read from the request's URI, in origin-form by then).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    /// Lowercase host without port.
    pub host: Option<&'a str>,
    /// `http` (the data plane does not terminate TLS).
    pub scheme: &'a str,
}

/// What one injection did (for tests and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Injected {
    /// Bytes of header values added.
    pub bytes: usize,
    /// Decisions left out by the byte limit.
    pub dropped: u32,
    /// Flags evaluated.
    pub evaluated: u32,
}

/// Decides and writes the headers of requests; shared by every listener.
pub(crate) struct Injector {
    cell: Arc<SnapshotCell>,
    plan: ArcSwapOption<Plan>,
    router: Router,
    mapping: ContextMapping,
    headers: HeadersConfig,
    trusted: Box<[Cidr]>,
    metrics: DataPlaneMetrics,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("router", &self.router)
            .field("mapping", &self.mapping)
            .finish_non_exhaustive()
    }
}

impl Injector {
    /// Compiles a validated configuration (loading JWT keys).
    pub(crate) fn new(
        config: &DataPlaneConfig,
        cell: Arc<SnapshotCell>,
        metrics: DataPlaneMetrics,
    ) -> Result<Injector, Problems> {
        config.validate()?;
        Ok(Injector {
            cell,
            plan: ArcSwapOption::empty(),
            router: Router::new(config),
            mapping: ContextMapping::new(config)?,
            headers: config.headers.clone(),
            trusted: config.inbound.trusted_cidrs.clone().into(),
            metrics,
        })
    }

    /// The data plane's metrics.
    pub(crate) fn metrics(&self) -> &DataPlaneMetrics {
        &self.metrics
    }

    /// The plan of the current snapshot (built by the first request that sees it).
    fn plan(&self) -> Option<Arc<Plan>> {
        let snapshot = self.cell.load()?;
        if let Some(plan) = &*self.plan.load()
            && Arc::ptr_eq(&plan.snapshot, &snapshot)
        {
            return Some(plan.clone());
        }
        let plan = Arc::new(Plan::build(
            snapshot,
            &self.router,
            &self.headers,
            &self.metrics,
        ));
        self.plan.store(Some(plan.clone()));
        Some(plan)
    }

    /// True when `peer`'s `vexil-*` headers are believed in inbound mode.
    pub(crate) fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted.iter().any(|c| c.contains(ip)))
    }

    /// Removes every `vexil-*` header (and the per-flag prefix's); true when any was present.
    pub(crate) fn strip(&self, req: &mut RequestHeader) -> bool {
        let prefix = self.headers.per_flag_prefix.as_str();
        let names: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("vexil-") || n.as_str().starts_with(prefix))
            .cloned()
            .collect();
        for name in &names {
            req.remove_header(name);
        }
        !names.is_empty()
    }

    /// Decides the request's flags and writes the headers.
    pub(crate) fn inject(
        &self,
        listener: Listener,
        req: &mut RequestHeader,
        target: &Target<'_>,
        peer: Option<IpAddr>,
    ) -> Injected {
        let Some(plan) = self.plan() else {
            return Injected::default();
        };
        let route = self.router.route(target.host, req.uri.path());
        let (selected, targeted) = plan.selected(route);
        if selected.is_empty() {
            return Injected::default();
        }
        let ctx = if targeted && !self.mapping.is_empty() {
            self.mapping.extract(&RequestView {
                headers: &req.headers,
                method: req.method.as_str(),
                path: req.uri.path(),
                query: req.uri.query(),
                host: target.host,
                scheme: target.scheme,
                peer,
            })
        } else {
            EvaluationContext::new()
        };
        let overrides = self.router.overrides(route);
        let out = self.decide(listener, &plan, selected, overrides, req, &ctx);
        let injected = out.apply(req, &plan);
        self.metrics
            .injected(listener, injected.bytes, injected.dropped);
        injected
    }

    /// Evaluates the selected flags that are not already decided.
    fn decide(
        &self,
        listener: Listener,
        plan: &Plan,
        selected: &[u32],
        overrides: bool,
        req: &RequestHeader,
        ctx: &EvaluationContext,
    ) -> Decisions {
        let incoming = joined(req, FLAGS_HEADER);
        let invalid = || {
            self.metrics.invalid_incoming(listener);
            (std::borrow::Cow::Borrowed(""), Vec::new(), true)
        };
        // (members kept, keys already decided, whether the header must be rewritten)
        let (existing, present, rewrite) = match incoming.as_deref() {
            None => ("".into(), Vec::new(), false),
            Some(text) if overrides => {
                let is_selected =
                    |k: &str| selected.iter().any(|&i| &*plan.flags[i as usize].key == k);
                match members_except(text, is_selected) {
                    Some(kept) => (kept.into(), Vec::new(), true),
                    None => invalid(),
                }
            }
            Some(text) => match dictionary_keys(text) {
                Some(keys) => (text.into(), keys, false),
                None => invalid(),
            },
        };
        let existing_len = incoming.as_deref().map_or(0, str::len);
        let mut flags = FlagsBuilder::new(&existing, self.headers.max_bytes, selected.len() * 16);
        let mut per_flag = Vec::new();
        let mut baggage = String::new();
        let mut evaluated = 0;
        for &index in selected {
            let flag = &plan.flags[index as usize];
            if present.contains(&&*flag.key) {
                continue;
            }
            let resolution = plan.snapshot.flags.resolve(&flag.key, ctx);
            evaluated += 1;
            let variant = resolution
                .variant
                .and_then(|name| flag.variants.iter().position(|v| &*v.name == name));
            plan.count_evaluation(listener, index as usize, variant);
            let Some(v) = variant.map(|v| &flag.variants[v]) else {
                continue;
            };
            let Some(member) = &v.member else { continue };
            if !flags.push(member) {
                continue;
            }
            if let (Some(name), Some(item)) = (&flag.header_name, &v.item) {
                per_flag.push((name.clone(), item.clone()));
            }
            if let Some(b) = &v.baggage {
                if !baggage.is_empty() {
                    baggage.push(',');
                }
                baggage.push_str(b);
            }
        }
        let changed = rewrite || flags.as_str().len() != existing.trim().len();
        Decisions {
            dropped: flags.dropped,
            flags: changed.then(|| flags.finish()),
            existing_len,
            per_flag,
            baggage,
            evaluated,
        }
    }
}

/// The headers one request gets, computed before the request is changed.
struct Decisions {
    /// The new `vexil-flags` value, when it differs from the incoming one.
    flags: Option<String>,
    existing_len: usize,
    dropped: u32,
    per_flag: Vec<(HeaderName, HeaderValue)>,
    /// New baggage members, comma-separated.
    baggage: String,
    evaluated: u32,
}

impl Decisions {
    fn apply(self, req: &mut RequestHeader, plan: &Plan) -> Injected {
        let mut bytes = 0;
        if let Some(flags) = self.flags {
            bytes += flags.len().saturating_sub(self.existing_len);
            if flags.is_empty() {
                req.remove_header(FLAGS_HEADER);
            } else if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(flags)) {
                let _ = req.insert_header(FLAGS_HEADER, v);
            }
        }
        for (name, value) in self.per_flag {
            bytes += value.len();
            let _ = req.insert_header(name, value);
        }
        if !self.baggage.is_empty() {
            bytes += add_baggage(req, &self.baggage);
        }
        if let Some(revision) = &plan.revision {
            bytes += revision.len();
            let _ = req.insert_header(REVISION_HEADER, revision.clone());
        }
        Injected {
            bytes,
            dropped: self.dropped,
            evaluated: self.evaluated,
        }
    }
}

/// Appends baggage members (skipping keys already present), within the W3C size limit.
fn add_baggage(req: &mut RequestHeader, members: &str) -> usize {
    let existing = joined(req, BAGGAGE_HEADER).map(|s| s.into_owned());
    let existing = existing.as_deref().unwrap_or("").trim();
    let present = |m: &str| {
        let key = m.split('=').next().unwrap_or(m);
        existing
            .split(',')
            .any(|e| e.split('=').next().is_some_and(|k| k.trim() == key))
    };
    let mut out = String::with_capacity(existing.len() + members.len() + 1);
    out.push_str(existing);
    for m in members.split(',').filter(|m| !present(m)) {
        if out.len() + 1 + m.len() > BAGGAGE_MAX_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(m);
    }
    let added = out.len() - existing.len();
    if added > 0
        && let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(out))
    {
        let _ = req.insert_header(BAGGAGE_HEADER, v);
    }
    added
}

/// Every value of header `name`, joined with `", "` (borrowed when there is one).
fn joined<'r>(req: &'r RequestHeader, name: &str) -> Option<std::borrow::Cow<'r, str>> {
    let mut values = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    match values.next() {
        None => Some(first.into()),
        Some(second) => {
            let mut all = format!("{first}, {second}");
            for v in values {
                all.push_str(", ");
                all.push_str(v);
            }
            Some(all.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Snapshot, Source};
    use serde_json::json;
    use vexil_engine::FlagSet;

    fn injector(toml: &str) -> Injector {
        let cell = Arc::new(SnapshotCell::new());
        let set = FlagSet::from_json(&json!({"flags": {
            "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"==": [{"var": "targetingKey"}, "vip"]}, "on", null]}},
            "limit": {"state": "ENABLED", "variants": {"low": 20, "high": 100}, "defaultVariant": "low"},
            "off-flag": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
            "theme": {"state": "ENABLED", "variants": {"dark": "dark", "light": "light"},
                "defaultVariant": "dark"}
        }}))
        .unwrap();
        cell.publish(Snapshot::new("prod", 9, set, Source::File("f".into())));
        let config = DataPlaneConfig::from_toml_str(toml).unwrap();
        Injector::new(&config, cell, DataPlaneMetrics::unregistered()).unwrap()
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    const TARGET: Target<'static> = Target {
        host: Some("svc"),
        scheme: "http",
    };

    fn header<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
        req.headers.get(name).map(|v| v.to_str().unwrap())
    }

    const MAPPING: &str = "[context]\ntargetingKey = [\"header:x-user\"]\n";

    #[test]
    fn injects_every_flag_in_key_order() {
        let inj = injector(MAPPING);
        let mut req = request(&[("x-user", "vip")]);
        let out = inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("checkout=?1, limit=20, theme=\"dark\"")
        );
        assert_eq!(header(&req, "vexil-revision"), Some("prod@9"));
        assert_eq!(out.evaluated, 4);
        assert_eq!(out.dropped, 0);
        let mut req = request(&[]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("checkout=?0, limit=20, theme=\"dark\"")
        );
    }

    #[test]
    fn keeps_existing_decisions_unless_overridden() {
        let inj = injector(MAPPING);
        let mut req = request(&[("x-user", "vip"), ("vexil-flags", "checkout=?0, other=1")]);
        let out = inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("checkout=?0, other=1, limit=20, theme=\"dark\"")
        );
        assert_eq!(out.evaluated, 3);

        let inj = injector(&format!("{MAPPING}[[routes]]\noverride = true\n"));
        let mut req = request(&[("x-user", "vip"), ("vexil-flags", "checkout=?0, other=1")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("other=1, checkout=?1, limit=20, theme=\"dark\"")
        );
    }

    #[test]
    fn invalid_incoming_is_replaced() {
        let inj = injector(MAPPING);
        let mut req = request(&[("vexil-flags", "NOT A DICT")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("checkout=?0, limit=20, theme=\"dark\"")
        );
    }

    #[test]
    fn byte_limit_drops_whole_members() {
        let inj = injector(&format!("{MAPPING}[headers]\nmax_bytes = 68\n"));
        let existing = "a=\"0123456789012345678901234567890123456789\"";
        let mut req = request(&[("vexil-flags", existing)]);
        let out = inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        let v = header(&req, "vexil-flags").unwrap();
        assert!(v.len() <= 68, "{v}");
        assert_eq!(v, format!("{existing}, checkout=?0, limit=20"));
        assert_eq!(out.dropped, 1);
    }

    #[test]
    fn optional_headers() {
        let inj = injector(&format!(
            "{MAPPING}[headers]\nper_flag = true\nbaggage = true\nrevision = false\n"
        ));
        let mut req = request(&[("baggage", "vexil.limit=5,k=v")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(header(&req, "vexil-flag-checkout"), Some("?0"));
        assert_eq!(header(&req, "vexil-flag-theme"), Some("\"dark\""));
        assert_eq!(
            header(&req, "baggage"),
            Some("vexil.limit=5,k=v,vexil.checkout=false,vexil.theme=dark")
        );
        assert_eq!(header(&req, "vexil-revision"), None);
    }

    #[test]
    fn unmatched_routes_inject_nothing() {
        let inj = injector("[[routes]]\nhost = \"pay\"\nflags = [\"limit\"]\n");
        let mut req = request(&[]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(header(&req, "vexil-flags"), None);
        let target = Target {
            host: Some("pay"),
            ..TARGET
        };
        let out = inj.inject(Listener::Outbound, &mut req, &target, None);
        assert_eq!(header(&req, "vexil-flags"), Some("limit=20"));
        assert_eq!(out.evaluated, 1);
    }

    #[test]
    fn nothing_is_injected_before_a_snapshot() {
        let config = DataPlaneConfig::default();
        let cell = Arc::new(SnapshotCell::new());
        let inj = Injector::new(&config, cell, DataPlaneMetrics::unregistered()).unwrap();
        let mut req = request(&[]);
        assert_eq!(
            inj.inject(Listener::Outbound, &mut req, &TARGET, None),
            Injected::default()
        );
        assert!(req.headers.is_empty());
    }

    #[test]
    fn strips_vexil_headers() {
        let inj = injector("[inbound]\ntrusted_cidrs = [\"10.0.0.0/8\"]\n");
        assert!(inj.trusts(Some("10.2.3.4".parse().unwrap())));
        assert!(!inj.trusts(Some("192.168.1.1".parse().unwrap())));
        assert!(!inj.trusts(None));
        let mut req = request(&[("vexil-flags", "a=1"), ("vexil-flag-a", "1"), ("x", "y")]);
        assert!(inj.strip(&mut req));
        assert_eq!(req.headers.len(), 1);
        assert!(!inj.strip(&mut req));
    }
}
