//! Reading the binlog stream: event groups (transactions) become batches of events,
//! and the checkpoint only ever moves to the end of a group.
//!
//! ```text
//!  GTID/BEGIN ─▶ TABLE_MAP ─▶ ROWS… ─▶ XID/COMMIT      (one group; DDL is a group alone)
//!     open txn     layout      `open` events   `open` → `done`, boundary = end of XID
//!
//!  `done` reaches batch_size, or the stream idles 1 ms ─▶ commit(done, boundary)
//!  `done` + `open` reach batch_size mid-group (a 100k-row transaction)
//!                                  ─▶ commit(done + open, last boundary): the
//!                                     checkpoint stays before the group, memory stays
//!                                     at one batch
//! ```
//!
//! Unwatched tables cost a pattern match per table map: their rows are never
//! decoded, and the checkpoint follows them at most once a second. A table created
//! while hookrelay runs is captured from its first table map (the binlog carries its
//! rows with the layout they were written with), so nothing after its CREATE TABLE
//! is missed; excluded columns are skipped as each row is rendered, never decoded.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use hookrelay_core::{
    event::{self, Envelope, SourceRef, Timestamp, Txn},
    ChangeEvent, Op,
};
use mysql_async::{
    binlog::events::{Event, EventData, RowsEventData, TableMapEvent},
    BinlogStream, Conn,
};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    backfill::{self, Backfiller},
    position::{rotate_file_name, BinlogPosition, MariadbGtid, MARIADB_GTID_EVENT},
    setup,
    table::{LayoutError, TableLayout},
    value::Charset,
};
use crate::{BatchSink, SourceError, SourceStatus};
use hookrelay_core::{scope::TableScope, status::SkippedTable};

/// How long the stream may be quiet before the reader suspects a dead connection:
/// the server sends a heartbeat every `HEARTBEAT` while idle.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
const SILENCE_LIMIT: Duration = Duration::from_secs(16);
/// The binlog's HEARTBEAT_LOG_EVENT type (MySQL and MariaDB).
const HEARTBEAT_EVENT: u8 = 27;
/// While events wait in `done`, wait this long for more before committing: a burst of
/// small transactions becomes one store commit.
const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// Moving the checkpoint past unwatched traffic alone costs a store commit; once a
/// second is enough to keep a restart from re-reading much.
const POSITION_ONLY_EVERY: Duration = Duration::from_secs(1);

/// One open event group.
struct Group {
    id: String,
    seq: u32,
    committed_at: DateTime<Utc>,
    /// MariaDB FL_STANDALONE: one statement, no BEGIN/COMMIT.
    standalone: bool,
}

/// What a table id maps to in the current stream.
struct Mapped {
    tme: TableMapEvent<'static>,
    /// `None` for unwatched tables.
    layout: Option<Arc<TableLayout>>,
    /// A table of the `hookrelay` database a backfill writes through.
    role: Role,
}

/// What a table's rows are to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A watched table's rows are changes; any other's are skipped.
    Changes,
    /// Backfill marks (`layout` renders them).
    Marks,
    /// The shadow of the table a backfill chunk is read from (`layout` renders its
    /// rows as that table's).
    Shadow,
}

pub(super) struct Reader<'a, S> {
    source: &'a str,
    /// Told when the reader has read all the server sent (for `lag_seconds`).
    status: &'a SourceStatus,
    sink: &'a S,
    batch_size: usize,
    scope: &'a TableScope,
    /// For schema look-ups while the other connection streams.
    meta_conn: Conn,
    charsets: HashMap<u16, Charset>,
    /// Last committed checkpoint.
    saved: BinlogPosition,
    boundary: BinlogPosition,
    file: String,
    last_save: Instant,
    tables: HashMap<u64, Mapped>,
    json: HashMap<(String, String), HashSet<String>>,
    group: Option<Group>,
    /// MySQL's GTID event precedes the BEGIN it names.
    pending_gtid: Option<(String, Option<DateTime<Utc>>)>,
    done: Vec<ChangeEvent>,
    open: Vec<ChangeEvent>,
    /// The backfill being read and its chunk in flight (see `backfill`).
    backfill: Backfiller<'a>,
    /// When the stream last sent anything (a heartbeat counts).
    last_event: Instant,
}

impl<'a, S: BatchSink> Reader<'a, S> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: &'a str,
        status: &'a SourceStatus,
        sink: &'a S,
        batch_size: usize,
        scope: &'a TableScope,
        meta_conn: Conn,
        charsets: HashMap<u16, Charset>,
        start: BinlogPosition,
        backfill: Backfiller<'a>,
    ) -> Self {
        Self {
            source,
            status,
            sink,
            batch_size,
            scope,
            meta_conn,
            charsets,
            file: start.file.clone(),
            boundary: start.clone(),
            saved: start,
            last_save: Instant::now(),
            tables: HashMap::new(),
            json: HashMap::new(),
            group: None,
            pending_gtid: None,
            done: Vec::new(),
            open: Vec::new(),
            backfill,
            last_event: Instant::now(),
        }
    }

    /// Reads until `stop` or an error; every committed batch is durable.
    pub async fn run(
        mut self,
        mut stream: BinlogStream,
        stop: &CancellationToken,
    ) -> Result<(), SourceError> {
        loop {
            if self.backfill.wake_in().is_zero() {
                if let Some((id, why)) = self.backfill.tick(self.sink.running_backfill()).await? {
                    self.sink.fail_backfill(&id, &why).await?;
                }
            }
            let wait = if !self.done.is_empty() {
                BATCH_WINDOW
            } else if self.boundary != self.saved {
                POSITION_ONLY_EVERY.saturating_sub(self.last_save.elapsed())
            } else {
                SILENCE_LIMIT.saturating_sub(self.last_event.elapsed())
            };
            // A backfill's next chunk may be due before then: wake for it, then wait
            // on as before.
            let backfill_wait = self.backfill.wake_in();
            let next = tokio::select! {
                ev = stream.next() => Some(ev),
                _ = tokio::time::sleep(wait.min(backfill_wait)) => None,
                _ = stop.cancelled() => return Ok(()),
            };
            match next {
                None if backfill_wait < wait => {}
                Some(Some(Ok(ev))) => {
                    self.last_event = Instant::now();
                    let heartbeat = ev.header().event_type_raw() == HEARTBEAT_EVENT;
                    if !heartbeat {
                        self.backfill.reader_busy();
                    }
                    self.handle(&ev).await?;
                    // The server had nothing to send for a heartbeat period.
                    if heartbeat && self.is_between_groups() {
                        self.status.note_caught_up();
                    }
                }
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) => {
                    return Err(SourceError::Database {
                        message: "the server ended the binlog stream".into(),
                        transient: true,
                    })
                }
                None if !self.done.is_empty() || self.boundary != self.saved => {
                    self.commit_done().await?;
                    // Nothing more came within the window: read up to what the
                    // server has sent.
                    if self.is_between_groups() {
                        self.status.note_caught_up();
                    }
                }
                None => {
                    return Err(SourceError::Database {
                        message: format!("no binlog event or heartbeat for {SILENCE_LIMIT:?}"),
                        transient: true,
                    })
                }
            }
        }
    }

    async fn handle(&mut self, ev: &Event) -> Result<(), SourceError> {
        let header = ev.header();
        let raw_type = header.event_type_raw();
        let log_pos = u64::from(header.log_pos());
        match raw_type {
            MARIADB_GTID_EVENT => {
                let g = MariadbGtid::parse(ev.data(), header.server_id())
                    .ok_or_else(|| self.bad(log_pos, "MariaDB GTID event too short".into()))?;
                self.open_group(g.to_string(), secs(header.timestamp()), g.standalone);
                return Ok(());
            }
            // MariaDB: compressed query and rows events (log_bin_compress).
            165..=171 => {
                return Err(self.bad(
                    log_pos,
                    "compressed binlog event: turn log_bin_compress OFF (events already written compressed cannot be read)".into(),
                ));
            }
            // MariaDB annotate rows, binlog checkpoint, GTID list, start encryption.
            160 | 161 | 163 | 164 => return Ok(()),
            _ => {}
        }
        let data = match ev.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(self.bad(log_pos, format!("unreadable event type {raw_type}: {e}")))
            }
        };
        match data {
            EventData::RotateEvent(r) => {
                let name = rotate_file_name(r.name_raw(), &self.file);
                if name != self.file {
                    self.file = name;
                    if self.group.is_none() {
                        self.boundary = BinlogPosition {
                            file: self.file.clone(),
                            offset: r.position(),
                            gtid: self.boundary.gtid.clone(),
                        };
                    }
                }
            }
            EventData::GtidEvent(g) => {
                let sid = g.sid();
                let uuid = format!(
                    "{}-{}-{}-{}-{}",
                    hex::encode(&sid[0..4]),
                    hex::encode(&sid[4..6]),
                    hex::encode(&sid[6..8]),
                    hex::encode(&sid[8..10]),
                    hex::encode(&sid[10..16])
                );
                let ts = g.original_commit_timestamp();
                let at = (ts > 0)
                    .then(|| DateTime::<Utc>::from_timestamp_micros(ts as i64))
                    .flatten();
                self.pending_gtid = Some((format!("{uuid}:{}", g.gno()), at));
            }
            EventData::QueryEvent(q) => {
                let query = q.query();
                let verb = query.trim().to_ascii_uppercase();
                if verb == "BEGIN" || verb.starts_with("XA START") {
                    if self.group.is_none() {
                        let (id, at) = match self.pending_gtid.take() {
                            Some((gtid, at)) => (gtid, at),
                            None => {
                                let start = log_pos.saturating_sub(u64::from(header.event_size()));
                                (format!("{}:{start}", self.file), None)
                            }
                        };
                        self.open_group(id, at.unwrap_or_else(|| secs(header.timestamp())), false);
                    }
                } else if verb == "COMMIT" || verb == "ROLLBACK" || verb.starts_with("XA ") {
                    // A ROLLBACK in the binlog follows changes to non-transactional
                    // tables, which did happen: they are kept like a COMMIT's.
                    // Known gap: an XA transaction's rows are logged at XA END/PREPARE
                    // and are sent from there, before its XA COMMIT or XA ROLLBACK.
                    self.close_group(log_pos).await?;
                } else {
                    // DDL (or another statement): table maps after it describe the new
                    // shape; MariaDB JSON columns must be looked up again.
                    self.json.clear();
                    if changes_tables(&verb) {
                        // A table created, altered or dropped: list what the patterns
                        // match now (a new table's rows are captured from its first
                        // table map, whatever this says).
                        let now = setup::scope_now(&mut self.meta_conn, self.scope).await?;
                        self.status.set_tables(now.captured, now.skipped);
                    }
                    if self.group.as_ref().is_none_or(|g| g.standalone) {
                        self.pending_gtid = None;
                        self.close_group(log_pos).await?;
                    }
                }
            }
            EventData::XidEvent(_) => self.close_group(log_pos).await?,
            EventData::TableMapEvent(tme) => self.map_table(tme.into_owned(), log_pos).await?,
            EventData::RowsEvent(rows) => self.read_rows(&rows, &header, log_pos).await?,
            _ => {}
        }
        Ok(())
    }

    fn open_group(&mut self, id: String, committed_at: DateTime<Utc>, standalone: bool) {
        self.group = Some(Group {
            id,
            seq: 0,
            committed_at,
            standalone,
        });
    }

    /// End of a group at `log_pos` (0 for artificial events, which move nothing).
    async fn close_group(&mut self, log_pos: u64) -> Result<(), SourceError> {
        let group = self.group.take();
        self.done.append(&mut self.open);
        if log_pos > 0 {
            self.boundary = BinlogPosition {
                file: self.file.clone(),
                offset: log_pos,
                gtid: group
                    .filter(|g| !g.id.starts_with(&format!("{}:", self.file)))
                    .map(|g| g.id)
                    .or_else(|| self.boundary.gtid.clone()),
            };
        }
        if let Some(chunk) = self.backfill.take_chunk() {
            // The chunk's group: its read events commit after the changes before it,
            // with its progress.
            let events = std::mem::take(&mut self.done);
            let upto = self.boundary.clone();
            let (outcome, chunked) = self
                .sink
                .commit_with_backfill(&events, &upto.to_string(), &chunk)
                .await?;
            debug!(events = events.len(), new = outcome.events, reads = chunk.events.len(), upto = %upto, "batch committed with a backfill chunk");
            self.backfill
                .committed(&chunk, chunked.applied, chunked.completed);
            self.saved = upto;
            self.last_save = Instant::now();
        } else if self.done.len() >= self.batch_size {
            self.commit_done().await?;
        }
        if let Some((id, why)) = self.backfill.missed(&self.file, log_pos) {
            self.sink.fail_backfill(&id, &why).await?;
        }
        Ok(())
    }

    /// Commits the completed groups with the boundary after them.
    /// No event group is open and none waits to be committed.
    fn is_between_groups(&self) -> bool {
        self.group.is_none() && self.open.is_empty() && self.done.is_empty()
    }

    async fn commit_done(&mut self) -> Result<(), SourceError> {
        let events = std::mem::take(&mut self.done);
        self.commit(events, self.boundary.clone()).await
    }

    async fn commit(
        &mut self,
        events: Vec<ChangeEvent>,
        upto: BinlogPosition,
    ) -> Result<(), SourceError> {
        let outcome = self.sink.commit(&events, &upto.to_string()).await?;
        debug!(events = events.len(), new = outcome.events, deliveries = outcome.deliveries, upto = %upto, "batch committed");
        self.saved = upto;
        self.last_save = Instant::now();
        Ok(())
    }

    async fn map_table(
        &mut self,
        tme: TableMapEvent<'static>,
        log_pos: u64,
    ) -> Result<(), SourceError> {
        let id = tme.table_id();
        // A shadow's role depends on the chunk in flight, not on its table map alone:
        // the backfill's tables are looked at again every time.
        if self
            .tables
            .get(&id)
            .is_some_and(|m| m.tme == tme && tme.database_name() != backfill::SCHEMA)
        {
            return Ok(());
        }
        let name = (
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        if name.0 == backfill::SCHEMA {
            // The backfill's own tables, never changes: marks, and the shadow of the
            // table being read, rendered as that table's rows.
            let (role, layout) = if name.1 == backfill::MARKS {
                let layout =
                    TableLayout::from_table_map(&tme, &self.charsets, &HashSet::new(), &|_| false)
                        .map_err(|e| {
                            self.bad(log_pos, format!("table {}.{}: {e}", name.0, name.1))
                        })?;
                (Role::Marks, Some(Arc::new(layout)))
            } else if let Some((_, db, table)) = self
                .backfill
                .shadow()
                .filter(|(shadow, ..)| *shadow == name.1)
            {
                let (db, table) = (db.to_owned(), table.to_owned());
                let json = setup::json_columns(&mut self.meta_conn, &db, &table).await?;
                let scope = self.scope;
                let excluded = |c: &str| scope.excludes(&db, &table, c);
                let layout = TableLayout::from_table_map(&tme, &self.charsets, &json, &excluded)
                    .map_err(|e| {
                        self.bad(log_pos, format!("table {db}.{table} (backfill): {e}"))
                    })?;
                (Role::Shadow, Some(Arc::new(layout)))
            } else {
                (Role::Changes, None)
            };
            self.tables.insert(id, Mapped { tme, layout, role });
            return Ok(());
        }
        let layout = if self.scope.captures(&name.0, &name.1) {
            if !self.json.contains_key(&name) {
                let cols = setup::json_columns(&mut self.meta_conn, &name.0, &name.1).await?;
                self.json.insert(name.clone(), cols);
            }
            let json = self.json.get(&name).cloned().unwrap_or_default();
            let scope = self.scope;
            let excluded = |c: &str| scope.excludes(&name.0, &name.1, c);
            match TableLayout::from_table_map(&tme, &self.charsets, &json, &excluded) {
                Ok(layout) => Some(Arc::new(layout)),
                // A table a glob matched (not one named exactly) that cannot be
                // captured is skipped, listed with why; its rows are not decoded.
                Err(e @ (LayoutError::NoKey | LayoutError::ExcludedKey(_)))
                    if !self.scope.names(&name.0, &name.1) =>
                {
                    self.skip(format!("{}.{}", name.0, name.1), e.to_string());
                    None
                }
                Err(e) => {
                    return Err(self.bad(log_pos, format!("table {}.{}: {e}", name.0, name.1)))
                }
            }
        } else {
            None
        };
        self.tables.insert(
            id,
            Mapped {
                tme,
                layout,
                role: Role::Changes,
            },
        );
        Ok(())
    }

    /// Lists a table as skipped (a newly skipped one is logged and a notice).
    fn skip(&self, table: String, reason: String) {
        let now = self.status.snapshot();
        let skipped = SkippedTable { table, reason };
        if now.skipped_tables.contains(&skipped) {
            return;
        }
        warn!(table = %skipped.table, reason = %skipped.reason, "a table matching the source's patterns is not captured");
        let captured = now
            .captured_tables
            .into_iter()
            .filter(|t| *t != skipped.table)
            .collect();
        let mut all = now.skipped_tables;
        all.retain(|s| s.table != skipped.table);
        all.push(skipped);
        self.status.set_tables(captured, all);
    }

    async fn read_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        header: &mysql_async::binlog::events::BinlogEventHeader,
        log_pos: u64,
    ) -> Result<(), SourceError> {
        let Some(mapped) = self.tables.get(&rows.table_id()) else {
            return Err(self.bad(
                log_pos,
                format!("rows for unknown table id {}", rows.table_id()),
            ));
        };
        let Some(layout) = mapped.layout.clone() else {
            return Ok(());
        };
        if mapped.role != Role::Changes {
            return self.read_backfill_rows(rows, mapped.role, &layout, log_pos);
        }
        let db = mapped.tme.database_name().into_owned();
        let table = mapped.tme.table_name().into_owned();
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
            _ => Op::Update,
        };
        let captured_at = Utc::now();
        let mut decoded = Vec::new();
        for (i, row) in rows.rows(&mapped.tme).enumerate() {
            let (before, after) =
                row.map_err(|e| self.bad(log_pos, format!("row {i} of {db}.{table}: {e}")))?;
            let render = |img: Option<&mysql_async::binlog::row::BinlogRow>| -> Result<Option<(String, String)>, String> {
                img.map(|r| {
                    let (mut out, mut key) = (String::with_capacity(256), String::with_capacity(32));
                    layout.render(r, &mut out, &mut key).map(|()| (out, key)).map_err(|e| e.to_string())
                })
                .transpose()
            };
            let before = render(before.as_ref())
                .map_err(|e| self.bad(log_pos, format!("{db}.{table} row {i}: {e}")))?;
            let after = render(after.as_ref())
                .map_err(|e| self.bad(log_pos, format!("{db}.{table} row {i}: {e}")))?;
            decoded.push((before, after));
        }
        if self.group.is_none() {
            // Rows outside BEGIN…COMMIT (a non-transactional table without GTIDs).
            let start = log_pos.saturating_sub(u64::from(header.event_size()));
            self.open_group(
                format!("{}:{start}", self.file),
                secs(header.timestamp()),
                false,
            );
        }
        for (before, after) in &decoded {
            for (_, key) in before.iter().chain(after.iter()) {
                self.backfill.note_change(&db, &table, key);
            }
        }
        for (i, (before, after)) in decoded.into_iter().enumerate() {
            let ev = self.build(op, &db, &table, log_pos, i, before, after, captured_at)?;
            self.open.push(ev);
            if self.done.len() + self.open.len() >= self.batch_size {
                // A large group: commit what it has so far, the checkpoint staying at
                // the boundary before it. A crash re-reads the group; ids dedupe.
                let mut events = std::mem::take(&mut self.done);
                events.append(&mut self.open);
                self.commit(events, self.boundary.clone()).await?;
                // Fault suite: die between two chunks of one large group.
                fail::fail_point!("mysql.after_chunk", |_| Err(SourceError::Database {
                    message: "failpoint mysql.after_chunk".into(),
                    transient: true,
                }));
            }
        }
        Ok(())
    }

    /// Rows of the backfill's own tables: a mark says whether this group is the chunk
    /// in flight; that chunk's shadow rows become its read events. Deletes and other
    /// groups' rows are skipped.
    fn read_backfill_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        role: Role,
        layout: &TableLayout,
        log_pos: u64,
    ) -> Result<(), SourceError> {
        let inserts = matches!(
            rows,
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_)
        );
        if !inserts || (role == Role::Shadow && !self.backfill.reading_chunk()) {
            return Ok(());
        }
        let Some(mapped) = self.tables.get(&rows.table_id()) else {
            return Ok(());
        };
        for (i, row) in rows.rows(&mapped.tme).enumerate() {
            let (_, after) =
                row.map_err(|e| self.bad(log_pos, format!("backfill row {i}: {e}")))?;
            let Some(after) = after else { continue };
            let (mut image, mut key) = (String::with_capacity(256), String::with_capacity(32));
            layout
                .render(&after, &mut image, &mut key)
                .map_err(|e| self.bad(log_pos, format!("backfill row {i}: {e}")))?;
            match role {
                Role::Marks => self.backfill.mark_read(&image),
                _ => self.backfill.push_row(image, key)?,
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        op: Op,
        db: &str,
        table: &str,
        log_pos: u64,
        row: usize,
        before: Option<(String, String)>,
        after: Option<(String, String)>,
        captured_at: DateTime<Utc>,
    ) -> Result<ChangeEvent, SourceError> {
        let position = format!("{}:{log_pos}/{row}", self.file);
        let bad = |reason: String| SourceError::BadChange {
            position: position.clone(),
            reason,
        };
        let Some(group) = self.group.as_mut() else {
            return Err(bad("row outside an event group".into()));
        };
        let seq = group.seq;
        group.seq += 1;
        let key = match (&before, &after) {
            (_, Some((_, k))) | (Some((_, k)), None) => k.clone(),
            (None, None) => return Err(bad("row without an image".into())),
        };
        let raw = |s: String| RawValue::from_string(s).map_err(|e| bad(format!("image: {e}")));
        let key_raw = raw(key)?;
        let before_raw = before.map(|(img, _)| raw(img)).transpose()?;
        let after_raw = after.map(|(img, _)| raw(img)).transpose()?;
        let (log_pos_text, row_text) = (log_pos.to_string(), row.to_string());
        let id = event::event_id(
            self.source,
            &[
                self.file.as_bytes(),
                log_pos_text.as_bytes(),
                row_text.as_bytes(),
            ],
            group.committed_at,
        );
        let event_type = format!("{table}.{}", op.as_str());
        let env = Envelope {
            id: &id,
            event_type: &event_type,
            source: SourceRef {
                name: self.source,
                kind: "mysql",
                database: db,
                schema: db,
                table,
                position: &position,
            },
            op,
            key: &key_raw,
            before: before_raw.as_deref(),
            after: after_raw.as_deref(),
            txn: Some(Txn { id: &group.id, seq }),
            committed_at: Timestamp(group.committed_at),
            captured_at: Timestamp(captured_at),
        };
        let order_key = event::order_key(self.source, db, table, key_raw.get());
        ChangeEvent::from_envelope(&env, order_key).map_err(|e| bad(format!("envelope: {e}")))
    }

    fn bad(&self, log_pos: u64, reason: String) -> SourceError {
        warn!(file = %self.file, log_pos, %reason, "cannot read binlog event");
        SourceError::BadChange {
            position: format!("{}:{log_pos}", self.file),
            reason,
        }
    }
}

/// Whether a statement (upper-cased) creates, alters, renames or drops tables.
fn changes_tables(verb: &str) -> bool {
    [
        "CREATE TABLE",
        "CREATE OR REPLACE TABLE",
        "ALTER TABLE",
        "RENAME TABLE",
        "DROP TABLE",
        "DROP DATABASE",
        "DROP SCHEMA",
    ]
    .iter()
    .any(|v| verb.starts_with(v))
}

fn secs(t: u32) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(i64::from(t), 0).unwrap_or_default()
}
