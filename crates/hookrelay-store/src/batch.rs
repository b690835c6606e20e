//! The source side: a batch of events, their deliveries and the source's new
//! checkpoint, committed in one transaction (DESIGN §1.1.1).

use std::{collections::HashMap, sync::OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookrelay_core::ChangeEvent;

use crate::{
    backfills::{BackfillChunk, ChunkOutcome},
    claim::{OpenedSecrets, RunTicket, SealedTarget},
    model::{Checkpoint, RejectedChange},
    row_filters::{Candidate, Passed},
    ClaimedDelivery, Handed, Offer, Store, StoreError,
};

/// What a committed batch added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events new to the store (a re-read change dedupes on its id and is not counted).
    pub events: u64,
    /// Deliveries created for them.
    pub deliveries: u64,
    /// The lowest id among those deliveries left waiting (not leased at insert).
    pub first_waiting: Option<i64>,
}

/// Inserts events in batch order (so `seq` follows commit order), with `DEDUPE`
/// skipping ids already stored, and fans the new ones out to every subscription whose
/// filters match and whose endpoint has not answered 410 (`disabled_by`, sql/V7): a paused one gets
/// `pending` deliveries too, but no due mark, so claims do not look at it until it is
/// resumed (`Store::update_subscription` marks it due then). Each event is stored with
/// the number of deliveries it is given (`deliveries_left`, sql/V11): the filters are
/// matched before the events are inserted, from the same matches. The first part,
/// shared by every form of the statement.
const EVENTS_AND_MATCHES: &str = "
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
    -- only the candidates (sql/V8): the filters whose literal prefix or
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
            select s.id, s.ordering, s.sources, s.enabled, s.disabled_by, s.filter
              from hookrelay.subscriptions s
             where s.id = c.subscription_id
             limit 1) s
     where (s.sources is null or k.source = any (s.sources))
       -- a filtered subscription is given deliveries per event, by `FILTERED`, for the
       -- events its filter passed
       and s.filter is null
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
";

/// Skips the events already stored: only for a batch that holds a change read
/// again (see `Store::commit_batch_offered`). Every batch paying for it cost 47 B of
/// WAL per event (2 % of bench workload 1's): each row is inserted speculatively
/// and then confirmed.
const DEDUPE: &str = "    on conflict (id) do nothing
";

/// The end of the events insert.
const INSERTED: &str = "    returning seq, id, source, event_type, order_key
),
";

/// Every new delivery, with its id (from the deliveries' sequence, in event order:
/// fixed from now on, whether it goes into a run or a row), placed in a run (sql/V18)
/// or left a row: a run takes those that may go without waiting on another of this
/// batch (an enabled subscription's, no key or the first of its key here); a paused
/// subscription's wait as rows, and so do the second and later of a key in one batch.
/// Shared by both forms.
const PLACED: &str = "
fan as materialized (
    select nextval('hookrelay.deliveries_id_seq') as id, f.*
      from (select ins.seq, m.id as sub, m.enabled, k.key,
                   row_number() over (partition by m.id, k.key order by ins.seq) as nth
              from ins
              join matched m on m.source = ins.source and m.event_type = ins.event_type
              cross join lateral (select case when m.ordering = 'key' then ins.order_key end as key) k
             order by ins.seq, m.id) f
),
placed as materialized (
    select f.*, f.enabled and (f.key is null or f.nth = 1) as in_run from fan f
),
lone as (
    insert into hookrelay.deliveries (id, event_seq, subscription_id, order_key)
    overriding system value
    select id, seq, sub, key from placed where not in_run order by id
),
";

/// A batch's deliveries in runs (`free`: `id, seq, sub, key`, `part` within the
/// offered room, `ok` free to go by per-key order), cut into runs of up to 64 per
/// subscription, those within the room apart; `handed` where every delivery of a run
/// within the room may go. From `free` alone: joined back to `placed`, the generic
/// plan compared every delivery with every other (9 million rows for a 1,000-event
/// batch). A literal, for `concat!`.
macro_rules! runs_made {
    () => {
        "
runs_made as materialized (
    select sub, part, chunk, min(id) as id, max(id) as last,
           array_agg(id order by id) as ids, array_agg(seq order by id) as seqs,
           array_agg(key order by id) as keys,
           part and bool_and(ok) as handed
      from (select f.*, (row_number() over (partition by f.sub, f.part order by f.id) - 1)
                            / 64 as chunk
              from free f) c
     group by sub, part, chunk
),"
    };
}

/// The runs, all waiting for a claim (no offer): none may be handed.
const RUNS_WAITING: &str = concat!(
    "
free as (
    select id, seq, sub, key, false as part, false as ok from placed where in_run
),
",
    runs_made!(),
    "
made as (
    insert into hookrelay.runs (id, last_delivery, subscription_id, delivery_ids, event_seqs, order_keys)
    select id, last, sub, ids, seqs, keys from runs_made order by id
),
"
);

/// The runs, those that may go now leased to the local dispatcher within its offer
/// (see `signal`); the rest wait for a claim.
const RUNS_OFFERED: &str = concat!(
    "
handable as materialized (
    -- the offered subscriptions ($8, room $9) that may be handed runs now: none of
    -- their runs waits for a claim or is held by another process, so a run handed
    -- here is never sent before an older one
    select o.sub, o.room
      from unnest($8::text[], $9::int[]) as o(sub, room)
     where not exists (select from hookrelay.runs r
                        where r.subscription_id = o.sub
                          and (r.lease_owner is distinct from $7::text or r.lease_until < now()))
),
busy as materialized (
    -- the keys open in their runs (all in flight here)
    select distinct r.subscription_id as sub, k.key
      from hookrelay.runs r
      cross join lateral unnest(r.order_keys) as k(key)
     where r.subscription_id in (select sub from handable) and k.key is not null
),
free as materialized (
    -- `ok`: may go now by per-key order (DESIGN §1.1.3): no key, or none of its key
    -- open in a run or a row. The open row is looked up per delivery, and only for
    -- subscriptions that may be handed runs: as a plain NOT EXISTS the generic plan
    -- hashed every open delivery of the store on each batch. `part`: within the
    -- room, so its runs (cut apart from the rest) may be handed
    select p.id, p.seq, p.sub, p.key, h.room,
           coalesce(row_number() over (partition by p.sub order by p.id) <= h.room, false)
               as part,
           case when h.sub is null then false
                when p.key is null then true
                else not exists (select from busy b where b.sub = p.sub and b.key = p.key)
                     and not exists (
                         select from hookrelay.deliveries d
                          where d.subscription_id = p.sub and d.order_key = p.key
                            -- deliveries_key_open's predicate, so the planner uses it
                            and d.order_key is not null
                            and d.status in ('pending', 'retrying')) end as ok
      from placed p
      left join handable h on h.sub = p.sub
     where p.in_run
),
",
    runs_made!(),
    "
made as (
    -- leased at insert to the local dispatcher ($7, for $10 seconds)
    insert into hookrelay.runs
           (id, last_delivery, subscription_id, lease_owner, lease_until, leases,
            delivery_ids, event_seqs, order_keys)
    select id, last, sub,
           case when handed then $7::text end,
           case when handed then now() + make_interval(secs => $10::float8) end,
           case when handed then 1 else 0 end,
           ids, seqs, keys
      from runs_made
     order by id
),
"
);

/// Due marks and what the batch returns, shared by both forms.
const MARKS_AND_RESULT: &str = "
work as (
    -- the subscriptions given work are due now (the claim starts from these, so
    -- idle subscriptions cost it nothing); `marks` tells a claim settling one as idle that work came since it looked.
    -- In subscription order, so two batches lock these rows in the same order.
    -- Paused subscriptions are left out: their deliveries wait for the resume.
    -- Taken from the matches, not the deliveries: the subscriptions given deliveries
    -- are those matched for a (source, type) the batch inserted. Joined to the
    -- deliveries, the generic plan (estimating one row each) compared every delivery
    -- with every match: 100 events fanned out to 1,000 subscriptions took 9 s
    insert into hookrelay.subscription_work as w (subscription_id, due_at)
    select distinct m.id, now()
      from matched m
     where m.enabled
       and exists (select from ins where ins.source = m.source and ins.event_type = m.event_type)
     order by 1
    on conflict (subscription_id) do update
       set due_at = least(w.due_at, excluded.due_at), marks = w.marks + 1
)
-- what the batch added, once
select 'totals' as kind, (select count(*) from ins) as events,
       (select count(*) from fan) as deliveries,
       (select min(w.id) from (select id from placed where not in_run
                               union all select id from runs_made where not handed) w)
           as first_waiting,
       null::bigint as delivery_id, null::text as subscription_id, null::text as event_id,
       null::bigint as run, null::int as run_size,
       null::text as url, null::text as secret, null::text as previous_secret,
       null::jsonb as headers
union all
-- each delivery of a handed run, with its event's id
select 'handed', null, null, null, x.id, rm.sub, i.id, rm.id, cardinality(rm.ids),
       null, null, null, null
  from runs_made rm
 cross join lateral unnest(rm.ids, rm.seqs) as x(id, seq)
  join ins i on i.seq = x.seq
 where rm.handed
union all
-- each handed run's subscription once (URL, sealed secrets, headers)
select 'target', null, null, null, null, s.id, null, null, null, s.url, s.secret,
       case when s.previous_secret_until > now() then s.previous_secret end, s.headers
  from hookrelay.subscriptions s
 where s.id = any (array(select distinct sub from runs_made where handed))
union all
-- each subscription given deliveries left for a claim (runs not handed, rows)
select distinct 'waiting', null::bigint, null::bigint, null::bigint, null::bigint, w.sub,
       null, null::bigint, null::int, null, null, null, null::jsonb
  from (select sub from runs_made where not handed
        union all select sub from placed where not in_run) w";

/// A row of the batch statement, by its `kind`.
enum BatchRow {
    /// Events and deliveries the batch added, and the lowest id among the
    /// deliveries left waiting for a claim.
    Totals {
        events: i64,
        deliveries: i64,
        first_waiting: Option<i64>,
    },
    /// A delivery of a run leased at insert, to be handed over once committed.
    Handed {
        delivery_id: i64,
        subscription_id: String,
        event_id: String,
        run: i64,
        run_size: i32,
    },
    /// The subscription of handed deliveries.
    Target(SealedTarget),
    /// A subscription given deliveries left for a claim.
    Waiting { subscription_id: String },
}

impl BatchRow {
    fn decode(r: &tokio_postgres::Row) -> Result<Option<Self>, StoreError> {
        let sub = || r.try_get::<_, String>("subscription_id");
        Ok(Some(match r.try_get::<_, &str>("kind")? {
            "totals" => Self::Totals {
                events: r.try_get("events")?,
                deliveries: r.try_get("deliveries")?,
                first_waiting: r.try_get("first_waiting")?,
            },
            "handed" => Self::Handed {
                delivery_id: r.try_get("delivery_id")?,
                subscription_id: sub()?,
                event_id: r.try_get("event_id")?,
                run: r.try_get("run")?,
                run_size: r.try_get("run_size")?,
            },
            "target" => Self::Target(SealedTarget::decode(r)?),
            "waiting" => Self::Waiting {
                subscription_id: sub()?,
            },
            _ => return Ok(None),
        }))
    }
}

/// The batch statement without an offer or with one, each plain or skipping events
/// already stored; written once each, so a batch pays for neither unless it needs it.
pub fn insert_events_and_deliveries(offered: bool, dedupe: bool) -> &'static str {
    static FORMS: [OnceLock<String>; 4] = [const { OnceLock::new() }; 4];
    let runs = if offered { RUNS_OFFERED } else { RUNS_WAITING };
    let dedupe_part = if dedupe { DEDUPE } else { "" };
    FORMS[usize::from(offered) * 2 + usize::from(dedupe)].get_or_init(|| {
        [
            EVENTS_AND_MATCHES,
            dedupe_part,
            INSERTED,
            PLACED,
            runs,
            MARKS_AND_RESULT,
        ]
        .concat()
    })
}

/// Is any subscription filtered on row content? Asked in the round trip that sets the
/// batch's plan mode, so a store without filters pays nothing more per batch.
const SETTINGS_AND_ANY_FILTER: &str = "set local plan_cache_mode = force_generic_plan;
select exists (select from hookrelay.subscriptions where filter is not null)";

/// The filtered subscriptions whose other filters (types, sources) match one of the
/// batch's (source, type) pairs, with their expressions: the candidates each event is
/// tested against in Rust.
const FILTER_CANDIDATES: &str = "
select k.source, k.event_type, s.id, s.filter
  from (select distinct source, event_type
          from unnest($1::text[], $2::text[]) as t(source, event_type)) k
  join hookrelay.subscriptions s
    on s.filter is not null
   and s.disabled_by is distinct from 'gone'
   and (s.sources is null or k.source = any (s.sources))
   and (s.type_patterns is null
        or exists (select from unnest(s.type_patterns) p where k.event_type like p))";

/// Deliveries for the (event, subscription) pairs whose filter passed, for the events
/// this transaction inserted (`xmin`: a re-read event already stored has its
/// deliveries), pending for a claim; their events count them and their subscriptions
/// are due. A subscription whose filter was removed meanwhile got its deliveries from
/// the batch statement and is skipped here.
const FILTERED_DELIVERIES: &str = "
with passed as (
    select e.seq, e.order_key, s.id as sub, s.ordering, s.enabled
      from unnest($1::text[], $2::text[]) as p(event_id, sub)
      join hookrelay.events e on e.id = p.event_id and e.xmin = pg_current_xact_id()::xid
      join hookrelay.subscriptions s on s.id = p.sub
     where s.filter is not null and s.disabled_by is distinct from 'gone'
),
dlv as (
    insert into hookrelay.deliveries (event_seq, subscription_id, order_key)
    select seq, sub, case when ordering = 'key' then order_key end
      from passed
     order by seq, sub
    returning id, subscription_id, event_seq
),
counted as (
    update hookrelay.events e set deliveries_left = e.deliveries_left + c.n
      from (select event_seq, count(*)::int as n from dlv group by event_seq) c
     where e.seq = c.event_seq
),
work as (
    insert into hookrelay.subscription_work as w (subscription_id, due_at)
    select distinct sub, now() from passed where enabled order by 1
    on conflict (subscription_id) do update
       set due_at = least(w.due_at, excluded.due_at), marks = w.marks + 1
)
select (select count(*) from dlv) as deliveries, (select min(id) from dlv) as first_id,
       array(select distinct subscription_id from dlv) as subscriptions";

const SAVE_CHECKPOINT: &str = "
insert into hookrelay.checkpoints (source, position, last_event_at, updated_at)
values ($1, $2, $3, now())
on conflict (source) do update
   set position = excluded.position,
       last_event_at = coalesce(excluded.last_event_at, hookrelay.checkpoints.last_event_at),
       updated_at = now()";

/// As `SAVE_CHECKPOINT`, only while `$4` is still the source's leadership epoch
/// (DESIGN §1.11); no row written means another process took the source over and the
/// whole batch is rolled back. `for share` orders this with a takeover's bump: a bump
/// already made is seen (read committed re-reads the locked row), one in flight waits
/// for this batch to commit first.
const SAVE_CHECKPOINT_FENCED: &str = "
insert into hookrelay.checkpoints (source, position, last_event_at, updated_at)
select $1, $2, $3, now()
 where exists (select from hookrelay.source_leaders l
                where l.source = $1 and l.epoch = $4
                  for share)
on conflict (source) do update
   set position = excluded.position,
       last_event_at = coalesce(excluded.last_event_at, hookrelay.checkpoints.last_event_at),
       updated_at = now()";

/// One batch as the source hands it over.
#[derive(Clone, Copy)]
struct Batch<'a> {
    source: &'a str,
    events: &'a [ChangeEvent],
    position: &'a str,
    offer: Option<&'a Offer>,
    epoch: Option<i64>,
    /// A backfill chunk whose high watermark this batch reached (see `backfills`).
    chunk: Option<&'a BackfillChunk>,
}

impl Store {
    /// Commits `events` and the checkpoint `position` of `source` atomically. Safe to
    /// call again with the same events (after a crash before the source acknowledged).
    pub async fn commit_batch(
        &self,
        source: &str,
        events: &[ChangeEvent],
        position: &str,
    ) -> Result<BatchOutcome, StoreError> {
        Ok(self
            .commit_batch_offered(source, events, position, None, None)
            .await?
            .0)
    }

    /// As [`Store::commit_batch`], leasing to the offer's owner, as they are inserted,
    /// as many fresh deliveries as it has room for (see `signal`). Those come back,
    /// committed and ready to send. With an `epoch` (the source's leader, see
    /// `SourceLock::epoch`) the batch commits only while that epoch is current, else
    /// it is rolled back as [`StoreError::Fenced`]; without one (tests, the benchmark:
    /// callers that hold no lock) it is not fenced.
    pub async fn commit_batch_offered(
        &self,
        source: &str,
        events: &[ChangeEvent],
        position: &str,
        offer: Option<&Offer>,
        epoch: Option<i64>,
    ) -> Result<(BatchOutcome, Handed), StoreError> {
        let (outcome, handed, _) = self
            .commit_batch_with_backfill(source, events, position, offer, epoch, None)
            .await?;
        Ok((outcome, handed))
    }

    /// As [`Store::commit_batch_offered`], with a backfill chunk: its progress, its
    /// read events and their deliveries (to its subscription only) commit in the same
    /// transaction, after the batch's events, under the same epoch.
    pub async fn commit_batch_with_backfill(
        &self,
        source: &str,
        events: &[ChangeEvent],
        position: &str,
        offer: Option<&Offer>,
        epoch: Option<i64>,
        chunk: Option<&BackfillChunk>,
    ) -> Result<(BatchOutcome, Handed, ChunkOutcome), StoreError> {
        let mut client = self.client().await?;
        let batch = Batch {
            source,
            events,
            position,
            offer,
            epoch,
            chunk,
        };
        match self.commit_once(&mut client, &batch, false).await {
            // A change read again: the source re-reads what it had not acknowledged
            // when hookrelay stopped, and some of it may be stored already. Rare, so
            // only such a batch is written again, skipping the ids already stored.
            Err(e) if e.violates("events_id_key") => {
                tracing::debug!(source, "batch holds events already stored; skipping them");
                self.commit_once(&mut client, &batch, true).await
            }
            done => done,
        }
    }

    /// One try at `commit_batch_offered`: without `dedupe`, an event already stored
    /// fails the whole batch (on `events_id_key`).
    async fn commit_once(
        &self,
        client: &mut deadpool_postgres::Object,
        batch: &Batch<'_>,
        dedupe: bool,
    ) -> Result<(BatchOutcome, Handed, ChunkOutcome), StoreError> {
        let Batch {
            source,
            events,
            position,
            offer,
            epoch,
            chunk,
        } = *batch;
        let tx = client.transaction().await?;
        let mut outcome = BatchOutcome::default();
        let mut handed = Handed::default();
        // (delivery id, subscription, event id, run) of the handed deliveries, and
        // each handed subscription's URL and opened secrets
        let mut leased: Vec<(i64, String, String, RunTicket)> = Vec::new();
        let mut runs: HashMap<i64, RunTicket> = HashMap::new();
        let mut targets: HashMap<String, OpenedSecrets> = HashMap::new();
        // (event, subscription) pairs whose filter passed (see `row_filters`)
        let mut passed = Passed::default();
        if !events.is_empty() {
            // Left to choose, Postgres re-planned the fan-out statement on every
            // batch: 0.3 ms of planning for a one-event batch that runs in 0.25 ms
            // (bench workload 2: a millisecond on p50, 80 µs of store CPU per event).
            // Its generic plan is as good at every batch size measured. This pool
            // also serves the admin API, whose listings keep their custom plans.
            let any_filter =
                tx.simple_query(SETTINGS_AND_ANY_FILTER)
                    .await?
                    .iter()
                    .any(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0) == Some("t"),
                        _ => false,
                    });
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            if any_filter {
                let stmt = tx.prepare_cached(FILTER_CANDIDATES).await?;
                let rows = tx.query(&stmt, &[&sources, &types]).await?;
                let candidates = rows
                    .iter()
                    .map(|r| {
                        Ok(Candidate {
                            source: r.try_get(0)?,
                            event_type: r.try_get(1)?,
                            subscription: r.try_get(2)?,
                            filter: r.try_get(3)?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                passed = self.row_filters.passes(events, &candidates);
            }
            let keys: Vec<i64> = events.iter().map(|e| e.order_key).collect();
            let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.committed_at).collect();
            let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
            let owner: Option<&str> = offer.map(|o| o.owner.as_str());
            let lease: f64 = offer.map_or(0.0, |o| o.lease.as_secs_f64());
            let offered: Vec<&str> = offer
                .map(|o| o.rooms.iter().map(|(s, _)| s.as_str()).collect())
                .unwrap_or_default();
            let rooms: Vec<i32> = offer
                .map(|o| {
                    o.rooms
                        .iter()
                        .map(|(_, n)| i32::try_from(*n).unwrap_or(i32::MAX))
                        .collect()
                })
                .unwrap_or_default();
            let stmt = tx
                .prepare_cached(insert_events_and_deliveries(offer.is_some(), dedupe))
                .await?;
            let rows = if offer.is_some() {
                tx.query(
                    &stmt,
                    &[
                        &ids, &sources, &types, &keys, &times, &bodies, &owner, &offered, &rooms,
                        &lease,
                    ],
                )
                .await?
            } else {
                tx.query(&stmt, &[&ids, &sources, &types, &keys, &times, &bodies])
                    .await?
            };
            for r in &rows {
                match BatchRow::decode(r)? {
                    Some(BatchRow::Totals {
                        events,
                        deliveries,
                        first_waiting,
                    }) => {
                        outcome.events = events as u64;
                        outcome.deliveries = deliveries as u64;
                        outcome.first_waiting = first_waiting;
                    }
                    Some(BatchRow::Handed {
                        delivery_id,
                        subscription_id,
                        event_id,
                        run,
                        run_size,
                    }) => {
                        let ticket = runs
                            .entry(run)
                            .or_insert_with(|| RunTicket::new(run, run_size as usize, false))
                            .clone();
                        leased.push((delivery_id, subscription_id, event_id, ticket));
                    }
                    Some(BatchRow::Target(t)) => {
                        // A subscription whose secret does not open is not handed
                        // over; the batch and every other subscription go on.
                        let id = t.subscription_id.clone();
                        if let Some(opened) = self.opened.open_target(&self.secrets, t) {
                            targets.insert(id, opened);
                        }
                    }
                    Some(BatchRow::Waiting { subscription_id }) => {
                        handed.waiting.push(subscription_id)
                    }
                    None => {}
                }
            }
        }
        if !passed.is_empty() {
            let stmt = tx.prepare_cached(FILTERED_DELIVERIES).await?;
            let row = tx
                .query_one(&stmt, &[&passed.events, &passed.subscriptions])
                .await?;
            let n: i64 = row.try_get("deliveries")?;
            outcome.deliveries += n as u64;
            let first: Option<i64> = row.try_get("first_id")?;
            outcome.first_waiting = match (outcome.first_waiting, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let subs: Vec<String> = row.try_get("subscriptions")?;
            for sub in subs {
                if !handed.waiting.contains(&sub) {
                    handed.waiting.push(sub);
                }
            }
        }
        // Handed runs of a subscription whose secret did not open wait, parked like
        // a claim parks them, in this transaction.
        let mut parked: Vec<i64> = leased
            .iter()
            .filter(|(_, sub, _, _)| !targets.contains_key(sub))
            .map(|(_, _, _, run)| run.id)
            .collect();
        if let (false, Some(offer)) = (parked.is_empty(), offer) {
            parked.dedup();
            leased.retain(|(_, sub, _, _)| targets.contains_key(sub));
            let retry = crate::claim::UNREADABLE_RETRY.as_secs_f64();
            tx.execute(
                crate::claim::PARK_UNREADABLE_RUNS,
                &[&parked, &offer.owner, &retry],
            )
            .await?;
        }
        let chunked = match chunk {
            Some(chunk) => {
                self.apply_chunk(&tx, chunk, &mut outcome, &mut handed.waiting)
                    .await?
            }
            None => ChunkOutcome::default(),
        };
        let last_event_at = events.last().map(|e| e.committed_at);
        match epoch {
            None => {
                let stmt = tx.prepare_cached(SAVE_CHECKPOINT).await?;
                tx.execute(&stmt, &[&source, &position, &last_event_at])
                    .await?;
            }
            Some(epoch) => {
                let stmt = tx.prepare_cached(SAVE_CHECKPOINT_FENCED).await?;
                let saved = tx
                    .execute(&stmt, &[&source, &position, &last_event_at, &epoch])
                    .await?;
                if saved == 0 {
                    // Dropping `tx` rolls the batch back.
                    return Err(StoreError::Fenced {
                        source_name: source.to_owned(),
                        epoch,
                    });
                }
            }
        }
        tx.commit().await?;
        self.note_inserted(outcome.deliveries);
        if !leased.is_empty() {
            // Each handed event's body copied once, shared by its deliveries (as in a
            // claim); the events nothing was handed for are not copied at all.
            let by_id: HashMap<&str, &str> = events
                .iter()
                .map(|e| (e.id.as_str(), e.body.as_str()))
                .collect();
            let mut bodies: HashMap<String, Bytes> = HashMap::new();
            leased.sort_unstable_by_key(|(id, _, _, _)| *id);
            for (delivery_id, subscription_id, event_id, run) in leased {
                let body = match bodies.get(&event_id) {
                    Some(b) => Some(b.clone()),
                    None => by_id.get(event_id.as_str()).map(|b| {
                        let b = Bytes::copy_from_slice(b.as_bytes());
                        bodies.insert(event_id.clone(), b.clone());
                        b
                    }),
                };
                let (Some(body), Some(opened)) = (body, targets.get(&subscription_id)) else {
                    // Cannot happen (one statement returned both); if it did, the lease
                    // expires and a claim sends it.
                    tracing::error!(delivery = delivery_id, event = %event_id, "handed delivery without its event or subscription");
                    continue;
                };
                handed.deliveries.push(ClaimedDelivery {
                    delivery_id,
                    attempt: 1,
                    subscription_id,
                    url: opened.0.clone(),
                    secrets: opened.1.clone(),
                    headers: opened.2.clone(),
                    event_id,
                    body,
                    run: Some(run),
                });
            }
        }
        Ok((outcome, handed, chunked))
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
        row.map(|r| {
            Ok(Checkpoint {
                source: r.try_get(0)?,
                position: r.try_get(1)?,
                last_event_at: r.try_get(2)?,
                updated_at: r.try_get(3)?,
            })
        })
        .transpose()
    }
}
