//! `/v1/deliveries` and `/v1/replay`: list and read deliveries, schedule them again.
//!
//! A replay keeps the event, so receivers see the same `webhook-id` and can dedupe;
//! it wakes the dispatcher so the work goes out now rather than at its next poll.

use axum::{extract::State, http::StatusCode, Json};
use hookrelay_store::model::{
    BulkReplay, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::{ApiError, OrNotFound},
    extract::{ApiJson, ApiQuery, PathId},
    params::{self, Listing},
    ApiState,
};

/// `GET /v1/deliveries?subscription_id=&status=&event_type=&since=&until=&limit=&cursor=`;
/// `since` is inclusive and `until` exclusive, on the delivery's `created_at`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    subscription_id: Option<String>,
    status: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryPage {
    data: Vec<Delivery>,
    next_cursor: Option<String>,
}

/// `POST /v1/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayRequest {
    subscription_id: String,
    /// Default `failed`.
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    event_type: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Replayed {
    replayed: u64,
}

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
