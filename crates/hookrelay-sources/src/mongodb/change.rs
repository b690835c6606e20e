//! One change stream event → one [`ChangeEvent`] (DESIGN §1.3): `schema` is the
//! database, `table` the collection, `key` `{"_id": …}`, `position` the resume token.

use ::mongodb::{
    bson::{Bson, Document},
    change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken},
};
use chrono::{DateTime, Utc};
use hookrelay_core::{
    event::{self, Envelope, SourceRef, Timestamp, Txn},
    ChangeEvent, Op,
};
use serde_json::value::RawValue;

use super::value::{document_json, write_value};
use crate::SourceError;

/// A resume token as text: its relaxed Extended JSON (`{"_data":"82…"}`), which is
/// both the event's `source.position` and, parsed back, where to resume.
pub(super) fn token_text(token: &ResumeToken) -> Result<String, SourceError> {
    let bson = ::mongodb::bson::to_bson(token)
        .map_err(|e| SourceError::Setup(format!("resume token: {e}")))?;
    Ok(bson.into_relaxed_extjson().to_string())
}

pub(super) fn parse_token(text: &str) -> Result<ResumeToken, SourceError> {
    let bad = |e: String| SourceError::Setup(format!("stored resume token {text:?}: {e}"));
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let bson = Bson::try_from(json).map_err(|e| bad(e.to_string()))?;
    ::mongodb::bson::from_bson(bson).map_err(|e| bad(e.to_string()))
}

/// Numbers the changes of one transaction in stream order (`txn.seq`).
#[derive(Default)]
pub(super) struct TxnCounter {
    last: Option<String>,
    seq: u32,
}

impl TxnCounter {
    fn next(&mut self, txn: &str) -> u32 {
        if self.last.as_deref() == Some(txn) {
            self.seq += 1;
        } else {
            self.last = Some(txn.to_owned());
            self.seq = 0;
        }
        self.seq
    }
}

/// The transaction a change belongs to: `lsid` + `txnNumber` for a multi-document
/// transaction, else the operation's cluster time (one write, one transaction).
fn txn_id(ev: &ChangeStreamEvent<Document>) -> String {
    if let (Some(lsid), Some(n)) = (&ev.lsid, ev.txn_number) {
        let mut session = String::new();
        match lsid.get("id") {
            Some(id) => write_value(id, &mut session),
            None => session.push_str("\"?\""),
        }
        return format!("{}:{n}", session.trim_matches('"'));
    }
    match ev.cluster_time {
        Some(t) => format!("{}.{}", t.time, t.increment),
        None => "unknown".into(),
    }
}

/// The commit time the server reports: `wallTime` (milliseconds), else the cluster
/// time's seconds.
fn committed_at(ev: &ChangeStreamEvent<Document>) -> Option<DateTime<Utc>> {
    ev.wall_time
        .and_then(|w| DateTime::from_timestamp_millis(w.timestamp_millis()))
        .or_else(|| {
            ev.cluster_time
                .and_then(|t| DateTime::from_timestamp(i64::from(t.time), 0))
        })
}

/// Removes the excluded fields (`exclude_fields`, each a path into embedded
/// documents) from the change's documents, before they become JSON: they are never
/// in the event nor in the store. The key (`_id`) cannot be excluded (config).
pub(super) fn strip_fields(ev: &mut ChangeStreamEvent<Document>, paths: &[&[String]]) {
    for doc in [&mut ev.full_document, &mut ev.full_document_before_change]
        .into_iter()
        .flatten()
    {
        strip_document(doc, paths);
    }
}

/// Removes the excluded field paths from one document (a change's image, or a
/// document a backfill read).
pub(super) fn strip_document(doc: &mut Document, paths: &[&[String]]) {
    fn remove(doc: &mut Document, path: &[String]) {
        match path {
            [] => {}
            [last] => {
                doc.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(Bson::Document(inner)) = doc.get_mut(first) {
                    remove(inner, rest);
                }
            }
        }
    }
    for path in paths {
        remove(doc, path);
    }
}

/// Builds the event for an insert/update/replace/delete; `None` for other kinds.
pub(super) fn build(
    source: &str,
    ev: &ChangeStreamEvent<Document>,
    txns: &mut TxnCounter,
    captured_at: DateTime<Utc>,
) -> Result<Option<ChangeEvent>, SourceError> {
    let op = match ev.operation_type {
        OperationType::Insert => Op::Insert,
        // A replace is an update whose `after` is the whole new document.
        OperationType::Update | OperationType::Replace => Op::Update,
        OperationType::Delete => Op::Delete,
        _ => return Ok(None),
    };
    let position = token_text(&ev.id)?;
    let bad = |reason: String| SourceError::BadChange {
        position: position.clone(),
        reason,
    };
    let ns = ev.ns.as_ref().ok_or_else(|| bad("no namespace".into()))?;
    let db = ns.db.as_str();
    let coll = ns
        .coll
        .as_deref()
        .ok_or_else(|| bad("no collection".into()))?;
    let id = ev
        .document_key
        .as_ref()
        .and_then(|k| k.get("_id"))
        .ok_or_else(|| bad("no documentKey._id".into()))?;
    let mut key = String::from("{\"_id\":");
    write_value(id, &mut key);
    key.push('}');
    let after = match op {
        Op::Delete => None,
        _ => ev.full_document.as_ref().map(document_json),
    };
    let before = ev.full_document_before_change.as_ref().map(document_json);

    let raw = |s: String| RawValue::from_string(s).map_err(|e| bad(e.to_string()));
    let key_raw = raw(key)?;
    let after_raw = after.map(raw).transpose()?;
    let before_raw = before.map(raw).transpose()?;
    let committed_at = committed_at(ev).unwrap_or(captured_at);
    let txn = txn_id(ev);
    let seq = txns.next(&txn);
    let event_id = event::event_id(source, &[position.as_bytes()], committed_at);
    let event_type = format!("{coll}.{}", op.as_str());
    let env = Envelope {
        id: &event_id,
        event_type: &event_type,
        source: SourceRef {
            name: source,
            kind: "mongodb",
            database: db,
            schema: db,
            table: coll,
            position: &position,
        },
        op,
        key: &key_raw,
        before: before_raw.as_deref(),
        after: after_raw.as_deref(),
        txn: Some(Txn { id: &txn, seq }),
        committed_at: Timestamp(committed_at),
        captured_at: Timestamp(captured_at),
    };
    let order_key = event::order_key(source, db, coll, key_raw.get());
    ChangeEvent::from_envelope(&env, order_key)
        .map(Some)
        .map_err(|e| bad(format!("envelope: {e}")))
}

#[cfg(test)]
mod tests {
    use ::mongodb::bson::doc;

    use super::*;

    fn event(doc: Document) -> ChangeStreamEvent<Document> {
        ::mongodb::bson::from_document(doc).unwrap()
    }

    #[test]
    fn tokens_round_trip_as_text() {
        let ev = event(doc! {
            "_id": { "_data": "8263A1" }, "operationType": "insert",
        });
        let text = token_text(&ev.id).unwrap();
        assert_eq!(text, r#"{"_data":"8263A1"}"#);
        assert_eq!(parse_token(&text).unwrap(), ev.id);
        assert!(parse_token("not json").is_err());
    }

    #[test]
    fn replace_is_an_update_with_the_whole_document_and_ids_are_stable() {
        let ev = event(doc! {
            "_id": { "_data": "82AA" }, "operationType": "replace",
            "ns": { "db": "app", "coll": "orders" },
            "documentKey": { "_id": 7_i64 },
            "clusterTime": ::mongodb::bson::Timestamp { time: 1_795_377_662, increment: 3 },
            "wallTime": ::mongodb::bson::DateTime::from_millis(1_795_377_662_345),
            "fullDocument": { "_id": 7_i64, "status": "paid" },
            "fullDocumentBeforeChange": { "_id": 7_i64, "status": "new" },
        });
        let now = Utc::now();
        let a = build("docs", &ev, &mut TxnCounter::default(), now)
            .unwrap()
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(body["op"], "update");
        assert_eq!(body["type"], "orders.update");
        assert_eq!(body["key"], serde_json::json!({ "_id": 7 }));
        assert_eq!(body["after"]["status"], "paid");
        assert_eq!(body["before"]["status"], "new");
        assert_eq!(
            body["txn"],
            serde_json::json!({ "id": "1795377662.3", "seq": 0 })
        );
        assert_eq!(body["committed_at"], "2026-11-22T20:01:02.345Z");
        assert_eq!(body["source"]["schema"], "app");
        assert_eq!(body["source"]["position"], r#"{"_data":"82AA"}"#);
        let b = build("docs", &ev, &mut TxnCounter::default(), Utc::now())
            .unwrap()
            .unwrap();
        assert_eq!(a.id, b.id, "same change, same id");
        let other = build("other", &ev, &mut TxnCounter::default(), now)
            .unwrap()
            .unwrap();
        assert_ne!(a.id, other.id);
    }

    #[test]
    fn excluded_fields_are_removed_at_any_depth() {
        let mut ev = event(doc! {
            "_id": { "_data": "82AB" }, "operationType": "update",
            "ns": { "db": "app", "coll": "users" },
            "documentKey": { "_id": 1 },
            "fullDocument": { "_id": 1, "name": "Ann", "password": "x",
                              "profile": { "ssn": "123", "city": "Oslo" }, "tags": ["a"] },
            "fullDocumentBeforeChange": { "_id": 1, "password": "y", "profile": "not a document" },
        });
        let paths = [
            vec!["password".to_owned()],
            vec!["profile".to_owned(), "ssn".to_owned()],
            vec!["absent".to_owned(), "deeper".to_owned()],
        ];
        let paths: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
        strip_fields(&mut ev, &paths);
        let e = build("docs", &ev, &mut TxnCounter::default(), Utc::now())
            .unwrap()
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(
            body["after"],
            serde_json::json!({ "_id": 1, "name": "Ann", "profile": { "city": "Oslo" }, "tags": ["a"] })
        );
        assert_eq!(
            body["before"],
            serde_json::json!({ "_id": 1, "profile": "not a document" })
        );
    }

    #[test]
    fn transactions_group_by_session_and_number() {
        let lsid = doc! { "id": ::mongodb::bson::Binary {
            subtype: ::mongodb::bson::spec::BinarySubtype::Uuid,
            bytes: vec![0x11; 16],
        } };
        let mk = |data: &str, id: i32| {
            event(doc! {
                "_id": { "_data": data }, "operationType": "delete",
                "ns": { "db": "app", "coll": "orders" }, "documentKey": { "_id": id },
                "lsid": lsid.clone(), "txnNumber": 4_i64,
                "fullDocumentBeforeChange": Bson::Null,
            })
        };
        let mut txns = TxnCounter::default();
        let seqs: Vec<serde_json::Value> = ["82A1", "82A2"]
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let e = build("docs", &mk(d, i as i32), &mut txns, Utc::now())
                    .unwrap()
                    .unwrap();
                serde_json::from_str::<serde_json::Value>(&e.body).unwrap()["txn"].clone()
            })
            .collect();
        let txn = "11111111-1111-1111-1111-111111111111:4";
        assert_eq!(seqs[0], serde_json::json!({ "id": txn, "seq": 0 }));
        assert_eq!(seqs[1], serde_json::json!({ "id": txn, "seq": 1 }));
    }
}
