//! hookrelay's admin API (DESIGN §1.5): thin axum handlers over store functions.
//!
//! ```text
//!  request ─▶ /healthz, /readyz, /metrics, /openapi.json  (no auth)
//!          ├▶ /console, /console/…  the operator console's static files (no auth; they
//!          │                        call /v1 with the operator's token, see `console`)
//!          └▶ /v1/* ─▶ auth (bearer, before routing) ─▶ extract (JSON/query/path, 400 names the field)
//!                                    ─▶ validate (422 names the field)
//!                                    ─▶ store function ─▶ JSON  |  ApiError ─▶ problem+json
//! ```
//!
//! Handlers hold no SQL and no business rules beyond input checks; every failure is an
//! [`ApiError`], answered as `application/problem+json`. [`router`] builds the whole
//! app from an [`ApiState`], so tests drive it with `tower::ServiceExt::oneshot`
//! without a socket. The API never calls the dispatcher: after a replay it only pokes
//! `dispatch_signal` so due work is claimed at once.

mod auth;
mod backfills;
mod console;
mod deliveries;
mod error;
mod events;
mod extract;
mod health;
mod metrics;
mod openapi;
mod params;
mod peers;
mod serve;
mod sources;
mod subscriptions;
mod test_send;
pub mod validate;

use std::sync::Arc;

use axum::{extract::DefaultBodyLimit, http::Uri, middleware, Extension, Router};
use hookrelay_store::Store;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use error::{ApiError, Problem};
pub use health::SourcesReadiness;
pub use serve::{serve, ConnectionGauge, ServeLimits, MAX_HEAD_BYTES};
pub use test_send::TestSender;

/// Largest request body accepted; subscriptions and replay requests are tiny.
const MAX_BODY: usize = 256 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// Accepted bearer tokens; empty refuses every `/v1` request unless
    /// `insecure_no_auth`.
    pub tokens: Vec<String>,
    /// Serve `/v1` without tokens (development only).
    pub insecure_no_auth: bool,
    /// Networks endpoints may point at despite being private (`dispatch.allow_networks`).
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Raised after a replay so the dispatcher claims the work without waiting to poll.
    pub dispatch_signal: Arc<hookrelay_store::DispatchSignal>,
    /// Each source's readiness, for `/readyz` (read-only; the API never calls a source).
    pub sources: SourcesReadiness,
    /// The configured sources and the event types they can emit: subscription filters
    /// are checked against it.
    pub catalog: Arc<hookrelay_core::catalog::Catalog>,
    /// The dispatcher's live counters, read by `/metrics` (never written here).
    pub dispatch_stats: Arc<hookrelay_core::stats::DispatchStats>,
    /// Sends `POST /v1/subscriptions/{id}/test` (the dispatcher's client, handed in).
    pub test_sender: TestSender,
    /// Whether the process's long-running tasks (the dispatcher, each source's
    /// supervisor, …) still run, for `/readyz` (read-only).
    pub tasks: hookrelay_core::tasks::TaskHealth,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("tokens", &format_args!("[{} hidden]", self.tokens.len()))
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("allow_networks", &self.allow_networks)
            .finish_non_exhaustive()
    }
}

/// The whole admin API, and its OpenAPI document served at `/openapi.json`.
pub fn router(state: ApiState) -> Router {
    // Each `routes!` registers its handlers and their `#[utoipa::path]`s together.
    let (v1, v1_doc) = OpenApiRouter::new()
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(
            subscriptions::get,
            subscriptions::update,
            subscriptions::delete
        ))
        .routes(routes!(subscriptions::rotate_secret))
        .routes(routes!(test_send::send))
        .routes(routes!(events::list))
        .routes(routes!(events::get))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::get))
        .routes(routes!(deliveries::replay_one))
        .routes(routes!(deliveries::replay_bulk))
        .routes(routes!(backfills::create))
        .routes(routes!(backfills::list))
        .routes(routes!(backfills::get, backfills::cancel))
        .routes(routes!(sources::list))
        .routes(routes!(sources::get))
        .split_for_parts();
    let (root, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::openapi))
        .split_for_parts();
    let spec = openapi::Spec(Arc::new(doc.nest("/v1", v1_doc)));
    root.nest("/v1", v1.method_not_allowed_fallback(method_not_allowed))
        .merge(console::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(spec))
        // Outermost but the body limit: authentication happens before routing.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// The probes and metrics alone (`/healthz`, `/readyz`, `/metrics`), for
/// `api.health_listen`: a listener with a connection budget of its own, so a flood on
/// the admin port cannot fail a liveness probe, and an internal port for the
/// unauthenticated `/metrics` (its labels name subscriptions).
pub fn health_router(state: ApiState) -> Router {
    use axum::routing::get;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// Every log line of a request carries its method and path, and so the subscription,
/// delivery, event or source id the path names; the query and headers (tokens) never.
async fn request_span(
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!("api", method = %req.method(), path = %req.uri().path());
    async move {
        let started = std::time::Instant::now();
        let res = next.run(req).await;
        tracing::debug!(
            status = res.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "answered"
        );
        res
    }
    .instrument(span)
    .await
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
