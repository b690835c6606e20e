//! Rules for the values a subscription is saved with. Each check is a pure function
//! that fails as a 422 naming the field (`url`, `event_types[1]`, `headers.Host`), so
//! create and update share them and a bad value never reaches the store.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{HeaderName, HeaderValue};
use hookrelay_core::{catalog::Catalog, filter::validate_glob, network, signature::SigningKey};
use hookrelay_store::model::OrderingMode;
use ipnet::IpNet;
use url::{Host, Url};

use crate::error::ApiError;

/// Longest accepted `description`, in characters.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest accepted endpoint URL, in bytes.
pub const MAX_URL: usize = 4096;
/// Most entries in `event_types`, `sources` or `headers`.
pub const MAX_LIST: usize = 100;

/// Longest custom header value, in bytes, and most bytes of names and values together.
pub const MAX_HEADER_VALUE: usize = 4096;
pub const MAX_HEADERS_TOTAL: usize = 16 * 1024;
/// Most custom headers on one subscription.
pub const MAX_HEADERS: usize = 32;

/// Headers hookrelay sets itself, and hop-by-hop or framing headers whose meaning
/// belongs to the connection, not to the subscription (a `transfer-encoding` sent on a
/// body that is not so encoded breaks the request): a subscription may set none.
pub const RESERVED_HEADERS: [&str; 15] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "user-agent",
    "host",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "keep-alive",
    "content-encoding",
];

/// An absolute http(s) URL with a host; an IP-literal or `localhost` host must be
/// public or inside `allow`, by the same rule (`hookrelay_core::network`) the
/// dispatcher applies to resolved addresses, so the API never accepts an endpoint
/// the dispatcher would refuse. Returns the URL as parsed and normalised
/// (`http://0x7f.1/` becomes `http://127.0.0.1/`), which is what is stored, shown and
/// called, so what the API checked is what is sent. Control characters (which the
/// parser would silently drop), port 0 and `user:password@` are refused: credentials
/// belong in a header, which is encrypted at rest.
pub fn url(raw: &str, allow: &[IpNet]) -> Result<String, ApiError> {
    let bad = |why: String| ApiError::unprocessable("url", why);
    if raw.len() > MAX_URL {
        return Err(bad(format!("must be at most {MAX_URL} bytes")));
    }
    if raw.chars().any(char::is_control) {
        return Err(bad(
            "must not contain control characters (CR, LF, tab, …)".into()
        ));
    }
    let parsed =
        Url::parse(raw).map_err(|e| bad(format!("must be an absolute http(s) URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme must be http or https, not {:?}",
            parsed.scheme()
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "must not carry a user name or password; send credentials in a custom header \
             (headers are encrypted at rest)"
                .into(),
        ));
    }
    if parsed.port() == Some(0) {
        return Err(bad("port 0 is not a port an endpoint can listen on".into()));
    }
    let candidates: Vec<std::net::IpAddr> = match parsed.host() {
        None => return Err(bad("must have a host".to_owned())),
        Some(Host::Domain("")) => return Err(bad("must have a host".to_owned())),
        Some(Host::Ipv4(ip)) => vec![ip.into()],
        Some(Host::Ipv6(ip)) => vec![ip.into()],
        Some(Host::Domain(name)) if is_localhost(name) => vec![
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ],
        // Other names resolve when the dispatcher connects, and are checked there.
        Some(Host::Domain(_)) => return Ok(parsed.into()),
    };
    if candidates.iter().any(|ip| network::is_allowed(*ip, allow)) {
        Ok(parsed.into())
    } else {
        Err(bad(format!(
            "points at a non-public address ({}); endpoints on private, loopback or \
             link-local networks need the network listed in dispatch.allow_networks",
            candidates[0]
        )))
    }
}

/// `localhost` and its subdomains always resolve to loopback (RFC 6761).
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Globs over `<table>.<op>`; a given list must not be empty (omit it for every type).
pub fn event_types(globs: &[String]) -> Result<(), ApiError> {
    list_size("event_types", globs.len())?;
    for (i, glob) in globs.iter().enumerate() {
        if glob.len() > 255 {
            return Err(ApiError::unprocessable(
                format!("event_types[{i}]"),
                "must be at most 255 characters",
            ));
        }
        validate_glob(glob).map_err(|e| {
            ApiError::unprocessable(format!("event_types[{i}]"), format!("{glob:?}: {e}"))
        })?;
    }
    Ok(())
}

/// Source names as in the config: `[a-z0-9_-]+`.
pub fn sources(names: &[String]) -> Result<(), ApiError> {
    list_size("sources", names.len())?;
    for (i, name) in names.iter().enumerate() {
        if !hookrelay_core::config::is_source_name(name) {
            return Err(ApiError::unprocessable(
                format!("sources[{i}]"),
                format!("{name:?} is not a source name (1 to 48 characters of [a-z0-9_-])"),
            ));
        }
    }
    Ok(())
}

/// `sources` must be configured sources and each `event_types` glob must match a type
/// that one of the sources in `within` (every source when `None`) can emit, else a 422
/// naming the entry; `?force=true` skips this check (for a source or table to be
/// configured later).
pub fn known_filters(
    catalog: &Catalog,
    sources: Option<&[String]>,
    event_types: Option<&[String]>,
    within: Option<&[String]>,
) -> Result<(), ApiError> {
    const FORCE: &str = "(add ?force=true to accept it for a source or table not configured yet)";
    for (i, name) in sources.unwrap_or_default().iter().enumerate() {
        if !catalog.has_source(name) {
            return Err(ApiError::unprocessable(
                format!("sources[{i}]"),
                format!(
                    "{name:?} is not a configured source (configured: {}) {FORCE}",
                    catalog.source_names().join(", ")
                ),
            ));
        }
    }
    for (i, glob) in event_types.unwrap_or_default().iter().enumerate() {
        if !catalog.glob_can_match(glob, within) {
            let scope = match within {
                Some(names) => format!("sources {}", names.join(", ")),
                None => "configured sources".to_owned(),
            };
            return Err(ApiError::unprocessable(
                format!("event_types[{i}]"),
                format!(
                    "{glob:?} matches no event type the {scope} can emit (types are \
                     <table>.<op>: table without its schema, op insert, update, delete, \
                     read for backfilled rows or, for postgres, truncate) {FORCE}"
                ),
            ));
        }
    }
    Ok(())
}

/// The `force` query parameter: `true` or `false`.
pub fn force(raw: Option<&str>) -> Result<bool, ApiError> {
    match raw {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "force",
            format!("must be true or false, not {other:?}"),
        )),
    }
}

fn list_size(field: &str, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::unprocessable(
            field,
            "must not be empty; omit it (or send null) to match everything",
        ));
    }
    if n > MAX_LIST {
        return Err(ApiError::unprocessable(
            field,
            format!("must have at most {MAX_LIST} entries"),
        ));
    }
    Ok(())
}

/// Custom headers: valid names and values, none that hookrelay sets itself or that
/// belong to the connection (hop-by-hop, framing, `proxy-*`), no name twice in
/// different case, and at most [`MAX_HEADERS`] of them, [`MAX_HEADER_VALUE`] bytes a
/// value and [`MAX_HEADERS_TOTAL`] in all.
pub fn headers(headers: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::unprocessable(
            "headers",
            format!("must have at most {MAX_HEADERS} entries"),
        ));
    }
    let total: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_HEADERS_TOTAL {
        return Err(ApiError::unprocessable(
            "headers",
            format!("names and values must be at most {MAX_HEADERS_TOTAL} bytes in all"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ApiError::unprocessable(&field, "is not a valid HTTP header name"))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) || parsed.as_str().starts_with("proxy-") {
            return Err(ApiError::unprocessable(
                &field,
                "is set by hookrelay or by the connection and cannot be set by a subscription",
            ));
        }
        if !seen.insert(parsed.as_str().to_owned()) {
            return Err(ApiError::unprocessable(
                &field,
                "is given twice (header names are case-insensitive)",
            ));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(ApiError::unprocessable(
                &field,
                format!("value must be at most {MAX_HEADER_VALUE} bytes"),
            ));
        }
        // What the message says, exactly: HTTP also lets bytes 0x80-0xFF through
        // (obsolete `obs-text`), which receivers read as Latin-1, UTF-8 or not at all.
        if let Some(bad) = value
            .chars()
            .find(|c| !(*c == '\t' || (' '..='~').contains(c)))
        {
            return Err(ApiError::unprocessable(
                &field,
                format!(
                    "value must be visible ASCII, spaces and tabs (no line breaks, no \
                     non-ASCII characters; found U+{:04X})",
                    u32::from(bad)
                ),
            ));
        }
        debug_assert!(HeaderValue::from_str(value).is_ok());
    }
    Ok(())
}

pub fn description(text: &str) -> Result<(), ApiError> {
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::unprocessable(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(())
}

pub fn ordering(text: &str) -> Result<OrderingMode, ApiError> {
    OrderingMode::parse(text).ok_or_else(|| {
        ApiError::unprocessable(
            "ordering",
            format!("must be \"key\" or \"none\", not {text:?}"),
        )
    })
}

/// Longest filter expression accepted.
const MAX_FILTER: usize = 4096;

/// A CEL expression that parses and names only the event's variables; a 422 naming
/// `filter`, with the position, when not.
pub fn filter(text: &str) -> Result<(), ApiError> {
    if text.len() > MAX_FILTER {
        return Err(ApiError::unprocessable(
            "filter",
            format!("must be at most {MAX_FILTER} bytes"),
        ));
    }
    hookrelay_core::row_filter::RowFilter::compile(text)
        .map(|_| ())
        .map_err(|e| ApiError::unprocessable("filter", e.to_string()))
}

/// A `whsec_<base64>` secret of 24 to 64 bytes.
pub fn secret(text: &str) -> Result<(), ApiError> {
    SigningKey::from_secret(text)
        .map(|_| ())
        .map_err(|e| ApiError::unprocessable("secret", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Unprocessable { field, .. } => field,
            other => panic!("not a 422: {other:?}"),
        }
    }

    #[test]
    fn urls() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        // (input, allow, Ok(stored form) or Err(words of the reason))
        let cases: &[(&str, &[IpNet], Result<&str, &str>)] = &[
            (
                "https://example.com/hook",
                &[],
                Ok("https://example.com/hook"),
            ),
            (
                "http://example.com:8080/x?y=1",
                &[],
                Ok("http://example.com:8080/x?y=1"),
            ),
            (
                "HTTPS://Example.COM:443/a/../b",
                &[],
                Ok("https://example.com/b"),
            ),
            ("http://example.com", &[], Ok("http://example.com/")),
            ("http://93.184.216.34/", &[], Ok("http://93.184.216.34/")),
            (
                "http://127.0.0.1:9000/",
                &allow,
                Ok("http://127.0.0.1:9000/"),
            ),
            ("http://LOCALHOST./", &allow, Ok("http://localhost./")),
            ("http://0x7f.1/", &allow, Ok("http://127.0.0.1/")),
            ("http://2130706433/", &allow, Ok("http://127.0.0.1/")),
            ("ftp://example.com/", &[], Err("scheme")),
            ("example.com/hook", &[], Err("absolute")),
            ("http://", &[], Err("absolute")),
            ("mailto:a@example.com", &[], Err("scheme")),
            ("http://127.0.0.1:9000/", &[], Err("non-public")),
            ("http://localhost/", &[], Err("non-public")),
            ("http://app.localhost/", &[], Err("non-public")),
            ("http://0x7f.1/", &[], Err("non-public")),
            ("http://2130706433/", &[], Err("non-public")),
            ("http://[::1]/", &allow, Err("non-public")),
            ("http://[::ffff:7f00:1]/", &[], Err("non-public")),
            ("http://10.0.0.8/", &allow, Err("non-public")),
            ("http://169.254.169.254/latest", &[], Err("non-public")),
            ("http://example.com/a\r\nX-Injected: 1", &[], Err("control")),
            ("http://exa\tmple.com/", &[], Err("control")),
            ("http://example.com/\u{7f}", &[], Err("control")),
            ("http://example.com:0/", &[], Err("port 0")),
            ("http://user:pw@example.com/", &[], Err("password")),
            ("http://user@example.com/", &[], Err("user name")),
            ("http://:pw@example.com/", &[], Err("password")),
        ];
        for (raw, allow, want) in cases {
            match (url(raw, allow), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{raw:?}"),
                (Err(e), Err(words)) => {
                    let text = format!("{e:?}");
                    assert!(text.contains(words), "{raw:?}: {text}");
                    assert_eq!(field_of(e), "url");
                }
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn header_rules() {
        let big_value = "v".repeat(MAX_HEADER_VALUE + 1);
        let ok: BTreeMap<String, String> = [
            ("X-Team".into(), "billing".into()),
            ("X-Printable".into(), " !\"#~ with\ttab ".into()),
        ]
        .into();
        assert!(headers(&ok).is_ok());
        let accented: BTreeMap<String, String> = [("X-A".into(), "caf\u{e9}".into())].into();
        let msg = headers(&accented).unwrap_err().to_string();
        assert!(
            msg.contains("U+00E9") && msg.contains("visible ASCII"),
            "{msg}"
        );
        let cases = [
            (vec![("Content-Type", "x")], "headers.Content-Type"),
            (vec![("webhook-id", "x")], "headers.webhook-id"),
            (vec![("bad name", "x")], "headers.bad name"),
            (vec![("X-A", "line\nbreak")], "headers.X-A"),
            (vec![("X-A", "caf\u{e9}")], "headers.X-A"),
            (vec![("X-A", "\u{1F600}")], "headers.X-A"),
            (vec![("X-A", "del\u{7f}")], "headers.X-A"),
            (vec![("X-A", "1"), ("x-a", "2")], "headers.x-a"),
            (
                vec![("Transfer-Encoding", "gzip, chunked")],
                "headers.Transfer-Encoding",
            ),
            (vec![("Connection", "close")], "headers.Connection"),
            (vec![("Upgrade", "h2c")], "headers.Upgrade"),
            (vec![("TE", "trailers")], "headers.TE"),
            (vec![("Expect", "100-continue")], "headers.Expect"),
            (vec![("Keep-Alive", "timeout=5")], "headers.Keep-Alive"),
            (
                vec![("Proxy-Authorization", "Basic x")],
                "headers.Proxy-Authorization",
            ),
            (vec![("proxy-connection", "x")], "headers.proxy-connection"),
            (vec![("Content-Length", "1")], "headers.Content-Length"),
            (vec![("Host", "evil")], "headers.Host"),
            (vec![("X-Big", big_value.as_str())], "headers.X-Big"),
        ];
        for (pairs, want) in cases {
            let map: BTreeMap<String, String> = pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(field_of(headers(&map).unwrap_err()), want);
        }
        let many: BTreeMap<String, String> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), "v".into()))
            .collect();
        assert_eq!(field_of(headers(&many).unwrap_err()), "headers");
        let big: BTreeMap<String, String> = (0..5)
            .map(|i| (format!("x-h{i}"), "v".repeat(MAX_HEADER_VALUE)))
            .collect();
        assert_eq!(field_of(headers(&big).unwrap_err()), "headers");
        let fine: BTreeMap<String, String> = [
            ("Authorization".to_owned(), "Bearer abc".to_owned()),
            ("X-Proxy-Id".to_owned(), "7".to_owned()),
        ]
        .into();
        assert!(headers(&fine).is_ok());
    }

    #[test]
    fn lists() {
        assert!(event_types(&["orders.*".into(), "*.delete".into()]).is_ok());
        assert_eq!(
            field_of(event_types(&["orders.*".into(), "a\nb".into()]).unwrap_err()),
            "event_types[1]"
        );
        assert_eq!(field_of(event_types(&[]).unwrap_err()), "event_types");
        assert!(sources(&["shop".into(), "crm-2_x".into()]).is_ok());
        assert_eq!(
            field_of(sources(&["Shop".into()]).unwrap_err()),
            "sources[0]"
        );
    }
}
