//! `POST /v1/subscriptions/{id}/test`: a synthetic `hookrelay.test` event sent to the
//! endpoint now, signed like any other, and the attempt's result in the answer.
//!
//! The API does not send anything itself: the binary hands it a [`TestSender`] (the
//! dispatcher's one HTTP client and its attempt logic), so a test send follows the
//! same address guard, timeout, signing and 4 KiB body cap as a real delivery. It is
//! not stored: no event, delivery or attempt row.

use std::{future::Future, pin::Pin, sync::Arc};

use axum::{extract::State, Json};
use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use hookrelay_store::{ClaimedDelivery, Outcome, OutcomeStatus};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::{
    error::{ApiError, OrNotFound, Problem},
    extract::PathId,
    ApiState,
};

type SendFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Sends one prepared delivery and says what happened.
#[derive(Clone)]
pub struct TestSender(Arc<dyn Fn(ClaimedDelivery) -> SendFuture + Send + Sync>);

impl TestSender {
    pub fn new<F, Fut>(send: F) -> Self
    where
        F: Fn(ClaimedDelivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Self(Arc::new(move |d| Box::pin(send(d))))
    }
}

impl Default for TestSender {
    /// Without a dispatcher (API-only tests): every test send fails, saying why.
    fn default() -> Self {
        Self::new(|d: ClaimedDelivery| async move {
            Outcome {
                delivery_id: d.delivery_id,
                attempt: d.attempt,
                subscription_id: d.subscription_id,
                started_at: Utc::now(),
                duration_ms: 0,
                status_code: None,
                error: Some("no dispatcher in this process".into()),
                response_body: None,
                status: OutcomeStatus::Failed,
                run: None,
            }
        })
    }
}

/// The test attempt: what the endpoint answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The webhook-id the test event carried.
    pub event_id: String,
    /// The endpoint answered 2xx.
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// The first 4 KiB of the answer as text (invalid UTF-8 replaced) and exactly.
    pub response_body: Option<String>,
    pub response_body_base64: Option<String>,
}

/// Send a signed synthetic `hookrelay.test` event to the endpoint now.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/test",
    operation_id = "testSubscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The attempt (sent or not: see `succeeded`)", body = TestResult),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such subscription", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn send(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<TestResult>, ApiError> {
    let event_id = format!("evt_{}", ulid::Ulid::new());
    let body = json!({
        "id": event_id,
        "type": "hookrelay.test",
        "op": "test",
        "data": {
            "subscription_id": id,
            "message": "a test event sent from the hookrelay admin API",
        },
        "captured_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    })
    .to_string();
    let delivery = state
        .store
        .test_delivery(&id, &event_id, &body)
        .await
        .or_not_found("subscription", &id)?;
    let outcome = (state.test_sender.0)(delivery).await;
    Ok(Json(TestResult {
        event_id,
        succeeded: outcome.status == OutcomeStatus::Succeeded,
        status_code: outcome.status_code,
        duration_ms: outcome.duration_ms,
        error: outcome.error,
        response_body: outcome
            .response_body
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        response_body_base64: outcome
            .response_body
            .as_deref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
    }))
}
