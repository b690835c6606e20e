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
use hookrelay_store::Backfill;
use tokio_postgres::{Client, Row};

use super::{
    meta::{self, TableMeta},
    row::Image,
};
use crate::{
    backfill::{read_event, ReadRow},
    SourceError,
};

/// The oldest journal rows of a source holding at most `$2` changes (but always the
/// first row, however big its chunk). Only ids and counts are read to decide; the
/// images of rows left for later are not fetched.
pub(super) const READ: &str = "
select j.id, j.txid::text, j.seq, j.schema_name, j.table_name, j.op, j.before::text,
       j.after::text, j.changed_at, j.rows
  from (select id, sum(coalesce(rows, 1)) over (order by id) - coalesce(rows, 1) as ahead
          from (select id, rows from hookrelay.journal
                 where source = $1 order by id limit $2) oldest) w
  join hookrelay.journal j on j.id = w.id
 where w.ahead < $2
 order by j.id";

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
        "rows": row.try_get::<_, Option<i32>>(9).ok().flatten(),
    })
    .to_string()
}

/// One change as the journal holds it: a journal row of its own, or one element of a
/// statement's chunk (see `setup`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Change<'r> {
    pub journal_id: i64,
    pub txid: &'r str,
    pub seq: i32,
    pub schema: &'r str,
    pub table: &'r str,
    pub op: &'r str,
    pub before: Option<&'r str>,
    pub after: Option<&'r str>,
    pub changed_at: DateTime<Utc>,
}

impl Change<'_> {
    /// The change as text, for `hookrelay.rejected_changes`.
    pub fn raw_text(&self) -> String {
        serde_json::json!({
            "journal_id": self.journal_id,
            "txid": self.txid,
            "seq": self.seq,
            "schema": self.schema,
            "table": self.table,
            "op": self.op,
            "before": self.before,
            "after": self.after,
        })
        .to_string()
    }

    pub fn position(&self) -> String {
        format!("{}/{}", self.txid, self.seq)
    }
}

/// The changes a journal row holds, in commit order. A chunk whose array cannot be
/// read is one bad change (the whole row is set aside).
pub(super) fn changes(row: &Row) -> Result<Vec<Change<'_>>, SourceError> {
    let one = Change {
        journal_id: row.try_get(0)?,
        txid: row.try_get(1)?,
        seq: row.try_get(2)?,
        schema: row.try_get(3)?,
        table: row.try_get(4)?,
        op: row.try_get(5)?,
        before: row.try_get(6)?,
        after: row.try_get(7)?,
        changed_at: row.try_get(8)?,
    };
    let Some(rows) = row.try_get::<_, Option<i32>>(9)? else {
        return Ok(vec![one]);
    };
    let bad = |reason: String| SourceError::BadChange {
        position: format!("journal id {}", one.journal_id),
        reason,
    };
    let (images, is_after) = match (one.before, one.after) {
        (None, Some(after)) => (after, true),
        (Some(before), None) => (before, false),
        _ => return Err(bad("a chunk holds exactly one of before and after".into())),
    };
    let images: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(images).map_err(|e| bad(format!("chunk of images: {e}")))?;
    if i32::try_from(images.len()).ok() != Some(rows) {
        return Err(bad(format!(
            "chunk says {rows} rows, holds {}",
            images.len()
        )));
    }
    Ok(images
        .into_iter()
        .zip(one.seq..)
        .map(|(image, seq)| Change {
            seq,
            before: (!is_after).then(|| image.get()),
            after: is_after.then(|| image.get()),
            ..one
        })
        .collect())
}

/// Rebuilds events from journal rows; keeps table metadata between batches.
pub(super) struct EventBuilder {
    pub source: String,
    pub database: String,
    tables: HashMap<(String, String), TableMeta>,
    image: String,
    key: String,
    /// An update's key before it (differs from `key` when the update changed the
    /// primary key); empty otherwise.
    before_key: String,
}

impl EventBuilder {
    pub fn new(source: &str, database: &str) -> Self {
        Self {
            source: source.to_owned(),
            database: database.to_owned(),
            tables: HashMap::new(),
            image: String::with_capacity(512),
            key: String::with_capacity(64),
            before_key: String::new(),
        }
    }

    /// Forget table metadata (after a reconnect, DDL may have happened).
    pub fn reset(&mut self) {
        self.tables.clear();
    }

    /// The key (JSON text) of the last change or row built.
    pub fn last_key(&self) -> &str {
        &self.key
    }

    /// The key before the last change when it was an update that changed it.
    pub fn last_old_key(&self) -> Option<&str> {
        (!self.before_key.is_empty() && self.before_key != self.key).then_some(&*self.before_key)
    }

    /// The table's metadata, loaded when unknown or when `image` shows a column it
    /// does not know (ALTER TABLE while running).
    async fn load_meta(
        &mut self,
        client: &Client,
        schema: &str,
        table: &str,
        image: &Image<'_>,
    ) -> Result<(String, String), SourceError> {
        let tkey = (schema.to_owned(), table.to_owned());
        let stale = match self.tables.get(&tkey) {
            None => true,
            Some(m) => image
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
        Ok(tkey)
    }

    /// The primary-key columns of a table, in key order (loaded if unknown); empty
    /// when it has none or does not exist.
    pub async fn key_columns(
        &mut self,
        client: &Client,
        schema: &str,
        table: &str,
    ) -> Result<Vec<String>, SourceError> {
        let tkey = (schema.to_owned(), table.to_owned());
        if !self.tables.contains_key(&tkey) {
            let m = meta::load(client, schema, table).await?.unwrap_or_default();
            self.tables.insert(tkey.clone(), m);
        }
        Ok(self.tables[&tkey].key.clone())
    }

    /// A backfilled row (`to_json` text under the capture functions' settings, as the
    /// trigger journals it) as a `read` event, rendered exactly as a change's `after`
    /// (see `crate::backfill::read_event`).
    #[allow(clippy::too_many_arguments)]
    pub async fn build_read(
        &mut self,
        client: &Client,
        backfill: &Backfill,
        schema: &str,
        table: &str,
        row: &str,
        read_at: DateTime<Utc>,
        captured_at: DateTime<Utc>,
    ) -> Result<ChangeEvent, SourceError> {
        let bad = |reason: String| SourceError::BadChange {
            position: format!("backfill:{}", backfill.id),
            reason,
        };
        let image = Image::parse(row).map_err(|e| bad(format!("row image: {e}")))?;
        let tkey = self.load_meta(client, schema, table, &image).await?;
        let meta = &self.tables[&tkey];
        self.image.clear();
        self.key.clear();
        self.before_key.clear();
        image.render(&meta.kinds, &meta.key, &mut self.image, &mut self.key);
        let row = ReadRow {
            kind: "postgres",
            database: &self.database,
            schema,
            table,
            key: self.key.clone(),
            after: self.image.clone(),
            exact_key: &self.key,
            read_at,
            captured_at,
        };
        read_event(&self.source, backfill, row).map_err(bad)
    }

    pub async fn build(
        &mut self,
        client: &Client,
        change: &Change<'_>,
        captured_at: DateTime<Utc>,
    ) -> Result<ChangeEvent, SourceError> {
        let Change {
            journal_id,
            txid,
            seq,
            schema,
            table,
            op,
            before,
            after,
            changed_at,
        } = *change;
        let position = change.position();
        let bad = |reason: String| SourceError::BadChange {
            position: format!("journal id {journal_id} ({position})"),
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
        self.before_key.clear();
        if op == Op::Truncate {
            // A whole table emptied: no row, so no key and no images.
            self.key.push_str("null");
        } else {
            let keyed = match op {
                Op::Delete => before.as_ref(),
                _ => after.as_ref(),
            }
            .ok_or_else(|| bad("row image missing".into()))?;
            let tkey = self.load_meta(client, schema, table, keyed).await?;
            let meta = &self.tables[&tkey];
            if let Some(img) = &before {
                img.render(&meta.kinds, &meta.key, &mut before_json, &mut self.key);
            }
            if let Some(img) = &after {
                if before.is_some() {
                    std::mem::swap(&mut self.key, &mut self.before_key);
                }
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
            txn: Some(Txn {
                id: txid,
                seq: seq.max(0) as u32,
            }),
            committed_at: Timestamp(changed_at),
            captured_at: Timestamp(captured_at),
        };
        let order_key = event::order_key(&self.source, schema, table, key_raw.get());
        ChangeEvent::from_envelope(&env, order_key).map_err(|e| bad(format!("envelope: {e}")))
    }
}
