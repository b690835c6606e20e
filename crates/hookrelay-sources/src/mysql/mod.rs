//! The MySQL/MariaDB source: hookrelay reads the binlog as a replica does (its own
//! `server_id`), turns row events of the watched tables into events, and keeps its
//! binlog position as the source's checkpoint in the store.
//!
//! ```text
//!  server binlog ──COM_BINLOG_DUMP from checkpoint──▶ Reader (binlog.rs)
//!     GTID/BEGIN, TABLE_MAP, ROWS…, XID ──▶ events of each group (table.rs, value.rs)
//!                                             │ BatchSink::commit(events, boundary)
//!                                             ▼
//!                         store: events + deliveries + checkpoint, one transaction
//! ```
//!
//! Acknowledgement: a replica acknowledges nothing to the server; the checkpoint
//! *is* the acknowledgement, and it is written only in the store transaction that
//! holds the events read up to it, and only at a group's end (XID, COMMIT, a
//! standalone DDL, or a file's start). What a crash leaves behind:
//! - before a commit: the store has the previous checkpoint; the groups after it are
//!   read again from the binlog (the server keeps them until they are purged).
//! - during a large group committed in chunks: the chunks are stored, the
//!   checkpoint still points before the group; the whole group is read again and
//!   the chunks' events dedupe on their ids (file + event offset + row index).
//! - after a commit: nothing to redo.
//!
//! A new source starts at the server's current position (`SHOW MASTER STATUS`),
//! committed as its first checkpoint before it reports "capturing". A checkpoint
//! whose binlog file was purged is an error (`on_history_lost = "fail"`), or, if
//! the operator chose `restart_from_now`, a loud warning and a jump to now.
//!
//! `committed_at` is MySQL 8's `original_commit_timestamp` when the GTID event has
//! one, else the group's first event time (MariaDB: whole seconds).

mod backfill;
mod binlog;
mod connect;
mod error;
mod position;
mod setup;
mod table;
mod value;

use hookrelay_core::{
    config::{OnHistoryLost, SourceConfig},
    scope::TableScope,
};
use hookrelay_store::Store;
use mysql_async::{prelude::Queryable, BinlogStreamRequest, Conn};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{BatchSink, Source, SourceError, SourceState, SourceStatus};
pub use connect::MysqlConnector;
pub use position::BinlogPosition;
pub use setup::default_server_id;

pub struct MysqlSource {
    cfg: SourceConfig,
    store: Store,
    /// Every connection of this source (metadata and the binlog stream).
    connector: MysqlConnector,
    scope: TableScope,
    server_id: u32,
    /// `backfill.max_rows_per_second` (0: unlimited).
    backfill_rows_per_second: u32,
}

impl MysqlSource {
    /// `store` is where the checkpoint is read back from on start.
    pub fn new(cfg: SourceConfig, store: Store) -> Result<Self, SourceError> {
        let connector = MysqlConnector::from_url(&cfg.url)
            .map_err(|e| SourceError::Setup(format!("source {}: {e}", cfg.name)))?;
        let scope = TableScope::parse(&cfg.tables, &cfg.exclude_columns)
            .map_err(|e| SourceError::Setup(format!("source {}: {e}", cfg.name)))?;
        Ok(Self {
            server_id: cfg
                .server_id
                .unwrap_or_else(|| default_server_id(&cfg.name)),
            scope,
            connector,
            store,
            cfg,
            backfill_rows_per_second: 0,
        })
    }

    /// Reads backfills at most `n` rows per second (`backfill.max_rows_per_second`;
    /// 0: unlimited).
    pub fn with_backfill_rate(mut self, n: u32) -> Self {
        self.backfill_rows_per_second = n;
        self
    }

    /// The replica id this source registers with.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// Every missing prerequisite, each with the statement that fixes it (empty when
    /// the server is ready), and as notes the tables a glob matches that would be
    /// skipped; an error only when it cannot be asked at all.
    pub async fn check(cfg: &SourceConfig) -> Result<(Vec<String>, Vec<String>), SourceError> {
        let connector = MysqlConnector::from_url(&cfg.url)?;
        let scope = TableScope::parse(&cfg.tables, &cfg.exclude_columns)
            .map_err(|e| SourceError::Setup(format!("source {}: {e}", cfg.name)))?;
        let user = connector.user().unwrap_or("<user>").to_owned();
        let mut conn = match connector.connect().await {
            Ok(conn) => conn,
            // Access denied (wrong password, unknown user, no access to the database):
            // the server's words, then what to run.
            Err(SourceError::Database { message, .. }) if message.contains("Access denied") => {
                return Ok((
                    vec![format!(
                        "the server refused user {user} ({message}): {}",
                        setup::access_denied_fix(&user, &scope.named())
                    )],
                    Vec::new(),
                ));
            }
            Err(e) => return Err(e),
        };
        let result = check_scope(&mut conn, &scope).await;
        let _ = conn.disconnect().await;
        result
    }

    /// How a connection to `cfg`'s server is protected (for `check`).
    pub async fn tls_report(cfg: &SourceConfig) -> Result<String, SourceError> {
        let connector = MysqlConnector::from_url(&cfg.url)?;
        let mut conn = connector.connect().await?;
        let report = connector.tls_report(&mut conn).await;
        let _ = conn.disconnect().await;
        report
    }

    /// The checkpoint to resume from, or the server's current position committed as
    /// the first one; handles purged history per `on_history_lost`.
    async fn start_position<S: BatchSink>(
        &self,
        conn: &mut Conn,
        sink: &S,
        status: &SourceStatus,
    ) -> Result<BinlogPosition, SourceError> {
        let stored = self.store.load_checkpoint(&self.cfg.name).await?;
        let resume = match stored {
            Some(cp) => Some(BinlogPosition::parse(&cp.position).ok_or_else(|| {
                SourceError::Setup(format!(
                    "stored checkpoint {:?} is not a binlog position (was this source another kind before?)",
                    cp.position
                ))
            })?),
            None => None,
        };
        if let Some(pos) = resume {
            if setup::binlog_files(conn).await?.contains(&pos.file) {
                return Ok(pos);
            }
            let lost = format!(
                "binlog {} (checkpoint {pos}) is no longer on the server: changes after it were purged unread",
                pos.file
            );
            match self.cfg.on_history_lost {
                OnHistoryLost::Fail => {
                    return Err(SourceError::HistoryLost(format!(
                        "{lost}; set on_history_lost = \"restart_from_now\" to capture from now on"
                    )))
                }
                OnHistoryLost::RestartFromNow => {
                    warn!(%lost, "history lost; restarting from the current position (on_history_lost = restart_from_now)");
                    status.notice(
                        "history_lost",
                        format!("{lost}; restarted from the current position"),
                    );
                }
            }
        }
        let now = setup::current_position(conn).await?;
        sink.commit(&[], &now.to_string()).await?;
        Ok(now)
    }
}

async fn check_scope(
    conn: &mut Conn,
    scope: &TableScope,
) -> Result<(Vec<String>, Vec<String>), SourceError> {
    let mut problems = setup::problems(conn, &scope.named()).await?;
    let now = setup::scope_now(conn, scope).await?;
    problems.extend(now.excluded_keys);
    let notes = now
        .skipped
        .into_iter()
        .filter(|s| !problems.iter().any(|p| p.contains(&s.table)))
        .map(|s| format!("skipped: {}: {}", s.table, s.reason))
        .collect();
    Ok((problems, notes))
}

fn refuse_unless_ready(problems: Vec<String>) -> Result<(), SourceError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(SourceError::Setup(format!(
        "{} problem(s):\n      - {}",
        problems.len(),
        problems.join("\n      - ")
    )))
}

impl Source for MysqlSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    /// A new source commits the server's position as its first checkpoint before it
    /// reports capturing, so a stored checkpoint means capture has begun.
    async fn capture_installed(&self) -> Result<bool, SourceError> {
        Ok(self.store.load_checkpoint(&self.cfg.name).await?.is_some())
    }

    async fn run<S: BatchSink>(
        &self,
        sink: &S,
        status: &SourceStatus,
        stop: &CancellationToken,
    ) -> Result<(), SourceError> {
        let mut meta = self.connector.connect().await?;
        refuse_unless_ready(setup::problems(&mut meta, &self.scope.named()).await?)?;
        let charsets = setup::charsets(&mut meta).await?;
        // The position first: a new source captures from here, so the slower look
        // at every matching table comes after it.
        let start = self.start_position(&mut meta, sink, status).await?;
        let scope = setup::scope_now(&mut meta, &self.scope).await?;
        refuse_unless_ready(scope.excluded_keys)?;
        for s in scope.skipped.iter() {
            warn!(table = %s.table, reason = %s.reason, "a table matching the source's patterns is not captured");
        }
        status.set_tables(scope.captured, scope.skipped);

        let mut conn = self.connector.connect().await?;
        // MariaDB sends its GTID events (not a BEGIN query) only to replicas that say
        // they understand them; the heartbeat lets a silent, dead connection be told
        // from an idle server.
        conn.query_drop(format!(
            "SET @mariadb_slave_capability = 4, @master_heartbeat_period = {}",
            binlog::HEARTBEAT.as_nanos()
        ))
        .await?;
        let request = BinlogStreamRequest::new(self.server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.offset);
        let stream = conn.get_binlog_stream(request).await?;
        info!(tables = ?self.cfg.tables, server_id = self.server_id, from = %start, "capturing");
        status.set_state(SourceState::Running);
        binlog::Reader::new(
            &self.cfg.name,
            status,
            sink,
            self.cfg.batch_size,
            &self.scope,
            meta,
            charsets,
            start,
            backfill::Backfiller::new(
                &self.cfg.name,
                &self.connector,
                self.backfill_rows_per_second,
                &self.scope,
            ),
        )
        .run(stream, stop)
        .await
    }
}
