//! `GET /console`: the operator console (DESIGN §1.10), static files compiled into the
//! binary and served from one origin.
//!
//! ```text
//!  browser ─GET /console, /console/…─▶ these files (no auth: they hold no data)
//!     │
//!     └─ the console's own JavaScript ─fetch /v1/… + Bearer token─▶ the admin API
//! ```
//!
//! The pages load without a token and show nothing until one is given: every datum
//! comes from the documented `/v1` API, called by the browser with the token the
//! operator typed (kept in the tab's session storage, never in a URL). The server adds
//! no logic of its own here. Every answer carries a strict Content-Security-Policy:
//! scripts, styles and images only from this origin (no inline script or style), data
//! only from this origin, no framing; so nothing the console shows (a receiver's
//! response body, a row's value) can run or reach anywhere else.

use axum::{
    extract::Path,
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::{ApiError, ApiState};

/// What the console's files may load and do.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its path under `/console/` and its media type.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $media_type:expr) => {
        Asset {
            path: $path,
            media_type: $media_type,
            body: include_str!(concat!("../console/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. A module imports others by absolute path
/// (`/console/js/…`), so each must be listed here.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/sources.js", JS),
    asset!("js/subscriptions.js", JS),
    asset!("js/deliveries.js", JS),
    asset!("js/events.js", JS),
];

/// `/console`, `/console/` and `/console/{file}`.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{*path}", get(file))
}

async fn index() -> Response {
    serve("index.html")
}

async fn file(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::NoRoute(format!("/console/{path}")).into_response();
    };
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.media_type),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // The files change with the binary: revalidate rather than keep a stale copy.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script or style a page or module names by absolute path is one of the
    /// embedded files, so the console never asks for a file the binary lacks.
    #[test]
    fn every_referenced_file_is_embedded() {
        for asset in ASSETS {
            for piece in asset.body.split("/console/").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
                    .collect();
                if name.ends_with(".js") || name.ends_with(".css") || name.ends_with(".svg") {
                    assert!(
                        ASSETS.iter().any(|a| a.path == name),
                        "{} refers to /console/{name}, which is not embedded",
                        asset.path
                    );
                }
            }
        }
    }

    /// No file loads anything from another origin, and no page carries inline script,
    /// style or event handlers (the CSP would refuse them).
    #[test]
    fn nothing_from_elsewhere_and_nothing_inline() {
        let after = |body: &'static str, marker: &'static str| {
            body.split(marker)
                .skip(1)
                .map(|rest| rest.split(['"', '\'']).next().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        for asset in ASSETS {
            let body = asset.body;
            if asset.path.ends_with(".html") {
                for target in after(body, "src=\"")
                    .into_iter()
                    .chain(after(body, "href=\""))
                {
                    assert!(
                        target.starts_with("/console/") || target.starts_with('#'),
                        "{}: {target} is not one of the console's files",
                        asset.path
                    );
                }
                for script in body.split("<script").skip(1) {
                    assert!(
                        script.contains("src=\"/console/"),
                        "{}: inline <script>",
                        asset.path
                    );
                }
                assert!(!body.contains("style=\""), "{}: inline style", asset.path);
                assert!(!body.contains("<style"), "{}: inline style", asset.path);
                let handler = body.split(" on").skip(1).find(|rest| {
                    let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                    !name.is_empty() && rest[name.len()..].starts_with('=')
                });
                assert!(handler.is_none(), "{}: an inline handler", asset.path);
            }
            if asset.path.ends_with(".css") {
                assert!(!body.contains("url("), "{}: loads a file", asset.path);
                assert!(!body.contains("@import"), "{}: imports", asset.path);
            }
            if asset.path.ends_with(".js") {
                for module in after(body, " from \"") {
                    assert!(
                        module.starts_with("/console/js/"),
                        "{}: imports {module}",
                        asset.path
                    );
                }
                for forbidden in [
                    "innerHTML",
                    "outerHTML",
                    "insertAdjacentHTML",
                    "eval(",
                    "new Function",
                ] {
                    assert!(!body.contains(forbidden), "{}: {forbidden}", asset.path);
                }
            }
        }
    }
}
