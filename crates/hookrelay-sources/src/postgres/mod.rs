//! The Postgres source: triggers journal each change in the source database, and
//! this reader moves journal rows into the store.
//!
//! ```text
//!            busy: poll again at once (no NOTIFY on writers' commits)
//!           ┌───────────────┐
//!           ▼               │ rows found
//!   ┌──── drain ────────────┘
//!   │ journal empty
//!   ▼
//! settle: idle = true; try the exclusive lock (no writer mid-transaction) and read
//!   once more ──rows──▶ busy
//!   │ nothing, lock taken
//!   ▼
//! idle: wait for NOTIFY / poll timer ──▶ idle = false ──▶ drain
//! ```
//!
//! `committed_at` is the time the trigger ran (`clock_timestamp()`), which precedes
//! the commit by the rest of the transaction; Postgres exposes no cheaper commit time.

mod backfill;
mod journal;
mod meta;
mod row;
mod setup;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Utc;
use futures_util::future::poll_fn;
use hookrelay_core::{config::SourceConfig, scope::TableScope};
use hookrelay_store::{connect::PgConnection, pooler::transaction_pooler, PgConnector};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, Statement};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{BatchSink, Source, SourceError, SourceStatus};
use backfill::{Backfiller, Reached};
use hookrelay_core::status::SkippedTable;
use hookrelay_store::model::RejectedChange;
use journal::EventBuilder;
use setup::Names;
pub use setup::Uninstalled;

/// While busy, how long to wait after a poll that found `n` rows, fewer than a batch,
/// so the next read gets a fuller one: briefly while rows trickle in (each
/// millisecond is latency: W2's p50 fell from 4.7 to 3.9 ms against a flat 2 ms),
/// longer while they pour in (fewer, larger store commits).
fn busy_pause(n: usize) -> Duration {
    Duration::from_millis(if n < 8 { 1 } else { 2 })
}

/// First re-check while a writer is still mid-transaction during settle.
const SETTLE_FIRST: Duration = Duration::from_millis(1);

pub struct PostgresSource {
    cfg: SourceConfig,
    names: Names,
    scope: TableScope,
    database: String,
    /// Every connection of this source, over one TLS connector, with bounded waits on
    /// both ends (`hookrelay_store::PgConnector`): a vanished server fails the reader
    /// in seconds, and the server ends a vanished reader's session (and its locks).
    connector: PgConnector,
    /// Set once the URL was found not to lead through a transaction pooler.
    not_pooled: tokio::sync::OnceCell<()>,
    /// `backfill.max_rows_per_second` (0: unlimited).
    backfill_rows_per_second: u32,
}

impl PostgresSource {
    pub fn new(cfg: SourceConfig) -> Result<Self, SourceError> {
        let connector = PgConnector::from_url(&cfg.url)
            .map_err(|e| SourceError::Setup(format!("source {} {e}", cfg.name)))?;
        let pg = connector.config();
        let database = pg
            .get_dbname()
            .or(pg.get_user())
            .unwrap_or("postgres")
            .to_owned();
        let scope = TableScope::parse(&cfg.tables, &cfg.exclude_columns)
            .map_err(|e| SourceError::Setup(format!("source {}: {e}", cfg.name)))?;
        Ok(Self {
            names: Names::new(&cfg.name),
            cfg,
            scope,
            database,
            connector,
            not_pooled: tokio::sync::OnceCell::new(),
            backfill_rows_per_second: 0,
        })
    }

    /// Reads backfills at most `n` rows per second (`backfill.max_rows_per_second`;
    /// 0: unlimited).
    pub fn with_backfill_rate(mut self, n: u32) -> Self {
        self.backfill_rows_per_second = n;
        self
    }
}

impl PostgresSource {
    /// Opens one connection to the source database; the first refuses a URL that
    /// leads through a transaction-mode pooler (see `hookrelay_store::pooler`): the
    /// reader's LISTEN and prepared statements need a session of their own.
    async fn connect(&self) -> Result<(Client, PgConnection), SourceError> {
        self.not_pooled
            .get_or_try_init(|| async {
                match transaction_pooler(&self.connector).await? {
                    Some(why) => Err(SourceError::Setup(format!(
                        "source {} url: {why}",
                        self.cfg.name
                    ))),
                    None => Ok(()),
                }
            })
            .await?;
        Ok(self.connector.connect().await?)
    }

    /// Connects and lists every problem that would keep a table named exactly from
    /// being captured (missing, not a table, no primary key, an excluded key column)
    /// and, as notes, the tables a glob matches that would be skipped; changes nothing.
    pub async fn check(&self) -> Result<(Vec<String>, Vec<String>), SourceError> {
        let (client, conn) = self.connect().await?;
        let driver = tokio::spawn(conn);
        let result = setup::check(&client, &self.scope).await;
        drop(client);
        let _ = driver.await;
        result
    }
}

impl PostgresSource {
    /// How a connection to the source database is protected (for `check`).
    pub async fn tls_report(&self) -> Result<String, SourceError> {
        let (client, conn) = self.connect().await?;
        let driver = tokio::spawn(conn);
        let result = self.connector.tls_report(&client).await;
        drop(client);
        let _ = driver.await;
        Ok(result?)
    }

    /// Removes this source's triggers and journal from the source database (see
    /// `setup::uninstall`); hookrelay must not be running this source meanwhile, or
    /// it installs them again.
    pub async fn uninstall(&self, force: bool) -> Result<Uninstalled, SourceError> {
        let (client, conn) = self.connect().await?;
        let driver = tokio::spawn(conn);
        let result = setup::uninstall(&client, &self.names, force).await;
        drop(client);
        let _ = driver.await;
        result
    }
}

impl Source for PostgresSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn run<S: BatchSink>(
        &self,
        sink: &S,
        status: &SourceStatus,
        stop: &CancellationToken,
    ) -> Result<(), SourceError> {
        let (client, mut conn) = self.connect().await?;
        let wake = Arc::new(Notify::new());
        let scope_changed = Arc::new(AtomicBool::new(false));
        let (driver_wake, driver_scope) = (wake.clone(), scope_changed.clone());
        let driver = tokio::spawn(async move {
            while let Some(msg) = poll_fn(|cx| conn.poll_message(cx)).await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        // The event trigger's: a matching table was created, altered
                        // or dropped.
                        if n.payload() == "scope" {
                            driver_scope.store(true, Ordering::Release);
                        }
                        driver_wake.notify_one()
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        let result = Reader::new(self, &client, wake, scope_changed, status.clone())
            .run(sink, status, stop)
            .await;
        drop(client);
        driver.abort();
        result
    }

    async fn capture_installed(&self) -> Result<bool, SourceError> {
        let (client, conn) = self.connect().await?;
        let driver = tokio::spawn(conn);
        let result = setup::is_installed(&client, &self.names, &self.scope).await;
        drop(client);
        let _ = driver.await;
        result
    }
}

/// One connected session of the reader.
struct Reader<'a> {
    src: &'a PostgresSource,
    client: &'a Client,
    wake: Arc<Notify>,
    /// Set by a `scope` notification: the tables captured may have changed.
    scope_changed: Arc<AtomicBool>,
    status: SourceStatus,
    builder: EventBuilder,
    /// The backfill this reader is reading, if any (see `backfill`).
    backfill: Backfiller,
    /// Prepared once the journal exists.
    statements: Option<(Statement, Statement)>,
}

impl<'a> Reader<'a> {
    fn new(
        src: &'a PostgresSource,
        client: &'a Client,
        wake: Arc<Notify>,
        scope_changed: Arc<AtomicBool>,
        status: SourceStatus,
    ) -> Self {
        let builder = EventBuilder::new(&src.cfg.name, &src.database);
        Self {
            src,
            client,
            wake,
            scope_changed,
            status,
            builder,
            backfill: Backfiller::new(
                &src.cfg.name,
                src.backfill_rows_per_second,
                src.scope.clone(),
            ),
            statements: None,
        }
    }

    async fn run<S: BatchSink>(
        mut self,
        sink: &S,
        status: &SourceStatus,
        stop: &CancellationToken,
    ) -> Result<(), SourceError> {
        let names = &self.src.names;
        let installed = setup::install(self.client, names, &self.src.scope).await?;
        self.report_tables(installed.captured, installed.skipped);
        let has_globs = self.src.scope.tables.iter().any(|p| p.exact().is_none());
        if !installed.follows_new_tables && has_globs {
            let detail = "tables created from now on are captured only from the next start: creating the event trigger that captures them at once needs a superuser".to_owned();
            tracing::warn!("{detail}");
            status.notice("new_tables", detail);
        }
        self.client
            .batch_execute(&format!(
                "set application_name = 'hookrelay:{}'; listen {}",
                names.source.replace('\'', ""),
                setup::quote_ident(&names.channel)
            ))
            .await?;
        self.statements = Some((
            self.client.prepare(journal::READ).await?,
            self.client.prepare(journal::DELETE).await?,
        ));
        info!(tables = ?self.src.cfg.tables, "capturing");
        status.set_state(crate::SourceState::Running);
        self.builder.reset();
        self.backfill.reset();
        let batch = self.src.cfg.batch_size as i64;
        loop {
            // busy: drain while rows keep coming (or a backfill's chunk is open)
            loop {
                if stop.is_cancelled() {
                    return Ok(());
                }
                let n = self.drain_once(sink, batch).await?;
                if n == 0 {
                    status.note_caught_up();
                }
                self.backfill_tick(sink).await?;
                if n == 0 && !self.backfill.wants_busy() {
                    break;
                }
                if (n as i64) < batch {
                    tokio::time::sleep(busy_pause(n)).await;
                }
            }
            // settle, then idle
            if !self.settle(sink, batch, stop).await? {
                continue;
            }
            debug!("idle");
            loop {
                let wait = self.src.cfg.poll_interval.min(self.backfill.wake_in());
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
                let n = self.drain_once(sink, batch).await?;
                self.backfill_tick(sink).await?;
                if n > 0 || self.backfill.wants_busy() {
                    self.set_idle(false).await?;
                    break;
                }
                status.note_caught_up();
            }
        }
    }

    /// Marks the reader idle and makes sure no writer that saw it busy is still in
    /// flight. True when settled idle; false when rows turned up (back to busy).
    async fn settle<S: BatchSink>(
        &mut self,
        sink: &S,
        batch: i64,
        stop: &CancellationToken,
    ) -> Result<bool, SourceError> {
        self.set_idle(true).await?;
        let key = self.src.names.lock_key;
        let mut pause = SETTLE_FIRST;
        loop {
            let got: bool = self
                .client
                .query_one("select pg_try_advisory_lock($1)", &[&key])
                .await?
                .try_get(0)?;
            if got {
                self.client
                    .execute("select pg_advisory_unlock($1)", &[&key])
                    .await?;
            }
            let n = self.drain_once(sink, batch).await?;
            if n > 0 {
                self.set_idle(false).await?;
                return Ok(false);
            }
            if got {
                return Ok(true);
            }
            // A writer is mid-transaction and may have seen idle = false: look again
            // soon (or as soon as it notifies).
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return Ok(true),
            }
            pause = (pause * 2).min(self.src.cfg.poll_interval);
        }
    }

    /// Publishes the tables captured and skipped (a newly skipped one is logged and
    /// becomes a notice).
    fn report_tables(&self, captured: Vec<String>, skipped: Vec<SkippedTable>) {
        let before = self.status.snapshot().skipped_tables;
        for s in skipped.iter().filter(|s| !before.contains(s)) {
            tracing::warn!(table = %s.table, reason = %s.reason, "a table matching the source's patterns is not captured");
        }
        let was = self.status.snapshot().captured_tables;
        for t in was.iter().filter(|t| !captured.contains(t)) {
            info!(table = %t, "table no longer captured (dropped or no longer matched)");
        }
        for t in captured.iter().filter(|t| !was.contains(t)) {
            info!(table = %t, "table captured");
        }
        self.status.set_tables(captured, skipped);
    }

    async fn set_idle(&self, idle: bool) -> Result<(), SourceError> {
        self.client
            .execute(
                "update hookrelay.readers set idle = $2 where source = $1",
                &[&self.src.names.source, &idle],
            )
            .await?;
        Ok(())
    }

    /// Reads one batch, commits it to the store, then deletes it from the journal.
    /// Returns how many changes it read (at least one per journal row).
    async fn drain_once<S: BatchSink>(
        &mut self,
        sink: &S,
        batch: i64,
    ) -> Result<usize, SourceError> {
        let Some((read, delete)) = self.statements.clone() else {
            return Err(SourceError::Setup("reader used before setup".into()));
        };
        if self.scope_changed.swap(false, Ordering::AcqRel) {
            let (captured, skipped) =
                setup::scope_now(self.client, &self.src.names, &self.src.scope).await?;
            self.report_tables(captured, skipped);
        }
        let rows = self
            .client
            .query(&read, &[&self.src.names.source, &batch])
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let captured_at = Utc::now();
        let mut events = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut reached = None;
        for row in &rows {
            let id = row.try_get::<_, i64>(0)?;
            ids.push(id);
            if row.try_get::<_, &str>(5)? == backfill::WATERMARK {
                // The open backfill window's high watermark ends this batch: the
                // chunk commits with the changes before it (see `backfill`); rows
                // after it are read again next time. Any other mark is stale.
                if self.backfill.is_open_mark(row.try_get(7)?) {
                    reached = self
                        .backfill
                        .reached(self.client, &mut self.builder)
                        .await?;
                    break;
                }
                continue;
            }
            // One change that cannot become an event is set aside, not retried
            // forever in front of every change behind it.
            let changes = match journal::changes(row) {
                Ok(changes) => changes,
                Err(SourceError::BadChange { position, reason }) => {
                    self.reject(sink, id, position, reason, journal::raw_text(row))
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for change in &changes {
                match self.builder.build(self.client, change, captured_at).await {
                    Ok(event) => {
                        let key = (change.op != "TRUNCATE").then(|| self.builder.last_key());
                        self.backfill.note_change(change.schema, change.table, key);
                        if let Some(old) = self.builder.last_old_key() {
                            // the row left its old key: that key changed too
                            self.backfill
                                .note_change(change.schema, change.table, Some(old));
                        }
                        events.push(event);
                    }
                    Err(SourceError::BadChange { position, reason }) => {
                        self.reject(sink, id, position, reason, change.raw_text())
                            .await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let last = ids.iter().copied().max().unwrap_or_default();
        let upto = format!("journal:{last}");
        let outcome = match reached {
            Some(Reached::Chunk(chunk)) => {
                let (outcome, chunked) = sink.commit_with_backfill(&events, &upto, &chunk).await?;
                self.backfill
                    .committed(&chunk, chunked.applied, chunked.completed);
                outcome
            }
            Some(Reached::Failed(backfill, why)) => {
                sink.fail_backfill(&backfill, &why).await?;
                sink.commit(&events, &upto).await?
            }
            None => sink.commit(&events, &upto).await?,
        };
        // Fault suite: die after the store commit, before acknowledging upstream.
        fail::fail_point!("source.before_ack", |_| Err(SourceError::Setup(
            "failpoint source.before_ack".into()
        )));
        // Acknowledge only after the store commit (DESIGN §1.1.1).
        self.client.execute(&delete, &[&ids]).await?;
        debug!(
            read = ids.len(),
            new_events = outcome.events,
            deliveries = outcome.deliveries,
            "batch committed"
        );
        Ok(events.len().max(ids.len()))
    }

    /// Lets the backfill start its next chunk when one is due (see `backfill`); a
    /// backfill whose table cannot be read ends as failed.
    async fn backfill_tick<S: BatchSink>(&mut self, sink: &S) -> Result<(), SourceError> {
        let failed = self
            .backfill
            .tick(self.client, &mut self.builder, sink.running_backfill())
            .await?;
        if let Some((backfill, why)) = failed {
            sink.fail_backfill(&backfill, &why).await?;
        }
        Ok(())
    }

    async fn reject<S: BatchSink>(
        &self,
        sink: &S,
        journal_id: i64,
        position: String,
        reason: String,
        raw: String,
    ) -> Result<(), SourceError> {
        tracing::error!(journal_id, %position, %reason, "a journalled change cannot become an event; set aside in hookrelay.rejected_changes");
        sink.reject(&RejectedChange {
            source: self.src.cfg.name.clone(),
            position,
            reason,
            raw,
        })
        .await?;
        Ok(())
    }
}
