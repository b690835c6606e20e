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

/// Middleware: lets the request through with a valid token (or with auth switched
/// off), answers 401 otherwise.
pub async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if state.insecure_no_auth || is_authorized(req.headers(), &state.tokens) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
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
