//! Backfills (DESIGN §1.8) in the MySQL/MariaDB reader: DBLog's watermarks through
//! the binlog, with the chunk itself copied, inside the source server, into a shadow
//! table in the high watermark's transaction, so its rows come back through the
//! binlog and are decoded like every change.
//!
//! ```text
//!  low:     mark row ─▶ hookrelay.backfill_marks                  (its own transaction)
//!  high:    TRUNCATE hookrelay.bf_<hash>                          (the shadow, LIKE the table)
//!           START TRANSACTION
//!             mark row ─▶ hookrelay.backfill_marks
//!             INSERT INTO shadow SELECT … FROM table               (READ COMMITTED: a
//!               WHERE key > cursor ORDER BY key LIMIT n             snapshot, no locks)
//!             SELECT the last key FROM shadow                      (the next cursor, typed)
//!           COMMIT
//!  binlog:  … │ low mark │ changes: their keys are noted │ high mark + shadow rows │ …
//!  reader:  the shadow rows of the group with its own high mark, less the noted
//!           keys, become read events; they commit with the changes before them and
//!           the chunk's progress in one store transaction
//! ```
//!
//! Why that is exact: binlog order is commit order. The copy's snapshot is taken
//! after the low mark committed, and its group is where it committed. A change that
//! committed before the low mark is in the copy, and its event precedes the read. One
//! that committed between the marks may or may not be in the copy, so its key is
//! dropped from the chunk (its own event carries that row's state). One after the
//! high mark follows the read event. So a read never overtakes a newer change of its
//! key, and a row deleted meanwhile is not sent. The copy takes no lock on the
//! table's rows, so it neither waits for the application's transactions nor becomes
//! part of a deadlock with them.
//!
//! Why a shadow table rather than converting the `SELECT`'s result: the shadow rows
//! are decoded by the same binlog value mapping as every change (DESIGN §1.3), so a
//! row's read event carries the same bytes as its insert did, with no second mapping
//! of text or binary protocol values to keep in step.
//!
//! A crash anywhere leaves only marks no reader waits for (skipped) and the progress
//! of the last committed chunk, from which the next leader reads the same chunk
//! again; its read events have the same ids and store once.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use hookrelay_core::{config::split_qualified, scope::TableScope, ChangeEvent};
use hookrelay_store::{Backfill, BackfillChunk};
use mysql_async::{prelude::Queryable, Conn, Params, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::connect::MysqlConnector;
use crate::{
    backfill::{read_event, ReadRow, Reading},
    SourceError,
};

/// The database on the source server that holds the marks and shadow tables.
pub(super) const SCHEMA: &str = "hookrelay";
/// The table of marks: one row per source, replaced by each chunk.
pub(super) const MARKS: &str = "backfill_marks";

/// How long a written chunk may stay unread while the binlog brings nothing at all
/// before the backfill fails: the server is not logging the `hookrelay` database.
/// (Busy, the reader tells sooner: it reads past the chunk's end without its mark.)
const MARK_TIMEOUT: Duration = Duration::from_secs(120);
/// After a transient failure (a lock wait, a lost connection), the next try.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The reader waits for a chunk's copy before it reads on, so the copy is bounded:
/// a row lock held by a long transaction fails it within a second
/// (`innodb_lock_wait_timeout`), and a copy slower than this is abandoned (its
/// connection closed, so the server rolls it back) and tried again later.
const CHUNK_DEADLINE: Duration = Duration::from_secs(10);

/// One column of a table as `information_schema` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    column_type: String,
    data_type: String,
    /// A generated column: computed by the shadow too, never inserted.
    generated: bool,
}

/// The mark row as the binlog renders it.
#[derive(Debug, Deserialize)]
struct MarkRow {
    source: String,
    mark: String,
}

/// A chunk written and waiting to be read back from the binlog.
struct Pending {
    /// The low and high marks' tokens.
    low: String,
    mark: String,
    /// The low mark was read: changes of the table are noted from here on.
    window: bool,
    /// Keys of the table that changed between the marks.
    changed: HashSet<String>,
    db: String,
    table: String,
    shadow: String,
    /// Rows the chunk copied; fewer than `limit`: the table is done.
    copied: u64,
    limit: usize,
    /// The next cursor, for the store.
    cursor: Option<String>,
    /// The server's binlog end just after the chunk committed: a reader past it
    /// without having seen the mark will never see it.
    until: Option<(String, u64)>,
    /// Since when the reader has read nothing (reset by every event it reads).
    issued: Instant,
    read_at: DateTime<Utc>,
    /// The mark's group is being read.
    seen: bool,
    events: Vec<ChangeEvent>,
}

/// The reader's backfill state: the backfill being read and its chunk in flight.
pub(super) struct Backfiller<'a> {
    reading: Reading,
    source: &'a str,
    connector: &'a MysqlConnector,
    /// The tables this source captures: only those can be backfilled consistently.
    scope: &'a TableScope,
    /// The connection chunks are written on, opened when first needed.
    conn: Option<Conn>,
    pending: Option<Pending>,
    marks: u64,
}

impl<'a> Backfiller<'a> {
    pub fn new(
        source: &'a str,
        connector: &'a MysqlConnector,
        max_rows_per_second: u32,
        scope: &'a TableScope,
    ) -> Self {
        Self {
            reading: Reading::new(source, max_rows_per_second),
            source,
            connector,
            scope,
            conn: None,
            pending: None,
            marks: 0,
        }
    }

    /// How long the reader may wait for the binlog before this needs it again.
    pub fn wake_in(&self) -> Duration {
        let at = match &self.pending {
            Some(p) => p.issued + MARK_TIMEOUT,
            None => self.reading.wake_at(),
        };
        at.saturating_duration_since(Instant::now())
    }

    /// The shadow table whose rows the reader should decode now, with the table they
    /// are rows of.
    pub fn shadow(&self) -> Option<(&str, &str, &str)> {
        self.pending
            .as_ref()
            .map(|p| (p.shadow.as_str(), p.db.as_str(), p.table.as_str()))
    }

    /// A mark row read from the binlog (rendered as JSON). The chunk in flight's low
    /// mark opens its window; its high mark makes this group's shadow rows the chunk.
    /// A high mark read without its low one (never expected) drops the chunk, to be
    /// written again, rather than guess which changes it missed.
    pub fn mark_read(&mut self, row: &str) {
        let Ok(mark) = serde_json::from_str::<MarkRow>(row) else {
            return;
        };
        let Some(p) = &mut self.pending else {
            return;
        };
        if mark.source != self.source {
            return;
        }
        if mark.mark == p.low {
            p.window = true;
        } else if mark.mark == p.mark {
            if p.window {
                p.seen = true;
            } else {
                warn!(source = %self.source, mark = %p.mark, "backfill: a chunk's high mark came without its low mark; writing it again");
                self.pending = None;
            }
        }
    }

    /// A change the reader read (`key` as events render it): noted if it is of the
    /// open window's table.
    pub fn note_change(&mut self, db: &str, table: &str, key: &str) {
        if let Some(p) = &mut self.pending {
            if p.window && !p.seen && p.db == db && p.table == table {
                p.changed.insert(key.to_owned());
            }
        }
    }

    /// The reader read an event: a chunk in flight is not overdue while the binlog
    /// still brings something.
    pub fn reader_busy(&mut self) {
        if let Some(p) = &mut self.pending {
            p.issued = Instant::now();
        }
    }

    /// The reader closed a group ending at (`file`, `end`): a chunk whose mark it has
    /// not seen though it is past the chunk's end is not in this binlog; the
    /// backfill to fail (id, why).
    pub fn missed(&mut self, file: &str, end: u64) -> Option<(String, String)> {
        let p = self.pending.as_ref()?;
        let (until_file, until) = p.until.as_ref()?;
        if p.seen || (file, end) < (until_file.as_str(), *until) {
            return None;
        }
        let why = not_logged(&p.shadow, &format!("by {until_file}:{until}"));
        self.pending = None;
        Some(self.reading.give_up(why))
    }

    /// Whether shadow rows being read now belong to the chunk in flight.
    pub fn reading_chunk(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.seen)
    }

    /// One row of the chunk (its image and key as the table's rows render), unless
    /// its key changed between the marks, as a read event.
    pub fn push_row(&mut self, image: String, key: String) -> Result<(), SourceError> {
        let (Some(p), Some(task)) = (&mut self.pending, &self.reading.task) else {
            return Ok(());
        };
        if p.changed.contains(&key) {
            return Ok(());
        }
        let exact = key.clone();
        let row = ReadRow {
            kind: "mysql",
            database: &p.db,
            schema: &p.db,
            table: &p.table,
            exact_key: &exact,
            key,
            after: image,
            read_at: p.read_at,
            captured_at: Utc::now(),
        };
        let ev = read_event(self.source, task, row).map_err(|reason| SourceError::BadChange {
            position: format!("backfill:{}", task.id),
            reason,
        })?;
        p.events.push(ev);
        Ok(())
    }

    /// The group that carried the chunk ended: the chunk to commit with it.
    pub fn take_chunk(&mut self) -> Option<BackfillChunk> {
        if !self.reading_chunk() {
            return None;
        }
        let p = self.pending.take()?;
        let task = self.reading.task.as_ref()?;
        let table_done = p.copied < p.limit as u64;
        Some(BackfillChunk {
            backfill_id: task.id.clone(),
            events: p.events,
            last_key: if table_done { None } else { p.cursor },
            table_done,
        })
    }

    /// The chunk committed: follow its progress (see [`Reading::committed`]).
    pub fn committed(&mut self, chunk: &BackfillChunk, applied: bool, completed: bool) {
        self.reading.committed(chunk, applied, completed);
    }

    /// Writes the next chunk when one is due (after finding a running backfill).
    /// Returns a backfill to fail (id, why) when its table cannot be read or its
    /// chunks do not come back through the binlog.
    pub async fn tick(
        &mut self,
        running: impl std::future::Future<
            Output = Result<Option<Backfill>, hookrelay_store::StoreError>,
        >,
    ) -> Result<Option<(String, String)>, SourceError> {
        if let Some(p) = &self.pending {
            if p.issued.elapsed() < MARK_TIMEOUT {
                return Ok(None);
            }
            let why = not_logged(&p.shadow, &format!("within {MARK_TIMEOUT:?}"));
            self.pending = None;
            return Ok(Some(self.reading.give_up(why)));
        }
        if !self.reading.chunk_due(running).await? {
            return Ok(None);
        }
        let written = tokio::time::timeout(CHUNK_DEADLINE, self.write_chunk())
            .await
            .unwrap_or_else(|_| {
                Err(ChunkError::Transient(format!(
                    "the copy took longer than {CHUNK_DEADLINE:?}"
                )))
            });
        match written {
            Ok(outcome) => Ok(outcome),
            Err(ChunkError::Fatal(why)) => Ok(Some(self.reading.give_up(why))),
            Err(ChunkError::Transient(why)) => {
                warn!(source = %self.source, reason = %why, "backfill: chunk not written; trying again");
                self.conn = None;
                self.reading.retry_in(RETRY_AFTER);
                Ok(None)
            }
        }
    }

    async fn write_chunk(&mut self) -> Result<Option<(String, String)>, ChunkError> {
        let Some(task) = &self.reading.task else {
            return Ok(None);
        };
        let Some(current) = task.current_table().map(str::to_owned) else {
            self.reading.task = None;
            return Ok(None);
        };
        let (backfill_id, last_key) = (task.id.clone(), task.last_key.clone());
        let Some((db, table)) = split_qualified(&current) else {
            return Err(ChunkError::Fatal(format!(
                "table {current:?} is not database.table"
            )));
        };
        if !self.scope.captures(&db, &table) {
            return Err(ChunkError::Fatal(format!(
                "table {current} is no longer captured by source {}",
                self.source
            )));
        }
        let cursor = last_key.as_deref().map(Cursor::parse).transpose()?;
        let limit = self.reading.chunk_limit();
        self.marks += 1;
        let stamp = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let mark = format!("{backfill_id}:{stamp}:{}", self.marks);
        let shadow = shadow_name(&db, &table);
        let source = self.source;
        let conn = self.conn().await?;
        let columns = columns(conn, &db, &table).await?;
        if columns.is_empty() {
            return Err(ChunkError::Fatal(format!(
                "table {current} does not exist or this user cannot see it"
            )));
        }
        let key = key_columns(conn, &db, &table).await?;
        if key.is_empty() {
            return Err(ChunkError::Fatal(format!(
                "table {current} has no primary key"
            )));
        }
        if let Some(c) = columns
            .iter()
            .find(|c| key.contains(&c.name) && matches!(c.data_type.as_str(), "enum" | "set"))
        {
            return Err(ChunkError::Fatal(format!(
                "table {current} is keyed by {} column {}, which sorts by member \
                 index but compares by name: such a table cannot be read in key order",
                c.data_type, c.name
            )));
        }
        ensure_shadow(conn, &db, &table, &shadow, (&columns, &key)).await?;
        let (low, high) = (format!("{mark}:low"), format!("{mark}:high"));
        let read_at = Utc::now();
        let (copied, next, until) = copy_chunk(
            conn,
            (source, (&low, &high), &backfill_id),
            (&db, &table, &shadow),
            (&columns, &key),
            cursor.as_ref(),
            limit,
        )
        .await?;
        self.reading.pace(copied as usize, Instant::now());
        self.pending = Some(Pending {
            low,
            mark: high,
            window: false,
            changed: HashSet::new(),
            db,
            table,
            shadow,
            copied,
            limit,
            cursor: next.map(|c| c.to_text()),
            until,
            issued: Instant::now(),
            read_at,
            seen: false,
            events: Vec::new(),
        });
        Ok(None)
    }

    /// The chunk connection, set up for exact copies on first use.
    async fn conn(&mut self) -> Result<&mut Conn, ChunkError> {
        if self.conn.is_none() {
            let mut conn = self
                .connector
                .connect()
                .await
                .map_err(|e| ChunkError::Transient(e.to_string()))?;
            // READ COMMITTED: INSERT … SELECT then reads a snapshot without locking
            // the table's rows (see above). UTC: a TIMESTAMP copied through the
            // session's zone cannot fall into a daylight-saving gap or overlap.
            // NO_AUTO_VALUE_ON_ZERO: a key 0 stays 0. A one-second lock wait (on the
            // shadow or the marks): see CHUNK_DEADLINE.
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(classify)?;
            conn.query_drop(
                "SET time_zone = '+00:00', \
                 sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', autocommit = 1, \
                 innodb_lock_wait_timeout = 1",
            )
            .await
            .map_err(classify)?;
            // Fix lines name the account the server sees (`cdc@%`), as `check` does.
            let account: String = conn
                .query_first("SELECT CURRENT_USER()")
                .await
                .map_err(classify)?
                .unwrap_or_else(|| self.connector.user().unwrap_or("<user>").to_owned());
            let account = super::setup::quote_account(&account);
            conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{SCHEMA}`"))
                .await
                .map_err(|e| needs_grant(e, &account))?;
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS `{SCHEMA}`.`{MARKS}` (
                   source VARCHAR(255) NOT NULL PRIMARY KEY,
                   mark VARCHAR(255) NOT NULL,
                   backfill VARCHAR(64) NOT NULL,
                   db VARCHAR(64) NOT NULL,
                   tbl VARCHAR(64) NOT NULL
                 ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
            ))
            .await
            .map_err(|e| needs_grant(e, &account))?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ChunkError::Transient("no connection".into()))
    }
}

/// A chunk that never came back through the binlog (`when`: by which position or
/// within what time).
fn not_logged(shadow: &str, when: &str) -> String {
    format!(
        "the chunk written to {SCHEMA}.{shadow} did not come back through the binlog \
         {when}: the server must log the {SCHEMA} database (check binlog_do_db, \
         binlog_ignore_db and replication filters)"
    )
}

/// Why a chunk was not written.
#[derive(Debug)]
enum ChunkError {
    /// The table cannot be read this way: the backfill fails, saying why.
    Fatal(String),
    /// Worth another try (a lock wait, a lost connection).
    Transient(String),
}

impl From<SourceError> for ChunkError {
    fn from(e: SourceError) -> Self {
        ChunkError::Transient(e.to_string())
    }
}

/// Server errors that no retry mends (no such table or column, no privilege) are
/// fatal; the rest are tried again.
fn classify(e: mysql_async::Error) -> ChunkError {
    match &e {
        mysql_async::Error::Server(s)
            if matches!(
                s.code,
                1044 | 1045 | 1049 | 1054 | 1142 | 1143 | 1146 | 1136
            ) =>
        {
            ChunkError::Fatal(format!("{} ({})", s.message, s.code))
        }
        _ => ChunkError::Transient(e.to_string()),
    }
}

/// A refusal to create or write the `hookrelay` database, with the grant that fixes it.
fn needs_grant(e: mysql_async::Error, user: &str) -> ChunkError {
    match classify(e) {
        ChunkError::Fatal(why) => ChunkError::Fatal(format!(
            "a backfill writes its chunks through the database `{SCHEMA}` on the source \
                 server, which this user may not create or write ({why}): CREATE DATABASE \
                 IF NOT EXISTS `{SCHEMA}`; GRANT CREATE, DROP, SELECT, INSERT, DELETE ON \
                 `{SCHEMA}`.* TO {user};"
        )),
        other => other,
    }
}

/// The shadow table of `db.table`: a fixed-length name (identifiers are at most 64
/// characters), the same for every process.
pub(super) fn shadow_name(db: &str, table: &str) -> String {
    let mut h = Sha256::new();
    h.update(db.as_bytes());
    h.update([0u8]);
    h.update(table.as_bytes());
    format!("bf_{}", hex::encode(&h.finalize()[..12]))
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

async fn columns(conn: &mut Conn, db: &str, table: &str) -> Result<Vec<Column>, ChunkError> {
    let rows: Vec<(String, String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, EXTRA FROM information_schema.COLUMNS
              WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(classify)?;
    Ok(rows
        .into_iter()
        .map(|(name, column_type, data_type, extra)| {
            let extra = extra.to_ascii_uppercase();
            Column {
                name,
                column_type: column_type.to_ascii_lowercase(),
                data_type: data_type.to_ascii_lowercase(),
                generated: ["VIRTUAL", "STORED", "PERSISTENT"]
                    .iter()
                    .any(|g| extra.contains(g)),
            }
        })
        .collect())
}

/// The primary key's columns in index order (the order chunks are read in).
async fn key_columns(conn: &mut Conn, db: &str, table: &str) -> Result<Vec<String>, ChunkError> {
    conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
          WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'
          ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    .await
    .map_err(classify)
}

/// Makes the shadow a copy of the table's shape (again, after an ALTER TABLE) and
/// empties it.
async fn ensure_shadow(
    conn: &mut Conn,
    db: &str,
    table: &str,
    shadow: &str,
    (columns, key): (&[Column], &[String]),
) -> Result<(), ChunkError> {
    let (source, shadow_q) = (
        format!("{}.{}", quote(db), quote(table)),
        format!("{}.{}", quote(SCHEMA), quote(shadow)),
    );
    let now = self::columns(conn, SCHEMA, shadow).await?;
    if now != columns || key_columns(conn, SCHEMA, shadow).await? != key {
        conn.query_drop(format!("DROP TABLE IF EXISTS {shadow_q}"))
            .await
            .map_err(classify)?;
        conn.query_drop(format!("CREATE TABLE {shadow_q} LIKE {source}"))
            .await
            .map_err(classify)?;
    }
    conn.query_drop(format!("TRUNCATE TABLE {shadow_q}"))
        .await
        .map_err(classify)
}

/// Copies the next chunk into the shadow with the mark, in one transaction; returns
/// how many rows it copied, the cursor after them and the binlog's end after the
/// commit (when the server says).
async fn copy_chunk(
    conn: &mut Conn,
    (source, (low, high), backfill_id): (&str, (&str, &str), &str),
    (db, table, shadow): (&str, &str, &str),
    (columns, key): (&[Column], &[String]),
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<(u64, Option<Cursor>, Option<(String, u64)>), ChunkError> {
    let shadow_q = format!("{}.{}", quote(SCHEMA), quote(shadow));
    let list = columns
        .iter()
        .filter(|c| !c.generated)
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let order = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let desc = key
        .iter()
        .map(|k| format!("{} DESC", quote(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let (filter, params) = match cursor {
        Some(c) => after(key, columns, c)?,
        None => ("TRUE".to_owned(), Vec::new()),
    };
    let copy = format!(
        "INSERT INTO {shadow_q} ({list}) SELECT {list} FROM {}.{} WHERE {filter} ORDER BY {order} LIMIT {limit}",
        quote(db),
        quote(table)
    );
    let last = format!("SELECT {order} FROM {shadow_q} ORDER BY {desc} LIMIT 1");
    let result = async {
        conn.query_drop("START TRANSACTION").await?;
        write_mark(conn, source, low, backfill_id, (db, table)).await?;
        conn.query_drop("COMMIT").await?;
        conn.query_drop("START TRANSACTION").await?;
        write_mark(conn, source, high, backfill_id, (db, table)).await?;
        conn.exec_drop(copy.as_str(), Params::Positional(params))
            .await?;
        let copied = conn.affected_rows();
        let next: Option<mysql_async::Row> = conn.exec_first(last.as_str(), ()).await?;
        conn.query_drop("COMMIT").await?;
        Ok::<_, mysql_async::Error>((copied, next))
    }
    .await;
    match result {
        Ok((copied, next)) => {
            let next = next.map(|row| {
                Cursor(
                    (0..row.len())
                        .map(|i| CursorValue::from(row.as_ref(i).cloned().unwrap_or(Value::NULL)))
                        .collect(),
                )
            });
            let until = super::setup::current_position(conn)
                .await
                .ok()
                .map(|p| (p.file, p.offset));
            Ok((copied, next, until))
        }
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            Err(classify(e))
        }
    }
}

/// Replaces the source's mark row (a delete and an insert in the binlog; the reader
/// looks at the insert).
async fn write_mark(
    conn: &mut Conn,
    source: &str,
    mark: &str,
    backfill_id: &str,
    (db, table): (&str, &str),
) -> Result<(), mysql_async::Error> {
    let marks = format!("{}.{}", quote(SCHEMA), quote(MARKS));
    conn.exec_drop(format!("DELETE FROM {marks} WHERE source = ?"), (source,))
        .await?;
    conn.exec_drop(
        format!("INSERT INTO {marks} (source, mark, backfill, db, tbl) VALUES (?, ?, ?, ?, ?)"),
        (source, mark, backfill_id, db, table),
    )
    .await
}

/// `WHERE` after the cursor in key order, spelled so the primary key's index serves
/// it: `k1 > ? OR (k1 = ? AND k2 > ?) …`. A DECIMAL key's bound is cast to the
/// column's type: a string compared with a DECIMAL would be compared as a double.
fn after(
    key: &[String],
    columns: &[Column],
    cursor: &Cursor,
) -> Result<(String, Vec<Value>), ChunkError> {
    if cursor.0.len() != key.len() {
        return Err(ChunkError::Fatal(
            "the table's primary key changed during the backfill".into(),
        ));
    }
    let bound = |i: usize| -> String {
        let column_type = columns
            .iter()
            .find(|c| c.name == key[i])
            .map(|c| (c.data_type.as_str(), c.column_type.as_str()));
        match column_type {
            Some(("decimal", ty)) => format!(
                "CAST(? AS {})",
                ty.trim_end_matches(" unsigned").to_ascii_uppercase()
            ),
            _ => "?".to_owned(),
        }
    };
    let mut terms = Vec::new();
    let mut params = Vec::new();
    for i in 0..key.len() {
        let mut parts = Vec::new();
        for (j, k) in key.iter().enumerate().take(i) {
            parts.push(format!("{} = {}", quote(k), bound(j)));
            params.push(cursor.0[j].to_value());
        }
        parts.push(format!("{} > {}", quote(&key[i]), bound(i)));
        params.push(cursor.0[i].to_value());
        terms.push(format!("({})", parts.join(" AND ")));
    }
    Ok((terms.join(" OR "), params))
}

/// The key of the last row read, as the binary protocol returned it: bound back as
/// the same typed values, it compares exactly (no text round trip of a float or a
/// date). Kept in the store as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor(Vec<CursorValue>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CursorValue {
    Null,
    /// Hex of the bytes (strings, DECIMAL text, binary).
    Bytes(String),
    Int(i64),
    UInt(u64),
    /// The float's bits, exactly.
    Float(u32),
    Double(u64),
    Date(u16, u8, u8, u8, u8, u8, u32),
    Time(bool, u32, u8, u8, u8, u32),
}

impl From<Value> for CursorValue {
    fn from(v: Value) -> Self {
        match v {
            Value::NULL => CursorValue::Null,
            Value::Bytes(b) => CursorValue::Bytes(hex::encode(b)),
            Value::Int(i) => CursorValue::Int(i),
            Value::UInt(u) => CursorValue::UInt(u),
            Value::Float(f) => CursorValue::Float(f.to_bits()),
            Value::Double(d) => CursorValue::Double(d.to_bits()),
            Value::Date(y, mo, d, h, mi, s, us) => CursorValue::Date(y, mo, d, h, mi, s, us),
            Value::Time(neg, days, h, m, s, us) => CursorValue::Time(neg, days, h, m, s, us),
        }
    }
}

impl CursorValue {
    fn to_value(&self) -> Value {
        match self {
            CursorValue::Null => Value::NULL,
            CursorValue::Bytes(h) => Value::Bytes(hex::decode(h).unwrap_or_default()),
            CursorValue::Int(i) => Value::Int(*i),
            CursorValue::UInt(u) => Value::UInt(*u),
            CursorValue::Float(b) => Value::Float(f32::from_bits(*b)),
            CursorValue::Double(b) => Value::Double(f64::from_bits(*b)),
            CursorValue::Date(y, mo, d, h, mi, s, us) => Value::Date(*y, *mo, *d, *h, *mi, *s, *us),
            CursorValue::Time(neg, days, h, m, s, us) => Value::Time(*neg, *days, *h, *m, *s, *us),
        }
    }
}

impl Cursor {
    fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn parse(text: &str) -> Result<Self, ChunkError> {
        serde_json::from_str(text).map_err(|e| {
            ChunkError::Fatal(format!(
                "the stored progress {text:?} is not a MySQL cursor ({e})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, data_type: &str, column_type: &str) -> Column {
        Column {
            name: name.into(),
            column_type: column_type.into(),
            data_type: data_type.into(),
            generated: false,
        }
    }

    #[test]
    fn a_cursor_keeps_every_value_exactly() {
        let values = vec![
            Value::Int(-42),
            Value::UInt(u64::MAX),
            Value::Bytes(b"caf\xc3\xa9 \x00\xff".to_vec()),
            Value::Float(0.1),
            Value::Double(-0.0),
            Value::Date(2026, 3, 29, 1, 30, 0, 123_456),
            Value::Time(true, 1, 2, 3, 4, 5),
        ];
        let cursor = Cursor(values.iter().cloned().map(CursorValue::from).collect());
        let back = Cursor::parse(&cursor.to_text()).unwrap();
        let round: Vec<Value> = back.0.iter().map(CursorValue::to_value).collect();
        assert_eq!(round, values);
        assert!(matches!(
            Cursor::parse("{\"id\":5}"),
            Err(ChunkError::Fatal(_))
        ));
    }

    #[test]
    fn the_next_chunk_starts_after_the_cursor_in_key_order() {
        let cols = [
            col("tenant", "varchar", "varchar(20)"),
            col("total", "decimal", "decimal(12,2) unsigned"),
            col("id", "bigint", "bigint(20)"),
        ];
        let key = ["tenant".to_owned(), "total".to_owned(), "id".to_owned()];
        let cursor = Cursor(vec![
            CursorValue::Bytes(hex::encode("a")),
            CursorValue::Bytes(hex::encode("19.90")),
            CursorValue::Int(7),
        ]);
        let (filter, params) = after(&key, &cols, &cursor).unwrap();
        assert_eq!(
            filter,
            "(`tenant` > ?) OR (`tenant` = ? AND `total` > CAST(? AS DECIMAL(12,2))) \
             OR (`tenant` = ? AND `total` = CAST(? AS DECIMAL(12,2)) AND `id` > ?)"
        );
        assert_eq!(params.len(), 6);
        assert_eq!(params[5], Value::Int(7));
        let short = Cursor(vec![CursorValue::Int(1)]);
        assert!(matches!(
            after(&key, &cols, &short),
            Err(ChunkError::Fatal(_))
        ));
    }

    /// A backfiller of `shop.items` with a chunk in flight (marks `m:low`, `m:high`).
    fn in_flight<'a>(connector: &'a MysqlConnector, scope: &'a TableScope) -> Backfiller<'a> {
        let mut b = Backfiller::new("src", connector, 0, scope);
        let at = Utc::now();
        b.reading.task = Some(Backfill {
            id: "bf_1".into(),
            subscription_id: "sub_1".into(),
            source: "src".into(),
            tables: vec!["shop.items".into()],
            tables_done: 0,
            last_key: None,
            rows: 0,
            state: hookrelay_store::BackfillState::Running,
            error: None,
            created_at: at,
            updated_at: at,
            ended_at: None,
        });
        b.pending = Some(Pending {
            low: "m:low".into(),
            mark: "m:high".into(),
            window: false,
            changed: HashSet::new(),
            db: "shop".into(),
            table: "items".into(),
            shadow: shadow_name("shop", "items"),
            copied: 3,
            limit: 3,
            cursor: Some("[]".into()),
            until: None,
            issued: Instant::now(),
            read_at: at,
            seen: false,
            events: Vec::new(),
        });
        b
    }

    fn mark(m: &str) -> String {
        format!(r#"{{"source":"src","mark":"{m}","backfill":"bf_1","db":"shop","tbl":"items"}}"#)
    }

    #[test]
    fn keys_changed_between_the_marks_are_dropped_from_the_chunk() {
        let connector = MysqlConnector::from_url("mysql://cdc@127.0.0.1/shop").unwrap();
        let scope = TableScope::parse(&["shop.items".into()], &[]).unwrap();
        let mut b = in_flight(&connector, &scope);
        // before the low mark: not in the window
        b.note_change("shop", "items", r#"{"id":1}"#);
        b.mark_read(&mark("m:low"));
        // a key-changing update notes both keys; other tables do not count
        b.note_change("shop", "items", r#"{"id":2}"#);
        b.note_change("shop", "items", r#"{"id":20}"#);
        b.note_change("shop", "other", r#"{"id":3}"#);
        b.mark_read(&mark("m:high"));
        assert!(b.reading_chunk());
        for id in [1, 2, 3] {
            let key = format!(r#"{{"id":{id}}}"#);
            b.push_row(format!(r#"{{"id":{id},"v":0}}"#), key).unwrap();
        }
        let chunk = b.take_chunk().expect("the chunk");
        let keys: Vec<String> = chunk
            .events
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
                v["key"]["id"].to_string()
            })
            .collect();
        assert_eq!(keys, ["1", "3"]);
        assert!(!chunk.table_done && chunk.last_key.is_some());
    }

    #[test]
    fn a_high_mark_without_its_low_mark_writes_the_chunk_again() {
        let connector = MysqlConnector::from_url("mysql://cdc@127.0.0.1/shop").unwrap();
        let scope = TableScope::parse(&["shop.items".into()], &[]).unwrap();
        let mut b = in_flight(&connector, &scope);
        b.mark_read(&mark("stale:high"));
        b.mark_read(&mark("m:high"));
        assert!(!b.reading_chunk());
        assert!(b.take_chunk().is_none());
        assert!(
            b.shadow().is_none(),
            "nothing in flight: the next tick writes it again"
        );
    }

    #[test]
    fn shadow_names_fit_and_differ() {
        let long = "x".repeat(64);
        let a = shadow_name(&long, &long);
        assert!(a.len() <= 64 && a.starts_with("bf_"), "{a}");
        assert_eq!(a, shadow_name(&long, &long));
        assert_ne!(shadow_name("a", "bc"), shadow_name("ab", "c"));
    }
}
