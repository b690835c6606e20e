//! Rules for the values a subscription is saved with. Each check is a pure function
//! that fails as a 422 naming the field (`url`, `event_types[1]`, `headers.Host`), so
//! create and update share them and a bad value never reaches the store.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{HeaderName, HeaderValue};
use hookrelay_core::{filter::validate_glob, network, signature::SigningKey};
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

/// Headers hookrelay sets itself; a subscription may not override them.
pub const RESERVED_HEADERS: [&str; 7] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "user-agent",
    "host",
];

/// An absolute http(s) URL with a host; an IP-literal or `localhost` host must be
/// public or inside `allow`, by the same rule (`hookrelay_core::network`) the
/// dispatcher applies to resolved addresses, so the API never accepts an endpoint
/// the dispatcher would refuse.
pub fn url(raw: &str, allow: &[IpNet]) -> Result<(), ApiError> {
    let bad = |why: String| ApiError::unprocessable("url", why);
    if raw.len() > MAX_URL {
        return Err(bad(format!("must be at most {MAX_URL} bytes")));
    }
    let parsed =
        Url::parse(raw).map_err(|e| bad(format!("must be an absolute http(s) URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme must be http or https, not {:?}",
            parsed.scheme()
        )));
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
        Some(Host::Domain(_)) => return Ok(()),
    };
    if candidates.iter().any(|ip| network::is_allowed(*ip, allow)) {
        Ok(())
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

/// Custom headers: valid names and values, none that hookrelay sets itself, no name
/// twice in different case.
pub fn headers(headers: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if headers.len() > MAX_LIST {
        return Err(ApiError::unprocessable(
            "headers",
            format!("must have at most {MAX_LIST} entries"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ApiError::unprocessable(&field, "is not a valid HTTP header name"))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(ApiError::unprocessable(
                &field,
                "is set by hookrelay and cannot be overridden",
            ));
        }
        if !seen.insert(parsed.as_str().to_owned()) {
            return Err(ApiError::unprocessable(
                &field,
                "is given twice (header names are case-insensitive)",
            ));
        }
        HeaderValue::from_str(value).map_err(|_| {
            ApiError::unprocessable(
                &field,
                "value must be visible ASCII, spaces and tabs (no line breaks)",
            )
        })?;
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
        let cases = [
            ("https://example.com/hook", &[][..], true),
            ("http://example.com:8080/x?y=1", &[], true),
            ("ftp://example.com/", &[], false),
            ("example.com/hook", &[], false),
            ("http://", &[], false),
            ("mailto:a@example.com", &[], false),
            ("http://127.0.0.1:9000/", &[], false),
            ("http://127.0.0.1:9000/", &allow, true),
            ("http://localhost/", &[], false),
            ("http://LOCALHOST./", &allow, true),
            ("http://app.localhost/", &[], false),
            ("http://0x7f.1/", &[], false),
            ("http://[::1]/", &allow, false),
            ("http://[::ffff:7f00:1]/", &[], false),
            ("http://10.0.0.8/", &allow, false),
            ("http://169.254.169.254/latest", &[], false),
            ("http://93.184.216.34/", &[], true),
        ];
        for (raw, allow, ok) in cases {
            let got = url(raw, allow);
            assert_eq!(got.is_ok(), ok, "{raw}: {got:?}");
            if let Err(e) = got {
                assert_eq!(field_of(e), "url");
            }
        }
    }

    #[test]
    fn header_rules() {
        let ok: BTreeMap<String, String> = [("X-Team".into(), "billing".into())].into();
        assert!(headers(&ok).is_ok());
        let cases = [
            (vec![("Content-Type", "x")], "headers.Content-Type"),
            (vec![("webhook-id", "x")], "headers.webhook-id"),
            (vec![("bad name", "x")], "headers.bad name"),
            (vec![("X-A", "line\nbreak")], "headers.X-A"),
            (vec![("X-A", "1"), ("x-a", "2")], "headers.x-a"),
        ];
        for (pairs, want) in cases {
            let map: BTreeMap<String, String> = pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(field_of(headers(&map).unwrap_err()), want);
        }
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
