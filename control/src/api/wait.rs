//! `?wait=DURATION` on every write: the answer comes once every connected sidecar of the
//! environment, on any replica, has acknowledged the write's revision (read from the fleet's
//! sessions in the store), or when the duration ends; its body gains `sync` (a
//! [`SyncReport`]).

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::{AppState, Problem, with_etag};
use crate::sync::fleet::{self, SyncReport};

/// The longest `?wait=`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Writes waiting at once on one replica; one more answers at once, with `sync.error`.
pub const MAX_WAITERS: usize = 256;

/// The `?wait=` of a write: how long to wait for the fleet, if at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wait(pub Option<Duration>);

impl<S: Send + Sync> FromRequestParts<S> for Wait {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let mut found = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name != "wait" {
                continue;
            }
            if found.is_some() {
                return Err(Problem::bad_request("wait: given more than once"));
            }
            found =
                Some(parse_wait(value).map_err(|e| Problem::bad_request(format!("wait: {e}")))?);
        }
        Ok(Wait(found))
    }
}

/// A duration like `5s`, `500ms` or `1m` (a whole number and a unit), at most [`MAX_WAIT`].
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| {
        format!(
            "expected a duration like 5s, 500ms or 1m (a whole number and ms, s or m), got {text:?}"
        )
    })?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => {
            return Err(format!(
                "expected a duration like 5s, 500ms or 1m (unit ms, s or m), got {text:?}"
            ));
        }
    };
    if duration > MAX_WAIT {
        return Err(format!(
            "{text} is longer than the limit of {}s",
            MAX_WAIT.as_secs()
        ));
    }
    Ok(duration)
}

/// The answer of a write of `environment` that made `revision`: `body` with `status` (and the
/// `ETag` of `etag`), after waiting for the fleet when asked, with `sync` added to the body then.
pub(super) async fn answer(
    state: &AppState,
    wait: Wait,
    environment: &str,
    revision: i64,
    status: StatusCode,
    etag: Option<i64>,
    body: impl Serialize,
) -> Result<Response, Problem> {
    let Some(limit) = wait.0 else {
        return Ok(match etag {
            Some(version) => with_etag(version, status, body),
            None if status == StatusCode::NO_CONTENT => status.into_response(),
            None => (status, axum::Json(body)).into_response(),
        });
    };
    let report = wait_for_fleet(state, environment, revision, limit).await;
    let mut value = serde_json::to_value(body).unwrap_or(Value::Null);
    let object = match &mut value {
        Value::Object(object) => object,
        _ => {
            value = serde_json::json!({"revision": revision});
            value.as_object_mut().expect("an object")
        }
    };
    object.insert(
        "sync".into(),
        serde_json::to_value(&report).unwrap_or(Value::Null),
    );
    // A write that answers 204 without waiting has a body to show now.
    let status = if status == StatusCode::NO_CONTENT {
        StatusCode::OK
    } else {
        status
    };
    Ok(match etag {
        Some(version) => with_etag(version, status, value),
        None => (status, axum::Json(value)).into_response(),
    })
}

/// Waits for the fleet (at most [`MAX_WAITERS`] writes at once per replica). The write has
/// committed: a wait that cannot be done (too many waiting, the store unreadable) is reported in
/// `sync.error`, never as the write's failure.
async fn wait_for_fleet(
    state: &AppState,
    environment: &str,
    revision: i64,
    limit: Duration,
) -> SyncReport {
    let not_waited = |error: String| SyncReport {
        connected: 0,
        acked: 0,
        lagging: Vec::new(),
        timed_out: false,
        error: Some(error),
    };
    let Ok(_permit) = state.waiters.try_acquire() else {
        return not_waited(format!(
            "not waited: {MAX_WAITERS} writes are waiting for sidecars already; read \
             /api/v1/sidecars instead"
        ));
    };
    match fleet::wait_for_acks(
        &state.store,
        environment,
        revision,
        limit,
        state.config.fleet_stale_after,
    )
    .await
    {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(error = %e, environment, revision, "could not read the fleet's acknowledgements");
            not_waited(format!("not waited: the fleet could not be read: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_a_unit_and_a_limit() {
        assert_eq!(parse_wait("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_wait("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_wait("0s"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "1.5s", "-1s", "5 s", "5h", "2m", "61s"] {
            let e = parse_wait(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) || e.contains("limit"),
                "{bad}: {e}"
            );
        }
    }
}
