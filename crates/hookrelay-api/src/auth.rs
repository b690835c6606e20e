//! Bearer-token check for every `/v1` route.
//!
//! Tokens are compared in constant time over their SHA-256 digests (equal length
//! whatever the input), and every configured token is compared, so neither the time
//! taken nor an early exit tells how close a guess was.

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{error::ApiError, ApiState};

/// Middleware over the whole app: a request for `/v1` or anything under it needs a
/// valid token (unless auth is switched off) before routing, so an unknown `/v1/…`
/// path answers 401 like a known one and the routes cannot be discovered without a
/// token. Other paths (probes, 404s) pass.
pub async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if !is_v1(req.uri().path())
        || state.insecure_no_auth
        || is_authorized(req.headers(), &state.tokens)
    {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

fn is_v1(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

fn is_authorized(headers: &HeaderMap, tokens: &[String]) -> bool {
    let Some(given) = bearer_token(headers) else {
        return false;
    };
    let given = Sha256::digest(given.as_bytes());
    let mut ok = subtle::Choice::from(0u8);
    for token in tokens {
        ok |= Sha256::digest(token.as_bytes()).ct_eq(&given);
    }
    ok.into()
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn v1_paths() {
        for (path, want) in [
            ("/v1", true),
            ("/v1/", true),
            ("/v1/nope", true),
            ("/v1/subscriptions", true),
            ("/v10/x", false),
            ("/healthz", false),
            ("/", false),
        ] {
            assert_eq!(is_v1(path), want, "{path}");
        }
    }

    #[test]
    fn tokens_are_checked() {
        let tokens = vec!["alpha".to_owned(), "beta".to_owned()];
        let cases = [
            (Some("Bearer alpha"), true),
            (Some("bearer beta"), true),
            (Some("Bearer gamma"), false),
            (Some("Bearer alph"), false),
            (Some("Basic alpha"), false),
            (Some("Bearer "), false),
            (Some("alpha"), false),
            (None, false),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            }
            assert_eq!(is_authorized(&headers, &tokens), want, "{value:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(!is_authorized(&headers, &[]), "no tokens: nobody gets in");
    }
}
