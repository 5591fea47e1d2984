//! The per-request work: keep the incoming decisions that could be this sidecar's own
//! ([`incoming`]), choose the flags of the request's route, evaluate the ones not already decided,
//! and write the headers (ADR 0026).
//!
//! One snapshot load per request ([`SnapshotCell::load`]) and one plan load; the context is
//! extracted only when a selected flag is targeted; members, per-flag values and baggage members
//! (for kept decisions too) are copied from the [`Plan`]. The only allocations are the context's
//! values and the new header values (and, rarely, the names of headers to remove).
//!
//! The `vexil` namespace is the sidecar's: incoming per-flag headers never pass, `vexil.` baggage
//! members are replaced by the sidecar's (when it writes baggage), `vexil-revision` is set or
//! removed, and a `Connection` nomination of a `vexil-*` header is removed with the header.
//! [`Injector::strip`] removes all of it, and every `vexil.` baggage member, from untrusted inbound
//! peers.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use vexil_engine::EvaluationContext;

use vexil_settings::{Problems, Settings as _};

use crate::dataplane::cache::{self, Cached, Lookup};
use crate::dataplane::config::{Cidr, DataPlaneConfig, HeadersConfig};
use crate::dataplane::context::{ContextMapping, RequestView};
use crate::dataplane::headers::{
    BAGGAGE_HEADER, BAGGAGE_MAX_BYTES, FLAGS_HEADER, FlagsBuilder, REVISION_HEADER,
    baggage_without_prefix,
};
use crate::dataplane::incoming::{self, Incoming};
use crate::dataplane::metrics::{DataPlaneMetrics, DropReason, Listener};
use crate::dataplane::plan::{Plan, PlannedFlag, PlannedVariant, Route, Router};
use crate::shadow::Sample;
use crate::signing::{Rejected, SIGNATURE_HEADER, now_secs};
use crate::snapshot::SnapshotCell;
use crate::usage::Attributed;

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
    /// `[inbound] accept_signed`.
    accept_signed: bool,
    /// `[inbound] signature_max_age_secs`.
    signature_max_age: u64,
    /// `[cache] max_entries` (0: no decision cache).
    cache_entries: usize,
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
            accept_signed: config.inbound.accept_signed,
            signature_max_age: config.inbound.signature_max_age.as_secs(),
            cache_entries: config.cache.max_entries,
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
        let plan = Arc::new(
            Plan::build(snapshot, &self.router, &self.headers, &self.metrics)
                .with_cache_keys(&self.mapping),
        );
        self.plan.store(Some(plan.clone()));
        Some(plan)
    }

    /// True when `peer`'s `vexil-*` headers are believed in inbound mode.
    pub(crate) fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted.iter().any(|c| c.contains(ip)))
    }

    /// True when header `name` (any case) is in the sidecar's namespace: `vexil-*` or the per-flag
    /// prefix.
    fn is_ours(&self, name: &str) -> bool {
        starts_with_ignore_case(name, VEXIL_PREFIX)
            || starts_with_ignore_case(name, &self.headers.per_flag_prefix)
    }

    /// Removes, from an untrusted peer's request, every `vexil-*` header (and the per-flag
    /// prefix's), any `Connection` nomination of one, and the `baggage` members whose key has the
    /// baggage prefix (the other members stay); true when any was present. A `vexil-flags` whose
    /// `vexil-signature` verifies with a key of this sidecar's environment stays (with
    /// `[inbound] accept_signed`); its members then pass the rules of [`incoming`] like anyone's.
    pub(crate) fn strip(&self, listener: Listener, req: &mut RequestHeader) -> bool {
        let mut stripped = unnominate(req, |n| self.is_ours(n));
        let signed = self.accept_signed && self.signed(listener, req);
        if req.headers.contains_key(SIGNATURE_HEADER) {
            req.remove_header(SIGNATURE_HEADER);
            stripped |= !signed;
        }
        let names: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|n| self.is_ours(n.as_str()) && !(signed && n.as_str() == FLAGS_HEADER))
            .cloned()
            .collect();
        for name in &names {
            req.remove_header(name);
        }
        stripped |= !names.is_empty();
        let baggage = joined(req, BAGGAGE_HEADER);
        if baggage.unreadable {
            // Not W3C baggage (which is ASCII), and not readable: none of it passes.
            req.remove_header(BAGGAGE_HEADER);
            return true;
        }
        if let Some(rest) = baggage
            .text
            .and_then(|b| baggage_without_prefix(&b, &self.headers.baggage_prefix))
        {
            set_or_remove(req, BAGGAGE_HEADER, rest);
            stripped = true;
        }
        stripped
    }

    /// True when the request's `vexil-flags` carries a `vexil-signature` (one line) that verifies
    /// with a key of the current snapshot; a signature present is counted by its verdict.
    fn signed(&self, listener: Listener, req: &RequestHeader) -> bool {
        let mut lines = req.headers.get_all(SIGNATURE_HEADER).iter();
        let Some(first) = lines.next() else {
            return false;
        };
        let verdict = (|| {
            let signature = first.to_str().map_err(|_| Rejected::Malformed)?;
            if lines.next().is_some() {
                return Err(Rejected::Malformed);
            }
            let flags = joined(req, FLAGS_HEADER);
            let (Some(flags), false) = (flags.text, flags.unreadable) else {
                return Err(Rejected::Malformed);
            };
            let snapshot = self.cell.load().ok_or(Rejected::UnknownKey)?;
            snapshot.signing.verify(
                &snapshot.environment,
                signature,
                flags.trim(),
                now_secs(),
                self.signature_max_age,
            )
        })();
        self.metrics.signature(
            listener,
            match verdict {
                Ok(()) => "valid",
                Err(r) => r.label(),
            },
        );
        verdict.is_ok()
    }

    /// Decides the request's flags and writes the headers (tests and the fuzz target; the proxy
    /// uses [`Injector::inject_attributed`]).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn inject(
        &self,
        listener: Listener,
        req: &mut RequestHeader,
        target: &Target<'_>,
        peer: Option<IpAddr>,
    ) -> Injected {
        self.inject_attributed(listener, req, target, peer).0
    }

    /// [`Injector::inject`], with the guarded decisions the request carries (decided here or
    /// kept), whose outcome is counted when the upstream answers (ADR 0035).
    pub(crate) fn inject_attributed(
        &self,
        listener: Listener,
        req: &mut RequestHeader,
        target: &Target<'_>,
        peer: Option<IpAddr>,
    ) -> (Injected, Option<Attributed>) {
        // A header the previous hop nominated in `Connection` was for that hop only (pingora drops
        // it too); the sidecar's own headers must never be nominated on the way out.
        unnominate(req, |n| self.is_ours(n));
        // The decisions' span, wanted only by traces (see vexil-telemetry): its events are the
        // `feature_flag.evaluation`s.
        let span = tracing::trace_span!(target: vexil_telemetry::OTEL_TARGET, "proxy.decide",
            otel.kind = "client", http.request.method = %req.method, url.path = req.uri.path(),
            server.address = target.host);
        let _span = span.enter();
        let plan = self.plan();
        let plan = plan.as_deref();
        let route = self.router.route(target.host, req.uri.path());
        let (selected, targeted) = plan.map_or((&[][..], false), |p| p.selected(route));
        let view = RequestView {
            headers: &req.headers,
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            host: target.host,
            scheme: target.scheme,
            peer,
        };
        // Shadow evaluation: one draw per request, `None` unless it samples a proposal (and at
        // once when the snapshot holds none). A sampled request evaluates the proposals with the
        // request's context, which untargeted live flags do not need: extracted then too.
        let sample = plan.and_then(|p| p.snapshot.shadows.sample());
        let extract = || {
            if (targeted || sample.is_some()) && !self.mapping.is_empty() {
                self.mapping.extract(&view)
            } else {
                EvaluationContext::new()
            }
        };
        let overrides = self.router.overrides(route);
        // Only when the snapshot has guarded flags: one load otherwise.
        let mut attributed = plan
            .and_then(|p| p.snapshot.guards.load_full())
            .map(Attributed::new);
        // Decisions already on the request change the outcome: those requests are not cached.
        let cached = plan
            .filter(|_| self.cache_entries > 0 && !req.headers.contains_key(FLAGS_HEADER))
            .and_then(|p| Some((p, p.cache_key(route)?)));
        let entries = |n: i64| self.metrics.cache_entries(n);
        let mut out = match cached {
            Some((p, attributes)) => {
                let write = |key: &mut Vec<u8>| {
                    match route {
                        Route::Rule(i) => {
                            key.push(1);
                            key.extend_from_slice(&(i as u32).to_le_bytes());
                        }
                        Route::Default | Route::Unmatched => key.push(0),
                    }
                    for &a in attributes {
                        self.mapping.write_key(a, &view, key);
                    }
                };
                match cache::lookup(p.id, self.cache_entries, write, entries) {
                    Lookup::Hit(c) => {
                        self.metrics.cache(listener, true);
                        for &(flag, variant) in c.decisions.iter() {
                            p.count_evaluation(
                                listener,
                                flag as usize,
                                variant.map(|v| v as usize),
                            );
                            if let (Some(a), Some(v)) = (&mut attributed, variant) {
                                a.push(flag as usize, v as usize);
                            }
                        }
                        // A cached decision is still a decision: a sampled request evaluates the
                        // proposals of its flags (the context is extracted only for that).
                        let shadows = &p.snapshot.shadows;
                        if let Some(s) = sample
                            && c.decisions
                                .iter()
                                .any(|&(flag, _)| shadows.samples(s, flag as usize))
                        {
                            let ctx = extract();
                            for &(flag, variant) in c.decisions.iter() {
                                shadows.evaluate(
                                    s,
                                    flag as usize,
                                    variant.map(|v| v as usize),
                                    &ctx,
                                );
                            }
                        }
                        Decisions::from_cached(&c)
                    }
                    Lookup::Miss => {
                        self.metrics.cache(listener, false);
                        let mut record = Vec::with_capacity(selected.len());
                        let d = self.decide(
                            listener,
                            plan,
                            route,
                            selected,
                            overrides,
                            req,
                            &extract(),
                            sample,
                            Some(&mut record),
                            attributed.as_mut(),
                        );
                        cache::store(p.id, self.cache_entries, d.to_cached(record), entries);
                        d
                    }
                }
            }
            None => self.decide(
                listener,
                plan,
                route,
                selected,
                overrides,
                req,
                &extract(),
                sample,
                None,
                attributed.as_mut(),
            ),
        };
        // The value that goes upstream, signed when asked and control gave keys; any other
        // signature on the request is removed.
        if self.headers.sign
            && let Some(p) = plan
            && !p.snapshot.signing.is_empty()
        {
            let s = &p.snapshot;
            let sign = |text: &str| {
                (!text.is_empty())
                    .then(|| s.signing.sign(&s.environment, s.revision, now_secs(), text))
                    .flatten()
            };
            out.signature = match &out.flags {
                FlagsOut::Set(value) => value.to_str().ok().and_then(sign),
                FlagsOut::Remove => None,
                FlagsOut::Unchanged => joined(req, FLAGS_HEADER)
                    .text
                    .and_then(|text| sign(text.trim())),
            };
        }
        // `vexil-revision` names the snapshot of the decisions this sidecar made.
        let revision = plan
            .filter(|_| !selected.is_empty())
            .and_then(|p| p.revision.as_ref());
        let injected = out.apply(req, plan, revision, &self.headers);
        self.metrics
            .injected(listener, injected.bytes, injected.dropped);
        (injected, attributed.filter(|a| !a.is_empty()))
    }

    /// Keeps the incoming decisions that could be this sidecar's and evaluates the selected flags
    /// that are not decided (and, on a `sample`d request, their proposals beside them); `record`
    /// gets the `(flag, variant)` of every decision made.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        listener: Listener,
        plan: Option<&Plan>,
        route: Route,
        selected: &[u32],
        overrides: bool,
        req: &RequestHeader,
        ctx: &EvaluationContext,
        sample: Option<Sample>,
        mut record: Option<&mut Vec<(u32, Option<u32>)>>,
        mut attributed: Option<&mut Attributed>,
    ) -> Decisions {
        // A line that is not text cannot be read, so it cannot be kept: the header is malformed.
        let Lines {
            text: incoming,
            unreadable,
        } = joined(req, FLAGS_HEADER);
        let mut flags = FlagsBuilder::new(self.headers.max_bytes, selected.len() * 16);
        let mut per_flag = Vec::new();
        let mut baggage = String::new();
        let mut read = Incoming::new();
        if let Some(text) = incoming.as_deref() {
            let skip = |f: u32| overrides && plan.is_some_and(|p| p.selects(route, f));
            let valid = incoming::read(text, plan, skip, &mut read, |f, v| {
                if let Some(a) = attributed.as_deref_mut() {
                    a.push(f as usize, v as usize);
                }
                if let Some(plan) = plan {
                    let flag = &plan.flags[f as usize];
                    let variant = &flag.variants[v as usize];
                    if let Some(member) = &variant.member {
                        flags.push_kept(member);
                        extras(flag, variant, &mut per_flag, &mut baggage);
                    }
                }
            });
            if !valid || unreadable {
                flags.clear();
                per_flag.clear();
                baggage.clear();
                read = Incoming::new();
                read.drops[DropReason::Malformed as usize] = 1;
                self.metrics.invalid_incoming(listener);
            }
            self.metrics.incoming_dropped(listener, &read.drops);
        } else if unreadable {
            self.metrics.invalid_incoming(listener);
            let mut drops = [0; DropReason::ALL.len()];
            drops[DropReason::Malformed as usize] = 1;
            self.metrics.incoming_dropped(listener, &drops);
        }
        let mut evaluated = 0;
        if let Some(plan) = plan {
            for &index in selected {
                if read.kept.contains(index) {
                    continue;
                }
                let flag = &plan.flags[index as usize];
                // The plan lists the snapshot's flags and variants in the engine's order.
                let variant = plan.snapshot.flags.variant_at(index as usize, ctx);
                evaluated += 1;
                plan.count_evaluation(listener, index as usize, variant);
                if let Some(s) = sample {
                    plan.snapshot
                        .shadows
                        .evaluate(s, index as usize, variant, ctx);
                }
                if let Some(record) = record.as_deref_mut() {
                    record.push((index, variant.map(|v| v as u32)));
                }
                if let (Some(a), Some(v)) = (attributed.as_deref_mut(), variant) {
                    a.push(index as usize, v);
                }
                let Some(v) = variant.map(|v| &flag.variants[v]) else {
                    continue;
                };
                let Some(member) = &v.member else { continue };
                if flags.push(member) {
                    extras(flag, v, &mut per_flag, &mut baggage);
                }
            }
        }
        let dropped = flags.dropped;
        let value = flags.finish();
        let unchanged = !unreadable
            && match incoming.as_deref() {
                None => value.is_empty(),
                Some(text) => text.trim() == value,
            };
        let flags = if unchanged {
            FlagsOut::Unchanged
        } else if value.is_empty() {
            FlagsOut::Remove
        } else {
            // Members are header-safe by construction (RFC 8941 items).
            HeaderValue::from_maybe_shared(Bytes::from(value))
                .map_or(FlagsOut::Remove, FlagsOut::Set)
        };
        Decisions {
            dropped,
            signature: None,
            flags,
            existing_len: incoming.as_deref().map_or(0, str::len),
            per_flag,
            baggage,
            evaluated,
        }
    }
}

/// The sidecar's header namespace.
const VEXIL_PREFIX: &str = "vexil-";

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Adds the per-flag header and baggage member of a decision (when enabled).
fn extras(
    flag: &PlannedFlag,
    v: &PlannedVariant,
    per_flag: &mut Vec<(HeaderName, HeaderValue)>,
    baggage: &mut String,
) {
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

/// What becomes of `vexil-flags`.
enum FlagsOut {
    /// The incoming value is exactly the decisions: left as it is.
    Unchanged,
    /// No decision: the header is removed.
    Remove,
    /// The new value.
    Set(HeaderValue),
}

/// The headers one request gets, computed before the request is changed.
struct Decisions {
    /// The new `vexil-flags`.
    flags: FlagsOut,
    existing_len: usize,
    dropped: u32,
    /// A per-flag header for each decision in `vexil-flags` (when enabled).
    per_flag: Vec<(HeaderName, HeaderValue)>,
    /// A baggage member for each decision in `vexil-flags` (when enabled), comma-separated.
    baggage: String,
    /// The `vexil-signature` of the value sent (none: any incoming one is removed).
    signature: Option<String>,
    evaluated: u32,
}

impl Decisions {
    /// The decisions of a cached request (which carried no `vexil-flags`).
    fn from_cached(c: &Cached) -> Decisions {
        Decisions {
            flags: match &c.flags {
                Some(v) => FlagsOut::Set(v.clone()),
                None => FlagsOut::Remove,
            },
            existing_len: 0,
            dropped: c.dropped,
            per_flag: c.per_flag.to_vec(),
            baggage: c.baggage.to_string(),
            signature: None,
            evaluated: 0,
        }
    }

    /// What the cache keeps of decisions made for a request without `vexil-flags`.
    fn to_cached(&self, decisions: Vec<(u32, Option<u32>)>) -> Cached {
        Cached {
            flags: match &self.flags {
                FlagsOut::Set(v) => Some(v.clone()),
                FlagsOut::Remove | FlagsOut::Unchanged => None,
            },
            per_flag: self.per_flag.clone().into(),
            baggage: self.baggage.as_str().into(),
            dropped: self.dropped,
            decisions: decisions.into(),
        }
    }

    fn apply(
        self,
        req: &mut RequestHeader,
        plan: Option<&Plan>,
        revision: Option<&HeaderValue>,
        config: &HeadersConfig,
    ) -> Injected {
        let mut bytes = 0;
        match self.flags {
            FlagsOut::Unchanged => {}
            FlagsOut::Remove => {
                req.remove_header(FLAGS_HEADER);
            }
            FlagsOut::Set(value) => {
                bytes += value.len().saturating_sub(self.existing_len);
                let _ = req.insert_header(FLAGS_HEADER, value);
            }
        }
        // Per-flag headers are only ever the sidecar's: incoming ones never pass.
        remove_per_flag_headers(req, &config.per_flag_prefix, plan);
        for (name, value) in self.per_flag {
            bytes += value.len();
            let _ = req.insert_header(name, value);
        }
        if config.baggage {
            bytes += set_baggage(req, &config.baggage_prefix, &self.baggage);
        }
        match self.signature {
            Some(signature) => {
                bytes += signature.len();
                set_or_remove(req, SIGNATURE_HEADER, signature);
            }
            None => {
                req.remove_header(SIGNATURE_HEADER);
            }
        }
        match revision {
            Some(revision) => {
                bytes += revision.len();
                let _ = req.insert_header(REVISION_HEADER, revision.clone());
            }
            None => {
                req.remove_header(REVISION_HEADER);
            }
        }
        Injected {
            bytes,
            dropped: self.dropped,
            evaluated: self.evaluated,
        }
    }
}

/// Removes the incoming per-flag headers: every header with the prefix when the prefix is in the
/// `vexil-` namespace (the default `vexil-flag-`), else those naming a flag of the snapshot.
fn remove_per_flag_headers(req: &mut RequestHeader, prefix: &str, plan: Option<&Plan>) {
    let ours_by_name = starts_with_ignore_case(prefix, VEXIL_PREFIX);
    let is_per_flag = |name: &str| {
        let Some(key) = name.strip_prefix(prefix) else {
            return false;
        };
        name != FLAGS_HEADER
            && name != REVISION_HEADER
            && (ours_by_name || plan.is_some_and(|p| p.find(key).is_some()))
    };
    if !req.headers.keys().any(|n| is_per_flag(n.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|n| is_per_flag(n.as_str()))
        .cloned()
        .collect();
    for name in &names {
        req.remove_header(name);
    }
}

/// Replaces the baggage members with the sidecar's prefix by `members` (comma-separated), keeping
/// every other member, within the W3C size limit; returns the bytes added.
fn set_baggage(req: &mut RequestHeader, prefix: &str, members: &str) -> usize {
    let Lines {
        text: existing,
        unreadable,
    } = joined(req, BAGGAGE_HEADER);
    let existing_len = existing.as_deref().map_or(0, str::len);
    let without = existing
        .as_deref()
        .and_then(|b| baggage_without_prefix(b, prefix));
    // Lines that are not text (not W3C baggage) are left out of the rewritten header.
    if members.is_empty() && without.is_none() && !unreadable {
        return 0;
    }
    let base = match (&without, existing.as_deref()) {
        (Some(rest), _) => rest.as_str(),
        (None, Some(all)) => all.trim(),
        (None, None) => "",
    };
    let mut out = String::with_capacity(base.len() + members.len() + 1);
    out.push_str(base);
    for m in members.split(',').filter(|m| !m.is_empty()) {
        if out.len() + 1 + m.len() > BAGGAGE_MAX_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(m);
    }
    let added = out.len().saturating_sub(existing_len);
    drop(existing);
    set_or_remove(req, BAGGAGE_HEADER, out);
    added
}

/// Sets header `name` to `value` (replacing every line of it), or removes it when `value` is empty.
fn set_or_remove(req: &mut RequestHeader, name: &'static str, value: String) {
    if value.is_empty() {
        req.remove_header(name);
    } else if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
        let _ = req.insert_header(name, v);
    }
}

/// Removes the `Connection` tokens `ours` accepts (any case) and the headers they name; true when
/// there was one. (A nominated header is hop-by-hop: it is for this hop only, and a nomination of
/// the sidecar's own headers would have the next hop drop them.)
fn unnominate(req: &mut RequestHeader, ours: impl Fn(&str) -> bool) -> bool {
    let tokens = |req: &RequestHeader| -> Vec<String> {
        req.headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let nominated = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| ours(t.trim()));
    if !nominated {
        return false;
    }
    let (named, kept): (Vec<String>, Vec<String>) = tokens(req).into_iter().partition(|t| ours(t));
    for name in named {
        req.remove_header(name.to_ascii_lowercase().as_str());
    }
    if kept.is_empty() {
        req.remove_header(&CONNECTION);
    } else {
        let _ = req.insert_header(CONNECTION, kept.join(", "));
    }
    true
}

/// The lines of a header as [`joined`] reads them.
struct Lines<'r> {
    /// Every line that is visible ASCII, joined with `", "` (borrowed when there is one).
    text: Option<std::borrow::Cow<'r, str>>,
    /// True when a line is not (it is left out of `text`).
    unreadable: bool,
}

/// The lines of header `name`, each checked once.
fn joined<'r>(req: &'r RequestHeader, name: &str) -> Lines<'r> {
    let mut lines = Lines {
        text: None,
        unreadable: false,
    };
    for value in req.headers.get_all(name) {
        let Ok(line) = value.to_str() else {
            lines.unreadable = true;
            continue;
        };
        lines.text = Some(match lines.text.take() {
            None => line.into(),
            Some(before) => {
                let mut all = before.into_owned();
                all.push_str(", ");
                all.push_str(line);
                all.into()
            }
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKeys;
    use crate::snapshot::{Snapshot, Source};
    use serde_json::json;
    use vexil_engine::FlagSet;

    fn injector(toml: &str) -> Injector {
        injector_with_keys(toml, SigningKeys::none())
    }

    fn injector_with_keys(toml: &str, keys: Arc<SigningKeys>) -> Injector {
        let cell = Arc::new(SnapshotCell::new());
        let set = FlagSet::from_json(&json!({"flags": {
            "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"==": [{"var": "targetingKey"}, "vip"]}, "on", null]}},
            "limit": {"state": "ENABLED", "variants": {"low": 20, "high": 100}, "defaultVariant": "low"},
            "off-flag": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
            "theme": {"state": "ENABLED", "variants": {"dark": "dark", "light": "light",
                    "long": "0123456789012345678901234567890123456789"},
                "defaultVariant": "dark"}
        }}))
        .unwrap();
        cell.publish(Snapshot::new("prod", 9, set, Source::File("f".into())).with_signing(keys));
        let config = DataPlaneConfig::from_toml_str(toml).unwrap();
        Injector::new(&config, cell, DataPlaneMetrics::unregistered()).unwrap()
    }

    fn keys(ids: &[(&str, u8)]) -> Arc<SigningKeys> {
        Arc::new(
            SigningKeys::from_parts(
                ids.iter()
                    .map(|(id, fill)| (id.to_string(), vec![*fill; 32], 0))
                    .collect(),
            )
            .unwrap(),
        )
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
        let mut req = request(&[("x-user", "vip"), ("vexil-flags", "checkout=?0, limit=100")]);
        let out = inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("checkout=?0, limit=100, theme=\"dark\"")
        );
        assert_eq!(out.evaluated, 2);

        // The route's flags are evaluated again; the other decisions are kept.
        let inj = injector(&format!(
            "{MAPPING}[[routes]]\nflags = [\"checkout\", \"theme\"]\noverride = true\n"
        ));
        let mut req = request(&[("x-user", "vip"), ("vexil-flags", "checkout=?0, limit=100")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("limit=100, checkout=?1, theme=\"dark\"")
        );
    }

    #[test]
    fn forged_decisions_are_dropped_and_evaluated_anew() {
        let inj = injector(MAPPING);
        for (incoming, sent) in [
            // Not a variant value: the caller cannot choose a limit of its own.
            ("limit=99", "checkout=?0, limit=20, theme=\"dark\""),
            // A variant value of the right type is kept (a caller may forward a real decision).
            ("limit=100", "limit=100, checkout=?0, theme=\"dark\""),
            // Wrong types: an integer for a boolean, a token for a string, a decimal.
            (
                "checkout=1, theme=dark, limit=20.0",
                "checkout=?0, limit=20, theme=\"dark\"",
            ),
            // Unknown and disabled flags, parameters.
            (
                "other=5, off-flag, theme=\"light\";p=1",
                "checkout=?0, limit=20, theme=\"dark\"",
            ),
            // Written the sidecar's way, whatever the incoming spelling.
            (
                "theme=\"light\" ,checkout",
                "theme=\"light\", checkout=?1, limit=20",
            ),
        ] {
            let mut req = request(&[("vexil-flags", incoming)]);
            inj.inject(Listener::Outbound, &mut req, &TARGET, None);
            assert_eq!(header(&req, "vexil-flags"), Some(sent), "{incoming}");
        }
        // Only dropped members: the header is the sidecar's own.
        let inj = injector("[[routes]]\nhost = \"pay\"\nflags = [\"limit\"]\n");
        let mut req = request(&[("vexil-flags", "limit=99, checkout=?1")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("checkout=?1"),
            "an unmatched route still checks what passes"
        );
        let mut req = request(&[("vexil-flags", "limit=99"), ("vexil-revision", "x@1")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(header(&req, "vexil-flags"), None);
        assert_eq!(header(&req, "vexil-revision"), None);
    }

    #[test]
    fn lines_that_are_not_text_do_not_pass() {
        let inj = injector("[headers]\nbaggage = true\n[[routes]]\nhost = \"pay\"\n");
        let binary = HeaderValue::from_bytes(b"limit=99\xff").unwrap();
        // An unmatched route adds nothing, yet the unreadable line does not stay.
        let mut req = request(&[("vexil-flags", "limit=100")]);
        req.append_header("vexil-flags", binary.clone()).unwrap();
        req.append_header("baggage", binary.clone()).unwrap();
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(header(&req, "vexil-flags"), None);
        assert_eq!(header(&req, "baggage"), None);
        let mut req = request(&[("baggage", "k=v")]);
        req.append_header("baggage", binary).unwrap();
        assert!(inj.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "baggage"), None);
    }

    #[test]
    fn repeated_and_mixed_case_lines_are_one_dictionary() {
        let inj = injector(MAPPING);
        let mut req = request(&[
            ("VEXIL-FLAGS", "limit=99"),
            ("Vexil-Flags", "theme=\"light\""),
            ("vexil-flags", "checkout=7"),
        ]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        let values: Vec<_> = req.headers.get_all("vexil-flags").iter().collect();
        assert_eq!(values, ["theme=\"light\", checkout=?0, limit=20"]);
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert_eq!(
            wire.to_ascii_lowercase().matches("vexil-flags:").count(),
            1,
            "{wire}"
        );
    }

    #[test]
    fn per_flag_headers_and_revision_are_only_the_sidecars() {
        let inj = injector(&format!("{MAPPING}[headers]\nper_flag = true\n"));
        let mut req = request(&[
            ("vexil-flags", "limit=100"),
            ("Vexil-Flag-Limit", "99"),
            ("vexil-flag-checkout", "?1"),
            ("vexil-flag-unknown", "1"),
            ("vexil-revision", "forged@999"),
        ]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flag-limit"),
            Some("100"),
            "the kept decision"
        );
        assert_eq!(header(&req, "vexil-flag-checkout"), Some("?0"), "evaluated");
        assert_eq!(header(&req, "vexil-flag-unknown"), None);
        assert_eq!(header(&req, "vexil-revision"), Some("prod@9"));
        // Without per-flag headers, incoming ones do not pass either.
        let inj = injector(MAPPING);
        let mut req = request(&[("vexil-flag-limit", "99")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(header(&req, "vexil-flag-limit"), None);
        // With a prefix outside `vexil-`, only headers naming a flag are the sidecar's.
        let inj = injector("[headers]\nper_flag_prefix = \"x-\"\n");
        let mut req = request(&[("x-limit", "99"), ("x-user", "alice")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(header(&req, "x-limit"), None);
        assert_eq!(header(&req, "x-user"), Some("alice"));
    }

    #[test]
    fn connection_nominations_of_vexil_headers() {
        let inj = injector(MAPPING);
        let mut req = request(&[
            ("vexil-flags", "limit=100"),
            ("connection", "keep-alive, VEXIL-FLAGS"),
        ]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(
            header(&req, "vexil-flags"),
            Some("checkout=?0, limit=20, theme=\"dark\""),
            "a nominated header was for the previous hop only"
        );
        assert_eq!(header(&req, "connection"), Some("keep-alive"));
        let mut req = request(&[("connection", "vexil-revision"), ("x", "y")]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(header(&req, "connection"), None);
        assert_eq!(header(&req, "vexil-revision"), Some("prod@9"));
        // Untrusted inbound: the nomination goes with the header it names.
        let mut req = request(&[
            ("Connection", "close, Vexil-Debug"),
            ("vexil-debug", "1"),
            ("x", "y"),
        ]);
        assert!(inj.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "connection"), Some("close"));
        assert_eq!(header(&req, "vexil-debug"), None);
        let mut req = request(&[("connection", "vexil-flags")]);
        assert!(
            inj.strip(Listener::Inbound, &mut req),
            "a nomination alone is stripped and counted"
        );
        assert!(req.headers.is_empty());
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
        let existing = "theme=\"0123456789012345678901234567890123456789\"";
        let mut req = request(&[("vexil-flags", existing)]);
        let out = inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        let v = header(&req, "vexil-flags").unwrap();
        assert!(v.len() <= 68, "{v}");
        assert_eq!(v, format!("{existing}, checkout=?0"));
        assert_eq!(out.dropped, 1);
        // Kept members stay even past the limit; nothing is added after them.
        let inj = injector(&format!("{MAPPING}[headers]\nmax_bytes = 64\n"));
        let existing = format!("{existing}, limit=100, checkout=?1");
        let mut req = request(&[("vexil-flags", &existing)]);
        let out = inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        assert_eq!(header(&req, "vexil-flags"), Some(existing.as_str()));
        assert_eq!(
            (out.dropped, out.bytes),
            (0, 6),
            "only the revision was added"
        );
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
        // The sidecar's baggage members replace same-named ones; the others stay.
        assert_eq!(
            header(&req, "baggage"),
            Some("k=v,vexil.checkout=false,vexil.limit=20,vexil.theme=dark")
        );
        assert_eq!(header(&req, "vexil-revision"), None);
        // Several baggage lines, forged members in any spelling, a kept decision.
        let mut req = request(&[
            ("baggage", "a=1, VEXIL.limit=99"),
            ("Baggage", "vexil%2Echeckout=true;p=1,b=2"),
            ("vexil-flags", "theme=\"light\""),
        ]);
        inj.inject(Listener::Outbound, &mut req, &TARGET, None);
        let values: Vec<_> = req.headers.get_all("baggage").iter().collect();
        assert_eq!(
            values,
            ["a=1,b=2,vexil.theme=light,vexil.checkout=false,vexil.limit=20"]
        );
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
        assert!(inj.strip(Listener::Inbound, &mut req));
        assert_eq!(req.headers.len(), 1);
        assert!(!inj.strip(Listener::Inbound, &mut req));
    }

    #[test]
    fn strips_vexil_baggage_members_and_keeps_the_others() {
        // Stripped whether or not this sidecar writes baggage itself.
        let inj = injector("");
        let mut req = request(&[
            ("VEXIL-FLAGS", "limit=100"),
            ("baggage", "userId=alice, vexil.limit=100"),
            ("baggage", "Vexil.checkout=true;p, country=de"),
        ]);
        assert!(inj.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "vexil-flags"), None);
        let values: Vec<_> = req.headers.get_all("baggage").iter().collect();
        assert_eq!(values, ["userId=alice,country=de"]);
        let mut req = request(&[("baggage", "vexil.limit=100")]);
        assert!(inj.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "baggage"), None);
        let mut req = request(&[("baggage", "userId=alice")]);
        assert!(!inj.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "baggage"), Some("userId=alice"));
        // A configured prefix.
        let inj = injector("[headers]\nbaggage_prefix = \"ff_\"\n");
        let mut req = request(&[("baggage", "ff_limit=100,vexil.x=1")]);
        assert!(inj.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "baggage"), Some("vexil.x=1"));
    }

    #[test]
    fn signs_what_it_sends_only_when_asked_and_with_keys() {
        let k = keys(&[("new1", 2), ("old1", 1)]);
        let signer = injector_with_keys("[headers]\nsign = true\n", k.clone());
        // A signature from the application is never forwarded as is.
        let mut req = request(&[("vexil-signature", "key=\"x\", rev=1, t=1, mac=:AAAA:")]);
        signer.inject(Listener::Outbound, &mut req, &TARGET, None);
        let flags = header(&req, "vexil-flags").unwrap().to_string();
        let sig = header(&req, "vexil-signature").unwrap();
        assert!(sig.starts_with("key=\"new1\", rev=9, t="), "{sig}");
        assert_eq!(
            k.verify("prod", sig, &flags, now_secs(), 300),
            Ok(()),
            "{sig} over {flags}"
        );
        // Kept incoming decisions are signed with the rest (the value sent is what is signed).
        let mut req = request(&[("vexil-flags", "limit=100")]);
        signer.inject(Listener::Outbound, &mut req, &TARGET, None);
        let flags = header(&req, "vexil-flags").unwrap().to_string();
        assert!(flags.starts_with("limit=100, "), "{flags}");
        let sig = header(&req, "vexil-signature").unwrap();
        assert_eq!(k.verify("prod", sig, &flags, now_secs(), 300), Ok(()));
        // Not asked, or no keys: no signature, and the application's is removed.
        for inj in [
            injector_with_keys("", k.clone()),
            injector("[headers]\nsign = true\n"),
        ] {
            let mut req = request(&[("vexil-signature", "key=\"x\", rev=1, t=1, mac=:AAAA:")]);
            inj.inject(Listener::Outbound, &mut req, &TARGET, None);
            assert!(header(&req, "vexil-flags").is_some());
            assert_eq!(header(&req, "vexil-signature"), None);
        }
    }

    #[test]
    fn inbound_keeps_decisions_whose_signature_verifies() {
        let k = keys(&[("new1", 2), ("old1", 1)]);
        let inj = injector_with_keys("", k.clone());
        let flags = "limit=100, theme=\"light\"";
        let now = now_secs();
        let good = k.sign("prod", 3, now, flags).unwrap();
        let mut req = request(&[
            ("vexil-flags", flags),
            ("vexil-signature", &good),
            ("vexil-revision", "prod@3"),
            ("x", "y"),
        ]);
        // The revision header is still the peer's to lose; the signed decisions stay.
        assert!(inj.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "vexil-flags"), Some(flags));
        assert_eq!(header(&req, "vexil-signature"), None);
        assert_eq!(header(&req, "vexil-revision"), None);
        // ... and pass the rules of call-chain consistency when decided.
        inj.inject(Listener::Inbound, &mut req, &TARGET, None);
        let sent = header(&req, "vexil-flags").unwrap();
        assert!(sent.starts_with("limit=100, theme=\"light\""), "{sent}");

        // Refused: another value, another environment's key, an old or unknown key, a second
        // signature line, a forged MAC. Everything is stripped then.
        let other_env = k.sign("staging", 3, now, flags).unwrap();
        let stale = k.sign("prod", 3, now - 301, flags).unwrap();
        let unknown = keys(&[("gone", 7)]).sign("prod", 3, now, flags).unwrap();
        let forged = format!("key=\"new1\", rev=3, t={now}, mac=:{}:", "A".repeat(44));
        let cases: [&[(&str, &str)]; 6] = [
            &[("vexil-flags", "limit=100"), ("vexil-signature", &good)],
            &[("vexil-flags", flags), ("vexil-signature", &other_env)],
            &[("vexil-flags", flags), ("vexil-signature", &stale)],
            &[("vexil-flags", flags), ("vexil-signature", &unknown)],
            &[
                ("vexil-flags", flags),
                ("vexil-signature", &good),
                ("vexil-signature", &good),
            ],
            &[("vexil-flags", flags), ("vexil-signature", &forged)],
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut req = request(case);
            assert!(inj.strip(Listener::Inbound, &mut req), "case {i}");
            assert_eq!(header(&req, "vexil-flags"), None, "case {i}");
            assert_eq!(header(&req, "vexil-signature"), None, "case {i}");
        }
        // A sidecar that does not accept signed decisions strips them like any.
        let strict = injector_with_keys("[inbound]\naccept_signed = false\n", k.clone());
        let mut req = request(&[("vexil-flags", flags), ("vexil-signature", &good)]);
        assert!(strict.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "vexil-flags"), None);
        // A Connection nomination makes the pair hop-by-hop: gone before anything is verified.
        let mut req = request(&[
            ("vexil-flags", flags),
            ("vexil-signature", &good),
            ("connection", "vexil-flags"),
        ]);
        assert!(inj.strip(Listener::Inbound, &mut req));
        assert_eq!(header(&req, "vexil-flags"), None);
    }

    /// The same decisions come from the cache exactly when the attributes the route's flags read
    /// have the same values; anything else is decided anew.
    #[test]
    fn the_decision_cache_reuses_exactly_what_would_be_decided_again() {
        let toml =
            "[context]\ntargetingKey = [\"header:x-user-id\"]\nother = [\"header:x-other\"]\n";
        let inj = injector(toml);
        let send = |headers: &[(&str, &str)]| {
            let mut req = request(headers);
            let injected = inj.inject(Listener::Outbound, &mut req, &TARGET, None);
            (
                header(&req, "vexil-flags").map(str::to_owned),
                injected.evaluated,
            )
        };
        let vip = send(&[("x-user-id", "vip")]);
        assert!(vip.0.as_deref().unwrap().contains("checkout=?1"), "{vip:?}");
        assert_eq!(vip.1, 4, "decided");
        // Same user: reused, nothing evaluated. Another value of an attribute no flag reads: the
        // same.
        assert_eq!(send(&[("x-user-id", "vip")]), (vip.0.clone(), 0));
        assert_eq!(
            send(&[("x-user-id", "vip"), ("x-other", "z")]),
            (vip.0.clone(), 0)
        );
        // Another user: decided, differently.
        let other = send(&[("x-user-id", "someone")]);
        assert_eq!(other.1, 4);
        assert!(
            other.0.as_deref().unwrap().contains("checkout=?0"),
            "{other:?}"
        );
        // No user at all is a value of its own.
        assert_eq!(send(&[]).1, 4);
        assert_eq!(send(&[]).1, 0);
        // Decisions on the request: never from the cache.
        let mut req = request(&[("x-user-id", "vip"), ("vexil-flags", "limit=100")]);
        assert_eq!(
            inj.inject(Listener::Outbound, &mut req, &TARGET, None)
                .evaluated,
            3
        );
        assert!(
            header(&req, "vexil-flags")
                .unwrap()
                .starts_with("limit=100")
        );
        // A new snapshot: nothing of the old one is reused.
        let set = FlagSet::from_json(&json!({"flags": {
            "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                "defaultVariant": "off"}}}))
        .unwrap();
        inj.cell
            .publish(Snapshot::new("prod", 10, set, Source::File("f".into())));
        assert_eq!(
            send(&[("x-user-id", "vip")]),
            (Some("checkout=?0".into()), 1)
        );
        // Off: every request decides.
        let off = injector(&format!("{toml}[cache]\nmax_entries = 0\n"));
        for _ in 0..2 {
            let mut req = request(&[("x-user-id", "vip")]);
            assert_eq!(
                off.inject(Listener::Outbound, &mut req, &TARGET, None)
                    .evaluated,
                4
            );
        }
    }

    /// Flags whose reads cannot be keyed (the clock, a claim of a token) are decided every time.
    #[test]
    fn what_cannot_be_keyed_is_never_cached() {
        let cell = Arc::new(SnapshotCell::new());
        let set = FlagSet::from_json(&json!({"flags": {
            "late": {"state": "ENABLED", "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, 0]}, "on", "off"]}},
            "plan": {"state": "ENABLED", "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}}
        }}))
        .unwrap();
        cell.publish(Snapshot::new("prod", 1, set, Source::File("f".into())));
        let toml = "[context]\nplan = [\"jwt:plan\"]\n[context_options]\njwt_verify = false\n\n\
                    [[routes]]\npath_prefix = \"/late\"\nflags = [\"late\"]\n\
                    [[routes]]\npath_prefix = \"/plan\"\nflags = [\"plan\"]\n";
        let config = DataPlaneConfig::from_toml_str(toml).unwrap();
        let inj = Injector::new(&config, cell, DataPlaneMetrics::unregistered()).unwrap();
        for path in ["/late", "/plan"] {
            for _ in 0..2 {
                let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
                assert_eq!(
                    inj.inject(Listener::Outbound, &mut req, &TARGET, None)
                        .evaluated,
                    1,
                    "{path}"
                );
            }
        }
    }
}
