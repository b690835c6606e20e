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

pub mod mysql;
pub mod postgres;
mod sink;
mod supervise;

use std::future::Future;

use hookrelay_core::ChangeEvent;
use hookrelay_store::{BatchOutcome, StoreError};
use tokio_util::sync::CancellationToken;

pub use sink::StoreSink;
pub use supervise::{supervise, SourceState, SourceStatus};

/// Where a source hands its batches: events and the position they reach, committed
/// atomically.
pub trait BatchSink: Send + Sync {
    fn commit(
        &self,
        events: &[ChangeEvent],
        upto: &str,
    ) -> impl Future<Output = Result<BatchOutcome, StoreError>> + Send;
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
}

/// What a source can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
    #[error("change {position}: {reason}")]
    BadChange { position: String, reason: String },
    /// A source database's own error, classified once by that database's module.
    #[error("source database: {message}")]
    Database { message: String, transient: bool },
    /// The stored position is gone upstream (binlogs purged): changes were lost, and
    /// only the operator can choose to go on (`on_history_lost`).
    #[error("history lost: {0}")]
    HistoryLost(String),
}

impl SourceError {
    /// Retrying may help (network, restart, lock). Setup errors (a missing table, no
    /// primary key) are retried too, but more slowly: they need a human first.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Db(e) => hookrelay_store::is_transient_pg(e),
            SourceError::Store(e) => e.is_transient(),
            SourceError::Database { transient, .. } => *transient,
            SourceError::Setup(_) | SourceError::BadChange { .. } | SourceError::HistoryLost(_) => {
                false
            }
        }
    }
}
