//! Parsing of the listing parameters (`limit`, `cursor`, `status`, `since`, `until`).
//!
//! The parsers return the reason as text; the caller decides the status: a bad query
//! parameter is a 400, the same value in a JSON body (bulk replay) a 422.
//!
//! Cursors are opaque to clients: URL-safe base64 of a tag naming the listing and the
//! last key returned, so a cursor from the event listing is refused by the delivery
//! listing instead of silently skipping rows.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Datelike, Utc};
use hookrelay_store::{
    model::{DeliveryStatus, SubscriptionKey},
    MAX_PAGE,
};

use crate::error::ApiError;

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 50;

/// Which listing a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Events,
    Deliveries,
}

impl Listing {
    fn tag(self) -> &'static str {
        match self {
            Listing::Events => "evt:",
            Listing::Deliveries => "dlv:",
        }
    }
}

/// The cursor continuing after `key`.
pub fn encode_cursor(listing: Listing, key: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}{key}", listing.tag()))
}

/// The key a cursor continues after.
pub fn decode_cursor(listing: Listing, cursor: &str) -> Result<i64, String> {
    let bad = || format!("{cursor:?} is not a cursor returned by this listing's next_cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix(listing.tag())
        .and_then(|k| k.parse::<i64>().ok())
        .filter(|k| *k > 0)
        .ok_or_else(bad)
}

/// The cursor continuing after subscription `key` (the subscription listing's order is
/// creation time, then id).
pub fn encode_subscription_cursor(key: &SubscriptionKey) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "sub:{}:{}",
        key.created_at.timestamp_micros(),
        key.id
    ))
}

/// The subscription a cursor continues after.
pub fn decode_subscription_cursor(cursor: &str) -> Result<SubscriptionKey, String> {
    let bad = || format!("{cursor:?} is not a cursor returned by this listing's next_cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (micros, id) = text
        .strip_prefix("sub:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(bad)?;
    let created_at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        // what the store can hold (a creation time is never outside this anyway)
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or_else(bad)?;
    // The store cannot hold a NUL, and every id it gave out is `sub_…`.
    if !id.starts_with("sub_") || id.contains('\0') {
        return Err(bad());
    }
    Ok(SubscriptionKey {
        created_at,
        id: id.to_owned(),
    })
}

/// `limit`: 1 to [`MAX_PAGE`], default [`DEFAULT_LIMIT`].
pub fn limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(
            "limit",
            format!("must be an integer from 1 to {MAX_PAGE}, not {raw:?}"),
        )),
    }
}

pub fn status(raw: &str) -> Result<DeliveryStatus, String> {
    DeliveryStatus::parse(raw)
        .ok_or_else(|| format!("must be one of pending, retrying, succeeded, failed; not {raw:?}"))
}

/// An RFC 3339 instant with an explicit offset.
pub fn timestamp(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!(
                "must be an RFC 3339 timestamp such as 2026-11-22T20:01:02Z, not {raw:?} \
                 (in a query string, write '+' as %2B)"
            )
        })
}

/// Query-parameter forms: every fault is a 400 naming the parameter.
pub fn query_status(raw: Option<&str>) -> Result<Option<DeliveryStatus>, ApiError> {
    raw.map(|r| status(r).map_err(|e| ApiError::bad_request("status", e)))
        .transpose()
}

pub fn query_time(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|r| timestamp(r).map_err(|e| ApiError::bad_request(field, e)))
        .transpose()
}

pub fn query_cursor(listing: Listing, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|r| decode_cursor(listing, r).map_err(|e| ApiError::bad_request("cursor", e)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_tied_to_their_listing() {
        let c = encode_cursor(Listing::Deliveries, 1234);
        assert_eq!(decode_cursor(Listing::Deliveries, &c), Ok(1234));
        assert!(decode_cursor(Listing::Events, &c).is_err());
        assert!(decode_cursor(Listing::Deliveries, "1234").is_err());
        assert!(decode_cursor(Listing::Deliveries, "!!").is_err());
    }

    #[test]
    fn subscription_cursors_round_trip() {
        let key = SubscriptionKey {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: "sub_01JD5Z8K1T4W2M3N9QJ6V7X8Y0".into(),
        };
        let c = encode_subscription_cursor(&key);
        assert_eq!(decode_subscription_cursor(&c), Ok(key));
        let bad = [
            encode_cursor(Listing::Deliveries, 5),
            URL_SAFE_NO_PAD.encode("sub:x:sub_1"),
            URL_SAFE_NO_PAD.encode("sub:1:nope"),
            URL_SAFE_NO_PAD.encode("sub:1:sub_\0"),
            URL_SAFE_NO_PAD.encode(format!("sub:{}:sub_1", i64::MAX)),
            URL_SAFE_NO_PAD.encode(format!("sub:{}:sub_1", -250_000_000_000_000_000i64)),
            "!!".into(),
        ];
        for c in bad {
            assert!(decode_subscription_cursor(&c).is_err(), "{c}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", ""] {
            assert!(limit(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert!(timestamp("2026-11-22T20:01:02Z").is_ok());
        assert!(timestamp("2026-11-22T20:01:02.5+02:00").is_ok());
        for bad in ["yesterday", "2026-11-22", "2026-11-22T20:01:02"] {
            assert!(timestamp(bad).is_err(), "{bad}");
        }
    }
}
