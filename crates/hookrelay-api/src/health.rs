//! The probes: `/healthz` (the process answers) and `/readyz` (the store answers,
//! every source captures (DESIGN §1.3), and no task of the process, the dispatcher or
//! a source's supervisor, has ended).
//!
//! The API never calls a source: the binary hands it a [`SourcesReadiness`], each
//! source's live status (`hookrelay_core::status`), which it only reads, so this crate
//! does not depend on `hookrelay-sources`.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use hookrelay_core::status::{SourceSnapshot, SourceStatus};

use crate::{ApiError, ApiState};

/// Every source's live status in this process, read whole on each request.
#[derive(Clone, Default)]
pub struct SourcesReadiness(Arc<[SourceStatus]>);

impl SourcesReadiness {
    pub fn new(statuses: Vec<SourceStatus>) -> Self {
        Self(statuses.into())
    }

    /// Every source, in config order.
    pub fn all(&self) -> Vec<SourceSnapshot> {
        self.0.iter().map(SourceStatus::snapshot).collect()
    }

    /// The sources not capturing yet.
    pub fn not_ready(&self) -> Vec<SourceSnapshot> {
        self.all().into_iter().filter(|s| !s.is_ready()).collect()
    }
}

/// `/readyz`'s 503 while sources set up: a problem document that also names them.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourcesNotReady {
    /// `urn:hookrelay:problem:sources-not-ready`.
    #[schema(value_type = String)]
    r#type: &'static str,
    #[schema(value_type = String)]
    title: &'static str,
    status: u16,
    detail: String,
    /// The sources not capturing yet; their errors are in `/v1/sources`.
    sources: Vec<WaitingSource>,
}

/// `/readyz`'s 503 when a task of the process (the dispatcher, a source's supervisor,
/// a listener) ended unexpectedly: the process is stopping.
#[derive(Debug, Serialize, ToSchema)]
pub struct TasksEnded {
    /// `urn:hookrelay:problem:tasks-ended`.
    #[schema(value_type = String)]
    r#type: &'static str,
    #[schema(value_type = String)]
    title: &'static str,
    status: u16,
    detail: String,
    /// The tasks that ended (`dispatcher`, `source <name>`, `retention`, `admin API`,
    /// `health listener`).
    tasks: Vec<String>,
}

/// A source `/readyz` waits for.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingSource {
    name: String,
    /// `connecting`, `standby`, `error` or `stopped`.
    state: String,
    /// Always false here.
    ready: bool,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    tag = "probes",
    responses(
        (status = 200, description = "Alive", body = Object, example = json!({"status": "ok"})),
    ),
)]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers and every source has begun capturing, so a change
/// committed after a 200 is never missed. Otherwise 503 naming the sources still
/// setting up (their errors are in the log and `/v1/sources`, not in this
/// unauthenticated answer).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "getReadiness",
    tag = "probes",
    responses(
        (status = 200, description = "Ready", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "Store unreachable (a `Problem`), a task of the process ended (a `TasksEnded`, naming it), or sources not capturing yet (a `SourcesNotReady`, naming them)", content_type = "application/problem+json", body = SourcesNotReady),
    ),
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    if let Err(e) = state.store.ping().await {
        // Whatever the cause, not ready; the problem body never carries it.
        return ApiError::Unavailable(e).into_response();
    }
    let ended = state.tasks.ended_tasks();
    if !ended.is_empty() {
        // The process is about to exit (see the binary's `watch`): say which task.
        let names: Vec<&str> = ended.iter().map(|(name, _)| name.as_str()).collect();
        return problem_503(&TasksEnded {
            r#type: "urn:hookrelay:problem:tasks-ended",
            title: "A task of this process ended",
            status: 503,
            detail: format!(
                "ended unexpectedly: {}; the process is stopping",
                names.join(", ")
            ),
            tasks: names.iter().map(|n| (*n).to_owned()).collect(),
        });
    }
    let waiting = state.sources.not_ready();
    if waiting.is_empty() {
        return Json(json!({ "status": "ready" })).into_response();
    }
    let named: Vec<String> = waiting
        .iter()
        .map(|s| format!("{} ({})", s.name, s.state.as_str()))
        .collect();
    let body = SourcesNotReady {
        r#type: "urn:hookrelay:problem:sources-not-ready",
        title: "Sources not capturing yet",
        status: 503,
        detail: format!("sources still setting up: {}", named.join(", ")),
        sources: waiting
            .into_iter()
            .map(|s| WaitingSource {
                ready: s.is_ready(),
                name: s.name,
                state: s.state.as_str().to_owned(),
            })
            .collect(),
    };
    problem_503(&body)
}

/// A 503 problem document that asks to be retried in a second.
fn problem_503(body: &impl Serialize) -> Response {
    let body = match serde_json::to_string(body) {
        Ok(body) => body,
        Err(e) => return ApiError::Internal(Box::new(e)).into_response(),
    };
    let mut res = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}
