//! Reading the journal and turning its rows into events.
//!
//! Journal ids come from a sequence and commit out of order, so the reader never reads
//! "after the last id seen": it reads whatever is in the journal, commits it to the
//! store, then deletes exactly the ids it read (claim-and-delete). A crash between the
//! store commit and the delete re-reads those rows, and their deterministic event ids
//! dedupe in the store.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hookrelay_core::{
    event::{self, Envelope, SourceRef, Timestamp, Txn},
    ChangeEvent, Op,
};
use tokio_postgres::{Client, Row};

use super::{
    meta::{self, TableMeta},
    row::Image,
};
use crate::SourceError;

pub(super) const READ: &str = "
select id, txid::text, seq, schema_name, table_name, op, before::text, after::text, changed_at
  from hookrelay.journal where source = $1 order by id limit $2";

pub(super) const DELETE: &str = "delete from hookrelay.journal where id = any ($1::bigint[])";

/// A journal row as text, for a change set aside: its images stay strings, since
/// they may be what could not be read.
pub(super) fn raw_text(row: &Row) -> String {
    let text = |i: usize| row.try_get::<_, Option<&str>>(i).ok().flatten();
    serde_json::json!({
        "txid": text(1),
        "seq": row.try_get::<_, i32>(2).ok(),
        "schema": text(3),
        "table": text(4),
        "op": text(5),
        "before": text(6),
        "after": text(7),
    })
    .to_string()
}

/// Rebuilds events from journal rows; keeps table metadata between batches.
pub(super) struct EventBuilder {
    pub source: String,
    pub database: String,
    tables: HashMap<(String, String), TableMeta>,
    image: String,
    key: String,
}

impl EventBuilder {
    pub fn new(source: &str, database: &str) -> Self {
        Self {
            source: source.to_owned(),
            database: database.to_owned(),
            tables: HashMap::new(),
            image: String::with_capacity(512),
            key: String::with_capacity(64),
        }
    }

    /// Forget table metadata (after a reconnect, DDL may have happened).
    pub fn reset(&mut self) {
        self.tables.clear();
    }

    pub async fn build(
        &mut self,
        client: &Client,
        row: &Row,
        captured_at: DateTime<Utc>,
    ) -> Result<ChangeEvent, SourceError> {
        let journal_id: i64 = row.get(0);
        let txid: &str = row.get(1);
        let seq: i32 = row.get(2);
        let schema: &str = row.get(3);
        let table: &str = row.get(4);
        let op: &str = row.get(5);
        let before: Option<&str> = row.get(6);
        let after: Option<&str> = row.get(7);
        let changed_at: DateTime<Utc> = row.get(8);
        let position = format!("{txid}/{seq}");
        let bad = |reason: String| SourceError::BadChange {
            position: format!("journal id {journal_id}"),
            reason,
        };

        let op = match op {
            "INSERT" => Op::Insert,
            "UPDATE" => Op::Update,
            "DELETE" => Op::Delete,
            "TRUNCATE" => Op::Truncate,
            other => return Err(bad(format!("unknown op {other:?}"))),
        };
        let before = before
            .map(Image::parse)
            .transpose()
            .map_err(|e| bad(format!("before image: {e}")))?;
        let after = after
            .map(Image::parse)
            .transpose()
            .map_err(|e| bad(format!("after image: {e}")))?;
        let mut before_json = String::new();
        self.image.clear();
        self.key.clear();
        if op == Op::Truncate {
            // A whole table emptied: no row, so no key and no images.
            self.key.push_str("null");
        } else {
            let keyed = match op {
                Op::Delete => before.as_ref(),
                _ => after.as_ref(),
            }
            .ok_or_else(|| bad("row image missing".into()))?;
            let tkey = (schema.to_owned(), table.to_owned());
            let stale = match self.tables.get(&tkey) {
                None => true,
                Some(m) => keyed
                    .columns
                    .iter()
                    .any(|(c, _)| !m.columns.iter().any(|k| k == c)),
            };
            if stale {
                let m = meta::load(client, schema, table).await?.unwrap_or_else(|| {
                    tracing::warn!(table = %format!("{schema}.{table}"), "journalled table no longer exists; passing values through");
                    TableMeta::default()
                });
                self.tables.insert(tkey.clone(), m);
            }
            let meta = &self.tables[&tkey];
            if let Some(img) = &before {
                img.render(&meta.kinds, &meta.key, &mut before_json, &mut self.key);
            }
            if let Some(img) = &after {
                self.key.clear();
                img.render(&meta.kinds, &meta.key, &mut self.image, &mut self.key);
            }
        }
        let after_json = std::mem::take(&mut self.image);
        let raw = |s: &str| serde_json::value::RawValue::from_string(s.to_owned());
        let key_raw = raw(&self.key).map_err(|e| bad(format!("key: {e}")))?;
        let before_raw = before
            .as_ref()
            .map(|_| raw(&before_json))
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        let after_raw = after
            .as_ref()
            .map(|_| raw(&after_json))
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        self.image = after_json;

        let seq_text = seq.to_string();
        let id = event::event_id(
            &self.source,
            &[txid.as_bytes(), seq_text.as_bytes()],
            changed_at,
        );
        let event_type = format!("{table}.{}", op.as_str());
        let env = Envelope {
            id: &id,
            event_type: &event_type,
            source: SourceRef {
                name: &self.source,
                kind: "postgres",
                database: &self.database,
                schema,
                table,
                position: &position,
            },
            op,
            key: &key_raw,
            before: before_raw.as_deref(),
            after: after_raw.as_deref(),
            txn: Txn {
                id: txid,
                seq: seq.max(0) as u32,
            },
            committed_at: Timestamp(changed_at),
            captured_at: Timestamp(captured_at),
        };
        let order_key = event::order_key(&self.source, schema, table, key_raw.get());
        ChangeEvent::from_envelope(&env, order_key).map_err(|e| bad(format!("envelope: {e}")))
    }
}
