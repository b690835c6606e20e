//! Delivery lifetime (DESIGN §1.12): a delivery older than `dispatch.max_age` ends
//! `failed`, tried or not, so a dead endpoint's backlog (held back by its open circuit,
//! one probe per cool-down) becomes visible and replayable in bounded time. Its age
//! counts from its creation, or from the replay that started it over (`replayed_at`,
//! sql/V15).
//!
//! ```text
//!  outcome of a failed attempt (RECORD_OUTCOMES, already writing the row):
//!    next retry at most at the delivery's end of life; past it ──▶ failed
//!  expiry sweep (the dispatcher, every max_age / 20 within 1 s..60 s):
//!    subscriptions whose oldest pending delivery, or a due retry, is past its life
//!      ──▶ their pending head and due retries past their life, not leased ──▶ failed
//!    runs (sql/V18) past their life, not leased or their lease ran out
//!      ──▶ their open elements ──▶ failed rows, the runs deleted (`runs`)
//! ```
//!
//! Why this shape: the claim is the hot path and stays as it was (it never looks at
//! a subscription whose circuit is open, which is exactly where old deliveries pile
//! up), and no index is added (every index costs each delivery's insert and outcome,
//! sql/V12). The outcome's part costs a comparison on a row it updates anyway, and it
//! keeps every retry due by its end of life, so an expired retry is always in the
//! due part of `deliveries_retrying`, the part the sweep reads. Pending deliveries
//! are created in id order, so the oldest are at the head of `deliveries_pending`:
//! the sweep reads one index entry and row per subscription that has pending
//! deliveries, and more only where the head is past its life (or was replayed, so
//! younger than its id says). Measured (PostgreSQL 15, generic plans): with 11,000
//! subscriptions, 100 of them with work (10 holding 100,000 pending deliveries, 100
//! holding 2,000 retries), over 300,000 finished deliveries, the look for expired ones
//! (`FIND_EXPIRED`) took 1.7 ms and 700 buffer hits; failing 10,000 at once
//! (`EXPIRE`, 1,000 per subscription) took 170 ms. The steady state is the first
//! figure, once every 60 s at the default `max_age`.
//!
//! A replayed delivery waiting at the head of a subscription's pending deliveries is
//! younger than its id says; more than `HEAD` of them there hide older ones behind
//! them from the sweep until they are sent or expire themselves.
//!
//! A run's open elements age from the run's creation (a replay leaves an open element
//! as it is). Runs are few (they live for milliseconds unless their endpoint is
//! down), and the sweep reads only each subscription's oldest ones (`runs`).
//!
//! A delivery in flight (leased) is left to its outcome. One process sweeps at a time
//! (an advisory lock); the others skip the pass.

use std::time::Duration;

use crate::{Store, StoreError};

/// "hookrelay.expire" as a lock key.
const EXPIRY_LOCK: i64 = 0x686f_6f6b_6578_7069;

/// Rows of a subscription's pending head looked at per statement. More than a
/// process leases of one subscription at a time (8 batches of its concurrency, 16 by
/// default), so leased deliveries at the head cannot hide expired ones behind them.
const HEAD: i64 = 1_000;

/// Statements per sweep at most, so a huge first sweep is spread over several.
const MAX_BATCHES: usize = 50;

/// `$1` max age in seconds. Subscriptions whose pending head is past its life (or was
/// replayed: its age is not its id's), or that have a due retry past its life. Only
/// subscriptions that can have open deliveries are looked at: the enabled ones with
/// work (`subscription_work.due_at` is set while any delivery is open, sql/V6) and the
/// disabled ones (a paused subscription's deliveries wait, and age, as `pending`).
/// Idle subscriptions cost nothing: looking at all of 11,000 subscriptions took 92 ms
/// and 33,000 buffers, these 100 with work 1.7 ms and 700. Each arm is one index probe
/// per subscription: `deliveries_pending`'s first entry, and the due part of
/// `deliveries_retrying` (small unless a circuit holds retries back).
pub(crate) const FIND_EXPIRED: &str = "
select s.id
  from (select w.subscription_id as id
          from hookrelay.subscription_work w
         where w.due_at is not null
        union
        select d.id from hookrelay.subscriptions d where not d.enabled) s
 where coalesce((
        select p.replayed_at is not null
               or p.created_at < now() - make_interval(secs => $1)
          from hookrelay.deliveries p
         where p.subscription_id = s.id and p.status = 'pending'
         order by p.subscription_id, p.id
         limit 1), false)
    or exists (
        select 1 from hookrelay.deliveries r
         where r.subscription_id = s.id and r.status = 'retrying'
           and r.next_attempt_at <= now()
           and coalesce(r.replayed_at, r.created_at) < now() - make_interval(secs => $1))";

/// `$1` max age in seconds, `$2` subscriptions, `$3` head rows per subscription, `$4`
/// the reason. Fails their pending head and due retries that are past their life and
/// not leased, each checked again once locked (SKIP LOCKED: a row the claim or the
/// recorder holds is left to it and looked at by the next sweep).
pub(crate) const EXPIRE: &str = "
with old as (
    select c.id
      from unnest($2::text[]) as s(id)
      cross join lateral (
            (select p.id, p.replayed_at, p.created_at, p.lease_until
               from hookrelay.deliveries p
              where p.subscription_id = s.id and p.status = 'pending'
              order by p.subscription_id, p.id
              limit $3)
            union all
            (select r.id, r.replayed_at, r.created_at, r.lease_until
               from hookrelay.deliveries r
              where r.subscription_id = s.id and r.status = 'retrying'
                and r.next_attempt_at <= now()
                and coalesce(r.replayed_at, r.created_at) < now() - make_interval(secs => $1)
              limit $3)
      ) c
     where coalesce(c.replayed_at, c.created_at) < now() - make_interval(secs => $1)
       and (c.lease_until is null or c.lease_until < now())
),
doomed as (
    select d.id
      from hookrelay.deliveries d
     where d.id in (select id from old)
       and d.status in ('pending', 'retrying')
       and (d.lease_until is null or d.lease_until < now())
       and coalesce(d.replayed_at, d.created_at) < now() - make_interval(secs => $1)
       for update of d skip locked
)
update hookrelay.deliveries d
   set status = 'failed', lease_owner = null, lease_until = null,
       last_error = $4 || coalesce('; last attempt: ' || d.last_error, ''),
       updated_at = now()
  from doomed
 where d.id = doomed.id";

/// The `last_error` of a delivery that outlived `max_age`.
pub(crate) fn expired_reason(max_age: Duration) -> String {
    format!(
        "expired: not delivered within dispatch.max_age ({})",
        humantime::format_duration(max_age)
    )
}

/// How often the dispatcher sweeps: a twentieth of the lifetime, within 1 s and
/// 60 s, so a delivery ends within 5 % (at most a minute) of its end of life.
pub fn expiry_interval(max_age: Duration) -> Duration {
    (max_age / 20).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

impl Store {
    /// One expiry sweep (see the module doc): fails deliveries older than the
    /// store's max age, rows and runs' open elements. `None` when another process is
    /// sweeping.
    pub async fn expire_deliveries(&self) -> Result<Option<u64>, StoreError> {
        let mut client = self.client().await?;
        let got: bool = client
            .query_one("select pg_try_advisory_lock($1)", &[&EXPIRY_LOCK])
            .await?
            .get(0);
        if !got {
            return Ok(None);
        }
        let result = match self.expire_locked(&client).await {
            Ok(rows) => self.expire_runs(&mut client).await.map(|runs| rows + runs),
            Err(e) => Err(e),
        };
        let _ = client
            .execute("select pg_advisory_unlock($1)", &[&EXPIRY_LOCK])
            .await;
        result.map(Some)
    }

    async fn expire_locked(&self, client: &deadpool_postgres::Object) -> Result<u64, StoreError> {
        let secs = self.max_age.as_secs_f64();
        let stmt = client.prepare_cached(FIND_EXPIRED).await?;
        let subs: Vec<String> = client
            .query(&stmt, &[&secs])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if subs.is_empty() {
            return Ok(0);
        }
        let reason = expired_reason(self.max_age);
        let stmt = client.prepare_cached(EXPIRE).await?;
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let n = client
                .execute(&stmt, &[&secs, &subs, &HEAD, &reason])
                .await?;
            total += n;
            if n == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Fails the open elements of runs past their life, a batch per transaction (the
    /// runs are locked in one statement and judged in the next, see `runs`).
    async fn expire_runs(&self, client: &mut deadpool_postgres::Object) -> Result<u64, StoreError> {
        let secs = self.max_age.as_secs_f64();
        let reason = expired_reason(self.max_age);
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let tx = client.transaction().await?;
            let (runs, failed) = crate::runs::expire_batch(&tx, secs, &reason).await?;
            tx.commit().await?;
            total += failed;
            if runs == 0 {
                break;
            }
        }
        Ok(total)
    }
}
