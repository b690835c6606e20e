//! Change sources: one [`Source`] trait, one module per database.
//!
//! ```text
//!   source database ──read──▶ Source::run ──BatchSink::commit──▶ store (events +
//!        ▲                                                        deliveries +
//!        └──────────── acknowledge (journal delete / checkpoint) ─ checkpoint)
//! ```
//!
//! The contract every source keeps (DESIGN §1.1): a change is acknowledged upstream
//! only after the store transaction holding it committed, so a crash at any point
//! re-reads it; event ids are derived from the change's position, so a re-read change
//! dedupes in the store. [`supervise`] adds what all sources share: leadership (one
//! reader per source across processes) and reconnecting with backoff.

mod backfill;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
mod sink;
mod supervise;

use std::future::Future;

use hookrelay_core::ChangeEvent;
use hookrelay_store::{
    model::RejectedChange, Backfill, BackfillChunk, BatchOutcome, ChunkOutcome, StoreError,
};
use tokio_util::sync::CancellationToken;

pub use hookrelay_store::describe_pg;
pub use sink::StoreSink;
pub use supervise::{supervise, Notice, SourceSnapshot, SourceState, SourceStatus};

/// Where a source hands its batches: events and the position they reach, committed
/// atomically.
pub trait BatchSink: Send + Sync {
    fn commit(
        &self,
        events: &[ChangeEvent],
        upto: &str,
    ) -> impl Future<Output = Result<BatchOutcome, StoreError>> + Send;

    /// Sets aside a change that cannot become an event, before the batch it was read
    /// in commits, so one bad change never stops its source (DESIGN §1.7).
    fn reject(
        &self,
        change: &RejectedChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// As `commit`, with a backfill chunk whose high watermark the batch reached: the
    /// chunk's read events, their deliveries and its progress commit with the batch.
    fn commit_with_backfill(
        &self,
        events: &[ChangeEvent],
        upto: &str,
        chunk: &BackfillChunk,
    ) -> impl Future<Output = Result<(BatchOutcome, ChunkOutcome), StoreError>> + Send;

    /// The source's oldest running backfill, the one to read next.
    fn running_backfill(&self)
        -> impl Future<Output = Result<Option<Backfill>, StoreError>> + Send;

    /// Ends a backfill as failed (a table it cannot read), naming why.
    fn fail_backfill(
        &self,
        id: &str,
        error: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A database's change feed. `run` reads from where the source left off until `stop`
/// fires or the connection fails; [`supervise`] calls it again after transient errors.
pub trait Source: Send + Sync {
    fn name(&self) -> &str;

    fn run<S: BatchSink>(
        &self,
        sink: &S,
        status: &SourceStatus,
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Whether the source's capture is in place upstream (its setup completed, by any
    /// process), without changing anything: a process on standby is ready only once
    /// it is.
    fn capture_installed(&self) -> impl Future<Output = Result<bool, SourceError>> + Send;
}

/// What a source can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source database: {}", describe_pg(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
    /// A database error while installing capture, naming what was being set up.
    #[error("setting up {object}: {}", describe_pg(.source))]
    SetupStep {
        object: String,
        source: tokio_postgres::Error,
    },
    #[error("change {position}: {reason}")]
    BadChange { position: String, reason: String },
    /// A source database's own error, classified once by that database's module.
    #[error("source database: {message}")]
    Database { message: String, transient: bool },
    /// The stored position is gone upstream (oplog rolled over, binlogs purged):
    /// changes were lost, and only the operator can choose to go on (`on_history_lost`).
    #[error("history lost: {0}")]
    HistoryLost(String),
    /// This process no longer leads the source (DESIGN §1.11): its lock could not be
    /// confirmed in time, its connection failed, or another process took over.
    #[error("leadership lost: {0}")]
    LostLeadership(hookrelay_store::LockLost),
}

impl SourceError {
    pub(crate) fn setup_step(object: impl Into<String>, source: tokio_postgres::Error) -> Self {
        SourceError::SetupStep {
            object: object.into(),
            source,
        }
    }

    /// Retrying may help (network, restart, lock). Setup errors (a missing table, no
    /// primary key) are retried too, but more slowly: they need a human first.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Db(e) | SourceError::SetupStep { source: e, .. } => {
                hookrelay_store::is_transient_pg(e)
            }
            SourceError::Store(e) => e.is_transient(),
            SourceError::Database { transient, .. } => *transient,
            SourceError::LostLeadership(_) => true,
            SourceError::Setup(_) | SourceError::BadChange { .. } | SourceError::HistoryLost(_) => {
                false
            }
        }
    }

    /// Another process leads the source now, or this one could not confirm that it
    /// still does: stop reading and go back to standby, no backoff.
    pub fn is_lost_leadership(&self) -> bool {
        match self {
            SourceError::LostLeadership(_) => true,
            SourceError::Store(e) => e.is_fenced(),
            _ => false,
        }
    }
}
