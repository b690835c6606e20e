//! `/v1/subscriptions`: create, list, read, change, delete, rotate the secret.
//!
//! The secret is shown exactly twice: in the answer to the create that set it and to
//! the rotation that replaced it. Reads, lists and updates never include it.

use std::{collections::BTreeMap, time::Duration};

use axum::{extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use hookrelay_core::{signature::SigningKey, stats};
use hookrelay_store::model::{NewSubscription, OrderingMode, Subscription, SubscriptionChanges};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, OrNotFound, Problem},
    extract::{ApiJson, ApiQuery, OptionalJson, PathId},
    params, validate, ApiState,
};

/// Longest rotation grace period: long enough for any sane roll-out, short enough
/// that an old secret does not stay valid by mistake.
const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A create body; only `url` is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// The endpoint: http(s), not a private address unless allowed.
    #[schema(example = "https://example.com/webhooks")]
    url: String,
    /// Globs over event types (`"orders.*"`, `"*.delete"`); absent = every type.
    event_types: Option<Vec<String>>,
    /// Source names; absent = every source.
    sources: Option<Vec<String>>,
    description: Option<String>,
    /// `whsec_` + base64 of 24 to 64 bytes; generated when absent.
    secret: Option<String>,
    /// Custom headers sent with every delivery.
    headers: Option<BTreeMap<String, String>>,
    /// Default `key`.
    #[schema(value_type = Option<OrderingMode>)]
    ordering: Option<String>,
    /// Default `true`. `false` creates it paused: matching events queue as `pending`
    /// and are sent once it is enabled.
    enabled: Option<bool>,
    /// A CEL expression over the event: the subscription gets an event only when it
    /// is true. Variables: `op`, `source`, `schema`, `table`, `key`, `before`, `after`,
    /// with values as the event carries them (a decimal is a string). An expression
    /// that fails for an event (a missing field, a bad conversion) is false for it.
    #[schema(example = "op == \"update\" && before.status != after.status")]
    filter: Option<String>,
    /// `true` starts a backfill of every watched table the subscription matches
    /// (as `POST /v1/subscriptions/{id}/backfill` with no body); it is in the answer.
    backfill: Option<bool>,
}

/// `?force=true` on a create or change.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// `true` accepts `sources` that are not configured and `event_types` globs that
    /// match nothing the configured sources emit, for a source or table to be added
    /// later; without it they are a 422 naming the entry.
    #[param(value_type = Option<bool>)]
    force: Option<String>,
}

/// A PATCH body: an absent field is left alone; `null` clears the nullable ones
/// (`event_types`, `sources`: every type / source; `description`; `headers`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSubscription {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, required = false)]
    event_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, required = false)]
    sources: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<BTreeMap<String, String>>, required = false)]
    headers: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = OrderingMode, required = false)]
    ordering: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    /// `false` pauses: matching events keep queueing as `pending`, nothing is sent;
    /// `true` resumes and sends them, in order.
    #[schema(value_type = bool, required = false)]
    enabled: Option<Option<bool>>,
    /// A CEL expression (as on create); `null` removes it. Applies to events stored
    /// from then on.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    filter: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing: humantime, e.g. `"24h"`, `"90m"`; at
    /// most 30 days, default 24h.
    #[schema(example = "24h")]
    grace: Option<String>,
}

/// A subscription as the API shows it: what the store holds and its circuit.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    #[serde(flatten)]
    subscription: Subscription,
    circuit: CircuitView,
}

/// The subscription's circuit breaker in this process (each process keeps its own):
/// after 10 failed attempts in a row it opens, and the subscription gets nothing for a
/// cool-down (1 s doubling to 60 s); then it is half-open and the next delivery is a
/// probe, whose success closes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitView {
    state: CircuitState,
    /// Failed attempts in a row since the last success.
    consecutive_failures: u32,
    /// When it opened in this run of failures; null while closed.
    opened_at: Option<DateTime<Utc>>,
    /// When the current cool-down ends; null while closed.
    open_until: Option<DateTime<Utc>>,
}

/// `closed`: deliveries flow; `open`: cooling down, nothing is sent; `half_open`: the
/// next delivery is a probe.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl From<stats::CircuitState> for CircuitState {
    fn from(s: stats::CircuitState) -> Self {
        match s {
            stats::CircuitState::Closed => CircuitState::Closed,
            stats::CircuitState::Open => CircuitState::Open,
            stats::CircuitState::HalfOpen => CircuitState::HalfOpen,
        }
    }
}

impl SubscriptionView {
    fn new(state: &ApiState, subscription: Subscription) -> Self {
        let c = state.dispatch_stats.circuit(&subscription.id);
        Self {
            circuit: CircuitView {
                state: c.state(Utc::now()).into(),
                consecutive_failures: c.consecutive_failures,
                opened_at: c.opened_at,
                open_until: c.open_until,
            },
            subscription,
        }
    }
}

/// A subscription with its secret: the answer to a create.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    subscription: SubscriptionView,
    secret: String,
    /// The backfill started with `"backfill": true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    backfill: Option<crate::backfills::BackfillView>,
}

/// The new secret (`whsec_…`), shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretOnly {
    /// `whsec_…`: the one time it is shown, with the rotation's answer.
    secret: String,
}

/// `GET /v1/subscriptions?limit=&cursor=&search=`: without any, every subscription at
/// once (the listing as it always was); with any, one page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 1000; default 50 when `cursor` is given. Absent with `cursor`
    /// absent too: every subscription, unpaged.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// A previous page's `next_cursor`.
    cursor: Option<String>,
    /// Only subscriptions whose URL or description contains this text (any case);
    /// the answer is then paged (default 50 a page).
    search: Option<String>,
}

/// Subscriptions, oldest first. `next_cursor` is only present on a paged listing
/// (`limit` or `cursor` given), and null on its last page.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SubscriptionList)]
pub struct List {
    data: Vec<SubscriptionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    next_cursor: Option<Option<String>>,
}

/// Create a subscription; the answer carries its secret.
#[utoipa::path(
    post,
    path = "/subscriptions",
    operation_id = "createSubscription",
    tag = "subscriptions",
    request_body = CreateSubscription,
    params(ForceQuery),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created, with its secret", body = WithSecret),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "Body over 256 KiB", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "A value is unacceptable (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn create(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ForceQuery>,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    let force = validate::force(q.force.as_deref())?;
    let url = validate::url(&body.url, &state.allow_networks)?;
    if let Some(types) = &body.event_types {
        validate::event_types(types)?;
    }
    if let Some(sources) = &body.sources {
        validate::sources(sources)?;
    }
    if !force {
        validate::known_filters(
            &state.catalog,
            body.sources.as_deref(),
            body.event_types.as_deref(),
            body.sources.as_deref(),
        )?;
    }
    let description = body.description.unwrap_or_default();
    validate::description(&description)?;
    let headers = body.headers.unwrap_or_default();
    validate::headers(&headers)?;
    let ordering = match &body.ordering {
        Some(o) => validate::ordering(o)?,
        None => Default::default(),
    };
    if let Some(f) = &body.filter {
        validate::filter(f)?;
    }
    // A backfill asked for is planned before anything is created: a request that
    // cannot be served is a 422, not a subscription without its backfill.
    let backfill_plan = if body.backfill == Some(true) {
        let filters = hookrelay_core::catalog::SubscriptionFilters {
            sources: body.sources.as_deref(),
            event_types: body.event_types.as_deref(),
        };
        Some(
            crate::backfills::plan(&state, filters, None, None).map_err(|e| match e {
                ApiError::Unprocessable { field, detail } => {
                    ApiError::unprocessable("backfill", format!("{field}: {detail}"))
                }
                e => e,
            })?,
        )
    } else {
        None
    };
    let secret = match body.secret {
        Some(s) => {
            validate::secret(&s)?;
            s
        }
        None => SigningKey::generate_secret(),
    };
    let new = NewSubscription {
        url,
        description,
        event_types: body.event_types,
        sources: body.sources,
        headers,
        ordering,
        filter: body.filter,
        enabled: body.enabled.unwrap_or(true),
        secret,
    };
    let subscription = state.store.create_subscription(&new).await?;
    let backfill = match &backfill_plan {
        Some(plan) => Some(crate::backfills::record(&state, &subscription.id, plan).await?),
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(WithSecret {
            subscription: SubscriptionView::new(&state, subscription),
            secret: new.secret,
            backfill: backfill.map(Into::into),
        }),
    ))
}

/// Every subscription, or one page of them, oldest first (secrets never shown).
#[utoipa::path(
    get,
    path = "/subscriptions",
    operation_id = "listSubscriptions",
    tag = "subscriptions",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every subscription, or a page of them", body = List),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List>, ApiError> {
    let view = |items: Vec<Subscription>| {
        items
            .into_iter()
            .map(|s| SubscriptionView::new(&state, s))
            .collect()
    };
    if q.limit.is_none() && q.cursor.is_none() && q.search.is_none() {
        let data = view(state.store.list_subscriptions().await?);
        return Ok(Json(List {
            data,
            next_cursor: None,
        }));
    }
    let limit = params::limit(q.limit.as_deref())?;
    let search = q
        .search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if search
        .as_ref()
        .is_some_and(|s| s.chars().count() > validate::MAX_DESCRIPTION)
    {
        return Err(ApiError::bad_request(
            "search",
            format!("must be at most {} characters", validate::MAX_DESCRIPTION),
        ));
    }
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            params::decode_subscription_cursor(c).map_err(|e| ApiError::bad_request("cursor", e))
        })
        .transpose()?;
    let page = state
        .store
        .list_subscriptions_page(after.as_ref(), search.as_deref(), limit)
        .await?;
    Ok(Json(List {
        next_cursor: Some(page.next.as_ref().map(params::encode_subscription_cursor)),
        data: view(page.items),
    }))
}

/// One subscription.
#[utoipa::path(
    get,
    path = "/subscriptions/{id}",
    operation_id = "getSubscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such subscription", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<SubscriptionView>, ApiError> {
    let sub = state
        .store
        .get_subscription(&id)
        .await
        .or_not_found("subscription", &id)?;
    Ok(Json(SubscriptionView::new(&state, sub)))
}

/// Change a subscription: absent fields stay, `null` clears the nullable ones.
#[utoipa::path(
    patch,
    path = "/subscriptions/{id}",
    operation_id = "updateSubscription",
    tag = "subscriptions",
    request_body = PatchSubscription,
    params(("id" = String, Path, description = "Subscription id"), ForceQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed subscription", body = SubscriptionView),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such subscription", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "Body over 256 KiB", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "A value is unacceptable (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn update(
    State(state): State<ApiState>,
    PathId(id): PathId,
    ApiQuery(q): ApiQuery<ForceQuery>,
    ApiJson(body): ApiJson<PatchSubscription>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let force = validate::force(q.force.as_deref())?;
    let url = not_null("url", body.url)?
        .map(|u| validate::url(&u, &state.allow_networks))
        .transpose()?;
    if let Some(Some(types)) = &body.event_types {
        validate::event_types(types)?;
    }
    if let Some(Some(sources)) = &body.sources {
        validate::sources(sources)?;
    }
    if !force && (body.event_types.is_some() || body.sources.is_some()) {
        check_changed_filters(&state, &id, &body.sources, &body.event_types).await?;
    }
    let description = body.description.map(Option::unwrap_or_default);
    if let Some(d) = &description {
        validate::description(d)?;
    }
    let headers = body.headers.map(Option::unwrap_or_default);
    if let Some(h) = &headers {
        validate::headers(h)?;
    }
    let ordering = not_null("ordering", body.ordering)?
        .map(|o| validate::ordering(&o))
        .transpose()?;
    if let Some(Some(f)) = &body.filter {
        validate::filter(f)?;
    }
    let changes = SubscriptionChanges {
        url,
        description,
        event_types: body.event_types,
        sources: body.sources,
        headers,
        ordering,
        filter: body.filter,
        enabled: not_null("enabled", body.enabled)?,
    };
    let sub = state
        .store
        .update_subscription(&id, &changes)
        .await
        .or_not_found("subscription", &id)?;
    if changes.enabled == Some(true) {
        // What queued while it was paused may sit below the dispatcher's cursors.
        state.dispatch_signal.rescan();
    }
    Ok(Json(SubscriptionView::new(&state, sub)))
}

/// Delete a subscription.
#[utoipa::path(
    delete,
    path = "/subscriptions/{id}",
    operation_id = "deleteSubscription",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such subscription", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn delete(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_subscription(&id)
        .await
        .or_not_found("subscription", &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret; the old one keeps signing for `grace`.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/rotate-secret",
    operation_id = "rotateSubscriptionSecret",
    tag = "subscriptions",
    request_body = Option<RotateSecret>,
    params(("id" = String, Path, description = "Subscription id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new secret", body = SecretOnly),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such subscription", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "Body over 256 KiB", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "A value is unacceptable (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<RotateSecret>,
) -> Result<Json<SecretOnly>, ApiError> {
    let grace = match &body.grace {
        Some(text) => grace(text)?,
        None => DEFAULT_GRACE,
    };
    let secret = SigningKey::generate_secret();
    state
        .store
        .rotate_secret(&id, &secret, grace)
        .await
        .or_not_found("subscription", &id)?;
    Ok(Json(SecretOnly { secret }))
}

fn grace(text: &str) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(text).map_err(|e| {
        ApiError::unprocessable(
            "grace",
            format!("{text:?} is not a duration like \"24h\": {e}"),
        )
    })?;
    if d > MAX_GRACE {
        return Err(ApiError::unprocessable("grace", "must be at most 30 days"));
    }
    Ok(d)
}

/// The filters a PATCH leaves the subscription with, against the configuration: the
/// source names it sends, and the globs (sent or kept) against the sources (sent or
/// kept), so a change of `sources` alone that leaves a glob matching nothing is
/// refused too, naming that glob.
async fn check_changed_filters(
    state: &ApiState,
    id: &str,
    sources: &Option<Option<Vec<String>>>,
    event_types: &Option<Option<Vec<String>>>,
) -> Result<(), ApiError> {
    let (within, globs) = match (sources, event_types) {
        (Some(s), Some(t)) => (s.clone(), t.clone()),
        _ => {
            let current = state
                .store
                .get_subscription(id)
                .await
                .or_not_found("subscription", id)?;
            (
                sources.clone().unwrap_or(current.sources),
                event_types.clone().unwrap_or(current.event_types),
            )
        }
    };
    validate::known_filters(
        &state.catalog,
        sources.as_ref().and_then(Option::as_deref),
        globs.as_deref(),
        within.as_deref(),
    )
}

/// A PATCH field that may be absent but not `null`.
fn not_null<T>(field: &str, value: Option<Option<T>>) -> Result<Option<T>, ApiError> {
    match value {
        Some(None) => Err(ApiError::bad_request(field, "must not be null")),
        Some(Some(v)) => Ok(Some(v)),
        None => Ok(None),
    }
}
