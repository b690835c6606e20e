//! The dispatcher side: lease due deliveries, then record what happened.
//!
//! A claim commits its lease before any HTTP call, so no transaction spans network
//! I/O; several processes can claim from one store because rows are taken
//! `FOR UPDATE SKIP LOCKED`. A delivery is only due when no earlier delivery for the
//! same subscription and order key is still open (per-key order, DESIGN §1.1.3).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{Store, StoreError};

/// Leases up to `$1` due deliveries for `$2` seconds to owner `$3`. Subscriptions are
/// visited in random order and each gives at most its free concurrency (`$5` minus
/// its in-flight count from the `$4`/`$6` arrays), oldest first, so a subscription
/// with a huge or slow backlog cannot take the whole claim (no head-of-line blocking).
const CLAIM_DUE: &str = "
with room as (
    select s.id, greatest($5::int - coalesce(b.n, 0), 0) as n
      from hookrelay.subscriptions s
      left join unnest($4::text[], $6::int[]) as b(sub, n) on b.sub = s.id
     where s.enabled
     order by random()
),
due as (
    select c.id
      from room
      cross join lateral (
            select d.id
              from hookrelay.deliveries d
             where d.subscription_id = room.id
               and d.status in ('pending', 'retrying')
               and d.next_attempt_at <= now()
               and (d.lease_until is null or d.lease_until < now())
               and (d.order_key is null or not exists (
                     select 1 from hookrelay.deliveries p
                      where p.subscription_id = d.subscription_id
                        and p.order_key = d.order_key
                        -- restates the partial index's predicate so the planner can
                        -- use deliveries_key_open (join clauses do not prove it)
                        and p.order_key is not null
                        and p.status in ('pending', 'retrying')
                        and p.id < d.id))
             order by d.next_attempt_at, d.id
             limit room.n
               for update of d skip locked
      ) c
     where room.n > 0
     limit $1
)
update hookrelay.deliveries d
   set lease_owner = $3,
       lease_until = now() + make_interval(secs => $2),
       attempts = d.attempts + 1,
       updated_at = now()
  from due, hookrelay.events e, hookrelay.subscriptions s
 where d.id = due.id and e.seq = d.event_seq and s.id = d.subscription_id
returning d.id, d.attempts, d.subscription_id, s.url, s.secret,
          case when s.previous_secret_until > now() then s.previous_secret end,
          s.headers, e.id, e.body";

/// Writes a batch of outcomes, only where the lease is still ours for that attempt.
const RECORD_OUTCOMES: &str = "
update hookrelay.deliveries d
   set status = u.status,
       next_attempt_at = coalesce(u.next_at, d.next_attempt_at),
       lease_owner = null,
       lease_until = null,
       last_status_code = u.code,
       last_error = u.err,
       updated_at = now()
  from unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[])
       as u(id, attempt, status, next_at, code, err)
 where d.id = u.id and d.attempts = u.attempt and d.lease_owner = $7";

const INSERT_ATTEMPTS: &str = "
insert into hookrelay.attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, response_body)
select * from unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[], $7::text[])";

/// A 410 disables the subscription and fails everything still open for it.
const DISABLE_GONE: &str = "
with off as (
    update hookrelay.subscriptions
       set enabled = false, disabled_reason = 'endpoint answered 410 Gone', updated_at = now()
     where id = any ($1::text[]) and enabled
    returning id
)
update hookrelay.deliveries
   set status = 'failed', lease_owner = null, lease_until = null,
       last_error = coalesce(last_error, 'subscription disabled: endpoint answered 410 Gone'),
       updated_at = now()
 where subscription_id = any ($1::text[]) and status in ('pending', 'retrying')
   and (lease_owner is null or lease_until < now() or lease_owner = $2)";

/// A delivery leased to this process: everything needed to sign and send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery_id: i64,
    /// 1-based number of this attempt.
    pub attempt: i32,
    pub subscription_id: String,
    pub url: String,
    /// The current secret first, then one still in its rotation grace period.
    pub secrets: Vec<String>,
    pub headers: Vec<(String, String)>,
    pub event_id: String,
    pub body: String,
}

/// What the delivery becomes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeStatus {
    Succeeded,
    Retry {
        at: DateTime<Utc>,
    },
    Failed,
    /// 410: the subscription is disabled and its open deliveries fail.
    Gone,
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: i64,
    pub attempt: i32,
    pub subscription_id: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub status: OutcomeStatus,
}

impl Store {
    /// Leases up to `limit` due deliveries to `owner` for `lease`, at most
    /// `per_subscription` in flight per subscription counting `in_flight`.
    pub async fn claim_due_deliveries(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
        per_subscription: usize,
        in_flight: &[(String, usize)],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let client = self.relaxed_client().await?;
        let stmt = client.prepare_cached(CLAIM_DUE).await?;
        let limit = limit as i64;
        let lease = lease.as_secs_f64();
        let per_subscription = i32::try_from(per_subscription).unwrap_or(i32::MAX);
        let busy_ids: Vec<&str> = in_flight.iter().map(|(id, _)| id.as_str()).collect();
        let busy_counts: Vec<i32> = in_flight
            .iter()
            .map(|(_, n)| i32::try_from(*n).unwrap_or(i32::MAX))
            .collect();
        let rows = client
            .query(
                &stmt,
                &[
                    &limit,
                    &lease,
                    &owner,
                    &busy_ids,
                    &per_subscription,
                    &busy_counts,
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut secrets = vec![r.get::<_, String>(4)];
            if let Some(prev) = r.get::<_, Option<String>>(5) {
                secrets.push(prev);
            }
            let headers: serde_json::Value = r.get(6);
            let headers = match headers {
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                    .collect(),
                _ => Vec::new(),
            };
            out.push(ClaimedDelivery {
                delivery_id: r.get(0),
                attempt: r.get(1),
                subscription_id: r.get(2),
                url: r.get(3),
                secrets,
                headers,
                event_id: r.get(7),
                body: r.get(8),
            });
        }
        // Oldest first, so per-batch spawn order follows commit order.
        out.sort_unstable_by_key(|d| d.delivery_id);
        Ok(out)
    }

    /// Records a batch of outcomes in one transaction. Outcomes whose lease was lost
    /// (expired and re-claimed elsewhere) are dropped from the delivery update but
    /// their attempts are still logged.
    pub async fn record_outcomes(
        &self,
        owner: &str,
        outcomes: &[Outcome],
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let n = outcomes.len();
        let mut ids = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut next_at = Vec::with_capacity(n);
        let mut codes = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut started = Vec::with_capacity(n);
        let mut durations = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        let mut gone: Vec<&str> = Vec::new();
        for o in outcomes {
            ids.push(o.delivery_id);
            attempts.push(o.attempt);
            let (status, at) = match o.status {
                OutcomeStatus::Succeeded => ("succeeded", None),
                OutcomeStatus::Retry { at } => ("retrying", Some(at)),
                OutcomeStatus::Failed | OutcomeStatus::Gone => ("failed", None),
            };
            if o.status == OutcomeStatus::Gone && !gone.contains(&o.subscription_id.as_str()) {
                gone.push(&o.subscription_id);
            }
            statuses.push(status);
            next_at.push(at);
            codes.push(o.status_code);
            errors.push(o.error.as_deref());
            started.push(o.started_at);
            durations.push(o.duration_ms);
            bodies.push(o.response_body.as_deref());
        }
        let mut client = self.relaxed_client().await?;
        let tx = client.transaction().await?;
        let stmt = tx.prepare_cached(RECORD_OUTCOMES).await?;
        tx.execute(
            &stmt,
            &[
                &ids, &attempts, &statuses, &next_at, &codes, &errors, &owner,
            ],
        )
        .await?;
        let stmt = tx.prepare_cached(INSERT_ATTEMPTS).await?;
        tx.execute(
            &stmt,
            &[
                &ids, &attempts, &started, &durations, &codes, &errors, &bodies,
            ],
        )
        .await?;
        if !gone.is_empty() {
            tx.execute(DISABLE_GONE, &[&gone, &owner]).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
