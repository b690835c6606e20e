//! `/v1/subscriptions/{id}/backfill` and `/v1/backfills`: start, watch and cancel a
//! subscription's backfill (DESIGN §1.8). The API only records the request; the
//! source's leader reads it from the store and commits its progress there.

use axum::{extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use hookrelay_core::catalog::SubscriptionFilters;
use hookrelay_store::{model::Subscription, Backfill, Cancelled};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, OrNotFound, Problem},
    extract::{ApiQuery, OptionalJson, PathId},
    ApiState,
};

/// A backfill request; both fields optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBackfill {
    /// Watched tables to read (`schema.table` as configured); absent: every watched
    /// table of the source whose `<table>.read` events the subscription's filters match.
    #[schema(example = json!(["public.orders"]))]
    tables: Option<Vec<String>>,
    /// The source to read; needed only when the tables could come from several.
    source: Option<String>,
}

/// A backfill and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillView {
    #[schema(example = "bf_01JD5Z8K1T4W2M3N9QJ6V7X8Y0")]
    id: String,
    subscription_id: String,
    source: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    #[schema(example = "running")]
    state: String,
    /// The tables read, in order.
    tables: Vec<String>,
    /// How many of `tables` have been read to their end.
    tables_done: i32,
    /// Rows sent as `read` events so far.
    rows: i64,
    /// Why it failed.
    error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

impl From<Backfill> for BackfillView {
    fn from(b: Backfill) -> Self {
        Self {
            state: b.state.as_str().to_owned(),
            id: b.id,
            subscription_id: b.subscription_id,
            source: b.source,
            tables: b.tables,
            tables_done: b.tables_done,
            rows: b.rows,
            error: b.error,
            created_at: b.created_at,
            updated_at: b.updated_at,
            ended_at: b.ended_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillList {
    data: Vec<BackfillView>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this subscription's backfills.
    subscription_id: Option<String>,
}

/// Checks a request against the configuration and the subscription, and records it.
pub(crate) async fn start(
    state: &ApiState,
    sub: &Subscription,
    tables: Option<&[String]>,
    source: Option<&str>,
) -> Result<Backfill, ApiError> {
    let filters = SubscriptionFilters {
        sources: sub.sources.as_deref(),
        event_types: sub.event_types.as_deref(),
    };
    let plan = plan(state, filters, tables, source)?;
    record(state, &sub.id, &plan).await
}

/// Records a planned backfill.
pub(crate) async fn record(
    state: &ApiState,
    subscription_id: &str,
    plan: &hookrelay_core::catalog::BackfillPlan,
) -> Result<Backfill, ApiError> {
    state
        .store
        .create_backfill(subscription_id, &plan.source, &plan.tables)
        .await
        .or_not_found("subscription", subscription_id)
}

/// Which source and tables a backfill would read; a 422 naming the field otherwise.
pub(crate) fn plan(
    state: &ApiState,
    filters: SubscriptionFilters<'_>,
    tables: Option<&[String]>,
    source: Option<&str>,
) -> Result<hookrelay_core::catalog::BackfillPlan, ApiError> {
    state
        .catalog
        .backfill_plan(source, tables, filters)
        .map_err(|r| ApiError::unprocessable(r.field, r.reason))
}

/// Start a backfill: each current row of the tables becomes one `read` event, sent to
/// this subscription only, consistent with the changes that keep flowing.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/backfill",
    operation_id = "startBackfill",
    tag = "backfills",
    request_body(content = StartBackfill, description = "Optional; an empty body reads every table the subscription matches"),
    params(("id" = String, Path, description = "Subscription id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Started", body = BackfillView),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such subscription", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "An unknown table or source, a source kind without backfill, or tables the subscription cannot match (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn create(
    State(state): State<ApiState>,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<StartBackfill>,
) -> Result<(StatusCode, Json<BackfillView>), ApiError> {
    let sub = state
        .store
        .get_subscription(&id)
        .await
        .or_not_found("subscription", &id)?;
    let backfill = start(&state, &sub, body.tables.as_deref(), body.source.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(backfill.into())))
}

/// One backfill and its progress.
#[utoipa::path(
    get,
    path = "/backfills/{id}",
    operation_id = "getBackfill",
    tag = "backfills",
    params(("id" = String, Path, description = "Backfill id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The backfill", body = BackfillView),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such backfill", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<BackfillView>, ApiError> {
    match state.store.backfill(&id).await? {
        Some(b) => Ok(Json(b.into())),
        None => Err(ApiError::NotFound {
            what: "backfill",
            id,
        }),
    }
}

/// Backfills, newest first (at most 1,000).
#[utoipa::path(
    get,
    path = "/backfills",
    operation_id = "listBackfills",
    tag = "backfills",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Backfills, newest first", body = BackfillList),
        (status = 400, description = "Unreadable parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<BackfillList>, ApiError> {
    let data = state
        .store
        .list_backfills(q.subscription_id.as_deref())
        .await?
        .into_iter()
        .map(BackfillView::from)
        .collect();
    Ok(Json(BackfillList { data }))
}

/// Cancel a running backfill: no chunk is sent after the one being read.
#[utoipa::path(
    delete,
    path = "/backfills/{id}",
    operation_id = "cancelBackfill",
    tag = "backfills",
    params(("id" = String, Path, description = "Backfill id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = BackfillView),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such backfill", content_type = "application/problem+json", body = Problem),
        (status = 409, description = "It has ended already", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn cancel(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<BackfillView>, ApiError> {
    match state.store.cancel_backfill(&id).await? {
        Some(Cancelled::Now(b)) => Ok(Json(b.into())),
        Some(Cancelled::AlreadyEnded(s)) => Err(ApiError::Conflict(format!(
            "backfill {id} has ended ({}); only a running one can be cancelled",
            s.as_str()
        ))),
        None => Err(ApiError::NotFound {
            what: "backfill",
            id,
        }),
    }
}
