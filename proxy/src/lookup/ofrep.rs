//! OFREP, the OpenFeature Remote Evaluation Protocol (default 127.0.0.1:8016).
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: one flag. `200` with
//!   `{key, value, reason, variant, metadata}`; `404` with `{key, errorCode: "FLAG_NOT_FOUND",
//!   errorDetails, metadata}` for a missing flag; `400` with `{key, errorCode, errorDetails,
//!   metadata}` for `PARSE_ERROR` (a flag kept broken in lenient mode), `GENERAL` (e.g. a rule
//!   naming a variant that does not exist) and `INVALID_CONTEXT` (a body that is not JSON, a
//!   `context` that is not an object, more attributes than the limit).
//! - `POST /ofrep/v1/evaluate/flags`: every flag, `200` with `{flags: [...], metadata}` where each
//!   item is a success or a failure as above, and an `ETag`; `304` with no body when
//!   `If-None-Match` names the current tag; `400` with `{errorCode, errorDetails}` for a bad request.
//! - Request body: `{"context": {...}}`; an empty body or a missing `context` is the empty context.
//!   Unknown members are ignored; the content type is not checked. A body over the limit answers
//!   `413`, and before any flag set is loaded every evaluation answers `503` (with `Retry-After`),
//!   both with OFREP's general error body `{errorDetails}`. After the init timeout with no flag set
//!   (serving without flags, [`crate::lifecycle`]) the set is empty: a flag answers `404`
//!   `FLAG_NOT_FOUND` (OFREP's answer that makes providers use the code default; OFREP defines no
//!   "not ready" code) and the bulk evaluation `200` with no flags.
//!
//! A disabled flag is not a missing flag: it answers `200` with reason `DISABLED`, no `value`
//! (OFREP's "code default": the provider uses the caller's default) and `"variant": null`, and the
//! same holds for `DEFAULT` without a default variant. `variant` is sent as `null` rather than
//! left out because `openfeature-provider-ofrep` (0.3.0) reads it unconditionally. Unlike flagd,
//! the bulk response keeps disabled flags, with the same shape. There is no type in OFREP requests,
//! so `TYPE_MISMATCH` never comes from the server: the provider checks the value's type.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{ETAG, IF_NONE_MATCH, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tower_http::timeout::RequestBodyDeadlineLayer;
use vexil_engine::{ErrorCode, EvaluationContext, Metadata, Resolution};

use super::{Limits, NOT_READY, context_from_json};
use crate::metrics::{Api, Metrics};
use crate::snapshot::{Snapshot, SnapshotCell};

/// What the OFREP handlers share. Cheap to clone.
#[derive(Clone)]
pub struct OfrepState {
    cell: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    limits: Limits,
}

impl OfrepState {
    /// Handlers answering from `cell` within `limits`, counting evaluations in `metrics`.
    pub fn new(cell: Arc<SnapshotCell>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        OfrepState {
            cell,
            metrics,
            limits,
        }
    }
}

/// The OFREP routes.
pub fn router(state: OfrepState) -> Router {
    let limit = state.limits.max_request_bytes;
    let body_timeout = state.limits.read_timeout;
    Router::new()
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyDeadlineLayer::new(body_timeout))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then lets in-flight requests finish.
/// A request head or body that takes longer than [`Limits::read_timeout`] ends its connection.
pub async fn serve(
    listener: TcpListener,
    state: OfrepState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = state.limits.read_timeout;
    vexil_http::serve_http1(listener, router(state), header_timeout, shutdown).await;
    Ok(())
}

/// An answer that is not a `200`.
struct Failure {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl Failure {
    /// OFREP's general error (`{errorDetails}`).
    fn general(status: StatusCode, details: impl Into<String>) -> Self {
        Failure {
            status,
            body: json!({ "errorDetails": details.into() }),
        }
    }

    /// A bad request: with the flag key for a single evaluation, without for bulk.
    fn invalid_context(key: Option<&str>, details: impl Into<String>) -> Self {
        let mut body = json!({ "errorCode": "INVALID_CONTEXT", "errorDetails": details.into() });
        if let Some(key) = key {
            body["key"] = Value::from(key);
        }
        Failure {
            status: StatusCode::BAD_REQUEST,
            body,
        }
    }
}

/// The request's context: the snapshot to evaluate against and the evaluation context.
fn prepare(
    state: &OfrepState,
    key: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Arc<Snapshot>, EvaluationContext), Failure> {
    let body = body.map_err(|rejection| body_failure(&rejection, state.limits))?;
    let context =
        parse_context(&body, &state.limits).map_err(|e| Failure::invalid_context(key, e))?;
    let snapshot = state
        .cell
        .load()
        .ok_or_else(|| Failure::general(StatusCode::SERVICE_UNAVAILABLE, NOT_READY))?;
    Ok((snapshot, context))
}

fn body_failure(rejection: &BytesRejection, limits: Limits) -> Failure {
    if timed_out(rejection) {
        return Failure::general(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {:?}",
                limits.read_timeout
            ),
        );
    }
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Failure::general(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes",
                limits.max_request_bytes
            ),
        ),
        status => Failure::general(status, rejection.body_text()),
    }
}

/// Whether reading the body failed on the body deadline ([`Limits::read_timeout`]).
fn timed_out(rejection: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// `{"context": {...}}` (or an empty body) as an evaluation context.
fn parse_context(body: &[u8], limits: &Limits) -> Result<EvaluationContext, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EvaluationContext::new());
    }
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the request body is not valid JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        )
    })?;
    let Value::Object(mut request) = request else {
        return Err("the request body must be a JSON object like {\"context\": {...}}".into());
    };
    context_from_json(request.remove("context"), limits).map_err(|e| e.to_string())
}

async fn evaluate_one(
    State(state): State<OfrepState>,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (snapshot, context) = match prepare(&state, Some(&key), body) {
        Ok(prepared) => prepared,
        Err(failure) => return failure.into_response(),
    };
    let span = crate::metrics::lookup_span(Api::Ofrep, &snapshot);
    let _span = span.enter();
    let resolution = snapshot.flags.resolve(&key, &context);
    snapshot.decided(resolution.position, &context);
    match resolution.error_code() {
        Some(ErrorCode::FlagNotFound) => state.metrics.flag_not_found(Api::Ofrep),
        _ => state.metrics.evaluation(
            Api::Ofrep,
            &key,
            resolution.variant,
            resolution.reason.as_str(),
        ),
    }
    let (status, body) = Evaluation::new(&key, &resolution);
    (status, axum::Json(body)).into_response()
}

/// One evaluation as OFREP writes it. Serialized straight from the resolution: no JSON tree is
/// built, so a bulk response over thousands of flags costs its output bytes and little more.
#[derive(Serialize)]
#[serde(untagged)]
enum Evaluation<'a> {
    // Fields in key order, so the output is byte for byte what a sorted JSON map gave before.
    Resolved {
        key: &'a str,
        metadata: &'a Metadata,
        reason: &'static str,
        /// Absent when the caller's default applies (disabled, no default variant).
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a Value>,
        variant: Option<&'a str>,
    },
    Failed {
        #[serde(rename = "errorCode")]
        error_code: &'static str,
        #[serde(rename = "errorDetails")]
        error_details: &'a str,
        key: &'a str,
        metadata: &'a Metadata,
    },
}

impl<'a> Evaluation<'a> {
    /// The evaluation of `key` and its status when it stands alone.
    fn new<'s: 'a>(key: &'a str, r: &'a Resolution<'s, &'s Value>) -> (StatusCode, Self) {
        let Some(error) = &r.error else {
            let resolved = Evaluation::Resolved {
                key,
                value: r.value,
                reason: r.reason.as_str(),
                variant: r.variant,
                metadata: r.metadata,
            };
            return (StatusCode::OK, resolved);
        };
        let status = match error.code {
            ErrorCode::FlagNotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        let failed = Evaluation::Failed {
            key,
            error_code: error.code.as_str(),
            error_details: &error.message,
            metadata: r.metadata,
        };
        (status, failed)
    }
}

/// The bulk response body (fields in key order, as above).
#[derive(Serialize)]
struct Bulk<'a> {
    flags: Vec<Evaluation<'a>>,
    metadata: &'a Metadata,
}

async fn evaluate_all(
    State(state): State<OfrepState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (snapshot, context) = match prepare(&state, None, body) {
        Ok(prepared) => prepared,
        Err(failure) => return failure.into_response(),
    };
    let tag = etag(&snapshot, &context);
    let tag_header = HeaderValue::from_str(&tag).expect("an ETag is visible ASCII");
    if if_none_match(&headers, &tag) {
        return (StatusCode::NOT_MODIFIED, [(ETAG, tag_header)]).into_response();
    }
    let span = crate::metrics::lookup_span(Api::Ofrep, &snapshot);
    let _span = span.enter();
    let resolved: Vec<_> = snapshot.flags.resolve_all(&context).collect();
    let flags = resolved
        .iter()
        .map(|(flag, r)| {
            snapshot.decided(r.position, &context);
            state
                .metrics
                .evaluation(Api::Ofrep, flag.key(), r.variant, r.reason.as_str());
            Evaluation::new(flag.key(), r).1
        })
        .collect();
    let body = Bulk {
        flags,
        metadata: snapshot.flags.metadata(),
    };
    (StatusCode::OK, [(ETAG, tag_header)], axum::Json(body)).into_response()
}

/// The bulk response's entity tag: a strong tag over what the response depends on.
///
/// It digests (SHA-256, first 128 bits) the snapshot's environment and revision
/// (`environment@revision`), the time the snapshot was published in this process, and the
/// evaluation context as canonical JSON (object keys sorted, no whitespace). So it changes when the
/// flag set changes, when the context changes, and when the sidecar restarts (a file source's
/// revision counter starts again at 1, so the revision alone could repeat for different flags). It
/// is written `"<revision>-<digest>"`.
pub fn etag(snapshot: &Snapshot, context: &EvaluationContext) -> String {
    let mut hasher = Sha256::new();
    hasher.update(snapshot.environment.as_bytes());
    hasher.update(b"@");
    hasher.update(snapshot.revision.to_string().as_bytes());
    let published = snapshot
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(b"\n");
    hasher.update(published.as_nanos().to_le_bytes());
    hasher.update(b"\n");
    let mut canonical = Vec::with_capacity(64);
    write_canonical(context.as_value(), &mut canonical);
    hasher.update(&canonical);
    let digest = hasher.finalize();
    let mut tag = format!("\"{}-", snapshot.revision);
    for byte in &digest[..16] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    tag
}

/// `value` as JSON with object keys sorted, whatever order the map keeps.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::from(key.as_str()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// True when `If-None-Match` lists `tag` (weak comparison, as RFC 9110 asks for this header).
fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t.strip_prefix("W/").unwrap_or(t) == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": [1, {"z": true, "a": null}], "a": "x\"y"});
        let mut out = Vec::new();
        write_canonical(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"x\"y","b":[1,{"a":null,"z":true}]}"#
        );
    }

    #[test]
    fn if_none_match_accepts_lists_and_weak_tags() {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("\"a\", W/\"3-ff\""));
        assert!(if_none_match(&headers, "\"3-ff\""));
        assert!(!if_none_match(&headers, "\"3-fe\""));
    }

    #[test]
    fn empty_or_missing_context_is_empty() {
        let limits = Limits::default();
        assert!(parse_context(b"", &limits).unwrap().is_empty());
        assert!(parse_context(b" {} ", &limits).unwrap().is_empty());
        assert!(
            parse_context(b"{\"context\": null}", &limits)
                .unwrap()
                .is_empty()
        );
        let err = parse_context(b"{\"context\": 1}", &limits).unwrap_err();
        assert!(err.contains("must be a JSON object"), "{err}");
        let err = parse_context(b"{nope", &limits).unwrap_err();
        assert!(err.contains("line 1, column 2"), "{err}");
    }
}
