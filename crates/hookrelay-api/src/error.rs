//! The one error type of the admin API, answered as `application/problem+json`
//! (RFC 9457) `{type, title, status, detail}`, plus `field` when the input is at fault.
//!
//! Which status for which fault:
//! - 400: the request cannot be read: malformed JSON, a wrong JSON type, an unknown or
//!   missing field, and any bad query-string or path parameter.
//! - 422: a well-formed body whose values are unacceptable (a URL that is not http(s),
//!   a private address, a bad glob, a reserved header, ...).
//! - 401, 404, 405, 409, 413 as HTTP means them.
//! - 422 also when the store refuses a value the checks let through (SQLSTATE class
//!   22/23); the cause is logged with its SQLSTATE.
//! - 503 when the store is unreachable (worth retrying), 500 for anything else; both log
//!   the cause and never put it in the body.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use hookrelay_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The problem document every failure is answered with (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:hookrelay:problem:<slug>`, e.g. `urn:hookrelay:problem:not-found`.
    #[serde(rename = "type")]
    #[schema(example = "urn:hookrelay:problem:invalid-value")]
    pub kind: String,
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    pub detail: String,
    /// The request field at fault (400 and 422 only); `body` for malformed JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Every way an admin API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON body: {detail}")]
    MalformedJson { detail: String },
    /// A request that cannot be read: wrong JSON type, unknown field, bad parameter.
    #[error("invalid `{field}`: {detail}")]
    BadRequest { field: String, detail: String },
    /// Well-formed, but a value is not acceptable.
    #[error("unacceptable `{field}`: {detail}")]
    Unprocessable { field: String, detail: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(#[source] StoreError),
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn unprocessable(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson { .. } | ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `(type slug, title)` of the problem document.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::MalformedJson { .. } => ("malformed-json", "Malformed JSON body"),
            ApiError::BadRequest { .. } => ("invalid-request", "Invalid request"),
            ApiError::Unprocessable { .. } => ("invalid-value", "Unacceptable value"),
            ApiError::Unauthorized => ("unauthorized", "Unauthorized"),
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => ("not-found", "Not found"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::PayloadTooLarge => ("payload-too-large", "Request body too large"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::Unavailable(_) => ("unavailable", "Store unavailable"),
            ApiError::Internal(_) => ("internal", "Internal server error"),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::MalformedJson { .. } => Some("body"),
            ApiError::BadRequest { field, .. } | ApiError::Unprocessable { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }

    /// What the client is told: the message for its own faults, a fixed text for ours.
    fn detail(&self) -> String {
        match self {
            ApiError::Unavailable(_) => {
                "the store is unreachable right now; try again shortly".to_owned()
            }
            ApiError::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        }
    }
}

/// A store error with no better mapping: an unexpected `NotFound` (the handler maps
/// the expected ones with [`OrNotFound`]), a conflict, or a failure.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound {
                what: "resource",
                id: String::new(),
            },
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            e @ StoreError::Unreadable(_) => ApiError::Conflict(e.to_string()),
            // Input checks should refuse such values first; this keeps a value they
            // missed a 4xx, with the cause (SQLSTATE and message) in the log only.
            e if e.is_bad_data() => {
                tracing::warn!(error = %e, "admin API: the store refused a value");
                ApiError::unprocessable(
                    "request",
                    "a value in this request cannot be stored (a NUL character, invalid text or a number out of range)",
                )
            }
            e if e.is_transient() => ApiError::Unavailable(e),
            e => ApiError::Internal(Box::new(e)),
        }
    }
}

/// Maps [`StoreError::NotFound`] to a 404 that names what was looked for.
pub trait OrNotFound<T> {
    fn or_not_found(self, what: &'static str, id: impl ToString) -> Result<T, ApiError>;
}

impl<T> OrNotFound<T> for Result<T, StoreError> {
    fn or_not_found(self, what: &'static str, id: impl ToString) -> Result<T, ApiError> {
        self.map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound {
                what,
                id: id.to_string(),
            },
            e => ApiError::from(e),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "admin API request failed")
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "admin API: store unavailable")
            }
            _ => {}
        }
        let status = self.status();
        let (slug, title) = self.kind();
        let problem = Problem {
            kind: format!("urn:hookrelay:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            field: self.field().map(str::to_owned),
        };
        let mut res = (status, Json(problem)).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}
