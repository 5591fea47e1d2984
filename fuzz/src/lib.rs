//! Fuzz target bodies for Vexil's parsers of untrusted input.
//!
//! Each target is a plain function over arbitrary bytes: the libFuzzer harnesses in
//! `fuzz/cargo-fuzz/fuzz_targets/` call them, and `tests/replay.rs` replays every corpus and
//! regression input through them on the stable toolchain. A target panics only when it finds a bug
//! (a panic in product code, or a broken invariant it asserts).
//!
//! | target | what it drives |
//! |---|---|
//! | [`flagset`] | flagd document parse, strict and lenient compile, resolution of every flag |
//! | [`sync_frame`] | `vexil-sync/1` frame decoding in both directions; the sidecar's `Full`/`Delta` application |
//! | [`flags_header`] | incoming `vexil-flags` parsing and the data plane's header injection |
//! | [`context`] | evaluation-context extraction from a request: headers, cookies, query, baggage, JWT |
//! | [`admin_bodies`] | the control admin API's request bodies, decoded and checked as the handlers do |
//! | [`http1_framing`] | the data plane's HTTP/1.1 fast path: request heads, chunked bodies, response heads |

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use bytes::BytesMut;
use pingora::http::RequestHeader;
use serde_json::{Map, Value};
use tokio_util::codec::Decoder;
use vexil_control::api::fuzzing::{AdminBody, check_body};
use vexil_engine::{CompileOptions, EvaluationContext, FlagSet, Limits, Mode, parse_json};
use vexil_proto::frame::{DEFAULT_MAX_CLIENT_FRAME, FrameCodec, MessageCodec};
use vexil_proto::prost::Message;
use vexil_proto::sync::v1::{ClientFrame, ServerFrame, server_frame::Kind};
use vexil_proxy::dataplane::DataPlaneConfig;
use vexil_proxy::dataplane::fuzzing::{ContextExtractor, HeaderInjector};
use vexil_proxy::sync::{Held, apply_delta, compile, parse_full};

/// A target body.
pub type Target = fn(&[u8]);

/// The targets by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("flagset", flagset),
    ("sync_frame", sync_frame),
    ("flags_header", flags_header),
    ("context", context),
    ("admin_bodies", admin_bodies),
    ("http1_framing", http1_framing),
];

// ---------------------------------------------------------------------------------------------
// http1_framing

/// Drives the fast path's framing over `data` taken as a request head, as a chunked body and as
/// a response head. Asserts: a served head ends with CRLF CRLF within `data` and has no bare CR
/// or LF; the chunked decoder gives the same result however its input is split, consumes all of
/// an incomplete body, and its output is canonical (decoding it again gives it back whole); a
/// rewritten response head parses, and rewriting it again changes nothing.
pub fn http1_framing(data: &[u8]) {
    use vexil_proxy::dataplane::fuzzing::{
        fast_path_chunked, fast_path_request, fast_path_response,
    };
    if let Ok(Some(n)) = fast_path_request(data) {
        assert!(n <= data.len() && data[..n].ends_with(b"\r\n\r\n"));
        for (i, &b) in data[..n].iter().enumerate() {
            assert!(b != b'\n' || data[i - 1] == b'\r', "bare LF served");
            assert!(
                b != b'\r' || data.get(i + 1) == Some(&b'\n'),
                "bare CR served"
            );
        }
    }
    let whole = fast_path_chunked(data, usize::MAX);
    for step in [1, 2, 7] {
        let split = fast_path_chunked(data, step);
        assert_eq!(whole.is_ok(), split.is_ok(), "split by {step}");
        if let (Ok(w), Ok(s)) = (&whole, &split) {
            assert_eq!(w, s, "split by {step}");
        }
    }
    if let Ok((used, out, done)) = whole {
        if done {
            assert_eq!(
                fast_path_chunked(&out, usize::MAX),
                Ok((out.len(), out.clone(), true)),
                "re-framed output is canonical"
            );
        } else {
            assert_eq!(used, data.len(), "an unfinished body is consumed whole");
        }
    }
    for head_request in [false, true] {
        if let Ok(Some(out)) = fast_path_response(data, head_request) {
            let again = fast_path_response(&out, head_request)
                .expect("a rewritten head parses")
                .expect("a rewritten head is complete");
            assert_eq!(again, out, "rewriting is idempotent");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// flagset

/// Parses `data` as a flagd document, compiles it strictly and leniently, and resolves every flag
/// against contexts built from the attribute names and literals the document itself uses.
pub fn flagset(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = parse_json(text) else {
        return;
    };
    let strict = FlagSet::from_json(&doc);
    let problems = FlagSet::validate(&doc, Limits::default());
    assert_eq!(
        strict.is_ok(),
        problems.is_empty(),
        "validate and strict compile disagree: {problems}"
    );
    let lenient = FlagSet::compile(
        &doc,
        &CompileOptions {
            mode: Mode::Lenient,
            ..CompileOptions::default()
        },
    );
    if strict.is_ok() {
        let lenient = lenient
            .as_ref()
            .expect("a strictly valid set compiles leniently");
        assert!(lenient.problems().is_empty());
    }
    let Ok(set) = strict.or(lenient) else {
        return;
    };
    // The document a set gives back compiles again (the sidecar persists and reloads it).
    let again = FlagSet::compile(
        &set.to_document(),
        &CompileOptions {
            mode: Mode::Lenient,
            ..CompileOptions::default()
        },
    )
    .expect("a compiled set's own document compiles");
    assert_eq!(again.len(), set.len());
    for ctx in contexts_from(&doc) {
        for flag in set.flags() {
            let r = set.resolve(flag.key(), &ctx);
            let _ = r.to_json(flag.key());
            let _ = set.resolve_bool(flag.key(), &ctx);
        }
        let _ = set.resolve("no-such-flag", &ctx);
    }
}

/// A few contexts giving the document's `var` names the scalars it compares them with.
fn contexts_from(doc: &Value) -> Vec<EvaluationContext> {
    let mut vars = Vec::new();
    let mut literals = Vec::new();
    collect(doc, &mut vars, &mut literals, 0);
    literals.push(Value::Null);
    let mut out = vec![EvaluationContext::new()];
    for shift in 0..3 {
        let mut map = Map::new();
        map.insert("targetingKey".into(), Value::from(format!("user-{shift}")));
        for (i, name) in vars.iter().enumerate() {
            let value = literals[(i + shift) % literals.len()].clone();
            set_path(&mut map, name, value);
        }
        out.push(EvaluationContext::from_map(map));
    }
    out
}

fn collect(v: &Value, vars: &mut Vec<String>, literals: &mut Vec<Value>, depth: usize) {
    const MAX: usize = 32;
    if depth > 256 {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(var) = m.get("var") {
                let name = match var {
                    Value::String(s) => Some(s.as_str()),
                    Value::Array(a) => a.first().and_then(Value::as_str),
                    _ => None,
                };
                if let Some(name) = name
                    && vars.len() < MAX
                    && !vars.iter().any(|v| v == name)
                {
                    vars.push(name.to_string());
                }
            }
            for x in m.values() {
                collect(x, vars, literals, depth + 1);
            }
        }
        Value::Array(a) => {
            for x in a {
                collect(x, vars, literals, depth + 1);
            }
        }
        scalar => {
            if literals.len() < MAX {
                literals.push(scalar.clone());
            }
        }
    }
}

/// How deep [`set_path`] nests. Contexts that reach the engine come from parsers that stop far
/// earlier (serde_json at 128 levels, prost at 100); a `var` with thousands of dots would
/// otherwise build a tree deep enough to overflow a thread's stack when dropped, a crash of this
/// harness and not of Vexil.
const MAX_CONTEXT_DEPTH: usize = 64;

/// Sets `a.b.c` as nested objects (the way `var` reads dotted names), at most
/// [`MAX_CONTEXT_DEPTH`] levels deep (the last level's key keeps the remaining dots).
fn set_path(map: &mut Map<String, Value>, name: &str, value: Value) {
    let mut parts = name.splitn(MAX_CONTEXT_DEPTH, '.').peekable();
    let mut cur = map;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return;
        }
        let slot = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        cur = slot.as_object_mut().expect("made an object above");
    }
}

// ---------------------------------------------------------------------------------------------
// sync_frame

/// Payload limit of the fuzzed sidecar decoder: small, so bombs are cheap to refuse, and the same
/// code as the 64 MiB default.
const FUZZ_MAX_FRAME: usize = 1 << 20;

/// Decodes `data` as the byte stream of a sync connection, both ways: as `ServerFrame`s the way the
/// sidecar reads them (arriving in chunks whose sizes the first byte picks), applying `Full` and
/// `Delta` frames to the document it holds and compiling the result; and as `ClientFrame`s the way
/// control reads them. Every decoded message re-encodes to a frame that decodes to it again.
pub fn sync_frame(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 16) + 1;

    // Sidecar side.
    let mut codec = MessageCodec::<ServerFrame>::new(FrameCodec::new(FUZZ_MAX_FRAME, 64 * 1024));
    let mut held: Option<Held> = None;
    for frame in decode_stream(&mut codec, stream, chunk) {
        roundtrip(&frame, FUZZ_MAX_FRAME);
        match frame.kind {
            Some(Kind::Full(full)) => {
                if let Ok(document) = parse_full(&full.flag_set) {
                    let next = Held {
                        revision: full.revision,
                        incarnation: full.incarnation.clone(),
                        document,
                        signing: vexil_proxy::signing::SigningKeys::none(),
                        proposals: vexil_proxy::shadow::Proposals::none(),
                    };
                    if install(&next) {
                        held = Some(next);
                    }
                }
            }
            Some(Kind::Delta(delta)) => {
                if let Some(h) = &mut held {
                    let before = h.clone();
                    match apply_delta(h, &delta) {
                        Ok(()) => {
                            if !install(h) {
                                *h = before;
                            }
                        }
                        Err(_) => {
                            assert_eq!(
                                h.revision, before.revision,
                                "a refused delta changed the revision"
                            );
                            assert_eq!(
                                h.document, before.document,
                                "a refused delta changed the document"
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // Control side.
    let mut codec =
        MessageCodec::<ClientFrame>::new(FrameCodec::new(DEFAULT_MAX_CLIENT_FRAME, usize::MAX));
    for frame in decode_stream(&mut codec, stream, chunk) {
        roundtrip(&frame, DEFAULT_MAX_CLIENT_FRAME);
    }
}

/// Feeds `stream` to `codec` `chunk` bytes at a time, as a socket would, until it ends or errs.
fn decode_stream<M: Message + Default>(
    codec: &mut MessageCodec<M>,
    stream: &[u8],
    chunk: usize,
) -> Vec<M> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return out,
            }
        }
    }
    while let Ok(Some(m)) = codec.decode_eof(&mut buf) {
        out.push(m);
    }
    out
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, max: usize) {
    let codec = FrameCodec::new(max, 64 * 1024);
    let Ok(bytes) = codec.encode_frame(msg) else {
        return;
    };
    let mut buf = BytesMut::from(&bytes[..]);
    let back: M = codec
        .decode_message(&mut buf)
        .expect("a frame we encoded decodes")
        .expect("a frame we encoded is complete");
    assert_eq!(&back, msg);
    assert!(buf.is_empty());
}

/// What the sidecar does with a new document: compile it (leniently) and serve from it.
fn install(held: &Held) -> bool {
    let Ok(set) = compile(&held.document) else {
        return false;
    };
    let ctx = EvaluationContext::new();
    for flag in set.flags() {
        let _ = set.resolve(flag.key(), &ctx);
    }
    true
}

// ---------------------------------------------------------------------------------------------
// flags_header

const FLAGS_DOC: &str = r#"{"flags": {
    "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"if": [{"==": [{"var": "targetingKey"}, "vip"]}, "on", null]}},
    "limit": {"state": "ENABLED", "variants": {"low": 20, "high": 100}, "defaultVariant": "low"},
    "ratio": {"state": "ENABLED", "variants": {"a": 0.25}, "defaultVariant": "a"},
    "theme": {"state": "ENABLED", "variants": {"dark": "dark", "light": "light"}, "defaultVariant": "dark"},
    "layout": {"state": "ENABLED", "variants": {"two-col": {"cols": 2}}, "defaultVariant": "two-col"},
    "off-flag": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"}
}}"#;

/// The keys of `FLAGS_DOC`.
const FLAG_KEYS: &[&str] = &["checkout", "limit", "ratio", "theme", "layout", "off-flag"];

/// Every member the data plane may send for `FLAGS_DOC`: a variant value of an enabled flag, as
/// the sidecar writes it. Whatever arrives, nothing else leaves.
const SIDECAR_MEMBERS: &[&str] = &[
    "checkout=?1",
    "checkout=?0",
    "limit=20",
    "limit=100",
    "ratio=0.25",
    "theme=\"dark\"",
    "theme=\"light\"",
    "layout=two-col",
];

/// The data plane's byte limit on `vexil-flags` in the fuzzed injectors (the smallest allowed, so
/// the limit is hit often).
const FUZZ_HEADER_LIMIT: usize = 64;

fn injectors() -> &'static [(HeaderInjector, bool)] {
    static INJECTORS: OnceLock<Vec<(HeaderInjector, bool)>> = OnceLock::new();
    INJECTORS.get_or_init(|| {
        let configs = [
            // Keep incoming decisions (call-chain consistency), every optional header on.
            "[context]\ntargetingKey = [\"header:x-user\"]\n\
             [headers]\nper_flag = true\nbaggage = true\nmax_bytes = 64\n",
            // A route that overrides incoming decisions.
            "[context]\ntargetingKey = [\"header:x-user\"]\n\
             [headers]\nmax_bytes = 64\n[[routes]]\noverride = true\n",
        ];
        configs
            .iter()
            .enumerate()
            .map(|(i, toml)| {
                let config = DataPlaneConfig::from_toml_str(toml).expect("fuzz config is valid");
                let set = FlagSet::from_json_str(FLAGS_DOC).expect("fuzz flags are valid");
                let inj = HeaderInjector::new(&config, "prod", 7, set).expect("fuzz injector");
                (inj, i == 1)
            })
            .collect()
    })
}

/// Sends a request carrying `data` as its `vexil-flags` (and `baggage`, `Connection`) header
/// values through the data plane's injection: once keeping incoming decisions, once overriding
/// them. The result is a valid header made only of members the sidecar itself could have written
/// (variant values of enabled flags), whose new members fit the byte limit; kept decisions are
/// never re-evaluated. Stripping leaves no `vexil-*` header and no `vexil.` baggage member.
pub fn flags_header(data: &[u8]) {
    // Lines are header values: up to 3 `vexil-flags`, then `baggage`, `x-user`, `connection`.
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    for (inj, overrides) in injectors() {
        let mut req = RequestHeader::build("GET", b"/checkout", None).expect("a request");
        for (i, line) in lines.iter().enumerate().take(6) {
            let name = match i {
                0..=2 => "vexil-flags",
                3 => "baggage",
                4 => "x-user",
                _ => "connection",
            };
            if let Ok(v) = http::HeaderValue::from_bytes(line) {
                req.append_header(name, v).expect("a valid header");
            }
        }
        let incoming = joined(&req, "vexil-flags");
        let out = inj.inject(&mut req, Some("svc"), None);
        let outgoing = joined(&req, "vexil-flags");
        if let Some(text) = &outgoing {
            assert!(
                sfv_check::is_dictionary(text),
                "injected an invalid vexil-flags: {text:?} (incoming {incoming:?})"
            );
            for member in text.split(", ") {
                assert!(
                    SIDECAR_MEMBERS.contains(&member),
                    "{member:?} is not a decision of this sidecar (incoming {incoming:?})"
                );
            }
            if text.len() > FUZZ_HEADER_LIMIT {
                // Only kept incoming members may exceed the limit, never added ones.
                let dict = sfv_check::parse(text).expect("checked above");
                if *overrides {
                    assert!(
                        dict.keys().all(|k| !FLAG_KEYS.contains(&k.as_str())),
                        "members added past the {FUZZ_HEADER_LIMIT}-byte limit: {text:?}"
                    );
                } else {
                    let kept = incoming
                        .as_deref()
                        .and_then(|i| sfv_check::parse(i).ok())
                        .expect("members past the limit were kept from a valid incoming header");
                    assert!(
                        dict.keys().all(|k| kept.contains_key(k)),
                        "members added past the {FUZZ_HEADER_LIMIT}-byte limit: {text:?}"
                    );
                }
            }
        }
        assert!(out.evaluated <= 6);
        assert!(inj.strip(&mut req) || req.headers.get("vexil-flags").is_none());
        assert!(
            req.headers
                .keys()
                .all(|n| !n.as_str().starts_with("vexil-"))
        );
        if let Some(baggage) = joined(&req, "baggage") {
            assert!(
                baggage
                    .split(',')
                    .all(|m| !m.trim().to_ascii_lowercase().starts_with("vexil.")),
                "a vexil. baggage member survived stripping: {baggage:?}"
            );
        }
    }
}

/// Every value of `name`, joined with `", "`.
fn joined(req: &RequestHeader, name: &str) -> Option<String> {
    let values: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// RFC 8941 checks on the fuzz side, with the same `sfv` crate the data plane uses.
mod sfv_check {
    pub fn parse(text: &str) -> Result<sfv::Dictionary, sfv::Error> {
        sfv::Parser::new(text).parse()
    }

    pub fn is_dictionary(text: &str) -> bool {
        parse(text).is_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// context

/// The HS256 secret of the fuzzed verifying mapping (the seed corpus signs tokens with it).
pub const FUZZ_JWT_SECRET: &str = "vexil-fuzz-secret";

/// The largest attribute value the fuzzed mappings keep.
const FUZZ_MAX_VALUE: usize = 64;

fn extractors() -> &'static [ContextExtractor] {
    static EXTRACTORS: OnceLock<Vec<ContextExtractor>> = OnceLock::new();
    EXTRACTORS.get_or_init(|| {
        let plain = "[context]\n\
            targetingKey = [\"header:x-user-id\", \"cookie:uid\", \"query:user\", \"static:anonymous\"]\n\
            country = [\"baggage:country\", \"header:x-country\"]\n\
            session = [\"cookie:session\"]\n\
            method = [\"request:method\"]\npath = [\"request:path\"]\nhost = [\"request:host\"]\n\
            scheme = [\"request:scheme\"]\nip = [\"peer:ip\"]\nplan = [\"query:plan\", \"baggage:plan\"]\n\
            [context_options]\nmax_value_bytes = 64\n";
        let jwt = |options: &str| {
            format!(
                "[context]\ntargetingKey = [\"jwt:sub\", \"header:x-user-id\"]\n\
                 tier = [\"jwt:tier\"]\ngroups = [\"jwt:groups\"]\nemail = [\"jwt:email\"]\n\
                 [context_options]\nmax_value_bytes = 64\njwt_max_bytes = 4096\n{options}"
            )
        };
        [
            plain.to_string(),
            // Unverified claims without `exp` too (the seed corpus has such tokens).
            jwt("jwt_verify = false\njwt_require_exp = false\n"),
            jwt(&format!("jwt_hs256_secret = \"{FUZZ_JWT_SECRET}\"\n")),
        ]
        .iter()
        .map(|toml| {
            let config = DataPlaneConfig::from_toml_str(toml).expect("fuzz config is valid");
            ContextExtractor::new(&config).expect("fuzz mapping")
        })
        .collect()
    })
}

fn context_flags() -> &'static FlagSet {
    static SET: OnceLock<FlagSet> = OnceLock::new();
    SET.get_or_init(|| {
        FlagSet::from_json_str(
            r#"{"flags": {
            "beta": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"if": [{"or": [
                    {"in": ["beta", {"var": "groups"}]},
                    {">=": [{"var": "tier"}, 3]},
                    {"ends_with": [{"var": "email"}, "@example.com"]},
                    {"==": [{"var": "country"}, "fr"]}]}, "on", "off"]}},
            "split": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                "targeting": {"fractional": [["a", 50], ["b", 50]]}}
        }}"#,
        )
        .expect("fuzz flags are valid")
    })
}

/// Parses `data` as an HTTP/1 request head and extracts its evaluation context with three
/// mappings (headers, cookies, query, baggage and request attributes; unverified JWT claims;
/// HS256-verified JWT claims), then evaluates flags that read those attributes. Extraction keeps at
/// most the configured attributes, each string within the value limit.
pub fn context(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(data), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return;
    };
    let Ok(mut req) = RequestHeader::build(method, path.as_bytes(), None) else {
        return;
    };
    let mut host = None;
    for h in parsed.headers.iter() {
        let Ok(value) = http::HeaderValue::from_bytes(h.value) else {
            continue;
        };
        if h.name.eq_ignore_ascii_case("host") {
            host = value.to_str().ok().map(|s| s.to_ascii_lowercase());
        }
        let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
            continue;
        };
        let _ = req.append_header(name, value);
    }
    let host = host.as_deref().map(|h| h.split(':').next().unwrap_or(h));
    let peer = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let set = context_flags();
    for extractor in extractors() {
        let ctx = extractor.extract(&req, host, peer);
        let attributes = ctx.as_value().as_object().map_or(0, Map::len);
        assert!(
            attributes <= 9,
            "{attributes} attributes from a 9-attribute mapping"
        );
        if let Some(map) = ctx.as_value().as_object() {
            for (name, v) in map {
                if let Value::String(s) = v {
                    assert!(s.len() <= FUZZ_MAX_VALUE, "{name}: {} bytes kept", s.len());
                }
            }
        }
        for flag in set.flags() {
            let _ = set.resolve(flag.key(), &ctx);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// admin_bodies

fn evaluate_set() -> &'static FlagSet {
    static SET: OnceLock<FlagSet> = OnceLock::new();
    SET.get_or_init(|| FlagSet::from_json_str(FLAGS_DOC).expect("fuzz flags are valid"))
}

/// Checks `data` as an admin API request body: the first byte picks the body, the rest up to the
/// first newline is the flag or evaluator key of the path, the remainder is the body. A flag or
/// flag set the checks accept also compiles strictly (what the sidecars will be sent).
pub fn admin_bodies(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let body = AdminBody::ALL[usize::from(which) % AdminBody::ALL.len()];
    let (key, bytes) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b""[..], rest),
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let limits = Limits {
        max_depth: 64,
        max_flags: 64,
    };
    let result = check_body(body, key, bytes, limits, evaluate_set());
    if result.is_ok() && matches!(body, AdminBody::FlagSet) {
        let doc: Value = serde_json::from_slice(bytes).expect("accepted body is JSON");
        FlagSet::compile(
            &doc,
            &CompileOptions {
                limits,
                mode: Mode::Strict,
            },
        )
        .expect("an accepted flag set compiles");
    }
    if let Err(problem) = result {
        assert!(
            (400..500).contains(&problem.status),
            "a body check answered {}: {}",
            problem.status,
            problem.detail
        );
    }
}
