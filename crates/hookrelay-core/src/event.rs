//! The event: one committed change, as the JSON envelope of DESIGN §1.3.
//!
//! The envelope is serialized once, when the source reads the change, and stored as
//! text; every attempt and every replay sends those exact bytes, so signatures and
//! receivers' dedupe see one stable body per event id.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// The whole table was emptied (PostgreSQL `TRUNCATE`): no key, no images.
    Truncate,
    /// A current row read by a backfill (DESIGN §1.8): no `before`, no `txn`.
    Read,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Read => "read",
        }
    }
}

/// Where an event came from (`source` in the envelope).
#[derive(Debug, Clone, Serialize)]
pub struct SourceRef<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub database: &'a str,
    pub schema: &'a str,
    pub table: &'a str,
    pub position: &'a str,
}

/// The borrowed envelope a source fills in; row images stay as the raw JSON text the
/// source produced, so nothing is parsed and re-encoded on the way through.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub source: SourceRef<'a>,
    pub op: Op,
    pub key: &'a RawValue,
    pub before: Option<&'a RawValue>,
    pub after: Option<&'a RawValue>,
    /// `null` for a backfilled row: it was read, not written by a transaction.
    pub txn: Option<Txn<'a>>,
    pub committed_at: Timestamp,
    pub captured_at: Timestamp,
}

/// `txn` in the envelope.
#[derive(Debug, Serialize)]
pub struct Txn<'a> {
    pub id: &'a str,
    pub seq: u32,
}

/// A UTC instant that serializes as RFC 3339 with milliseconds and `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

/// An event ready for the store: its id, what subscriptions filter on, the key that
/// orders it, and the serialized envelope.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub id: String,
    pub event_type: String,
    pub source: String,
    /// Hash of (source, schema, table, key): deliveries with the same order key go out
    /// in commit order per subscription.
    pub order_key: i64,
    pub committed_at: DateTime<Utc>,
    pub body: String,
}

impl ChangeEvent {
    /// Serializes the envelope and derives the fields the store indexes.
    pub fn from_envelope(env: &Envelope<'_>, order_key: i64) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id: env.id.to_owned(),
            event_type: env.event_type.to_owned(),
            source: env.source.name.to_owned(),
            order_key,
            committed_at: env.committed_at.0,
            body: serde_json::to_string(env)?,
        })
    }
}

/// `evt_` + a ULID whose time part is the commit time and whose random part is a hash
/// of the source name and the change's position, so reading the same change twice
/// gives the same id (the store dedupes on it) and ids sort roughly by commit time.
pub fn event_id(source: &str, position: &[&[u8]], committed_at: DateTime<Utc>) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    for part in position {
        h.update([0u8]);
        h.update(part);
    }
    let digest = h.finalize();
    let mut rnd = [0u8; 16];
    rnd.copy_from_slice(&digest[..16]);
    let ms = u64::try_from(committed_at.timestamp_millis()).unwrap_or(0);
    let ulid = ulid::Ulid::from_parts(ms, u128::from_be_bytes(rnd));
    format!("evt_{ulid}")
}

/// The per-key ordering hash of (source, schema, table, key JSON).
pub fn order_key(source: &str, schema: &str, table: &str, key_json: &str) -> i64 {
    let mut h = Sha256::new();
    for part in [source, schema, table, key_json] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let t = at("2026-11-22T20:01:02.345Z");
        let a = event_id("shop", &[b"7731", b"0"], t);
        assert_eq!(a, event_id("shop", &[b"7731", b"0"], t));
        assert_ne!(a, event_id("shop", &[b"7731", b"1"], t));
        assert_ne!(a, event_id("other", &[b"7731", b"0"], t));
        // Part boundaries matter: ("77","31") is not ("7731").
        assert_ne!(a, event_id("shop", &[b"77", b"310"], t));
        assert!(a.starts_with("evt_") && a.len() == 30, "{a}");
        let later = event_id("shop", &[b"7731", b"0"], at("2026-11-22T20:01:03Z"));
        assert!(later > a, "ids sort by commit time");
    }

    #[test]
    fn envelope_serializes_per_contract() {
        let key = RawValue::from_string(r#"{"id":42}"#.into()).unwrap();
        let after = RawValue::from_string(r#"{"id":42,"total":"19.99"}"#.into()).unwrap();
        let env = Envelope {
            id: "evt_x",
            event_type: "orders.insert",
            source: SourceRef {
                name: "shop",
                kind: "postgres",
                database: "shop",
                schema: "public",
                table: "orders",
                position: "5",
            },
            op: Op::Insert,
            key: &key,
            before: None,
            after: Some(&after),
            txn: Some(Txn { id: "77", seq: 0 }),
            committed_at: Timestamp(at("2026-11-22T20:01:02.345678Z")),
            captured_at: Timestamp(at("2026-11-22T20:01:02.351Z")),
        };
        let ev = ChangeEvent::from_envelope(&env, 1).unwrap();
        assert_eq!(
            ev.body,
            r#"{"id":"evt_x","type":"orders.insert","source":{"name":"shop","kind":"postgres","database":"shop","schema":"public","table":"orders","position":"5"},"op":"insert","key":{"id":42},"before":null,"after":{"id":42,"total":"19.99"},"txn":{"id":"77","seq":0},"committed_at":"2026-11-22T20:01:02.345Z","captured_at":"2026-11-22T20:01:02.351Z"}"#
        );
    }

    #[test]
    fn order_keys_separate_tables_and_keys() {
        let a = order_key("shop", "public", "orders", r#"{"id":1}"#);
        assert_eq!(a, order_key("shop", "public", "orders", r#"{"id":1}"#));
        assert_ne!(a, order_key("shop", "public", "orders", r#"{"id":2}"#));
        assert_ne!(a, order_key("shop", "public", "customers", r#"{"id":1}"#));
    }
}
