//! The source side: a batch of events, their deliveries and the source's new
//! checkpoint, committed in one transaction (DESIGN §1.1.1).

use chrono::{DateTime, Utc};
use hookrelay_core::ChangeEvent;

use crate::{
    model::{Checkpoint, RejectedChange},
    Store, StoreError,
};

/// What a committed batch added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events new to the store (a re-read change dedupes on its id and is not counted).
    pub events: u64,
    /// Deliveries created for them.
    pub deliveries: u64,
    /// The lowest id among those deliveries, for the dispatcher's claim cursors.
    pub first_delivery_id: Option<i64>,
}

/// Inserts events in batch order (so `seq` follows commit order), skipping ids already
/// stored, and fans the new ones out to every subscription whose filters match and
/// whose endpoint has not answered 410 (`disabled_by`, sql/V7): a paused one gets
/// `pending` deliveries too, but no due mark, so claims do not look at it until it is
/// resumed (`Store::update_subscription` marks it due then). Each event is stored with
/// the number of deliveries it is given (`deliveries_left`, sql/V11): the filters are
/// matched before the events are inserted, from the same matches.
pub const INSERT_EVENTS_AND_DELIVERIES: &str = "
with input as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::text[])
        with ordinality as t(id, source, event_type, order_key, committed_at, body, ord)
),
kinds as (
    -- a batch holds a few distinct (source, type) pairs, usually one: the filters are
    -- matched once per pair, not once per event. Matched per event, a 100-event
    -- batch beside 10,000 idle subscriptions ran a million LIKEs; per pair, 10,000.
    -- Each pair carries its type's prefixes and suffixes, the keys of its lookup
    select d.source, d.event_type,
           array(select left(d.event_type, n) from generate_series(1, length(d.event_type)) n) as prefixes,
           array(select right(d.event_type, n) from generate_series(1, length(d.event_type)) n) as suffixes
      from (select distinct source, event_type from input) d
),
matched as materialized (
    -- only the candidates (issue 16, sql/V8): the filters whose literal prefix or
    -- suffix the type has, those for the batch's source, and those with no literal.
    -- Matching every enabled subscription's patterns read all 10,000 rows of the
    -- idle ones; this reads a few dozen index entries and the candidates (bench
    -- workload 8 went from 57 % to 96 % of workload 3's rate). `materialized`:
    -- inlined, the generic plan joined this per event, not per pair (a 100-event
    -- batch ran a million LIKEs before this index)
    select k.source, k.event_type, s.id, s.ordering, s.enabled
      from kinds k
      cross join lateral (
            select distinct m.subscription_id
              from hookrelay.subscription_matchers m
             where ((m.anchor = 'prefix' and m.literal = any (k.prefixes))
                 or (m.anchor = 'suffix' and m.literal = any (k.suffixes))
                 or (m.anchor = 'source' and m.literal = k.source)
                 or m.anchor = 'all')
               and (m.pattern is null or k.event_type like m.pattern)) c
      -- by key, per candidate: written as a join, the generic plan hashed all
      -- 10,000 subscriptions (a sequential scan) to look up three (`limit` keeps
      -- the planner from turning this back into a join)
      cross join lateral (
            select s.id, s.ordering, s.sources, s.enabled, s.disabled_by
              from hookrelay.subscriptions s
             where s.id = c.subscription_id
             limit 1) s
     where (s.sources is null or k.source = any (s.sources))
       -- who is given deliveries: everyone but endpoints gone (410); paused ones too
       and s.disabled_by is distinct from 'gone'
),
fanout as (
    select source, event_type, count(*)::int as n from matched group by source, event_type
),
ins as (
    insert into hookrelay.events (id, source, event_type, order_key, committed_at, body, deliveries_left)
    select i.id, i.source, i.event_type, i.order_key, i.committed_at, i.body, coalesce(f.n, 0)
      from input i
      left join fanout f on f.source = i.source and f.event_type = i.event_type
     order by i.ord
    on conflict (id) do nothing
    returning seq, source, event_type, order_key
),
dlv as (
    insert into hookrelay.deliveries (event_seq, subscription_id, order_key)
    select ins.seq, m.id, case when m.ordering = 'key' then ins.order_key end
    from ins
    join matched m on m.source = ins.source and m.event_type = ins.event_type
    order by ins.seq, m.id
    returning id, subscription_id
),
work as (
    -- the subscriptions given work are due now (the claim starts from these, issue
    -- 16); `marks` tells a claim settling one as idle that work came since it looked.
    -- In subscription order, so two batches lock these rows in the same order.
    -- Paused subscriptions are left out: their deliveries wait for the resume.
    insert into hookrelay.subscription_work as w (subscription_id, due_at)
    select distinct dlv.subscription_id, now()
      from dlv join matched m on m.id = dlv.subscription_id and m.enabled
     order by 1
    on conflict (subscription_id) do update
       set due_at = least(w.due_at, excluded.due_at), marks = w.marks + 1
)
select (select count(*) from ins), (select count(*) from dlv), (select min(id) from dlv)";

const SAVE_CHECKPOINT: &str = "
insert into hookrelay.checkpoints (source, position, last_event_at, updated_at)
values ($1, $2, $3, now())
on conflict (source) do update
   set position = excluded.position,
       last_event_at = coalesce(excluded.last_event_at, hookrelay.checkpoints.last_event_at),
       updated_at = now()";

impl Store {
    /// Commits `events` and the checkpoint `position` of `source` atomically. Safe to
    /// call again with the same events (after a crash before the source acknowledged).
    pub async fn commit_batch(
        &self,
        source: &str,
        events: &[ChangeEvent],
        position: &str,
    ) -> Result<BatchOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut outcome = BatchOutcome::default();
        if !events.is_empty() {
            // Left to choose, Postgres re-planned the fan-out statement on every
            // batch: 0.3 ms of planning for a one-event batch that runs in 0.25 ms
            // (bench workload 2: a millisecond on p50, 80 µs of store CPU per event).
            // Its generic plan is as good at every batch size measured. This pool
            // also serves the admin API, whose listings keep their custom plans.
            tx.batch_execute("set local plan_cache_mode = force_generic_plan")
                .await?;
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            let keys: Vec<i64> = events.iter().map(|e| e.order_key).collect();
            let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.committed_at).collect();
            let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
            let stmt = tx.prepare_cached(INSERT_EVENTS_AND_DELIVERIES).await?;
            let row = tx
                .query_one(&stmt, &[&ids, &sources, &types, &keys, &times, &bodies])
                .await?;
            outcome.events = row.get::<_, i64>(0) as u64;
            outcome.deliveries = row.get::<_, i64>(1) as u64;
            outcome.first_delivery_id = row.get(2);
        }
        let last_event_at = events.last().map(|e| e.committed_at);
        let stmt = tx.prepare_cached(SAVE_CHECKPOINT).await?;
        tx.execute(&stmt, &[&source, &position, &last_event_at])
            .await?;
        tx.commit().await?;
        self.note_inserted(outcome.deliveries);
        Ok(outcome)
    }

    /// Sets aside a change its source could not turn into an event, so the source can
    /// go on without it (DESIGN §1.7). Idempotent on `(source, position)`: a change
    /// read again after a crash is kept once.
    pub async fn reject_change(&self, change: &RejectedChange) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "insert into hookrelay.rejected_changes (source, position, reason, raw)
                 values ($1, $2, $3, $4) on conflict (source, position) do nothing",
                &[
                    &change.source,
                    &crate::storable(&change.position),
                    &crate::storable(&change.reason),
                    &crate::storable(&change.raw),
                ],
            )
            .await?;
        Ok(())
    }

    /// The changes set aside for `source`, newest first (at most `limit`).
    pub async fn rejected_changes(
        &self,
        source: &str,
        limit: i64,
    ) -> Result<Vec<RejectedChange>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "select source, position, reason, raw from hookrelay.rejected_changes
                  where source = $1 order by id desc limit $2",
                &[&source, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RejectedChange {
                    source: r.try_get(0)?,
                    position: r.try_get(1)?,
                    reason: r.try_get(2)?,
                    raw: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The source's last committed checkpoint, if any.
    pub async fn load_checkpoint(&self, source: &str) -> Result<Option<Checkpoint>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "select source, position, last_event_at, updated_at from hookrelay.checkpoints where source = $1",
                &[&source],
            )
            .await?;
        Ok(row.map(|r| Checkpoint {
            source: r.get(0),
            position: r.get(1),
            last_event_at: r.get(2),
            updated_at: r.get(3),
        }))
    }
}
