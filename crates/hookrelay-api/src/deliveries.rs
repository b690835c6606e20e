//! `/v1/deliveries` and `/v1/replay`: list and read deliveries, schedule them again.
//!
//! A replay keeps the event, so receivers see the same `webhook-id` and can dedupe;
//! it wakes the dispatcher so the work goes out now rather than at its next poll.

use axum::{extract::State, http::StatusCode, Json};
use hookrelay_store::model::{
    BulkReplay, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, OrNotFound, Problem},
    extract::{ApiJson, ApiQuery, PathId},
    params::{self, Listing},
    ApiState,
};

/// `GET /v1/deliveries?subscription_id=&event_id=&status=&event_type=&since=&until=&limit=&cursor=`;
/// `since` is inclusive and `until` exclusive, on the delivery's `created_at`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this subscription's deliveries.
    subscription_id: Option<String>,
    /// Only this event's deliveries (`evt_…`): where one event went.
    event_id: Option<String>,
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// Only this event type, e.g. `orders.update`.
    event_type: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
    /// Page size, 1 to 1000, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// A previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A page of deliveries, newest first; `next_cursor` is null on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    data: Vec<Delivery>,
    next_cursor: Option<String>,
}

/// `POST /v1/replay`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayRequest {
    subscription_id: String,
    /// Default `failed`.
    #[schema(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// Created at or after (RFC 3339).
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// Created before (RFC 3339).
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
    event_type: Option<String>,
}

/// How many deliveries were scheduled again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    replayed: u64,
}

/// Deliveries, newest first.
#[utoipa::path(
    get,
    path = "/deliveries",
    operation_id = "listDeliveries",
    tag = "deliveries",
    params(DeliveryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let filter = DeliveryFilter {
        status: params::query_status(q.status.as_deref())?,
        limit: params::limit(q.limit.as_deref())?,
        since: params::query_time("since", q.since.as_deref())?,
        until: params::query_time("until", q.until.as_deref())?,
        before_id: params::query_cursor(Listing::Deliveries, q.cursor.as_deref())?,
        subscription_id: q.subscription_id,
        event_id: q.event_id,
        event_type: q.event_type,
    };
    let page = state.store.list_deliveries(&filter).await?;
    Ok(Json(DeliveryPage {
        data: page.items,
        next_cursor: page
            .next
            .map(|id| params::encode_cursor(Listing::Deliveries, id)),
    }))
}

/// One delivery with every attempt.
#[utoipa::path(
    get,
    path = "/deliveries/{id}",
    operation_id = "getDelivery",
    tag = "deliveries",
    params(("id" = i64, Path, description = "Delivery id", minimum = 1)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The delivery and its attempts", body = DeliveryDetail),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such delivery", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get(
    State(state): State<ApiState>,
    id: PathId,
) -> Result<Json<DeliveryDetail>, ApiError> {
    let id = id.delivery_id()?;
    let delivery = state
        .store
        .get_delivery(id)
        .await
        .or_not_found("delivery", id)?;
    Ok(Json(delivery))
}

/// Schedule a delivery again now, same event id.
#[utoipa::path(
    post,
    path = "/deliveries/{id}/replay",
    operation_id = "replayDelivery",
    tag = "deliveries",
    params(("id" = i64, Path, description = "Delivery id", minimum = 1)),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Scheduled", body = Delivery),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such delivery", content_type = "application/problem+json", body = Problem),
        (status = 409, description = "The subscription is disabled; enable it before replaying", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn replay_one(
    State(state): State<ApiState>,
    id: PathId,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    let id = id.delivery_id()?;
    let delivery = state
        .store
        .replay_delivery(id)
        .await
        .or_not_found("delivery", id)?;
    state.dispatch_signal.rescan();
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

/// Schedule a subscription's matching deliveries again.
#[utoipa::path(
    post,
    path = "/replay",
    operation_id = "replayDeliveries",
    tag = "deliveries",
    request_body = BulkReplayRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Scheduled", body = Replayed),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such subscription", content_type = "application/problem+json", body = Problem),
        (status = 409, description = "The subscription is disabled; enable it before replaying", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "Body over 256 KiB", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "A value is unacceptable (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn replay_bulk(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<BulkReplayRequest>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    let in_body = |field: &'static str| move |e: String| ApiError::unprocessable(field, e);
    let req = BulkReplay {
        status: match &body.status {
            Some(s) => params::status(s).map_err(in_body("status"))?,
            None => DeliveryStatus::Failed,
        },
        since: body
            .since
            .as_deref()
            .map(params::timestamp)
            .transpose()
            .map_err(in_body("since"))?,
        until: body
            .until
            .as_deref()
            .map(params::timestamp)
            .transpose()
            .map_err(in_body("until"))?,
        event_type: body.event_type,
        subscription_id: body.subscription_id,
    };
    let replayed = state
        .store
        .replay_deliveries(&req)
        .await
        .or_not_found("subscription", &req.subscription_id)?;
    if replayed > 0 {
        state.dispatch_signal.rescan();
    }
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed })))
}
