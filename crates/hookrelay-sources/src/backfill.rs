//! What every source kind's backfill shares (DESIGN §1.8): the backfill its leader is
//! reading, when the next chunk is due, the progress as chunks commit, and the shape
//! of a read event. How a chunk is read consistently with the change feed is each
//! kind's own (`postgres::backfill`, `mysql::backfill`, `mongodb::backfill`).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookrelay_core::{
    event::{self, Envelope, SourceRef, Timestamp},
    ChangeEvent, Op,
};
use hookrelay_store::{Backfill, BackfillChunk, StoreError};
use serde_json::value::RawValue;
use tracing::{info, warn};

use crate::SourceError;

/// Rows per chunk: what a reader holds at once, whatever the table's size.
const CHUNK_ROWS: usize = 1000;

/// How often a reader with no backfill asks the store for one.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The backfill a source's leader is reading, and the pace of its chunks.
pub(crate) struct Reading {
    source: String,
    /// Rows per second at most; 0: unlimited.
    max_rows_per_second: u32,
    /// The backfill being read, as of its last committed chunk.
    pub task: Option<Backfill>,
    next_look: Instant,
    next_chunk: Instant,
}

impl Reading {
    pub fn new(source: &str, max_rows_per_second: u32) -> Self {
        let now = Instant::now();
        Self {
            source: source.to_owned(),
            max_rows_per_second,
            task: None,
            next_look: now,
            next_chunk: now,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Asks the store for a running backfill when none is being read (at most every
    /// [`LOOK_EVERY`]); true when one is being read and its next chunk is due.
    pub async fn chunk_due(
        &mut self,
        running: impl std::future::Future<Output = Result<Option<Backfill>, StoreError>>,
    ) -> Result<bool, SourceError> {
        let now = Instant::now();
        if self.task.is_none() {
            if now < self.next_look {
                return Ok(false);
            }
            self.next_look = now + LOOK_EVERY;
            self.task = running.await?;
            if let Some(b) = &self.task {
                info!(source = %self.source, backfill = %b.id, subscription = %b.subscription_id,
                      tables = ?b.tables, done = b.tables_done, rows = b.rows, "backfill: reading");
            }
        }
        Ok(self.task.is_some() && now >= self.next_chunk)
    }

    /// When a reader waiting for changes should come back for the backfill.
    pub fn wake_at(&self) -> Instant {
        if self.task.is_some() {
            self.next_chunk
        } else {
            self.next_look
        }
    }

    /// Rows to read in the next chunk: no more than a second's worth of the rate.
    pub fn chunk_limit(&self) -> usize {
        match self.max_rows_per_second {
            0 => CHUNK_ROWS,
            n => CHUNK_ROWS.min(n as usize),
        }
    }

    /// Spaces the next chunk after one of `rows` rows started `from`, so the source
    /// reads no more than `backfill.max_rows_per_second`.
    pub fn pace(&mut self, rows: usize, from: Instant) {
        if self.max_rows_per_second > 0 {
            let secs = rows.max(1) as f64 / f64::from(self.max_rows_per_second);
            self.next_chunk = from + Duration::from_secs_f64(secs);
        }
    }

    /// Tries the next chunk again after `delay` (a transient failure).
    pub fn retry_in(&mut self, delay: Duration) {
        self.next_chunk = Instant::now() + delay;
    }

    /// Gives up the backfill being read: (id, why), as `fail_backfill` records it.
    pub fn give_up(&mut self, why: String) -> (String, String) {
        let id = self.task.take().map(|t| t.id).unwrap_or_default();
        warn!(source = %self.source, backfill = %id, reason = %why, "backfill failed");
        self.next_look = Instant::now();
        (id, why)
    }

    /// The chunk committed: follow its progress, or drop the backfill when it ended
    /// (completed here, or cancelled meanwhile).
    pub fn committed(&mut self, chunk: &BackfillChunk, applied: bool, completed: bool) {
        let Some(task) = &mut self.task else {
            return;
        };
        if !applied || completed {
            info!(source = %self.source, backfill = %task.id, completed,
                  rows = task.rows + chunk.events.len() as i64,
                  "backfill: {}", if completed { "completed" } else { "no longer running" });
            self.task = None;
            self.next_look = Instant::now();
            return;
        }
        task.rows += chunk.events.len() as i64;
        task.last_key = chunk.last_key.clone();
        if chunk.table_done {
            task.tables_done += 1;
        }
    }

    /// A span naming the backfill being read, for its reads, writes and commits.
    pub fn span(&self) -> tracing::Span {
        match &self.task {
            Some(t) => {
                tracing::info_span!("backfill", id = %t.id, subscription = %t.subscription_id)
            }
            None => tracing::Span::none(),
        }
    }
}

/// One row of a chunk, rendered by the kind's value mapping.
pub(crate) struct ReadRow<'a> {
    /// The source's kind and the row's database, schema and table as its change
    /// events name them.
    pub kind: &'a str,
    pub database: &'a str,
    pub schema: &'a str,
    pub table: &'a str,
    /// The event's key and `after`, as JSON text.
    pub key: String,
    pub after: String,
    /// The key as exactly as the kind can write it (part of the event id).
    pub exact_key: &'a str,
    pub read_at: DateTime<Utc>,
    pub captured_at: DateTime<Utc>,
}

/// A row of a chunk as a `read` event (DESIGN §1.8): `before` and `txn` null,
/// committed when it was read. Its id derives from the backfill, the table and the
/// key, its time part from the backfill's start, so a chunk read again after a crash
/// is stored once.
pub(crate) fn read_event(
    source: &str,
    backfill: &Backfill,
    row: ReadRow<'_>,
) -> Result<ChangeEvent, String> {
    let position = format!("backfill:{}", backfill.id);
    let id = event::event_id(
        source,
        &[
            b"read",
            backfill.id.as_bytes(),
            row.schema.as_bytes(),
            row.table.as_bytes(),
            row.exact_key.as_bytes(),
        ],
        backfill.created_at,
    );
    let key = RawValue::from_string(row.key).map_err(|e| format!("key: {e}"))?;
    let after = RawValue::from_string(row.after).map_err(|e| format!("row: {e}"))?;
    let event_type = format!("{}.{}", row.table, Op::Read.as_str());
    let env = Envelope {
        id: &id,
        event_type: &event_type,
        source: SourceRef {
            name: source,
            kind: row.kind,
            database: row.database,
            schema: row.schema,
            table: row.table,
            position: &position,
        },
        op: Op::Read,
        key: &key,
        before: None,
        after: Some(&after),
        txn: None,
        committed_at: Timestamp(row.read_at),
        captured_at: Timestamp(row.captured_at),
    };
    let order_key = event::order_key(source, row.schema, row.table, key.get());
    ChangeEvent::from_envelope(&env, order_key).map_err(|e| format!("envelope: {e}"))
}
