//! Retention: finished deliveries, their attempts and the events nothing refers to
//! any more are deleted once older than `[retention]` says, so the store does not grow
//! without bound.
//!
//! ```text
//!  every pass, batches of PRUNE_BATCH (resting 3x each batch's time after it) until none
//!  is left or the pass budget is used:
//!   succeeded deliveries older than `succeeded` ─┐
//!   failed deliveries older than `failed`       ─┴▶ delete ▶ their attempts ▶ their
//!                                                   events, once no delivery is left
//!   receipts recorded before `succeeded` ────────▶ delete ▶ their events, once no
//!   (first attempts that succeeded, sql/V17)        delivery is left
//!   events older than `succeeded` with no delivery left (nobody subscribed, or
//!   their subscription was deleted): each event counts its deliveries, sql/V11
//! ```
//! Small batches, each its own transaction, keep locks short: the claim and the
//! recorder never wait long behind a prune. One process prunes at a time (an advisory
//! lock), the others skip the pass.

use std::{sync::atomic::Ordering, time::Duration};

use crate::{Store, StoreError};

/// Rows deleted per statement.
const PRUNE_BATCH: i64 = 1_000;

/// Batches per pass at most, so a huge first prune is spread over several passes.
const MAX_BATCHES: usize = 50;

/// After each full batch a pass rests this many times as long as the batch took, so
/// a backlog is pruned at no more than a quarter of one connection's time. Back to
/// back, a 100,000-row prune during bench workload 1 cost it 28-44 % of its rate.
const REST_FACTOR: u32 = 3;

/// The rest after a full batch that began at `started`.
async fn rest_after(started: std::time::Instant) {
    tokio::time::sleep(started.elapsed() * REST_FACTOR).await;
}

/// "hookrelay.prune" as a lock key.
const PRUNE_LOCK: i64 = 0x686f_6f6b_7072_756e;

/// The CTEs that take `per_event` (deleted deliveries per event: `event_seq, n`) off
/// their events' counts (sql/V11), deleting an event whose last deliveries these were
/// (`emptied`). The two statements touch disjoint rows. A literal, for `concat!`.
macro_rules! take_off_events {
    () => {
        "emptied as (
    delete from hookrelay.events e using per_event p
     where e.seq = p.event_seq and e.deliveries_left <= p.n
    returning 1
),
fewer as (
    update hookrelay.events e set deliveries_left = e.deliveries_left - p.n
      from per_event p
     where e.seq = p.event_seq and e.deliveries_left > p.n
)
"
    };
}

/// Deletes a batch of finished deliveries older than their status's retention and
/// their attempts, and takes them off their events' counts (`deliveries_left`,
/// sql/V11): an event whose last deliveries these were goes with them, the others
/// keep fewer. The two event statements touch disjoint rows; a subscription's delete,
/// the only other writer of the counts, takes a SHARE lock on deliveries and so never
/// runs beside this.
const PRUNE_DELIVERIES: &str = concat!(
    "
with doomed as (
    delete from hookrelay.deliveries d
     where d.id in (
        select id from hookrelay.deliveries
         where (status = 'succeeded' and updated_at < now() - $1::text::interval)
            or (status = 'failed' and updated_at < now() - $2::text::interval)
         limit $3)
    returning d.id, d.event_seq, d.first_attempt_at is not null as kept
),
attempts as (
    delete from hookrelay.attempts a using doomed where a.delivery_id = doomed.id
    returning 1
),
per_event as (
    select event_seq, count(*)::int as n from doomed group by event_seq
),
",
    take_off_events!(),
    "select (select count(*) from doomed),
       -- a first attempt kept on its delivery's row (sql/V9) goes with the row
       (select count(*) from attempts) + (select count(*) from doomed where kept),
       (select count(*) from emptied)"
);

/// Receipts (sql/V17) read per prune statement: each holds up to a recorded batch
/// of first-attempt successes (512), so a statement stays near `PRUNE_BATCH`
/// deliveries' work on average and bounded at worst.
const PRUNE_RECEIPTS_BATCH: i64 = 16;

/// Deletes the oldest receipts recorded before the succeeded retention, with their
/// deliveries' counts on their events, as `PRUNE_DELIVERIES` does for rows. Only the
/// oldest `$2` receipts are read (identity order is recording order, give or take
/// transactions that overlapped), so a store with nothing to prune pays a few index
/// entries, not a scan.
const PRUNE_RECEIPTS: &str = concat!(
    "
with doomed as (
    delete from hookrelay.receipts r
     where r.id in (
        select o.id from (select id, recorded_at from hookrelay.receipts order by id limit $2) o
         where o.recorded_at < now() - $1::text::interval)
    returning r.event_seqs
),
per_event as (
    select seq as event_seq, count(*)::int as n
      from doomed cross join lateral unnest(doomed.event_seqs) as seq
     group by seq
),
",
    take_off_events!(),
    "select (select count(*) from doomed),
       (select coalesce(sum(cardinality(event_seqs)), 0)::bigint from doomed),
       (select count(*) from emptied)"
);

/// Events older than the succeeded retention with no delivery left (nobody
/// subscribed, or their subscription was deleted), oldest first.
const PRUNE_UNREFERENCED_EVENTS: &str = "
delete from hookrelay.events e
 where e.seq in (
    select seq from hookrelay.events
     where deliveries_left = 0 and created_at < now() - $1::text::interval
     order by created_at
     limit $2)";

/// Runs `batch` (what it pruned, and whether it was full) until one is not full or
/// `MAX_BATCHES` ran, resting after each full one.
async fn in_batches<F, Fut>(mut batch: F) -> Result<Pruned, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(Pruned, bool), StoreError>>,
{
    let mut total = Pruned::default();
    for _ in 0..MAX_BATCHES {
        let started = std::time::Instant::now();
        let (pruned, full) = batch().await?;
        total += pruned;
        if !full {
            break;
        }
        rest_after(started).await;
    }
    Ok(total)
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub attempts: u64,
    pub events: u64,
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, other: Self) {
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
        self.events += other.events;
    }
}

impl Store {
    /// One retention pass (see the module doc). `None` when another process holds
    /// the pruning lock.
    pub async fn prune(
        &self,
        succeeded: Duration,
        failed: Duration,
    ) -> Result<Option<Pruned>, StoreError> {
        let client = self.client().await?;
        let got: bool = client
            .query_one("select pg_try_advisory_lock($1)", &[&PRUNE_LOCK])
            .await?
            .try_get(0)?;
        if !got {
            return Ok(None);
        }
        let result = self.prune_locked(&client, succeeded, failed).await;
        let _ = client
            .execute("select pg_advisory_unlock($1)", &[&PRUNE_LOCK])
            .await;
        let pruned = result?;
        self.pruned
            .fetch_add(pruned.deliveries + pruned.events, Ordering::Relaxed);
        Ok(Some(pruned))
    }

    async fn prune_locked(
        &self,
        client: &deadpool_postgres::Object,
        succeeded: Duration,
        failed: Duration,
    ) -> Result<Pruned, StoreError> {
        let interval = |d: Duration| format!("{} seconds", d.as_secs());
        let (ok_for, failed_for) = (interval(succeeded), interval(failed));
        let mut total = Pruned::default();
        let stmt = client.prepare_cached(PRUNE_DELIVERIES).await?;
        total += in_batches(|| async {
            let row = client
                .query_one(&stmt, &[&ok_for, &failed_for, &PRUNE_BATCH])
                .await?;
            let (d, a, e): (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let pruned = Pruned {
                deliveries: d as u64,
                attempts: a as u64,
                events: e as u64,
            };
            Ok((pruned, d == PRUNE_BATCH))
        })
        .await?;
        let stmt = client.prepare_cached(PRUNE_RECEIPTS).await?;
        total += in_batches(|| async {
            let row = client
                .query_one(&stmt, &[&ok_for, &PRUNE_RECEIPTS_BATCH])
                .await?;
            let (r, d, e): (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            // each element is a delivery and its one attempt
            let pruned = Pruned {
                deliveries: d as u64,
                attempts: d as u64,
                events: e as u64,
            };
            Ok((pruned, r == PRUNE_RECEIPTS_BATCH))
        })
        .await?;
        let stmt = client.prepare_cached(PRUNE_UNREFERENCED_EVENTS).await?;
        total += in_batches(|| async {
            let e = client.execute(&stmt, &[&ok_for, &PRUNE_BATCH]).await?;
            let pruned = Pruned {
                events: e,
                ..Pruned::default()
            };
            Ok((pruned, e == PRUNE_BATCH as u64))
        })
        .await?;
        Ok(total)
    }

    /// Deliveries and events pruned by this process since it started.
    pub fn pruned_total(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }
}
