//! Backfills (DESIGN §1.8) in the Postgres reader: DBLog's watermarks through the
//! trigger journal, run by the source's leader between its journal reads, so live
//! changes never pause.
//!
//! ```text
//!  open:  low watermark row ─▶ journal        (marks the window's start for a reader
//!         select one chunk by primary key       of the journal; see below)
//!         (to_json under the capture functions' own settings, after the last key)
//!         high watermark row ─▶ journal
//!  drain: every change of the chunk's table the reader commits from now on ──▶ its
//!         key is noted (a TRUNCATE notes the whole table)
//!  high watermark read: the batch is cut there; the chunk less the noted keys becomes
//!         read events, committed with that batch and the chunk's progress (last key,
//!         rows, tables done) in one store transaction, after the batch's changes
//! ```
//!
//! Why that is exact: a change committed before the select is visible to it, and has
//! a journal id below the high watermark's (ids are taken before commit, and the mark
//! is inserted after the select returned), so it is read at the latest in the batch
//! that reaches the mark; if it is read after the select its key is noted and dropped
//! from the chunk (its own event carries that row's state). A change committed after
//! the select is either read before the mark (noted, dropped) or after it (its event
//! follows the read event). So a read event never follows a newer change of its key,
//! and a row deleted meanwhile is not sent.
//!
//! The window opens when the reader itself selects, not when it reads the low
//! watermark back: journal ids commit out of order, so a change with an id below the
//! low mark can still commit after the select; noting from the select on covers it.
//! The low mark is still written, so the journal shows where each window opened.
//!
//! A crash anywhere leaves only stale watermark rows (skipped and deleted when read)
//! and the progress of the last committed chunk, from which the next leader reads the
//! same chunk again; its read events have the same ids and store once.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use hookrelay_core::{config::split_qualified, scope::TableScope, ChangeEvent};
use hookrelay_store::{Backfill, BackfillChunk};
use tokio_postgres::Client;

use super::{journal::EventBuilder, row::Image, setup::quote_ident};
use crate::{backfill::Reading, SourceError};

/// The journal `op` of a watermark row; its `after` is `{"backfill", "mark", "at"}`.
pub(super) const WATERMARK: &str = "WATERMARK";

/// Applies the settings of the capture functions' `SET` clauses (time zone, date and
/// interval styles, float digits, bytea and money output, search path) for the rest of
/// the transaction: the chunk's `to_json` then writes each value exactly as the
/// trigger journals it, whatever this session's own settings.
const PIN_CAPTURE_SETTINGS: &str = "
select set_config(split_part(c, '=', 1), substr(c, strpos(c, '=') + 1), true)
  from pg_catalog.pg_proc p, unnest(p.proconfig) c
 where p.oid = 'hookrelay.capture_statement'::regproc";

const INSERT_WATERMARK: &str = "
insert into hookrelay.journal (source, seq, schema_name, table_name, op, after)
values ($1, 0, $2, $3, 'WATERMARK', json_build_object('backfill', $4::text, 'mark', $5::text, 'at', $6::text))";

/// A chunk read and waiting for its high watermark.
struct Window {
    schema: String,
    table: String,
    /// The high watermark's token.
    mark: String,
    /// The chunk's rows as `to_json` text, in key order.
    rows: Vec<String>,
    /// Keys of the table that changed since the select.
    changed: HashSet<String>,
    truncated: bool,
    read_at: DateTime<Utc>,
}

/// The reader's backfill state: the backfill being read and its open window.
pub(super) struct Backfiller {
    reading: Reading,
    /// The tables this source captures: only those can be backfilled consistently.
    watched: TableScope,
    window: Option<Window>,
    marks: u64,
}

/// What the high watermark of the open window produced.
pub(super) enum Reached {
    /// The chunk to commit with the batch.
    Chunk(BackfillChunk),
    /// A row that cannot become an event: the backfill fails (id, why).
    Failed(String, String),
}

impl Backfiller {
    pub fn new(source: &str, max_rows_per_second: u32, watched: TableScope) -> Self {
        Self {
            reading: Reading::new(source, max_rows_per_second),
            watched,
            window: None,
            marks: 0,
        }
    }

    /// Forgets what this session read (a new session asks the store again).
    pub fn reset(&mut self) {
        self.reading.task = None;
        self.window = None;
    }

    /// The reader should poll the journal without pause: a window is open, or the
    /// next chunk is due.
    pub fn wants_busy(&self) -> bool {
        self.window.is_some()
            || (self.reading.task.is_some() && Instant::now() >= self.reading.wake_at())
    }

    /// How long an idle reader may wait before this needs it again.
    pub fn wake_in(&self) -> Duration {
        self.reading
            .wake_at()
            .saturating_duration_since(Instant::now())
    }

    /// A change the reader is about to commit: notes its key if it is of the open
    /// window's table (`key` None: a TRUNCATE).
    pub fn note_change(&mut self, schema: &str, table: &str, key: Option<&str>) {
        if let Some(w) = &mut self.window {
            if w.schema == schema && w.table == table {
                match key {
                    Some(k) => {
                        w.changed.insert(k.to_owned());
                    }
                    None => w.truncated = true,
                }
            }
        }
    }

    /// Is this watermark row (its `after`) the open window's high watermark? Any other
    /// is stale (left by a session that crashed) and is skipped.
    pub fn is_open_mark(&self, after: Option<&str>) -> bool {
        let Some(w) = &self.window else {
            return false;
        };
        let Some(mark) = after
            .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
            .and_then(|v| v.get("mark").and_then(|m| m.as_str()).map(str::to_owned))
        else {
            return false;
        };
        mark == w.mark
    }

    /// Starts reading the next chunk when one is due: finds a running backfill, then
    /// writes the low watermark, selects the chunk and writes the high watermark.
    /// Returns a backfill to fail (id, why) when its table cannot be read.
    pub async fn tick(
        &mut self,
        client: &Client,
        builder: &mut EventBuilder,
        running: impl std::future::Future<
            Output = Result<Option<Backfill>, hookrelay_store::StoreError>,
        >,
    ) -> Result<Option<(String, String)>, SourceError> {
        if self.window.is_some() || !self.reading.chunk_due(running).await? {
            return Ok(None);
        }
        let now = Instant::now();
        let Some(task) = &self.reading.task else {
            return Ok(None);
        };
        let Some(current) = task.current_table() else {
            // Nothing left (cannot be running, but then it is done here).
            self.reading.task = None;
            return Ok(None);
        };
        let Some((schema, table)) = split_qualified(current) else {
            let why = format!("table {current:?} is not schema.table");
            return Ok(Some(self.give_up(why)));
        };
        if !self.watched.captures(&schema, &table) {
            let why = format!(
                "table {current} is no longer captured by source {}",
                self.reading.source()
            );
            return Ok(Some(self.give_up(why)));
        }
        let key = builder.key_columns(client, &schema, &table).await?;
        if key.is_empty() {
            let why = format!("table {current} is missing or has no primary key");
            return Ok(Some(self.give_up(why)));
        }
        let limit = self.reading.chunk_limit();
        let (backfill_id, last_key) = (task.id.clone(), task.last_key.clone());
        self.marks += 1;
        let stamp = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let mark = format!("{backfill_id}:{stamp}:{}", self.marks);
        write_mark(
            client,
            self.reading.source(),
            (&schema, &table),
            &backfill_id,
            &mark,
            "low",
        )
        .await?;
        let read_at = Utc::now();
        let rows = match select_chunk(
            client,
            &schema,
            &table,
            &key,
            &self.watched.excluded_likes(&schema, &table),
            last_key.as_deref(),
            limit,
        )
        .await
        {
            Ok(rows) => rows,
            Err(e) if e.code().is_some_and(|c| c.code().starts_with("42")) => {
                // undefined table or column, no privilege: this table cannot be read
                return Ok(Some(self.give_up(format!(
                    "reading {current}: {}",
                    crate::describe_pg(&e)
                ))));
            }
            Err(e) => return Err(e.into()),
        };
        write_mark(
            client,
            self.reading.source(),
            (&schema, &table),
            &backfill_id,
            &mark,
            "high",
        )
        .await?;
        self.reading.pace(rows.len(), now);
        self.window = Some(Window {
            schema,
            table,
            mark: format!("{mark}:high"),
            rows,
            changed: HashSet::new(),
            truncated: false,
            read_at,
        });
        Ok(None)
    }

    fn give_up(&mut self, why: String) -> (String, String) {
        self.reading.give_up(why)
    }

    /// The open window's high watermark was read: the chunk less the keys that changed
    /// meanwhile, as read events, with the progress to commit.
    pub async fn reached(
        &mut self,
        client: &Client,
        builder: &mut EventBuilder,
    ) -> Result<Option<Reached>, SourceError> {
        let (Some(w), Some(task)) = (self.window.take(), &self.reading.task) else {
            return Ok(None);
        };
        let key_cols = builder.key_columns(client, &w.schema, &w.table).await?;
        let last_key = match w.rows.last() {
            Some(row) => Some(key_of(row, &key_cols)?),
            None => None,
        };
        let table_done = w.rows.len() < self.reading.chunk_limit();
        let captured_at = Utc::now();
        let mut events: Vec<ChangeEvent> = Vec::with_capacity(w.rows.len());
        if !w.truncated {
            for row in &w.rows {
                let built = builder
                    .build_read(
                        client,
                        task,
                        &w.schema,
                        &w.table,
                        row,
                        w.read_at,
                        captured_at,
                    )
                    .await;
                let event = match built {
                    Ok(event) => event,
                    Err(SourceError::BadChange { reason, .. }) => {
                        let why = format!("a row of {}.{}: {reason}", w.schema, w.table);
                        let (id, why) = self.give_up(why);
                        return Ok(Some(Reached::Failed(id, why)));
                    }
                    Err(e) => return Err(e),
                };
                if !w.changed.contains(builder.last_key()) {
                    events.push(event);
                }
            }
        }
        Ok(Some(Reached::Chunk(BackfillChunk {
            backfill_id: task.id.clone(),
            events,
            last_key: if table_done { None } else { last_key },
            table_done,
        })))
    }

    /// The chunk committed: follow its progress (see [`Reading::committed`]).
    pub fn committed(&mut self, chunk: &BackfillChunk, applied: bool, completed: bool) {
        self.reading.committed(chunk, applied, completed);
    }
}

/// The next `limit` rows of `schema.table` after `last_key` in primary-key order,
/// each as `to_json` text under the capture functions' settings. The key's values
/// come back typed through `json_populate_record` (the inverse of `to_json` under the
/// same settings), each in a scalar subquery, so the row comparison is an index
/// condition on the primary key: every chunk is an index range scan. Columns matching
/// `excluded` (LIKE patterns, `exclude_columns`) are left out of each image in the
/// source database, by the function the capture trigger uses, so they never leave it.
async fn select_chunk(
    client: &Client,
    schema: &str,
    table: &str,
    key: &[String],
    excluded: &[String],
    last_key: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let relation = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let cols: Vec<String> = key
        .iter()
        .map(|k| format!("t.{}", quote_ident(k)))
        .collect();
    let order = cols.join(", ");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let image = if excluded.is_empty() {
        "to_json(t)"
    } else {
        "hookrelay.without(to_json(t), $3::text[])"
    };
    client.batch_execute("begin").await?;
    let result = async {
        client.execute(PIN_CAPTURE_SETTINGS, &[]).await?;
        let rows = match last_key {
            None => {
                // `$2` is a placeholder for `after`, so `$3` is `excluded` in both forms
                let sql = format!(
                    "select {image}::text from {relation} t
                      where $2::text is null
                      order by {order} limit $1"
                );
                let none: Option<&str> = None;
                if excluded.is_empty() {
                    let sql = sql.replace("$2::text is null", "true");
                    client.query(&sql, &[&limit]).await?
                } else {
                    client.query(&sql, &[&limit, &none, &excluded]).await?
                }
            }
            Some(after) => {
                let bounds: Vec<String> = key
                    .iter()
                    .map(|k| {
                        format!(
                            "(select k.{c} from json_populate_record(null::{relation}, $1::text::json) k)",
                            c = quote_ident(k)
                        )
                    })
                    .collect();
                let sql = format!(
                    "select {image}::text from {relation} t
                      where ({order}) > ({bounds})
                      order by {order} limit $2",
                    bounds = bounds.join(", ")
                );
                if excluded.is_empty() {
                    client.query(&sql, &[&after, &limit]).await?
                } else {
                    client.query(&sql, &[&after, &limit, &excluded]).await?
                }
            }
        };
        rows.iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
    }
    .await;
    match &result {
        Ok(_) => client.batch_execute("commit").await?,
        Err(_) => {
            let _ = client.batch_execute("rollback").await;
        }
    }
    result
}

/// Inserts one watermark row (`which`: low or high) into the journal.
async fn write_mark(
    client: &Client,
    source: &str,
    (schema, table): (&str, &str),
    backfill_id: &str,
    mark: &str,
    which: &str,
) -> Result<(), tokio_postgres::Error> {
    let mark = format!("{mark}:{which}");
    let at = Utc::now().to_rfc3339();
    client
        .execute(
            INSERT_WATERMARK,
            &[&source, &schema, &table, &backfill_id, &mark, &at],
        )
        .await?;
    Ok(())
}

/// The key columns of a row image, as a JSON object of their `to_json` values
/// (verbatim: a numeric key keeps every digit): the cursor `json_populate_record`
/// reads back.
fn key_of(row: &str, key: &[String]) -> Result<String, SourceError> {
    let image = Image::parse(row).map_err(|e| SourceError::BadChange {
        position: "backfill chunk".into(),
        reason: format!("row image: {e}"),
    })?;
    let mut out = String::from("{");
    for k in key {
        if let Some((_, raw)) = image.columns.iter().find(|(c, _)| c == k) {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::String(k.clone()).to_string());
            out.push(':');
            out.push_str(raw.get());
        }
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_holds_the_key_columns_as_to_json_wrote_them() {
        let row = r#"{"tenant":"a","id":42,"total":19.99,"at":"2026-11-22T20:01:02.5+00:00"}"#;
        assert_eq!(
            key_of(row, &["tenant".into(), "id".into()]).unwrap(),
            r#"{"tenant":"a","id":42}"#
        );
        assert_eq!(
            key_of(row, &["at".into()]).unwrap(),
            r#"{"at":"2026-11-22T20:01:02.5+00:00"}"#
        );
        let exact = r#"{"n":12345678901234567890.000000001,"x":1}"#;
        assert_eq!(
            key_of(exact, &["n".into()]).unwrap(),
            r#"{"n":12345678901234567890.000000001}"#
        );
    }
}
