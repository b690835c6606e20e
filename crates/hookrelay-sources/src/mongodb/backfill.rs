//! Backfills (DESIGN §1.8) in the MongoDB reader: DBLog's watermarks, written as
//! documents into the source database and read back through the reader's own change
//! stream, so live changes never pause.
//!
//! ```text
//!  open:  insert {source, backfill, mark: "…:low"}  ─▶ <db>.hookrelay_watermarks
//!         find <db>.<coll> after the stored _id, sort {_id: 1}, hint {_id: 1},
//!              limit 1000 (readConcern majority)
//!         insert {source, backfill, mark: "…:high"} ─▶ <db>.hookrelay_watermarks
//!         (both inserts w: majority)
//!  drain: low mark read from the stream: from now on every change of <db>.<coll>
//!         the stream brings has its _id noted
//!  high mark read from the stream: the batch is cut there; the chunk less the noted
//!         _ids becomes read events, committed with that batch and the chunk's
//!         progress (last _id, rows, collections done) in one store transaction,
//!         after the batch's changes; then this source's marks up to it are removed
//! ```
//!
//! Why that is exact: a change stream returns changes in oplog order, the order
//! they committed in, and the marks are writes like any other, so the stream places
//! every change before the low mark, between the marks, or after the high mark. One
//! before the low mark was majority-committed when the low mark's majority write
//! returned (the oplog replicates in order), so the majority read that follows sees
//! it, and its own event is committed at the latest with the batch that holds the
//! chunk, before the read events. One between the marks has its key noted and
//! dropped from the chunk: its own event carries that document's newer state (a
//! delete: none, so a deleted document is not resurrected). One after the high mark
//! committed after the find returned, so its event follows the read event. A read
//! event therefore never follows a newer change of its key. Majority reads and
//! writes also keep a failover's rolled-back writes out of the chunk and the marks.
//!
//! The marks reach the stream only if it covers the watermark collection: a stream
//! filtered to exact collections is reopened, after the checkpoint, with the
//! watermark collection added (see `Scope::with_watermarks`; a one-collection source
//! then watches its database, filtered by the server to the two collections). The
//! reader never turns a change of `hookrelay_watermarks` into an event.
//!
//! ## Chunks by `_id`, across BSON types
//!
//! `_id` may hold any BSON type but an array, mixed within one collection. A sort
//! on `_id` (and the `_id` index) orders values first by type bracket, then within
//! it (numbers by value whatever their type, strings by bytes under the simple
//! collation, documents field by field):
//!
//! ```text
//!  MinKey < Undefined < Null < numbers < strings, symbols < documents < arrays
//!    < BinData < ObjectId < booleans < dates < timestamps < regexes < DBPointer
//!    < code < code with scope < MaxKey
//!
//!       ┌ bracket of the last _id ─┐ ┌ later brackets ─────────────────────┐
//!  ...  │ 7  9.5  [12] ▸ 40  41    │ │ "a" "b" │ {k:1} │ ObjectId(…) │ …   │
//!       └──────────────┼───────────┘ └─────────────────────────────────────┘
//!                      └ stored cursor: {"_id":{"$numberInt":"12"}}
//!  next chunk: {$or: [{_id: {$gt: 12}}, {_id: {$type: [string, symbol, object,
//!               …, maxKey]}}]}, sort {_id: 1}, limit 1000
//! ```
//!
//! A query's `$gt` compares only within the value's own bracket (MongoDB's type
//! bracketing): `{_id: {$gt: 12}}` alone would never reach the strings or the
//! ObjectIds after the numbers. So the filter is "after the cursor in its bracket,
//! or of any later bracket", the same set the sort puts after it, each branch an
//! `_id` index range. A NaN cursor (below every number) continues at `$gte:
//! -Infinity`, since nothing is `$gt` NaN.
//!
//! The cursor is the canonical Extended JSON of `{"_id": <value>}`: unlike relaxed
//! Extended JSON or the event's JSON, it keeps the exact BSON type (`5` Int32, Int64
//! and Double differ in the text, and ObjectId is not its hex string) and, with
//! `serde_json`'s `preserve_order` (which `bson` itself turns on), the field order
//! of a composite `_id`, which is part of its value; so it parses back to the very
//! same `_id`, and the next chunk starts exactly after it.
//!
//! A crash anywhere leaves only stale marks (skipped when read, removed with the
//! next chunk's) and the progress of the last committed chunk, from which the next
//! leader reads the same chunk again; its read events have the same ids (backfill,
//! collection, `_id`) and store once.

use std::{collections::HashSet, time::Instant};

use ::mongodb::{
    bson::{doc, Bson, Document},
    options::{CollectionOptions, Hint, ReadConcern, WriteConcern},
    Client, Collection,
};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use hookrelay_core::ChangeEvent;
use hookrelay_store::{Backfill, BackfillChunk};
use tracing::warn;

use super::{
    change::strip_document,
    error::is_unauthorized,
    scope::Scope,
    value::{decimal_plain, document_json, write_value},
};
use crate::{
    backfill::{read_event, ReadRow, Reading},
    SourceError,
};

/// The collection, in each database a backfill reads, that holds its watermarks.
pub(super) const WATERMARKS: &str = "hookrelay_watermarks";

/// A chunk read and waiting for its high watermark.
struct Window {
    db: String,
    coll: String,
    low: String,
    high: String,
    /// The low mark came back through the stream: changes are noted from here on.
    low_seen: bool,
    /// The chunk's documents (excluded fields removed), in `_id` order.
    docs: Vec<Document>,
    /// `limit` of the chunk's find: fewer back means the collection is done.
    limit: usize,
    /// `_id`s (as cursor text) of the collection that changed between the marks.
    changed: HashSet<String>,
    read_at: DateTime<Utc>,
    /// The high mark's `at`: this source's marks up to it are removed once the chunk
    /// is committed.
    high_at: ::mongodb::bson::DateTime,
}

/// What a watermark document read from the stream is to the open window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    Low,
    High,
    /// Another source's, or left by a session that ended: skipped.
    Stale,
}

/// What the high watermark of the open window produced.
pub(super) enum Reached {
    /// The chunk to commit with the batch.
    Chunk(BackfillChunk),
    /// A document that cannot become an event: the backfill fails (id, why).
    Failed(String, String),
}

/// The reader's backfill state: the backfill being read and its open window.
pub(super) struct Backfiller {
    reading: Reading,
    window: Option<Window>,
    /// The database and `at` of the last committed chunk's high mark, to clean up.
    clean_up: Option<(String, ::mongodb::bson::DateTime)>,
    marks: u64,
}

impl Backfiller {
    pub fn new(source: &str, max_rows_per_second: u32) -> Self {
        Self {
            reading: Reading::new(source, max_rows_per_second),
            window: None,
            clean_up: None,
            marks: 0,
        }
    }

    /// True when a backfill is being read, no window is open and its next chunk is
    /// due (see [`Reading::chunk_due`]).
    pub async fn chunk_due(
        &mut self,
        running: impl std::future::Future<
            Output = Result<Option<Backfill>, hookrelay_store::StoreError>,
        >,
    ) -> Result<bool, SourceError> {
        if self.window.is_some() {
            return Ok(false);
        }
        self.reading.chunk_due(running).await
    }

    /// A span naming the backfill being read, for its reads, writes and commits.
    pub fn span(&self) -> tracing::Span {
        self.reading.span()
    }

    /// Gives up the backfill being read (id, why), as `fail_backfill` should record it.
    pub fn give_up(&mut self, why: String) -> (String, String) {
        self.window = None;
        self.reading.give_up(why)
    }

    /// Opens the next chunk's window: writes the low watermark, reads the chunk and
    /// writes the high watermark. Returns a backfill to fail (id, why) when its
    /// collection cannot be read or its watermarks cannot be written.
    pub async fn open_window(
        &mut self,
        client: &Client,
        scope: &Scope,
    ) -> Result<Option<(String, String)>, SourceError> {
        let Some(task) = &self.reading.task else {
            return Ok(None);
        };
        let Some(current) = task.current_table().map(str::to_owned) else {
            // Nothing left (cannot be running, but then it is done here).
            self.reading.task = None;
            return Ok(None);
        };
        let Some((db, coll)) = current
            .split_once('.')
            .map(|(d, c)| (d.to_owned(), c.to_owned()))
        else {
            let why = format!("collection {current:?} is not db.collection");
            return Ok(Some(self.give_up(why)));
        };
        if !scope.watches(&db, &coll) {
            let why = format!(
                "collection {current} is not watched by source {}",
                self.reading.source()
            );
            return Ok(Some(self.give_up(why)));
        }
        let after = match task.last_key.as_deref().map(parse_cursor).transpose() {
            Ok(after) => after,
            Err(e) => {
                let why = format!("the stored cursor {:?}: {e}", task.last_key);
                return Ok(Some(self.give_up(why)));
            }
        };
        let backfill_id = task.id.clone();
        let limit = self.reading.chunk_limit();
        self.marks += 1;
        let stamp = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let mark = format!("{backfill_id}:{stamp}:{}", self.marks);
        let marks = client
            .database(&db)
            .collection_with_options::<Document>(WATERMARKS, majority());
        let (low, high) = (format!("{mark}:low"), format!("{mark}:high"));
        if let Err(e) = self.write_mark(&marks, &backfill_id, &low).await {
            return self.refused(e, |e| {
                format!(
                    "cannot write the watermark collection {db}.{WATERMARKS} ({e}): grant the \
                     source's user the insert and remove actions on {db}.{WATERMARKS}, e.g. \
                     the readWrite role on database {db}"
                )
            });
        }
        let read_at = Utc::now();
        let source = client
            .database(&db)
            .collection_with_options::<Document>(&coll, majority());
        let mut docs = match find_chunk(&source, after.as_ref(), limit).await {
            Ok(docs) => docs,
            Err(e) => {
                return self.refused(e, |e| {
                    let grant = if is_unauthorized(e) {
                        ": the source's user needs the find action on it"
                    } else {
                        ""
                    };
                    format!("reading {db}.{coll} ({e}){grant}")
                })
            }
        };
        let high_at = match self.write_mark(&marks, &backfill_id, &high).await {
            Ok(at) => at,
            Err(e) => {
                return self.refused(e, |e| {
                    format!("cannot write the watermark collection {db}.{WATERMARKS} ({e})")
                })
            }
        };
        let excluded = scope.excluded_paths(&db, &coll);
        for d in &mut docs {
            strip_document(d, &excluded);
        }
        self.reading.pace(docs.len(), Instant::now());
        self.window = Some(Window {
            db,
            coll,
            low,
            high,
            low_seen: false,
            docs,
            limit,
            changed: HashSet::new(),
            read_at,
            high_at,
        });
        Ok(None)
    }

    /// A failed write or read: a refused privilege (or any error retrying cannot fix)
    /// fails the backfill with `why`; a transient one ends the session (retried).
    fn refused(
        &mut self,
        e: ::mongodb::error::Error,
        why: impl FnOnce(&::mongodb::error::Error) -> String,
    ) -> Result<Option<(String, String)>, SourceError> {
        self.window = None;
        if is_unauthorized(&e) || !SourceError::from(e.clone()).is_transient() {
            return Ok(Some(self.give_up(why(&e))));
        }
        Err(e.into())
    }

    /// Inserts one watermark document; its `at`.
    async fn write_mark(
        &self,
        marks: &Collection<Document>,
        backfill_id: &str,
        mark: &str,
    ) -> Result<::mongodb::bson::DateTime, ::mongodb::error::Error> {
        let at = ::mongodb::bson::DateTime::now();
        marks
            .insert_one(doc! {
                "source": self.reading.source(), "backfill": backfill_id, "mark": mark, "at": at,
            })
            .await?;
        Ok(at)
    }

    /// What an inserted watermark document is to the open window; the low mark
    /// starts noting changes.
    pub fn mark_of(&mut self, doc: &Document) -> Mark {
        let (Some(w), Ok(source), Ok(mark)) =
            (&mut self.window, doc.get_str("source"), doc.get_str("mark"))
        else {
            return Mark::Stale;
        };
        if source != self.reading.source() {
            Mark::Stale
        } else if mark == w.low {
            w.low_seen = true;
            Mark::Low
        } else if mark == w.high {
            Mark::High
        } else {
            Mark::Stale
        }
    }

    /// A change the stream brought: notes its `_id` if it is of the open window's
    /// collection and came after the low mark.
    pub fn note_change(&mut self, db: &str, coll: &str, id: &Bson) {
        if let Some(w) = &mut self.window {
            if w.low_seen && w.db == db && w.coll == coll {
                w.changed.insert(cursor_text(id));
            }
        }
    }

    /// The open window's high watermark was read: the chunk less the `_id`s that
    /// changed meanwhile, as read events, with the progress to commit.
    pub fn reached(&mut self, captured_at: DateTime<Utc>) -> Option<Reached> {
        let w = self.window.take()?;
        let task = self.reading.task.as_ref()?;
        let last_key = w.docs.last().and_then(|d| d.get("_id")).map(cursor_text);
        let table_done = w.docs.len() < w.limit;
        let mut events = Vec::with_capacity(w.docs.len());
        for d in &w.docs {
            let Some(id) = d.get("_id") else {
                continue;
            };
            if w.changed.contains(&cursor_text(id)) {
                continue;
            }
            let built = read_doc(
                self.reading.source(),
                task,
                (&w.db, &w.coll),
                d,
                w.read_at,
                captured_at,
            );
            match built {
                Ok(event) => events.push(event),
                Err(reason) => {
                    let why = format!("a document of {}.{}: {reason}", w.db, w.coll);
                    let (id, why) = self.give_up(why);
                    return Some(Reached::Failed(id, why));
                }
            }
        }
        self.clean_up = Some((w.db.clone(), w.high_at));
        Some(Reached::Chunk(BackfillChunk {
            backfill_id: task.id.clone(),
            events,
            last_key: if table_done { None } else { last_key },
            table_done,
        }))
    }

    /// The chunk committed: follow its progress (see [`Reading::committed`]).
    pub fn committed(&mut self, chunk: &BackfillChunk, applied: bool, completed: bool) {
        self.reading.committed(chunk, applied, completed);
    }

    /// Removes this source's watermarks up to the last committed chunk's high mark
    /// (stale ones of earlier sessions included). Best effort: a mark left behind is
    /// skipped when read, and removed with a later chunk's.
    pub async fn remove_marks(&mut self, client: &Client) {
        let Some((db, at)) = self.clean_up.take() else {
            return;
        };
        let removed = client
            .database(&db)
            .collection::<Document>(WATERMARKS)
            .delete_many(doc! { "source": self.reading.source(), "at": { "$lte": at } })
            .await;
        if let Err(e) = removed {
            warn!(error = %e, "cannot remove backfill watermarks from {db}.{WATERMARKS} (the remove action is needed); they are skipped when read");
        }
    }
}

/// Majority reads and writes (see the module doc).
fn majority() -> CollectionOptions {
    CollectionOptions::builder()
        .read_concern(ReadConcern::majority())
        .write_concern(WriteConcern::majority())
        .build()
}

/// The next `limit` documents after `after` in `_id` order, every branch of the filter
/// an `_id` index range (see the module doc).
async fn find_chunk(
    coll: &Collection<Document>,
    after: Option<&Bson>,
    limit: usize,
) -> Result<Vec<Document>, ::mongodb::error::Error> {
    coll.find(after_filter(after))
        .sort(doc! { "_id": 1 })
        .hint(Hint::Keys(doc! { "_id": 1 }))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .await?
        .try_collect()
        .await
}

/// The BSON type brackets of MongoDB's comparison and sort order, lowest first, each
/// with its `$type` aliases.
const BRACKETS: &[&[&str]] = &[
    &["minKey"],
    &["undefined"],
    &["null"],
    &["double", "int", "long", "decimal"],
    &["string", "symbol"],
    &["object"],
    &["array"],
    &["binData"],
    &["objectId"],
    &["bool"],
    &["date"],
    &["timestamp"],
    &["regex"],
    &["dbPointer"],
    &["javascript"],
    &["javascriptWithScope"],
    &["maxKey"],
];

/// The index in [`BRACKETS`] of `v`'s type bracket.
pub(super) fn bracket(v: &Bson) -> usize {
    match v {
        Bson::MinKey => 0,
        Bson::Undefined => 1,
        Bson::Null => 2,
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => 3,
        Bson::String(_) | Bson::Symbol(_) => 4,
        Bson::Document(_) => 5,
        Bson::Array(_) => 6,
        Bson::Binary(_) => 7,
        Bson::ObjectId(_) => 8,
        Bson::Boolean(_) => 9,
        Bson::DateTime(_) => 10,
        Bson::Timestamp(_) => 11,
        Bson::RegularExpression(_) => 12,
        Bson::DbPointer(_) => 13,
        Bson::JavaScriptCode(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::MaxKey => 16,
    }
}

/// The filter for the documents after `after` in `_id` order; every document when
/// `None`.
pub(super) fn after_filter(after: Option<&Bson>) -> Document {
    let Some(last) = after else {
        return Document::new();
    };
    let is_nan = match last {
        Bson::Double(f) => f.is_nan(),
        Bson::Decimal128(d) => decimal_plain(d) == "NaN",
        _ => false,
    };
    let in_bracket = if is_nan {
        doc! { "_id": { "$gte": f64::NEG_INFINITY } }
    } else {
        doc! { "_id": { "$gt": last.clone() } }
    };
    let later: Vec<&str> = BRACKETS[bracket(last) + 1..]
        .iter()
        .flat_map(|aliases| aliases.iter().copied())
        .collect();
    if later.is_empty() {
        return in_bracket;
    }
    doc! { "$or": [in_bracket, { "_id": { "$type": later } }] }
}

/// An `_id` as cursor text: the canonical Extended JSON of `{"_id": id}` (see the
/// module doc for why canonical).
pub(super) fn cursor_text(id: &Bson) -> String {
    Bson::Document(doc! { "_id": id.clone() })
        .into_canonical_extjson()
        .to_string()
}

/// The `_id` a cursor text holds.
pub(super) fn parse_cursor(text: &str) -> Result<Bson, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match Bson::try_from(json).map_err(|e| e.to_string())? {
        Bson::Document(mut d) if d.len() == 1 => d
            .remove("_id")
            .ok_or_else(|| "no \"_id\" in the cursor".to_owned()),
        _ => Err("not {\"_id\": …}".to_owned()),
    }
}

/// One document read by a backfill as a `read` event (DESIGN §1.8): the same value
/// mapping and key as a change's; the id derives from the exact `_id`, so a chunk
/// read again stores nothing twice.
fn read_doc(
    source: &str,
    backfill: &Backfill,
    (db, coll): (&str, &str),
    doc: &Document,
    read_at: DateTime<Utc>,
    captured_at: DateTime<Utc>,
) -> Result<ChangeEvent, String> {
    let id = doc.get("_id").ok_or("no _id")?;
    let mut key = String::from("{\"_id\":");
    write_value(id, &mut key);
    key.push('}');
    let exact = cursor_text(id);
    let row = ReadRow {
        kind: "mongodb",
        database: db,
        schema: db,
        table: coll,
        key,
        after: document_json(doc),
        exact_key: &exact,
        read_at,
        captured_at,
    };
    read_event(source, backfill, row)
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use ::mongodb::bson::{
        oid::ObjectId, spec::BinarySubtype, Binary, Decimal128, Regex, Timestamp,
    };

    use super::*;

    fn oid(hex: &str) -> Bson {
        Bson::ObjectId(ObjectId::parse_str(hex).unwrap())
    }

    #[test]
    fn a_cursor_round_trips_every_id_type_exactly() {
        let ids = [
            oid("64b7f0c2a1b2c3d4e5f60718"),
            Bson::String("order-42".into()),
            Bson::String(String::new()),
            Bson::Int32(5),
            Bson::Int64(5),
            Bson::Int64(i64::MIN),
            Bson::Double(5.0),
            Bson::Double(-0.0),
            Bson::Double(f64::INFINITY),
            Bson::Decimal128("1234.5600".parse::<Decimal128>().unwrap()),
            // field order is part of a composite _id's value
            Bson::Document(doc! { "tenant": "b", "n": 1_i64 }),
            Bson::Document(doc! { "n": 1_i64, "tenant": "b" }),
            Bson::Document(doc! { "at": { "y": 2026, "x": [1, "a"] } }),
            Bson::DateTime(::mongodb::bson::DateTime::from_millis(-62_135_596_800_001)),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                bytes: vec![0xab; 16],
            }),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![0, 1, 255],
            }),
            Bson::Boolean(false),
            Bson::Null,
            Bson::MinKey,
            Bson::MaxKey,
            Bson::Timestamp(Timestamp {
                time: 7,
                increment: 9,
            }),
            Bson::RegularExpression(Regex {
                pattern: "^a".into(),
                options: "i".into(),
            }),
        ];
        for id in &ids {
            let text = cursor_text(id);
            let back = parse_cursor(&text).unwrap();
            assert_eq!(&back, id, "{text}");
            assert_eq!(cursor_text(&back), text, "the same text again");
        }
        let texts: HashSet<String> = ids.iter().map(cursor_text).collect();
        assert_eq!(texts.len(), ids.len(), "every id has its own text");
        let nan = cursor_text(&Bson::Double(f64::NAN));
        assert!(matches!(parse_cursor(&nan).unwrap(), Bson::Double(f) if f.is_nan()));
        assert_eq!(
            cursor_text(&oid("64b7f0c2a1b2c3d4e5f60718")),
            r#"{"_id":{"$oid":"64b7f0c2a1b2c3d4e5f60718"}}"#
        );
        assert_eq!(
            cursor_text(&Bson::Int32(5)),
            r#"{"_id":{"$numberInt":"5"}}"#
        );
        assert_eq!(
            cursor_text(&Bson::Int64(5)),
            r#"{"_id":{"$numberLong":"5"}}"#
        );
        for bad in ["", "5", "{}", r#"{"id":1}"#, r#"{"_id":1,"x":2}"#, "[1]"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }

    /// One value of each bracket, in MongoDB's documented comparison order.
    fn one_per_bracket() -> Vec<Bson> {
        vec![
            Bson::MinKey,
            Bson::Undefined,
            Bson::Null,
            Bson::Int32(1),
            Bson::String("a".into()),
            Bson::Document(doc! { "k": 1 }),
            Bson::Array(vec![]),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![1],
            }),
            oid("000000000000000000000001"),
            Bson::Boolean(false),
            Bson::DateTime(::mongodb::bson::DateTime::from_millis(0)),
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 1,
            }),
            Bson::RegularExpression(Regex {
                pattern: "a".into(),
                options: String::new(),
            }),
            // (DBPointer, bracket 13, cannot be built outside the bson crate)
            Bson::JavaScriptCode("f()".into()),
            Bson::JavaScriptCodeWithScope(::mongodb::bson::JavaScriptCodeWithScope {
                code: "f()".into(),
                scope: doc! {},
            }),
            Bson::MaxKey,
        ]
    }

    #[test]
    fn brackets_follow_the_documented_order() {
        let values = one_per_bracket();
        let ranks: Vec<usize> = values.iter().map(bracket).collect();
        let expected: Vec<usize> = (0..BRACKETS.len()).filter(|i| *i != 13).collect();
        assert_eq!(ranks, expected);
        for same in [
            Bson::Int64(1),
            Bson::Double(0.5),
            Bson::Decimal128("1".parse().unwrap()),
        ] {
            assert_eq!(bracket(&same), bracket(&Bson::Int32(1)), "{same:?}");
        }
        assert_eq!(
            bracket(&Bson::Symbol("s".into())),
            bracket(&Bson::String("s".into()))
        );
    }

    #[test]
    fn the_next_chunk_starts_after_the_cursor_across_types() {
        assert_eq!(after_filter(None), doc! {});
        let later_than_numbers: Vec<&str> = BRACKETS[4..]
            .iter()
            .flat_map(|a| a.iter().copied())
            .collect();
        assert_eq!(
            after_filter(Some(&Bson::Int32(12))),
            doc! { "$or": [
                { "_id": { "$gt": 12 } },
                { "_id": { "$type": later_than_numbers } },
            ] }
        );
        assert_eq!(
            after_filter(Some(&Bson::MaxKey)),
            doc! { "_id": { "$gt": Bson::MaxKey } }
        );
        let nan = after_filter(Some(&Bson::Double(f64::NAN)));
        assert_eq!(
            nan.get_array("$or").unwrap()[0],
            Bson::Document(doc! { "_id": { "$gte": f64::NEG_INFINITY } })
        );
        let composite = doc! { "a": 1, "b": "x" };
        let f = after_filter(Some(&Bson::Document(composite.clone())));
        assert_eq!(
            f.get_array("$or").unwrap()[0],
            Bson::Document(doc! { "_id": { "$gt": composite } })
        );
    }

    /// MongoDB's order within the brackets these cases use.
    fn within(a: &Bson, b: &Bson) -> Ordering {
        let num = |v: &Bson| match v {
            Bson::Int32(i) => f64::from(*i),
            Bson::Int64(i) => *i as f64,
            Bson::Double(f) => *f,
            _ => f64::NAN,
        };
        match (a, b) {
            (Bson::String(x), Bson::String(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
            (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
            (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
            // NaN sorts below every other number
            _ => match (num(a).is_nan(), num(b).is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => num(a).total_cmp(&num(b)),
            },
        }
    }

    fn is_nan(v: &Bson) -> bool {
        matches!(v, Bson::Double(f) if f.is_nan())
    }

    fn sort_order(a: &Bson, b: &Bson) -> Ordering {
        bracket(a).cmp(&bracket(b)).then_with(|| within(a, b))
    }

    fn type_alias(v: &Bson) -> &'static str {
        match v {
            Bson::Int32(_) => "int",
            Bson::Int64(_) => "long",
            Bson::Double(_) => "double",
            Bson::String(_) => "string",
            Bson::ObjectId(_) => "objectId",
            Bson::Boolean(_) => "bool",
            Bson::DateTime(_) => "date",
            Bson::Null => "null",
            Bson::MinKey => "minKey",
            Bson::MaxKey => "maxKey",
            _ => "other",
        }
    }

    /// Whether `id` passes `filter` as a MongoDB query does: `$gt`/`$gte` only within
    /// the query value's bracket (type bracketing), `$type` by alias, `$or`.
    fn passes(id: &Bson, filter: &Document) -> bool {
        filter.iter().all(|(k, cond)| match (k.as_str(), cond) {
            ("$or", Bson::Array(branches)) => branches
                .iter()
                .filter_map(Bson::as_document)
                .any(|f| passes(id, f)),
            ("_id", Bson::Document(op)) => op.iter().all(|(o, v)| match (o.as_str(), v) {
                // a query compares with NaN only for equality
                ("$gt", v) if is_nan(v) => false,
                ("$gte", v) if is_nan(v) => is_nan(id),
                ("$gt", v) => {
                    bracket(id) == bracket(v) && !is_nan(id) && within(id, v) == Ordering::Greater
                }
                ("$gte", v) => {
                    bracket(id) == bracket(v) && !is_nan(id) && within(id, v) != Ordering::Less
                }
                ("$type", Bson::Array(types)) => {
                    types.iter().any(|t| t.as_str() == Some(type_alias(id)))
                }
                _ => false,
            }),
            _ => false,
        })
    }

    #[test]
    fn chunks_read_every_id_once_in_sort_order_whatever_the_types() {
        let mut ids = vec![
            Bson::MinKey,
            Bson::Null,
            Bson::Double(f64::NAN),
            Bson::Double(f64::NEG_INFINITY),
            Bson::Int32(-3),
            Bson::Int64(2),
            Bson::Double(2.5),
            Bson::Int32(40),
            Bson::String(String::new()),
            Bson::String("B".into()),
            Bson::String("a".into()),
            oid("000000000000000000000009"),
            oid("64b7f0c2a1b2c3d4e5f60718"),
            Bson::Boolean(false),
            Bson::Boolean(true),
            Bson::DateTime(::mongodb::bson::DateTime::from_millis(-1)),
            Bson::DateTime(::mongodb::bson::DateTime::from_millis(5)),
            Bson::MaxKey,
        ];
        let in_order = ids.clone();
        ids.reverse();
        ids.sort_by(sort_order);
        assert_eq!(
            ids.iter().map(cursor_text).collect::<Vec<_>>(),
            in_order.iter().map(cursor_text).collect::<Vec<_>>()
        );
        // chunks of every size: each starts right after the previous one's cursor,
        // which went through its text form, and together they read every id once
        for size in 1..=ids.len() {
            let mut read: Vec<String> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let after = cursor.as_deref().map(|c| parse_cursor(c).unwrap());
                let filter = after_filter(after.as_ref());
                let chunk: Vec<&Bson> = ids
                    .iter()
                    .filter(|id| passes(id, &filter))
                    .take(size)
                    .collect();
                read.extend(chunk.iter().map(|id| cursor_text(id)));
                if chunk.len() < size {
                    break;
                }
                cursor = chunk.last().map(|id| cursor_text(id));
            }
            assert_eq!(
                read,
                ids.iter().map(cursor_text).collect::<Vec<_>>(),
                "chunks of {size}"
            );
        }
        // what a lone `$gt` would have done: stop at the end of the numbers
        let lone = doc! { "_id": { "$gt": 40 } };
        assert!(!ids.iter().any(|id| passes(id, &lone)));
    }

    #[test]
    fn a_read_event_maps_values_and_keys_as_changes_do() {
        let d = doc! { "_id": 7_i64, "total": "19.90", "at": ::mongodb::bson::DateTime::from_millis(1_795_377_662_345) };
        let started = Utc::now();
        let backfill = Backfill {
            id: "bf_1".into(),
            subscription_id: "sub_1".into(),
            source: "docs".into(),
            tables: vec!["app.orders".into()],
            tables_done: 0,
            last_key: None,
            rows: 0,
            state: hookrelay_store::BackfillState::Running,
            error: None,
            created_at: started,
            updated_at: started,
            ended_at: None,
        };
        let e = read_doc("docs", &backfill, ("app", "orders"), &d, started, started).unwrap();
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body["op"], "read");
        assert_eq!(body["type"], "orders.read");
        assert_eq!(body["key"], serde_json::json!({ "_id": 7 }));
        assert_eq!(body["after"]["at"], "2026-11-22T20:01:02.345Z");
        assert!(body["before"].is_null() && body["txn"].is_null());
        assert_eq!(body["source"]["position"], "backfill:bf_1");
        assert_eq!(
            e.order_key,
            hookrelay_core::event::order_key("docs", "app", "orders", r#"{"_id":7}"#)
        );
        let again = read_doc(
            "docs",
            &backfill,
            ("app", "orders"),
            &d,
            Utc::now(),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(e.id, again.id, "a chunk read again has the same ids");
        // 7 as Int32 is another _id: another event id
        let int32 = doc! { "_id": 7, "total": "19.90" };
        let other = read_doc(
            "docs",
            &backfill,
            ("app", "orders"),
            &int32,
            started,
            started,
        )
        .unwrap();
        assert_ne!(e.id, other.id);
    }
}
