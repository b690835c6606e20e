//! `/v1/events`: stored events, newest first. An event is answered as the exact
//! envelope its webhooks carry (the stored bytes, not a re-encoding), so what an
//! operator reads here is what receivers got and signed over.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    Json,
};
use hookrelay_store::model::EventFilter;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    error::{ApiError, OrNotFound},
    extract::{ApiQuery, PathId},
    params::{self, Listing},
    ApiState,
};

/// `GET /v1/events?source=&event_type=&since=&until=&limit=&cursor=`; `since` is
/// inclusive and `until` exclusive, on `committed_at`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    source: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EventPage {
    data: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
}

pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let filter = EventFilter {
        limit: params::limit(q.limit.as_deref())?,
        since: params::query_time("since", q.since.as_deref())?,
        until: params::query_time("until", q.until.as_deref())?,
        before_seq: params::query_cursor(Listing::Events, q.cursor.as_deref())?,
        source: q.source,
        event_type: q.event_type,
    };
    let page = state.store.list_events(&filter).await?;
    let data = page
        .items
        .into_iter()
        .map(|e| {
            RawValue::from_string(e.body)
                .map_err(|err| ApiError::Internal(format!("event {} body: {err}", e.id).into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(EventPage {
        data,
        next_cursor: page
            .next
            .map(|seq| params::encode_cursor(Listing::Events, seq)),
    }))
}

pub async fn get(State(state): State<ApiState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let event = state
        .store
        .get_event(&id)
        .await
        .or_not_found("event", &id)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], event.body).into_response())
}
