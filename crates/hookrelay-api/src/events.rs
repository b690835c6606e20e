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
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, OrNotFound, Problem},
    extract::{ApiQuery, PathId},
    params::{self, Listing},
    ApiState,
};

/// `GET /v1/events?source=&event_type=&since=&until=&limit=&cursor=`; `since` is
/// inclusive and `until` exclusive, on `committed_at`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this source's events.
    source: Option<String>,
    /// Only this event type, e.g. `orders.update`.
    event_type: Option<String>,
    /// Committed at or after (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// Committed before (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
    /// Page size, 1 to 1000, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// A previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A page of events, newest first; `next_cursor` is null on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// Each event's envelope, exactly as its webhooks carry it (DESIGN §1.3).
    #[schema(value_type = Vec<EventEnvelope>)]
    data: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
}

/// The envelope of DESIGN §1.3, for the spec only: responses carry the stored bytes,
/// never this type. The API tests read real envelopes through it (unknown fields
/// refused), so a field added to the envelope and not here fails them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema: only its shape is used
pub struct EventEnvelope {
    /// `evt_…`, the same for every attempt and replay (the `webhook-id` header).
    id: String,
    /// `<table>.<op>`, e.g. `orders.update`.
    r#type: String,
    source: EventSource,
    op: EventOp,
    /// The row's primary key (`{"_id": …}` for MongoDB); null for `truncate`.
    #[schema(value_type = Option<Object>)]
    key: serde_json::Value,
    /// The row before the change; null for inserts (and MongoDB without pre-images).
    #[schema(value_type = Option<Object>)]
    before: serde_json::Value,
    /// The row after the change; null for deletes.
    #[schema(value_type = Option<Object>)]
    after: serde_json::Value,
    txn: EventTxn,
    /// The source's commit time (RFC 3339, UTC, milliseconds).
    committed_at: chrono::DateTime<chrono::Utc>,
    /// When hookrelay read the change.
    captured_at: chrono::DateTime<chrono::Utc>,
}

/// `source` in the envelope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema: only its shape is used
pub struct EventSource {
    /// The configured source name.
    name: String,
    /// `postgres`, `mysql` or `mongodb`.
    kind: String,
    database: String,
    /// The schema (MongoDB: the database).
    schema: String,
    /// The table (MongoDB: the collection).
    table: String,
    /// Opaque; where the change sits in the source.
    position: String,
}

/// `op` in the envelope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a schema: only its shape is used
pub enum EventOp {
    Insert,
    Update,
    Delete,
    /// PostgreSQL `TRUNCATE`: no key, no images.
    Truncate,
}

/// `txn` in the envelope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema: only its shape is used
pub struct EventTxn {
    /// Groups the changes of one source transaction.
    id: String,
    /// The change's index within it, in commit order.
    seq: u32,
}

/// Stored events, newest first.
#[utoipa::path(
    get,
    path = "/events",
    operation_id = "listEvents",
    tag = "events",
    params(EventQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
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

/// One event: the exact envelope its webhooks carry.
#[utoipa::path(
    get,
    path = "/events/{id}",
    operation_id = "getEvent",
    tag = "events",
    params(("id" = String, Path, description = "Event id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The event envelope (DESIGN §1.3)", content_type = "application/json", body = EventEnvelope),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such event", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get(State(state): State<ApiState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let event = state
        .store
        .get_event(&id)
        .await
        .or_not_found("event", &id)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], event.body).into_response())
}
