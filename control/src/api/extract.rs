//! Request extractors that fail with problem+json: the caller, JSON bodies with size limits and
//! field paths in their errors, `If-Match`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use super::{AppState, Problem};
use crate::auth::{AuthError, Permission, Principal};
use crate::store::{Actor, Precondition};

/// The authenticated caller, with the request id for the audit log.
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// `x-request-id`.
    pub request_id: Option<String>,
}

impl Caller {
    /// Requires permission `p`, and access to `env` when given.
    pub fn require(&self, p: Permission, env: Option<&str>) -> Result<(), Problem> {
        if !self.principal.role.grants(p) {
            return Err(Problem::forbidden(format!(
                "role {} may not do this",
                self.principal.role.as_str()
            )));
        }
        match env {
            Some(env) if !self.principal.allows_environment(env) => Err(Problem::forbidden(
                format!("this token is not valid for environment {env:?}"),
            )),
            // Administration of no one environment (creating environments, managing tokens)
            // concerns all of them: a token limited to some may not, or it could mint itself an
            // unlimited token.
            None if p == Permission::Admin && self.principal.is_limited() => {
                Err(Problem::forbidden(
                    "this token is limited to some environments; this action concerns all of them",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The caller as the audit log names it.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.principal.name.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Caller::authenticate(parts, state, header).await
    }
}

impl Caller {
    /// The caller of the request `parts` by the `Authorization` value `authorization` (its own
    /// header, or a bearer token the request carried otherwise, e.g. in a WebSocket
    /// subprotocol).
    pub(crate) async fn authenticate(
        parts: &Parts,
        state: &AppState,
        authorization: Option<&str>,
    ) -> Result<Caller, Problem> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let principal = match state.auth.authenticate_from(peer, authorization).await {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, AuthError::RateLimited { .. }) {
                    state.metrics.auth_rate_limited("api");
                }
                return Err(e.into());
            }
        };
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        Ok(Caller {
            principal,
            request_id,
        })
    }
}

/// A JSON body of at most the configured request size (1 MiB by default).
pub struct Json<T>(pub T);

/// A JSON body of at most the configured import size (32 MiB by default), for whole flag sets.
pub struct LargeJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        read_json(req, state.config.max_body_bytes, state.config.read_timeout)
            .await
            .map(Json)
    }
}

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for LargeJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        read_json(
            req,
            state.config.max_import_bytes,
            state.config.read_timeout,
        )
        .await
        .map(LargeJson)
    }
}

async fn read_json<T: DeserializeOwned>(
    req: Request,
    limit: usize,
    read_timeout: std::time::Duration,
) -> Result<T, Problem> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !(mime.eq_ignore_ascii_case("application/json")
        || mime.to_ascii_lowercase().ends_with("+json"))
    {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected Content-Type: application/json, got {content_type:?}"),
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && declared.is_some_and(|n| n > limit) {
        // Refused before the client sends it.
        return Err(too_large(limit));
    }
    let bytes = read_body_within(req.into_body(), limit, read_timeout).await?;
    decode_json(&bytes)
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {limit} bytes"),
    )
}

/// A request body of at most `limit` bytes that arrives whole within `deadline`: else `408` (a
/// client that stalls, or trickles a byte at a time, holds a connection no longer than that) or
/// `413`.
pub(crate) async fn read_body_within(
    body: axum::body::Body,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Vec<u8>, Problem> {
    tokio::time::timeout(deadline, read_body(body, limit))
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {deadline:?}"),
            )
        })??
        .ok_or_else(|| too_large(limit))
}

/// Decodes a JSON request body as `T`, naming the JSON path of the first problem.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            Problem::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            Problem::bad_request(format!("invalid JSON body at {path}: {inner}"))
        }
    })?;
    // One JSON value and nothing after it but whitespace.
    de.end()
        .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// How much of a too-large body is read on (and dropped) before answering 413.
const DRAIN_MAX: usize = 64 << 20;

/// The body when it holds at most `limit` bytes, `None` when it is larger. A larger body is still
/// read on, and dropped, up to [`DRAIN_MAX`] more bytes: a connection closed with request data left
/// unread is reset, and the client would likely lose the 413 before reading it.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Option<Vec<u8>>, Problem> {
    use axum::body::HttpBody as _;
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| Problem::bad_request(format!("could not read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= limit {
            out.extend_from_slice(&data);
        } else if total > limit.saturating_add(DRAIN_MAX) {
            break;
        }
    }
    Ok((total <= limit).then_some(out))
}

/// The `If-Match` precondition: `*`, or an ETag we issued (`"<version>"`, weak or strong).
pub struct IfMatch(pub Precondition);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(Precondition::None));
        };
        let text = value
            .to_str()
            .map_err(|_| Problem::bad_request("If-Match is not valid text"))?
            .trim();
        if text == "*" {
            return Ok(IfMatch(Precondition::Any));
        }
        let version = text
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse::<i64>()
            .map_err(|_| {
                Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    format!("If-Match {text:?} is not an ETag issued by this server"),
                )
            })?;
        Ok(IfMatch(Precondition::Version(version)))
    }
}

#[cfg(test)]
mod tests {
    use super::decode_json;

    /// A body with data after its JSON value is refused (found by the `admin_bodies` fuzz target:
    /// `{"flags": {}} x` used to be accepted as `{"flags": {}}`); trailing whitespace is fine.
    #[test]
    fn trailing_data_after_the_json_value_is_refused() {
        let e = decode_json::<serde_json::Value>(br#"{"flags": {}} x"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.detail.contains("trailing characters"), "{}", e.detail);
        assert!(decode_json::<serde_json::Value>(b"{\"flags\": {}}\n  ").is_ok());
    }
}
