//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from the
//! handlers' own annotations and types (utoipa), so it cannot drift from them.
//!
//! ```text
//!  #[utoipa::path] on each handler ─▶ routes!(…) in `router()` ─┬─▶ axum Router
//!  ToSchema/IntoParams on its types ──────────────────────────────┴─▶ this document
//! ```
//! A handler is registered as a route and as a path of the spec by the same
//! `routes!` call, so a route cannot be served without being documented.

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        OpenApi as Document,
    },
    Modify, OpenApi,
};

use crate::error::Problem;

/// Security scheme name used by every `/v1` operation.
pub const BEARER: &str = "bearer";

/// What the annotated handlers do not say: title, version, the bearer scheme and
/// the problem document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookrelay admin API",
        description = "Subscriptions, events, deliveries, replay and sources (DESIGN §1.5). \
            Every `/v1` route needs `Authorization: Bearer <token>`; every error is an \
            `application/problem+json` `Problem`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem)),
    modifiers(&BearerScheme),
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("one of `api.tokens`"))
                    .build(),
            ),
        );
    }
}

/// The document as served: computed once, when the router is built, and handed to
/// the handler as an extension.
#[derive(Clone)]
pub struct Spec(pub Arc<Document>);

/// The OpenAPI 3.1 document of this API (no auth).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    tag = "probes",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)),
)]
pub async fn openapi(Extension(spec): Extension<Spec>) -> Json<Document> {
    Json(Document::clone(&spec.0))
}
