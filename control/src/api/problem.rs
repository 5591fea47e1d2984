//! Errors as `application/problem+json` (RFC 9457), everywhere.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use vexil_engine::ValidationError;

use crate::auth::AuthError;
use crate::store::StoreError;

/// An API error: status, short title, what happened, and for invalid definitions every problem with
/// its JSON path.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary of the status.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// For invalid definitions, and for a `409` refusing to remove what is still used: each problem
    /// (that the change would cause) with its JSON path.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub errors: Option<Vec<ValidationError>>,
    /// For 412: the current `ETag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_etag: Option<String>,
    /// For 429: seconds until the client may try again (sent as `Retry-After`, not in the body).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
            current_etag: None,
            retry_after: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 403 Forbidden.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Problem::not_found(format!("{what} not found")),
            StoreError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, detail),
            StoreError::PreconditionFailed { current } => Problem {
                current_etag: Some(super::etag(current)),
                ..Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    "If-Match does not name the current version; read it again and retry",
                )
            },
            StoreError::PreconditionRequired(what) => Problem::new(
                StatusCode::PRECONDITION_REQUIRED,
                format!("replacing an existing {what} requires If-Match with the ETag of a read"),
            ),
            StoreError::Invalid(errors) => Problem {
                errors: Some(errors.0),
                ..Problem::bad_request("the definition is invalid")
            },
            StoreError::InUse { detail, errors } => Problem {
                errors: Some(errors.0),
                ..Problem::new(StatusCode::CONFLICT, detail)
            },
            StoreError::OverLimit { detail, errors } => Problem {
                errors: Some(errors.0),
                ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
            },
            StoreError::SchemaViolation { detail, errors } => Problem {
                errors: Some(errors.0),
                ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
            },
            StoreError::Unprocessable { detail, errors } => Problem {
                errors: Some(errors.0),
                ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
            },
            StoreError::BadRequest(detail) => Problem::bad_request(detail),
            StoreError::Unavailable(e) => {
                tracing::error!(error = %e, "store unavailable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable")
            }
            StoreError::Internal(e) => {
                tracing::error!(error = %e, "store error");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal store error")
            }
        }
    }
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(e) => e.into(),
            AuthError::RateLimited { retry_after } => Problem {
                retry_after: Some(
                    u32::try_from(crate::auth::retry_secs(retry_after)).unwrap_or(u32::MAX),
                ),
                ..Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    AuthError::RateLimited { retry_after }.to_string(),
                )
            },
            other => Problem::new(StatusCode::UNAUTHORIZED, other.to_string()),
        }
    }
}
