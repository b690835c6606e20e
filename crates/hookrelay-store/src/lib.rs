//! hookrelay's Postgres store: all of hookrelay's SQL lives in this crate.
//!
//! ```text
//!  source ──commit_batch──▶ events + runs + checkpoint          (one transaction; a
//!                           subscription's new deliveries as runs of up to 64, one
//!                           row of arrays each, sql/V18, rows for the rest; each event
//!                           counts its deliveries, sql/V11, for retention; fresh runs
//!                           leased at insert within the local dispatcher's offer and
//!                           handed to it, see `signal`)
//!  dispatch ─claim_due────▶ runs, then rows, leased FOR UPDATE SKIP LOCKED (committed
//!                           before I/O; a run's delivery whose key is open becomes a row)
//!  dispatch ─record───────▶ each outcome ends its delivery     (batched: a first success
//!                           in a receipt, one per subscription, sql/V17, or, a few of a
//!                           subscription's, on a row, V9; anything else a row, with the
//!                           delivery's id; the last outcome of a run deletes it)
//!  api ──────────────────▶ subscriptions, events, deliveries (rows, receipts and runs'
//!                           open elements, see `runs`), replay
//! ```
//!
//! Guarantees kept here: a source's events, their deliveries and its checkpoint commit
//! together or not at all; events dedupe on their deterministic id; a delivery's id is
//! fixed when its event is stored; a delivery is leased to one dispatcher at a time; an
//! outcome is only recorded by the lease holder.

mod backfills;
mod batch;
mod claim;
pub mod connect;
mod deliveries;
mod error;
mod events;
mod expiry;
mod gauges;
mod leader;
mod listing;
mod liveness;
mod maintenance;
mod migrate;
pub mod model;
pub mod pooler;
mod presence;
mod retention;
mod row_filters;
mod runs;
mod secrets;
mod signal;
mod subscriptions;
mod text;

use std::sync::{atomic::AtomicU64, Arc};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use hookrelay_core::sealing::Secrets;

pub use backfills::{
    Backfill, BackfillChunk, BackfillState, BackfillTotals, Cancelled, ChunkOutcome,
};
pub use batch::BatchOutcome;
pub use claim::{
    Claim, ClaimProgress, ClaimRoom, ClaimedDelivery, Outcome, OutcomeStatus, RunTicket,
};
pub use connect::{ConnectSetupError, PgConnector};
pub use error::{describe_pg, is_transient_pg, StoreError};
pub use expiry::expiry_interval;
pub use gauges::Backlog;
pub use leader::{Leader, LockLost, SourceLock};
pub use listing::MAX_PAGE;
pub use liveness::CONNECT_TIMEOUT;
pub use presence::Presence;
pub use retention::Pruned;
pub use secrets::SealReport;
pub use signal::{DispatchSignal, Handed, Offer};
pub use text::storable;

/// Statement texts, for tests that inspect what a statement reads
/// (`EXPLAIN (ANALYZE, BUFFERS)`); nothing else should run them.
#[doc(hidden)]
pub mod statements {
    pub use crate::{
        batch::insert_events_and_deliveries,
        claim::{CLAIM_DUE, CLAIM_RUNS},
    };
}

/// A handle on the store; cheap to clone (two pools).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// For dispatch bookkeeping (claims, outcomes) only: `synchronous_commit = off`,
    /// so a lease or an outcome costs no WAL flush. A store crash can then forget the
    /// last few of them, which only means a delivery is sent again with the same id
    /// (at-least-once). Events and checkpoints always use the durable `pool`.
    relaxed: Pool,
    /// For the connections the store opens outside its pools (lock sessions,
    /// migrations); the same TLS connector as the pools'.
    connector: PgConnector,
    /// Deliveries inserted since the last `ANALYZE` (see `maintenance`).
    grown: Arc<AtomicU64>,
    analyzed_at_size: Arc<AtomicU64>,
    /// How subscription secrets and header values are kept (see `secrets`).
    secrets: Arc<Secrets>,
    /// Secrets the claim has opened, by subscription.
    opened: Arc<claim::OpenedCache>,
    /// Deliveries and events removed by retention (see `retention`).
    pruned: Arc<AtomicU64>,
    /// `dispatch.max_age`: how long a delivery lives (see `expiry`).
    max_age: std::time::Duration,
    /// Compiled subscription filters and their failures (see `row_filters`).
    row_filters: Arc<row_filters::RowFilters>,
}

/// Connections in the relaxed pool: the claimer and the outcome recorder.
const RELAXED_POOL_SIZE: usize = 4;

fn build_pool(pg: &PgConnector, size: usize) -> Result<Pool, StoreError> {
    let mgr = Manager::from_config(
        pg.config().clone(),
        pg.tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(30)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Setup(e.to_string()))
}

/// Adds server settings to the connection's `options`, keeping any from the URL.
fn with_options(mut pg: tokio_postgres::Config, extra: &str) -> tokio_postgres::Config {
    let options = match pg.get_options() {
        Some(own) if !own.trim().is_empty() => format!("{own} {extra}"),
        _ => extra.to_owned(),
    };
    pg.options(&options);
    pg
}

/// This process as other processes see it: `<host>-<pid>`; names lease owners and
/// source leaders.
pub fn process_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hookrelay".into());
    format!("{host}-{}", std::process::id())
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the pool; connections are opened lazily, so this succeeds while the
    /// database is down and callers see transient errors until it is back.
    pub fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let connector = PgConnector::from_url(url)?;
        let pg = connector.config().clone();
        // JIT compiles a plan whose estimated cost passes `jit_above_cost`: the claim's
        // generic plan does, and compiling took 300 ms per claim for a 1 ms query.
        let pg = with_options(pg, "-c jit=off");
        // The relaxed pool runs the same few dispatch statements thousands of times a
        // second. Left to choose, Postgres kept re-planning the claim per call (about
        // 1 ms, as much as running it); their generic plans are as good. The queue's
        // pages are hot, so random reads cost little more than sequential ones; at the
        // default 4 the planner preferred walking the primary key (heap order) through
        // finished rows over the pending-only index.
        let relaxed = with_options(
            pg.clone(),
            "-c synchronous_commit=off -c plan_cache_mode=force_generic_plan -c random_page_cost=1.1",
        );
        Ok(Self {
            pool: build_pool(&connector.with_config(pg), pool_size)?,
            relaxed: build_pool(&connector.with_config(relaxed), RELAXED_POOL_SIZE)?,
            connector,
            grown: Arc::default(),
            analyzed_at_size: Arc::default(),
            pruned: Arc::default(),
            secrets: Arc::default(),
            opened: Arc::default(),
            max_age: hookrelay_core::config::DispatchConfig::default().max_age,
            row_filters: Arc::default(),
        })
    }

    /// Deliveries live `max_age` (`dispatch.max_age`; the default without this): the
    /// outcome of an attempt past it fails the delivery, and
    /// [`Store::expire_deliveries`] fails those left untried.
    pub fn with_max_age(mut self, max_age: std::time::Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Seals secrets with `secrets` from now on. A store built by [`Store::connect`]
    /// alone keeps them in plaintext (what `insecure_plaintext_secrets` asks for);
    /// `hookrelay run` always sets this from the config.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = Arc::new(secrets);
        self.opened = Arc::default();
        self
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// A connection whose commits do not wait for the WAL flush (see `relaxed`).
    pub(crate) async fn relaxed_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.relaxed.get().await?)
    }

    /// Each subscription's filter failures in this process since start: events its
    /// filter could not judge (counted as not passing).
    pub fn filter_failures(&self) -> Vec<(String, u64)> {
        self.row_filters.failures()
    }

    /// How the store's connections are made (its TLS settings included).
    pub fn connector(&self) -> &PgConnector {
        &self.connector
    }

    /// Refuses a store URL that leads through a transaction-mode pooler (see
    /// `pooler`): leadership and the dispatcher's sessions would not mean what they
    /// say. Run once at start, by `run`, `migrate` and `check`.
    pub async fn refuse_transaction_pooler(&self) -> Result<(), StoreError> {
        match pooler::transaction_pooler(&self.connector).await? {
            Some(why) => Err(StoreError::Pooler(why)),
            None => Ok(()),
        }
    }

    /// Is the store reachable (for `/readyz`)?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("select 1").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_options_keep_the_urls_own() {
        let pg: tokio_postgres::Config = "postgres://u@h/db?options=-c%20search_path%3Dx"
            .parse()
            .expect("url");
        let pg = with_options(pg, "-c jit=off");
        assert_eq!(pg.get_options(), Some("-c search_path=x -c jit=off"));
        let bare: tokio_postgres::Config = "postgres://u@h/db".parse().expect("url");
        assert_eq!(
            with_options(bare, "-c jit=off").get_options(),
            Some("-c jit=off")
        );
    }
}
