//! Extractors that fail as [`ApiError`] problems naming the field, instead of axum's
//! plain-text rejections.
//!
//! ```text
//!  body  ──bytes──▶ serde_json + serde_path_to_error ──▶ T   (400 names `a.b[2]`)
//!  query ──────────▶ serde_urlencoded (strings only)  ──▶ T   (400 names the param)
//!  path  ──────────▶ String; handlers parse ids themselves    (400 names `id`)
//! ```
//! The body is read whatever its `Content-Type`: the API only speaks JSON, and a bearer
//! token (not a cookie) guards it, so there is no cross-site form to fend off.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; `T` should `deny_unknown_fields`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be absent (empty): then `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad_request("body", r.body_text())
        }
    })
}

/// Deserializes `bytes`, naming the offending field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object; serde would also read a struct from an array, by
    // position, and blame a field named `[0]`.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad_request("body", "must be a JSON object")),
        None => {
            return Err(ApiError::MalformedJson {
                detail: "the body is empty; expected a JSON object".to_owned(),
            })
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::MalformedJson {
                detail: inner.to_string(),
            };
        }
        let msg = inner.to_string();
        ApiError::bad_request(field_of(&path, &msg), without_position(&msg))
    })?;
    // Trailing bytes after the value are malformed JSON too.
    de.end().map_err(|e| ApiError::MalformedJson {
        detail: e.to_string(),
    })?;
    // JSON can carry a NUL (`\u0000`) that no store column can; only then is the body
    // walked to name the field.
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        if let Ok(tree) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if let Some(field) = nul_field(&tree, String::new()) {
                return Err(ApiError::bad_request(field, NUL_DETAIL));
            }
        }
    }
    Ok(value)
}

const NUL_DETAIL: &str = "must not contain a NUL character (\\u0000)";

/// The path (in serde_path_to_error's notation) of the first string or key holding a
/// NUL.
fn nul_field(v: &serde_json::Value, at: String) -> Option<String> {
    let field = |at: &str| {
        if at.is_empty() {
            "body".to_owned()
        } else {
            at.to_owned()
        }
    };
    match v {
        serde_json::Value::String(s) if s.contains('\0') => Some(field(&at)),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_field(item, format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                Some(field(&at))
            } else {
                nul_field(item, path)
            }
        }),
        _ => None,
    }
}

/// Query parameters; `T` should hold `Option<String>` fields (parsed by the handler,
/// which names the field on error) and `deny_unknown_fields`.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if query.contains("%00") {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(query).unwrap_or_default();
            if let Some((name, _)) = pairs
                .iter()
                .find(|(k, v)| k.contains('\0') || v.contains('\0'))
            {
                let name = if name.contains('\0') { "query" } else { name };
                return Err(ApiError::bad_request(name, NUL_DETAIL));
            }
        }
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|e| {
                let msg = e.to_string();
                ApiError::bad_request(field_of("", &msg), msg)
            })
    }
}

/// The one `{id}` segment of a route, as text.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::bad_request("id", r.body_text()))
            .and_then(|Path(id)| {
                if id.contains('\0') {
                    Err(ApiError::bad_request("id", NUL_DETAIL))
                } else {
                    Ok(PathId(id))
                }
            })
    }
}

impl PathId {
    /// A delivery id: a positive integer.
    pub fn delivery_id(&self) -> Result<i64, ApiError> {
        match self.0.parse::<i64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ApiError::bad_request(
                "id",
                format!("delivery ids are positive integers, not {:?}", self.0),
            )),
        }
    }
}

/// The field a serde message is about: serde names unknown, missing and duplicate
/// fields in the message, relative to the path it failed at; other errors are about
/// the path itself.
fn field_of(path: &str, msg: &str) -> String {
    let path = if path == "." { "" } else { path };
    for prefix in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some(name) = rest.split('`').next() {
                return if path.is_empty() {
                    name.to_owned()
                } else if path == name || path.ends_with(&format!(".{name}")) {
                    path.to_owned()
                } else {
                    format!("{path}.{name}")
                };
            }
        }
    }
    if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

/// serde_json appends " at line L column C", which says nothing the field does not.
fn without_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named() {
        let cases = [
            (".", "unknown field `colour`, expected `url`", "colour"),
            (".", "missing field `url`", "url"),
            (
                "headers",
                "invalid type: integer `1`, expected a string",
                "headers",
            ),
            (
                "event_types[1]",
                "invalid type: integer `3`",
                "event_types[1]",
            ),
            (".", "invalid type: sequence, expected struct X", "body"),
            ("", "duplicate field `status`", "status"),
            ("colour", "unknown field `colour`, expected `url`", "colour"),
        ];
        for (path, msg, want) in cases {
            assert_eq!(field_of(path, msg), want, "{path} / {msg}");
        }
    }

    #[test]
    fn nul_is_found_where_it_is() {
        let cases = [
            (r#"{"url": "a\u0000b"}"#, Some("url")),
            (
                r#"{"event_types": ["x", "y\u0000"]}"#,
                Some("event_types[1]"),
            ),
            (r#"{"headers": {"X-A": "\u0000"}}"#, Some("headers.X-A")),
            (r#"{"headers": {"X-\u0000": "v"}}"#, Some("headers")),
            (r#"{"url": "a\\u0000b"}"#, None),
            (r#"{"url": "plain"}"#, None),
        ];
        for (body, want) in cases {
            let tree: serde_json::Value = serde_json::from_str(body).expect("json");
            assert_eq!(nul_field(&tree, String::new()).as_deref(), want, "{body}");
        }
    }

    #[test]
    fn positions_are_dropped() {
        assert_eq!(
            without_position("invalid type: null, expected a string at line 1 column 9"),
            "invalid type: null, expected a string"
        );
        assert_eq!(without_position("plain"), "plain");
    }
}
