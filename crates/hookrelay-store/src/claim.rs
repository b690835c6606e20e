//! The dispatcher side: lease due deliveries, then record what happened.
//!
//! A claim leases runs (`CLAIM_RUNS`, sql/V18), then rows in the room they leave
//! (`CLAIM_DUE`), and commits its leases before any HTTP call, so no transaction spans
//! network I/O; several processes can claim from one store because runs and rows are
//! taken `FOR UPDATE SKIP LOCKED`. A delivery is only due when no earlier delivery for
//! the same subscription and order key is still open (per-key order, DESIGN §1.1.3).
//!
//! ```text
//!  run ──claim──▶ leased: its deliveries sent ──outcomes──▶ receipts / rows; the last
//!   │               (those past the room stay)             deletes the run, or gives
//!   │                                                      it back if some stayed
//!   └─ a delivery whose key is open ──▶ pending row, same id (claimed as rows are)
//!  lease runs out (process died) ──▶ claimed again for what has no outcome
//! ```
//!
//! Claims start from the subscriptions that may have due work
//! (`hookrelay.subscription_work`, sql/V6), so idle subscriptions cost nothing:
//!
//! ```text
//!  fan-out (not to paused ones) / replay / resume ──▶ due_at = now, marks + 1
//!  claim ──▶ due subscriptions only ──quiet from the start──▶ SETTLE_IDLE:
//!            due_at = next retry (or null), if marks is unchanged
//! ```

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookrelay_core::sealing::{header_field, secret_field, url_field, Secrets};

use crate::{Store, StoreError};

/// A subscription's endpoint URL, signing secrets and custom headers, opened; shared
/// (not copied) by every delivery of the subscription a claim hands out.
pub(crate) type OpenedSecrets = (Arc<str>, Arc<[String]>, Arc<[(String, String)]>);

/// Opened secrets per subscription, kept across claims with the sealed values they
/// came from: a claim opens a subscription's values again only when they changed
/// (a rotation, a header edit), so the steady state costs a comparison per
/// subscription per claim, not a decryption per delivery. (Measured: one open is
/// about 2 µs in a release build, 114 µs in a debug one; opening once per subscription
/// per claim still added 10 ms to a 256-row claim over 4 subscriptions in debug
/// builds, the cache brings that back to noise.)
#[derive(Debug, Default)]
pub(crate) struct OpenedCache {
    entries: Mutex<HashMap<String, CachedSecrets>>,
    /// Subscriptions whose values did not open at their last try, with why: only
    /// they wait (DESIGN §1.7), and the API and `/metrics` say so.
    unreadable: Mutex<BTreeMap<String, String>>,
}

/// How long the deliveries of a subscription whose secret does not open wait before
/// a claim tries it again (a secret rotated or headers set again meanwhile opens).
pub const UNREADABLE_RETRY: Duration = Duration::from_secs(10);

/// Parks deliveries `$1`, leased to `$2`, of a subscription whose secret does not
/// open: the lease is kept `$3` seconds more so claims leave them alone meanwhile, and
/// the attempt the lease counted is given back, since nothing was sent.
pub(crate) const PARK_UNREADABLE: &str = "
update hookrelay.deliveries
   set attempts = greatest(attempts - 1, 0),
       lease_until = now() + make_interval(secs => $3),
       updated_at = now()
 where id = any ($1::bigint[]) and lease_owner = $2";

/// Parks the runs `$1`, leased to `$2`, of a subscription whose secret does not
/// open, as `PARK_UNREADABLE` parks rows.
pub(crate) const PARK_UNREADABLE_RUNS: &str = "
update hookrelay.runs
   set leases = greatest(leases - 1, 0),
       lease_until = now() + make_interval(secs => $3)
 where id = any ($1::bigint[]) and lease_owner = $2";

#[derive(Debug)]
struct CachedSecrets {
    url: String,
    secret: String,
    previous: Option<String>,
    headers: serde_json::Value,
    opened: OpenedSecrets,
}

/// More cached subscriptions than this and the cache starts again (deleted
/// subscriptions would otherwise stay in it).
const MAX_CACHED: usize = 10_000;

impl OpenedCache {
    /// A subscription's sealed `url`, `secret`, `previous_secret` and header values, opened,
    /// or `None` when one of them does not open (tampered, sealed under another key):
    /// then that subscription alone waits, noted as unreadable, rather than being sent
    /// with a signature nobody can verify or stopping the claim or batch it is in.
    pub(crate) fn open(
        &self,
        secrets: &Secrets,
        subscription_id: &str,
        url: String,
        secret: String,
        previous: Option<String>,
        headers: serde_json::Value,
    ) -> Option<OpenedSecrets> {
        let opened = self.try_open(secrets, subscription_id, url, secret, previous, headers);
        let mut unreadable = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        match opened {
            Ok(opened) => {
                unreadable.remove(subscription_id);
                Some(opened)
            }
            Err(e) => {
                if unreadable
                    .insert(subscription_id.to_owned(), e.to_string())
                    .is_none()
                {
                    tracing::error!(
                        subscription_id,
                        error = %e,
                        "a secret or header value of this subscription does not open; \
                         its deliveries wait until it is rotated or set again"
                    );
                }
                None
            }
        }
    }

    /// Subscriptions whose values did not open at their last try, with why.
    pub(crate) fn unreadable(&self) -> BTreeMap<String, String> {
        self.unreadable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes the outcome of opening a subscription's values elsewhere (the API's
    /// header view).
    pub(crate) fn note(&self, subscription_id: &str, error: Option<String>) {
        let mut unreadable = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            Some(e) => {
                unreadable.insert(subscription_id.to_owned(), e);
            }
            None => {
                unreadable.remove(subscription_id);
            }
        }
    }

    fn try_open(
        &self,
        secrets: &Secrets,
        subscription_id: &str,
        url: String,
        secret: String,
        previous: Option<String>,
        headers: serde_json::Value,
    ) -> Result<OpenedSecrets, StoreError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = entries.get(subscription_id) {
            if c.url == url && c.secret == secret && c.previous == previous && c.headers == headers
            {
                return Ok(c.opened.clone());
            }
        }
        let endpoint = secrets.open(&url, &url_field(subscription_id))?;
        let field = secret_field(subscription_id);
        let mut signing = vec![secrets.open(&secret, &field)?];
        if let Some(prev) = &previous {
            signing.push(secrets.open(prev, &field)?);
        }
        let opened_headers: Vec<(String, String)> = match &headers {
            serde_json::Value::Object(m) => m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
                .map(|(k, v)| {
                    let plain = secrets.open(v, &header_field(subscription_id, k))?;
                    Ok((k.clone(), plain))
                })
                .collect::<Result<_, StoreError>>()?,
            _ => Vec::new(),
        };
        let opened: OpenedSecrets = (endpoint.into(), signing.into(), opened_headers.into());
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        entries.insert(
            subscription_id.to_owned(),
            CachedSecrets {
                url,
                secret,
                previous,
                headers,
                opened: opened.clone(),
            },
        );
        Ok(opened)
    }
}

/// Leases up to `$1` due deliveries for `$2` seconds to owner `$3`.
///
/// Per enabled subscription that may have due work (`subscription_work.due_at` has
/// come; see `SETTLE_IDLE` and sql/V6) (`$4`, with room `$6` and cursor `$7`; others
/// get room `$5` and cursor 0) it looks at two kinds of rows: pending ones with ids above the cursor
/// (the seek skips the dead index entries finished deliveries leave behind; a queue
/// index otherwise makes every claim step over all of them until vacuum), and
/// retries whose time has come. Rows leased elsewhere or whose key has an earlier open
/// delivery (per-key order, DESIGN §1.1.3) are not taken. Picks go round-robin over
/// the subscriptions in random order, so one backlog cannot fill a claim (no
/// head-of-line blocking).
///
/// Its rows are of the kinds [`ClaimRow`] decodes, one column per meaning.
pub const CLAIM_DUE: &str = "
with due as (
    -- only subscriptions that may have due work: naming every enabled one
    -- made each claim probe 1,000 idle subscriptions' indexes, 13x slower for 10
    -- active ones; idle subscriptions are not in this partial index at all.
    -- `enabled` is a scalar subquery, looked up by key per due row: written as a
    -- join (or a NOT EXISTS), the generic plan hashed all 10,000 subscriptions
    -- (a sequential scan) to match two due ones
    select w.subscription_id as id, w.marks,
           coalesce((select s.enabled from hookrelay.subscriptions s
                      where s.id = w.subscription_id), false) as enabled
      from hookrelay.subscription_work w
     where w.due_at <= now()
),
wants as (
    select due.id, coalesce(b.n, $5::int) as room, coalesce(b.cursor, 0) as cursor, due.marks
      from due
      left join unnest($4::text[], $6::int[], $7::bigint[]) as b(sub, n, cursor) on b.sub = due.id
     where due.enabled
),
room as (
    -- n: what this claim looks at per subscription, its room but no more than a fair
    -- share of the claim, so ten subscriptions with room do not make ten full scans
    -- for one claim's worth of rows. At most twice the claim's size of subscriptions
    -- are looked at, chosen at random among those with room: with 1,000 due at
    -- once (bench workload 9) a claim of 16 probed all 1,000 for one row each. The
    -- others stay due and are drawn by later claims.
    select id, cursor, marks, turn,
           case when turn <= 2 * $1::bigint
                then least(room, ceil($1::bigint::float8
                                      / greatest(least(with_room, 2 * $1::bigint), 1)))::int
                else 0 end as n
      from (select id, cursor, marks, room,
                   row_number() over (order by room > 0 desc, random()) as turn,
                   count(*) filter (where room > 0) over () as with_room
              from wants) drawn
),
cand as (
    select room.id as sub, room.n, room.turn, c.id, c.ctid, c.fresh,
           coalesce(c.lease_until >= now(), false) as leased,
           (c.order_key is not null and exists (
                select 1 from hookrelay.deliveries p
                 where p.subscription_id = room.id
                   and p.order_key = c.order_key
                   -- restates deliveries_key_open's predicate so the planner uses it
                   and p.order_key is not null
                   and p.status in ('pending', 'retrying')
                   and p.id < c.id)
            -- or in a run (sql/V18): only the subscription's runs older than the row
            -- are read, for the rows with a key
            or c.order_key is not null and exists (
                select 1 from hookrelay.runs r
                 cross join lateral unnest(r.delivery_ids, r.order_keys) as x(id, key)
                 where r.subscription_id = room.id and r.id < c.id
                   and x.key = c.order_key and x.id < c.id)) as blocked
      from room
      cross join lateral (
            (select d.id, d.ctid, d.order_key, d.lease_until, true as fresh
               from hookrelay.deliveries d
              where d.status = 'pending'
                -- means subscription_id = room.id and id > room.cursor, in a form
                -- only a (subscription_id, id) index (deliveries_pending) can
                -- serve, and that starts the scan at the cursor: given the plain
                -- form, the planner walked the primary key through every
                -- subscription's rows, finished ones included, and with the
                -- equality the row comparison did not set the scan's start
                and (d.subscription_id, d.id) > (room.id, room.cursor)
                and d.subscription_id <= room.id
              order by d.subscription_id, d.id
              limit room.n)
            union all
            (select d.id, d.ctid, d.order_key, d.lease_until, false
               from hookrelay.deliveries d
              where d.subscription_id = room.id and d.status = 'retrying'
                and d.next_attempt_at <= now()
              order by d.next_attempt_at, d.id
              limit room.n)
      ) c
     where room.n > 0
),
pick as (
    -- by the row versions the candidates were read from (ctid), not by id: a TID
    -- fetch each, where looking ids up went down the primary key twice per row (here
    -- and in the update), a quarter of the claim's buffer reads. A row another
    -- claim updated since is followed to its new version when locked; the update
    -- below then finds no row at the old ctid and leaves it, untaken (its cursor
    -- holds below it, so a later claim looks at it again)
    select d.id, d.ctid
      from hookrelay.deliveries d
     where d.ctid = any (array(
            select r.ctid from (
                select cand.ctid, cand.n, cand.turn,
                       row_number() over (partition by cand.sub order by cand.id) as rank
                  from cand
                 where not cand.leased and not cand.blocked
            ) r
             where r.rank <= r.n
             order by r.rank, r.turn
             limit $1))
       -- checked again on the row's latest version once it is locked
       and d.status in ('pending', 'retrying')
       and (d.lease_until is null or d.lease_until < now())
       for update of d skip locked
),
claimed as (
    update hookrelay.deliveries d
       set lease_owner = $3,
           lease_until = now() + make_interval(secs => $2),
           attempts = d.attempts + 1,
           updated_at = now()
      from pick
     where d.ctid = pick.ctid
    returning d.id, d.attempts, d.subscription_id, d.event_seq
),
seen as (
    -- per subscription looked at, in one pass over the candidates: computed per
    -- subscription with subqueries, this was (subscriptions x candidates), and with
    -- 1,000 subscriptions due at once (bench workload 9) it dominated the claim
    select c.sub,
           min(c.id) filter (where c.fresh and not c.leased and k.id is null) as hold,
           max(c.id) filter (where c.fresh) as reach,
           -- every candidate of either kind fit under the limit: none left unseen
           count(*) filter (where c.fresh) < min(c.n) and count(*) filter (where not c.fresh) < min(c.n)
               as all_seen
      from cand c
      left join claimed k on k.id = c.id
     group by c.sub
)
-- one row per leased delivery, naming its event by seq and its subscription by id
select 'leased' as kind, id as delivery_id, attempts as attempt, subscription_id,
       event_seq, null::text as event_id, null::text as body, null::text as url,
       null::text as secret, null::text as previous_secret, null::jsonb as headers,
       null::bigint as hold, null::bigint as reach, null::bigint as marks,
       null::bool as all_seen, null::bool as quiet
  from claimed
union all
-- each claimed delivery's event once, however many subscriptions it fans out to: a
-- claim over a 10-way fan-out read and sent every body 10 times
select 'event', null, null, null, e.seq, e.id, e.body, null, null, null, null,
       null, null, null, null, null
  from hookrelay.events e
 where e.seq = any (array(select distinct event_seq from claimed))
union all
-- and each claimed delivery's subscription once (its URL, sealed secrets, headers),
-- not once per delivery
select 'target', null, null, s.id, null, null, null, s.url, s.secret,
       case when s.previous_secret_until > now() then s.previous_secret end, s.headers,
       null, null, null, null, null
  from hookrelay.subscriptions s
 where s.id = any (array(select distinct subscription_id from claimed))
union all
-- per due subscription: 'looked' at (where its cursor may move), or 'full' (no room)
select case when room.n > 0 then 'looked' else 'full' end, null, null, room.id, null,
       null, null, null, null, null, null,
       case when room.n > 0 then seen.hold end,
       -- the subscription's newest delivery: each of its two (subscription_id, id)
       -- indexes (pending, and past pending: sql/V12) answers with its last entry
       case when room.n > 0 then coalesce(
           seen.reach,
           greatest(
               (select max(d.id) from hookrelay.deliveries d
                 where d.subscription_id = room.id and d.status = 'pending'),
               (select max(d.id) from hookrelay.deliveries d
                 where d.subscription_id = room.id and d.status <> 'pending'))) end,
       room.marks,
       room.n > 0 and coalesce(seen.all_seen, true),
       -- quiet: looked at from the start (cursor 0) and not one open delivery seen,
       -- leased or not, so only retries due later can be left: SETTLE_IDLE may take
       -- the subscription out of the due set
       room.n > 0 and room.cursor = 0 and seen.sub is null
  from room
  left join seen on seen.sub = room.id
union all
-- due, but disabled or deleted: SETTLE_IDLE takes it out of the due set
select 'off', null, null, due.id, null, null, null, null, null, null, null,
       null, null, due.marks, null, null
  from due
 where not due.enabled";

/// Leases runs (sql/V18) to owner `$3` for `$2` seconds: per enabled subscription with
/// due work and room (`$4`/`$6`, others `$5`, as in [`CLAIM_DUE`]), its oldest runs
/// nobody holds, up to `$1` deliveries in all. Run before `CLAIM_DUE` in the same
/// claim, which fills the room left with rows.
///
/// A run's delivery is held back (per-key order, DESIGN §1.1.3) when an earlier one of
/// its key is still open: in a run in flight, in an earlier run taken here, or in a
/// row; and when it lies past the subscription's room. It then becomes a pending row
/// with its id, which a claim takes once its key is free; a run's deliveries never
/// wait on one another in memory.
///
/// Its rows are of the kinds [`ClaimRow`] decodes: `run` (a leased delivery), `event`,
/// `target`, and `runs` (per subscription looked at: are runs left waiting?).
pub const CLAIM_RUNS: &str = concat!(
    "
with due as (
    select w.subscription_id as id,
           coalesce((select s.enabled from hookrelay.subscriptions s
                      where s.id = w.subscription_id), false) as enabled
      from hookrelay.subscription_work w
     where w.due_at <= now()
),
wants as (
    select due.id, coalesce(b.n, $5::int) as room
      from due
      left join unnest($4::text[], $6::int[]) as b(sub, n) on b.sub = due.id
     where due.enabled
),
cand as materialized (
    -- per subscription with room: its oldest runs nobody holds (never leased, or the
    -- lease ran out: its process died), those that fit in its room whole, or the
    -- first in part when even that one does not. Taking any run that started within
    -- the room split one in most claims (a batch's last run of a subscription is
    -- short), and each part was read and judged whole again
    select w.id as sub, r.id as run, r.size, r.start, w.room
      from wants w
      cross join lateral (
            select r.id, cardinality(r.delivery_ids) as size,
                   sum(cardinality(r.delivery_ids)) over (order by r.id)
                       - cardinality(r.delivery_ids) as start
              from hookrelay.runs r
             where r.subscription_id = w.id
               and (r.lease_until is null or r.lease_until < now())
             order by r.id
             limit 16) r
     where w.room > 0 and (r.start = 0 or r.start + r.size <= w.room)
),
picked as (
    -- at most $1 deliveries in all, the subscriptions taking turns (first runs, then
    -- second ones, in random order), so one backlog cannot fill a claim
    select sub, run
      from (select c.*, sum(c.size) over (order by c.start, random()) - c.size as before
              from cand c) t
     where before < $1::bigint
),
mine as materialized (
    -- one claim at a time takes a subscription's runs, so no older run of it is held
    -- unleased by a claim this one cannot see: a lock per subscription for this
    -- statement, and a claim that cannot have it leaves the subscription to the next.
    -- Not the subscription's row of due work: a batch giving it work holds that row
    -- until it commits, and a claim skipping it meanwhile found nothing (bench
    -- workload 1 ran 13 % slower, the machine idle a tenth of the time)
    select p.sub
      from (select distinct sub from picked) p
     where pg_try_advisory_xact_lock(1752526433, hashtext(p.sub))
),
taken as materialized (
    -- checked again on the latest version once locked
    select r.id, r.ctid, r.subscription_id as sub, r.created_at, r.leases, r.partial,
           r.delivery_ids, r.event_seqs, r.order_keys
      from hookrelay.runs r
     where r.id in (select run from picked where sub in (select sub from mine))
       and (r.lease_until is null or r.lease_until < now())
       for update of r skip locked
),
el as materialized (
    -- each delivery of a taken run still open (a run leased before may hold some
    -- with an outcome already, as a receipt or a row), `over` the subscription's
    -- room or not: those past it stay in the run, unsent, for a later claim (a
    -- half-open circuit's single probe stays one delivery); `rest`: its run keeps some
    select p.*, bool_or(p.over) over (partition by p.run) as rest
      from (select o.*,
                   o.start + row_number() over (partition by o.run order by o.id) > o.room
                       as over
              from (select t.id as run, t.sub, t.leases, t.created_at, c.start, c.room,
                           x.id, x.seq, x.key
                      from taken t
                      join cand c on c.run = t.id
                     cross join lateral unnest(t.delivery_ids, t.event_seqs, t.order_keys)
                           as x(id, seq, key)
                     where (t.leases = 0 and not t.partial)
                        or (",
    crate::runs::is_open!(),
    ")) o) p
),
busy as materialized (
    -- keys open in the subscriptions' runs in flight (leased now, not taken here)
    select distinct r.subscription_id as sub, k.key
      from hookrelay.runs r
     cross join lateral unnest(r.order_keys) as k(key)
     where r.subscription_id in (select sub from mine)
       and r.lease_until >= now() and k.key is not null
       and r.id not in (select id from taken)
),
keyed as materialized (
    -- the subscriptions with a keyed row open: only their deliveries are looked up
    -- in the rows (a probe each; one per subscription otherwise)
    select m.sub
      from mine m
     where exists (select from hookrelay.deliveries p
                    where p.subscription_id = m.sub
                      -- deliveries_key_open's predicate, so the planner uses it
                      and p.order_key is not null
                      and p.status in ('pending', 'retrying'))
),
judged as materialized (
    select e.*,
           not e.over and e.key is not null and (
               row_number() over (partition by e.sub, e.key, e.over order by e.id) > 1
               or exists (select from busy b where b.sub = e.sub and b.key = e.key)
               or (e.sub in (select sub from keyed)
                   and exists (select from hookrelay.deliveries p
                                where p.subscription_id = e.sub and p.order_key = e.key
                                  and p.order_key is not null
                                  and p.status in ('pending', 'retrying')
                                  and p.id < e.id))) as held
      from el e
),
held as (
    insert into hookrelay.deliveries
           (id, event_seq, subscription_id, order_key, attempts, created_at)
    overriding system value
    select id, seq, sub, key, 0, created_at from judged where held order by id
    on conflict (id) do nothing
),
fate as (
    select t.ctid, t.id,
           exists (select from judged j where j.run = t.id and not j.held and not j.over)
               as sends,
           exists (select from judged j where j.run = t.id and j.held) as holds
      from taken t
),
leased as (
    -- leased with what it sends now; one that sends nothing now keeps its lease as
    -- it was. One that gave deliveries to rows is marked `partial`, so later claims
    -- pass over them (a run never leased would otherwise not be looked into)
    update hookrelay.runs r
       set lease_owner = case when f.sends then $3 else r.lease_owner end,
           lease_until = case when f.sends then now() + make_interval(secs => $2)
                              else r.lease_until end,
           leases = r.leases + case when f.sends then 1 else 0 end,
           partial = r.partial or f.holds
      from fate f
     where r.ctid = f.ctid
       and (f.sends or f.holds)
       and exists (select from judged j where j.run = f.id and not j.held)
),
emptied as (
    -- nothing left in it: every delivery has an outcome or waits as a row
    delete from hookrelay.runs r
     using taken t
     where r.ctid = t.ctid
       and not exists (select from judged j where j.run = t.id and not j.held)
)
-- one row per leased delivery, naming its event by seq, its subscription and run
select 'run' as kind, j.id as delivery_id, j.leases + 1 as attempt,
       j.sub as subscription_id, j.seq as event_seq, null::text as event_id,
       null::text as body, null::text as url, null::text as secret,
       null::text as previous_secret, null::jsonb as headers, j.run,
       (count(*) over (partition by j.run))::int as run_size, j.rest,
       null::bool as waiting
  from judged j
 where not j.held and not j.over
union all
-- each leased delivery's event once
select 'event', null, null, null, e.seq, e.id, e.body, null, null, null, null, null, null,
       null, null
  from hookrelay.events e
 where e.seq = any (array(select distinct seq from judged where not held and not over))
union all
-- and each leased delivery's subscription once
select 'target', null, null, s.id, null, null, null, s.url, s.secret,
       case when s.previous_secret_until > now() then s.previous_secret end, s.headers,
       null, null, null, null
  from hookrelay.subscriptions s
 where s.id = any (array(select distinct sub from judged where not held and not over))
union all
-- per subscription with runs nobody held: are some left waiting after this claim
-- (not taken, or taken in part)?
select 'runs', null, null, c.sub, null, null, null, null, null, null, null, null, null,
       null,
       exists (select from hookrelay.runs r
                where r.subscription_id = c.sub
                  and (r.lease_until is null or r.lease_until < now())
                  and r.id not in (select id from taken))
       or exists (select from judged j where j.sub = c.sub and j.over)
  from (select distinct sub from cand) c"
);

/// A subscription's URL, signing secrets and headers as a statement returns them
/// (columns `subscription_id`, `url`, `secret`, `previous_secret`, `headers`), still
/// sealed: claims and batches read them once per subscription.
pub(crate) struct SealedTarget {
    pub subscription_id: String,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub headers: serde_json::Value,
}

impl SealedTarget {
    pub(crate) fn decode(r: &tokio_postgres::Row) -> Result<Self, StoreError> {
        Ok(Self {
            subscription_id: r.try_get("subscription_id")?,
            url: r.try_get("url")?,
            secret: r.try_get("secret")?,
            previous_secret: r.try_get("previous_secret")?,
            headers: r.try_get("headers")?,
        })
    }
}

impl OpenedCache {
    /// [`OpenedCache::open`] for a target as a statement returned it.
    pub(crate) fn open_target(&self, secrets: &Secrets, t: SealedTarget) -> Option<OpenedSecrets> {
        self.open(
            secrets,
            &t.subscription_id,
            t.url,
            t.secret,
            t.previous_secret,
            t.headers,
        )
    }
}

/// A row of [`CLAIM_DUE`], by its `kind`.
enum ClaimRow {
    /// A delivery leased by this claim; its event and subscription come as their own
    /// rows, once each.
    Leased {
        delivery_id: i64,
        attempt: i32,
        subscription_id: String,
        event_seq: i64,
    },
    /// A delivery of a run leased by this claim ([`CLAIM_RUNS`]).
    Run {
        delivery_id: i64,
        attempt: i32,
        subscription_id: String,
        event_seq: i64,
        run: i64,
        run_size: i32,
        /// The run keeps deliveries for a later claim.
        rest: bool,
    },
    /// A subscription whose runs [`CLAIM_RUNS`] looked at: some left waiting?
    Runs {
        subscription_id: String,
        waiting: bool,
    },
    /// The event of one or more leased deliveries.
    Event { seq: i64, id: String, body: String },
    /// The subscription of one or more leased deliveries.
    Target(SealedTarget),
    /// A due subscription the claim looked at: where its cursor may move, and whether
    /// it looked quiet (see `SETTLE_IDLE`, which needs its `marks`).
    Looked {
        progress: ClaimProgress,
        marks: i64,
        quiet: bool,
    },
    /// A due subscription with no room in this claim.
    Full { subscription_id: String },
    /// A due subscription that is disabled or deleted.
    Off { subscription_id: String, marks: i64 },
}

impl ClaimRow {
    fn decode(r: &tokio_postgres::Row) -> Result<Option<Self>, StoreError> {
        let sub = || r.try_get::<_, String>("subscription_id");
        Ok(Some(match r.try_get::<_, &str>("kind")? {
            "leased" => Self::Leased {
                delivery_id: r.try_get("delivery_id")?,
                attempt: r.try_get("attempt")?,
                subscription_id: sub()?,
                event_seq: r.try_get("event_seq")?,
            },
            "run" => Self::Run {
                delivery_id: r.try_get("delivery_id")?,
                attempt: r.try_get("attempt")?,
                subscription_id: sub()?,
                event_seq: r.try_get("event_seq")?,
                run: r.try_get("run")?,
                run_size: r.try_get("run_size")?,
                rest: r.try_get("rest")?,
            },
            "runs" => Self::Runs {
                subscription_id: sub()?,
                waiting: r.try_get("waiting")?,
            },
            "event" => Self::Event {
                seq: r.try_get("event_seq")?,
                id: r.try_get("event_id")?,
                body: r.try_get("body")?,
            },
            "target" => Self::Target(SealedTarget::decode(r)?),
            "looked" => Self::Looked {
                progress: ClaimProgress {
                    subscription_id: sub()?,
                    hold: r.try_get("hold")?,
                    reach: r.try_get("reach")?,
                    all_seen: r.try_get("all_seen")?,
                },
                marks: r.try_get("marks")?,
                quiet: r.try_get("quiet")?,
            },
            "full" => Self::Full {
                subscription_id: sub()?,
            },
            "off" => Self::Off {
                subscription_id: sub()?,
                marks: r.try_get("marks")?,
            },
            _ => return Ok(None),
        }))
    }
}

/// Takes subscriptions a claim found idle out of the due set: `$1` those it found
/// quiet (due again at their next retry, if any), `$3` those disabled or deleted
/// (not due at all), each only while its `marks` is still `$2`/`$4`, the value the
/// claim read. A writer that gave it work since bumped `marks`, so it stays due; one
/// giving it work right now holds its row, and SKIP LOCKED leaves that row alone
/// (waiting would only find `marks` changed, and two settles locking rows in
/// different orders against batch commits could deadlock).
const SETTLE_IDLE: &str = "
with q as (
    select sub, marks, false as off from unnest($1::text[], $2::bigint[]) as t(sub, marks)
    union all
    select sub, marks, true from unnest($3::text[], $4::bigint[]) as t(sub, marks)
),
mine as (
    -- one with runs stays due: they are open deliveries, in flight or waiting
    select w.subscription_id as sub, q.off
      from hookrelay.subscription_work w
      join q on q.sub = w.subscription_id and q.marks = w.marks
     where q.off
        or not exists (select from hookrelay.runs r where r.subscription_id = w.subscription_id)
     order by w.subscription_id
       for update of w skip locked
)
update hookrelay.subscription_work w
   set due_at = case when mine.off then null else (
           -- the retrying index (subscription_id, next_attempt_at, id) answers this
           -- with its first entry for the subscription
           select min(d.next_attempt_at) from hookrelay.deliveries d
            where d.subscription_id = w.subscription_id and d.status = 'retrying') end
  from mine
 where w.subscription_id = mine.sub";

/// A subscription's first successes in one recorded batch go into a receipt only
/// when there are at least this many of them; fewer are kept on their rows. A
/// receipt's row, its array headers and its four index entries cost about as much
/// as the outcome updates of three or four deliveries (bench workload 9, fan-out to
/// 1,000 subscriptions, records about one success per subscription per batch: as
/// one-element receipts they cost 700 B of WAL per delivery, as updates about 280).
const RECEIPT_MIN: i64 = 4;

/// Writes a batch of outcomes, only where the lease is still ours for that attempt,
/// and logs the attempts. A first attempt that succeeded, on a delivery with nothing
/// logged before it (no attempt rows, no replay: so a delivery's whole history is in
/// one place, and in at most one receipt), is `kept`:
/// - with at least `$13` of its subscription in the batch (`done`), its delivery leaves
///   the queue for a receipt (sql/V17): one row per subscription, an element per
///   delivery;
/// - otherwise (`inline`) on its delivery's own row (sql/V9).
///
/// Every other outcome updates its delivery and is logged as a row of `attempts`
/// (`rest`). The three writes touch disjoint rows.
const RECORD_OUTCOMES: &str = "
with u as (
    select * from unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[], $5::int[],
                         $6::text[], $8::timestamptz[], $9::int[], $10::bytea[])
        as u(id, attempt, status, next_at, code, err, started, ms, body)
),
kept as materialized (
    select u.*, count(*) over (partition by d.subscription_id) as n
      from u
      join hookrelay.deliveries d on d.id = u.id
     where d.attempts = u.attempt and d.lease_owner = $7
       and u.status = 'succeeded' and u.attempt = 1 and u.err is null
       and d.replayed_at is null and d.first_attempt_at is null
       and not exists (select 1 from hookrelay.attempts a where a.delivery_id = d.id)
),
done as (
    delete from hookrelay.deliveries d
     using kept k
     where d.id = k.id and k.n >= $13 and d.attempts = k.attempt and d.lease_owner = $7
    returning d.id, d.subscription_id, d.event_seq, d.created_at, k.started, k.ms, k.code,
              k.body
),
receipt as (
    insert into hookrelay.receipts
           (subscription_id, first_delivery, last_delivery, delivery_ids, event_seqs,
            created_ats, started_ats, durations_ms, status_codes, bodies)
    select subscription_id, min(id), max(id), array_agg(id order by id),
           array_agg(event_seq order by id), array_agg(created_at order by id),
           array_agg(started order by id), array_agg(ms order by id),
           array_agg(code order by id), array_agg(body order by id)
      from done
     group by subscription_id
),
inline as (
    update hookrelay.deliveries d
       set status = 'succeeded',
           lease_owner = null,
           lease_until = null,
           last_status_code = k.code,
           last_error = null,
           updated_at = now(),
           first_attempt_at = k.started,
           first_attempt_ms = k.ms,
           first_attempt_code = k.code,
           first_attempt_body = k.body
      from kept k
     where d.id = k.id and k.n < $13 and d.attempts = k.attempt and d.lease_owner = $7
    returning d.id
),
written as (
    -- kept and written: one `kept` lost meanwhile (its lease taken over) is left to
    -- `rest`, which logs its attempt as before
    select id from done union all select id from inline
),
rest as (
    -- the outcomes not `kept`, picked before the join: filtered after it,
    -- every outcome of the batch was looked up a second time by id only to be dropped.
    -- A delivery lives $11 seconds (dispatch.max_age) from its creation or its replay:
    -- a retry is never scheduled past that, so an expired retry is always due, where
    -- the expiry sweep looks (expiry.rs); a failure past it ends the delivery ($12 says
    -- why). A comparison on the row this writes anyway, and no index or lookup more.
    update hookrelay.deliveries d
       set status = case when u.status = 'retrying'
                          and coalesce(d.replayed_at, d.created_at) + make_interval(secs => $11) <= now()
                         then 'failed' else u.status end,
           next_attempt_at = case when u.next_at is null then d.next_attempt_at
                                  else least(u.next_at, coalesce(d.replayed_at, d.created_at)
                                                        + make_interval(secs => $11)) end,
           lease_owner = null,
           lease_until = null,
           last_status_code = u.code,
           last_error = case when u.status = 'retrying'
                              and coalesce(d.replayed_at, d.created_at) + make_interval(secs => $11) <= now()
                             then $12 || coalesce('; last attempt: ' || u.err, '') else u.err end,
           updated_at = now()
      from (select * from u where u.id not in (select id from written)) u
     where d.id = u.id and d.attempts = u.attempt and d.lease_owner = $7
)
insert into hookrelay.attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, response_body)
select u.id, u.attempt, u.started, u.ms, u.code, u.err, u.body
  from u
 where u.id not in (select id from written)";

/// Writes a batch of outcomes of deliveries leased in runs (sql/V18), only for runs
/// still leased to this process (`$11`); the others' attempts are only logged, as for
/// a row whose lease was lost. Each outcome ends its delivery where a row's would:
/// a first success, with at least `$14` of its subscription in the batch, in a
/// receipt (sql/V17); anything else as its delivery's row, written once with its
/// id (a first success among fewer on the row, sql/V9; a retry, never scheduled past
/// the delivery's life of `$12` seconds and failed past it, `$13` saying why; a
/// failure). The runs `$15`, whose last deliveries these are, are deleted; the runs
/// `$16`, whose last deliveries handed out these are, are given back for a claim.
const RECORD_RUN_OUTCOMES: &str = "
with u as (
    select * from unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::timestamptz[],
                         $6::int[], $7::text[], $8::timestamptz[], $9::int[], $10::bytea[])
        as u(id, run, attempt, status, next_at, code, err, started, ms, body)
),
mine as materialized (
    -- the runs still ours, held until this commits: a claim taking one over once its
    -- lease ran out waits for this write, or this waits for it and finds it gone
    select r.id, r.subscription_id, r.created_at, r.delivery_ids, r.event_seqs, r.order_keys
      from hookrelay.runs r
     where r.id = any (array(select distinct run from u)) and r.lease_owner = $11
       for share of r
),
el as materialized (
    -- their deliveries, each run's arrays read once: unnested per outcome, they took
    -- 13 µs an outcome of a 64-delivery run
    select m.id as run, m.subscription_id as sub, m.created_at, x.id, x.seq, x.key
      from mine m
     cross join lateral unnest(m.delivery_ids, m.event_seqs, m.order_keys) as x(id, seq, key)
),
o as materialized (
    -- each outcome with its delivery as its run holds it
    select u.*, e.sub, e.seq, e.key, e.created_at,
           u.status = 'succeeded' and u.attempt = 1 and u.err is null as first,
           count(*) filter (where u.status = 'succeeded' and u.attempt = 1 and u.err is null)
               over (partition by e.sub) as n
      from u
      join el e on e.id = u.id and e.run = u.run
),
receipt as (
    insert into hookrelay.receipts
           (subscription_id, first_delivery, last_delivery, delivery_ids, event_seqs,
            created_ats, started_ats, durations_ms, status_codes, bodies)
    select sub, min(id), max(id), array_agg(id order by id), array_agg(seq order by id),
           array_agg(created_at order by id), array_agg(started order by id),
           array_agg(ms order by id), array_agg(code order by id), array_agg(body order by id)
      from o
     where first and n >= $14
     group by sub
),
rowed as (
    insert into hookrelay.deliveries
           (id, event_seq, subscription_id, order_key, status, attempts, next_attempt_at,
            last_status_code, last_error, created_at, updated_at,
            first_attempt_at, first_attempt_ms, first_attempt_code, first_attempt_body)
    overriding system value
    select o.id, o.seq, o.sub, o.key,
           case when o.status = 'retrying' and x.expired then 'failed' else o.status end,
           o.attempt,
           case when o.next_at is null then now()
                else least(o.next_at, o.created_at + make_interval(secs => $12)) end,
           o.code,
           case when o.status = 'retrying' and x.expired
                then $13 || coalesce('; last attempt: ' || o.err, '') else o.err end,
           o.created_at, now(),
           case when o.first then o.started end, case when o.first then o.ms end,
           case when o.first then o.code end, case when o.first then o.body end
      from o
     cross join lateral (select o.created_at + make_interval(secs => $12) <= now() as expired) x
     where not (o.first and o.n >= $14)
     order by o.id
    on conflict (id) do nothing
    returning subscription_id, status, next_attempt_at
),
due as (
    -- a retry makes its subscription due at its time: claims look only at due
    -- subscriptions, and once its run is gone nothing else keeps this one due
    insert into hookrelay.subscription_work as w (subscription_id, due_at)
    select subscription_id, min(next_attempt_at) from rowed
     where status = 'retrying'
     group by subscription_id
     order by 1
    on conflict (subscription_id) do update
       set due_at = least(w.due_at, excluded.due_at), marks = w.marks + 1
),
finished as (
    delete from hookrelay.runs r where r.id = any ($15::bigint[]) and r.lease_owner = $11
),
released as (
    -- handed out in part: the rest waits for a claim, which passes over what has an
    -- outcome now; the lease is given back, so the rest's first attempt is their 1st
    update hookrelay.runs r
       set lease_owner = null, lease_until = null, leases = r.leases - 1, partial = true
     where r.id = any ($16::bigint[]) and r.lease_owner = $11
)
insert into hookrelay.attempts
       (delivery_id, attempt, started_at, duration_ms, status_code, error, response_body)
select u.id, u.attempt, u.started, u.ms, u.code, u.err, u.body
  from u
 where u.id not in (select id from o where first)";

/// A 410 disables the subscription (`gone`, sql/V7: no new deliveries either) and
/// fails everything still open for it but what another live process holds, `$3`
/// saying why: its rows here, its runs' open elements right after (`runs::fail_gone`,
/// which must lock the runs in a statement of its own). A paused one whose last
/// in-flight delivery got the 410 becomes `gone` too.
const DISABLE_GONE: &str = "
with off as (
    update hookrelay.subscriptions
       set enabled = false, disabled_by = 'gone',
           disabled_reason = 'endpoint answered 410 Gone', updated_at = now()
     where id = any ($1::text[]) and disabled_by is distinct from 'gone'
    returning id
)
update hookrelay.deliveries
   set status = 'failed', lease_owner = null, lease_until = null,
       last_error = coalesce(last_error, $3),
       updated_at = now()
 where subscription_id = any ($1::text[]) and status in ('pending', 'retrying')
   and (lease_owner is null or lease_until < now() or lease_owner = $2)";

/// The `last_error` of a delivery a 410 failed without an error of its own.
const GONE_ERROR: &str = "subscription disabled: endpoint answered 410 Gone";

/// A delivery leased to this process: everything needed to sign and send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery_id: i64,
    /// 1-based number of this attempt.
    pub attempt: i32,
    pub subscription_id: String,
    /// Shared by the claim's deliveries to this subscription, like the secrets and
    /// headers.
    pub url: Arc<str>,
    /// The current secret first, then one still in its rotation grace period.
    pub secrets: Arc<[String]>,
    pub headers: Arc<[(String, String)]>,
    pub event_id: String,
    /// Shared by every delivery of the event in one claim (a clone is a reference
    /// count, and the HTTP client sends it without copying).
    pub body: Bytes,
    /// The run it was leased in (sql/V18); `None` for a delivery row.
    pub run: Option<RunTicket>,
}

/// A run leased to this process, shared by its deliveries leased together: the
/// outcome that leaves none of them unrecorded also deletes the run (see
/// `record_outcomes`). One that never comes (the process stopped, an outcome the
/// store refused) leaves the run to its lease: a claim takes it again for the
/// deliveries with no outcome recorded.
#[derive(Debug, Clone)]
pub struct RunTicket {
    pub id: i64,
    /// Its deliveries handed out whose outcome is not recorded yet.
    left: Arc<AtomicUsize>,
    /// The run holds deliveries not handed out (past the room): once these are
    /// recorded it is given back for a claim rather than deleted.
    rest: bool,
}

impl RunTicket {
    pub fn new(id: i64, deliveries: usize, rest: bool) -> Self {
        Self {
            id,
            left: Arc::new(AtomicUsize::new(deliveries)),
            rest,
        }
    }
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
    /// Free text for people; a NUL in it is replaced when stored ([`crate::storable`]).
    pub error: Option<String>,
    /// The first 4 KiB of the answer, exactly as received.
    pub response_body: Option<Vec<u8>>,
    pub status: OutcomeStatus,
    /// The delivery's run, as it was leased ([`ClaimedDelivery::run`]).
    pub run: Option<RunTicket>,
}

/// How far a claim got through one subscription's pending deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimProgress {
    pub subscription_id: String,
    /// The lowest pending id seen but not taken: the cursor must stay below it.
    pub hold: Option<i64>,
    /// The highest id the claim saw; with nothing held, the cursor may move here.
    pub reach: Option<i64>,
    /// The claim saw every delivery waiting for the subscription above the cursor
    /// (fewer than it looked for, pending or due retries); with nothing held, it took
    /// them all.
    pub all_seen: bool,
}

/// One subscription's part in a claim: how many more it may take, and its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRoom {
    pub subscription_id: String,
    pub room: usize,
    /// Pending deliveries with ids up to this one are not looked at.
    pub cursor: i64,
}

/// A batch of outcomes as statement parameters, one array per column.
struct OutcomeParams<'a> {
    ids: Vec<i64>,
    /// Each outcome's run (0 for a row).
    runs: Vec<i64>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    next_at: Vec<Option<DateTime<Utc>>>,
    codes: Vec<Option<i32>>,
    errors: Vec<Option<std::borrow::Cow<'a, str>>>,
    started: Vec<DateTime<Utc>>,
    durations: Vec<i32>,
    bodies: Vec<Option<&'a [u8]>>,
}

impl<'a> OutcomeParams<'a> {
    fn new(outcomes: &[&'a Outcome]) -> Self {
        let n = outcomes.len();
        let mut p = Self {
            ids: Vec::with_capacity(n),
            runs: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            next_at: Vec::with_capacity(n),
            codes: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            started: Vec::with_capacity(n),
            durations: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
        };
        for o in outcomes {
            let (status, at) = match o.status {
                OutcomeStatus::Succeeded => ("succeeded", None),
                OutcomeStatus::Retry { at } => ("retrying", Some(at)),
                OutcomeStatus::Failed | OutcomeStatus::Gone => ("failed", None),
            };
            p.ids.push(o.delivery_id);
            p.runs.push(o.run.as_ref().map_or(0, |r| r.id));
            p.attempts.push(o.attempt);
            p.statuses.push(status);
            p.next_at.push(at);
            p.codes.push(o.status_code);
            p.errors.push(o.error.as_deref().map(crate::storable));
            p.started.push(o.started_at);
            p.durations.push(o.duration_ms);
            p.bodies.push(o.response_body.as_deref());
        }
        p
    }

    fn errors(&self) -> Vec<Option<&str>> {
        self.errors.iter().map(|e| e.as_deref()).collect()
    }
}

/// What a claim returns.
#[derive(Debug, Default)]
pub struct Claim {
    /// Leased deliveries, oldest first.
    pub deliveries: Vec<ClaimedDelivery>,
    /// One per subscription the claim looked at.
    pub progress: Vec<ClaimProgress>,
    /// Every enabled subscription with due work, looked at or not.
    pub enabled: Vec<String>,
}

impl Store {
    /// Leases up to `limit` due deliveries to `owner` for `lease`. Subscriptions in
    /// `rooms` take at most their room, from above their cursor; all others at most
    /// `default_room`, from the start.
    pub async fn claim_due_deliveries(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
        default_room: usize,
        rooms: &[ClaimRoom],
    ) -> Result<Claim, StoreError> {
        let client = self.relaxed_client().await?;
        let lease = lease.as_secs_f64();
        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let mut ids: Vec<&str> = rooms.iter().map(|r| r.subscription_id.as_str()).collect();
        let mut room: Vec<i32> = rooms.iter().map(|r| as_i32(r.room)).collect();
        let mut cursors: Vec<i64> = rooms.iter().map(|r| r.cursor).collect();
        // Runs first, then rows in the room they leave.
        let stmt = client.prepare_cached(CLAIM_RUNS).await?;
        let run_rows = client
            .query(
                &stmt,
                &[
                    &(limit as i64),
                    &lease,
                    &owner,
                    &ids,
                    &as_i32(default_room),
                    &room,
                ],
            )
            .await?;
        let mut in_runs: HashMap<&str, usize> = HashMap::new();
        for r in &run_rows {
            if r.try_get::<_, &str>("kind")? == "run" {
                *in_runs.entry(r.try_get("subscription_id")?).or_default() += 1;
            }
        }
        let taken: usize = in_runs.values().sum();
        for (sub, n) in &in_runs {
            match ids.iter().position(|s| s == sub) {
                Some(i) => room[i] = room[i].saturating_sub(as_i32(*n)),
                None => {
                    ids.push(sub);
                    room.push(as_i32(default_room.saturating_sub(*n)));
                    cursors.push(0);
                }
            }
        }
        let limit = limit.saturating_sub(taken) as i64;
        let default_room = as_i32(default_room);
        let stmt = client.prepare_cached(CLAIM_DUE).await?;
        let rows = client
            .query(
                &stmt,
                &[&limit, &lease, &owner, &ids, &default_room, &room, &cursors],
            )
            .await?;
        let mut out = Claim::default();
        let mut runs: HashMap<i64, RunTicket> = HashMap::new();
        let mut waiting_runs: HashSet<String> = HashSet::new();
        let (mut quiet, mut quiet_marks) = (Vec::<String>::new(), Vec::<i64>::new());
        let (mut off, mut off_marks) = (Vec::<String>::new(), Vec::<i64>::new());
        let mut leased: Vec<(i64, i32, String, i64, Option<RunTicket>)> = Vec::new();
        let mut events: HashMap<i64, (String, Bytes)> = HashMap::new();
        let mut subscriptions: HashMap<String, OpenedSecrets> = HashMap::new();
        let mut unreadable: HashSet<String> = HashSet::new();
        let mut parked: Vec<i64> = Vec::new();
        for r in run_rows.iter().chain(&rows) {
            match ClaimRow::decode(r)? {
                Some(ClaimRow::Leased {
                    delivery_id,
                    attempt,
                    subscription_id,
                    event_seq,
                }) => leased.push((delivery_id, attempt, subscription_id, event_seq, None)),
                Some(ClaimRow::Run {
                    delivery_id,
                    attempt,
                    subscription_id,
                    event_seq,
                    run,
                    run_size,
                    rest,
                }) => {
                    let ticket = runs
                        .entry(run)
                        .or_insert_with(|| RunTicket::new(run, run_size as usize, rest))
                        .clone();
                    leased.push((
                        delivery_id,
                        attempt,
                        subscription_id,
                        event_seq,
                        Some(ticket),
                    ));
                }
                Some(ClaimRow::Runs {
                    subscription_id,
                    waiting: true,
                }) => {
                    waiting_runs.insert(subscription_id);
                }
                Some(ClaimRow::Runs { waiting: false, .. }) => {}
                Some(ClaimRow::Event { seq, id, body }) => {
                    events.insert(seq, (id, Bytes::from(body)));
                }
                Some(ClaimRow::Target(t)) => {
                    let id = t.subscription_id.clone();
                    match self.opened.open_target(&self.secrets, t) {
                        Some(opened) => {
                            subscriptions.insert(id, opened);
                        }
                        None => {
                            unreadable.insert(id);
                        }
                    }
                }
                Some(ClaimRow::Looked {
                    progress,
                    marks,
                    quiet: is_quiet,
                }) => {
                    if is_quiet {
                        quiet.push(progress.subscription_id.clone());
                        quiet_marks.push(marks);
                    }
                    out.enabled.push(progress.subscription_id.clone());
                    out.progress.push(progress);
                }
                Some(ClaimRow::Full { subscription_id }) => out.enabled.push(subscription_id),
                Some(ClaimRow::Off {
                    subscription_id,
                    marks,
                }) => {
                    off.push(subscription_id);
                    off_marks.push(marks);
                }
                None => {}
            }
        }
        let mut parked_runs: Vec<i64> = Vec::new();
        for (delivery_id, attempt, subscription_id, seq, run) in leased {
            if unreadable.contains(&subscription_id) {
                match run {
                    Some(run) if !parked_runs.contains(&run.id) => parked_runs.push(run.id),
                    Some(_) => {}
                    None => parked.push(delivery_id),
                }
                continue;
            }
            let (Some((event_id, body)), Some(opened)) =
                (events.get(&seq), subscriptions.get(&subscription_id))
            else {
                // Cannot happen (one statement read them all); if it did, the lease
                // expires and a later claim sends it.
                tracing::error!(
                    delivery = delivery_id,
                    seq,
                    subscription = %subscription_id,
                    "claimed delivery without its event or subscription"
                );
                continue;
            };
            out.deliveries.push(ClaimedDelivery {
                delivery_id,
                attempt,
                subscription_id,
                url: opened.0.clone(),
                secrets: opened.1.clone(),
                headers: opened.2.clone(),
                event_id: event_id.clone(),
                body: body.clone(),
                run,
            });
        }
        // Runs left waiting: the subscription was not drained, whatever its rows say.
        for p in &mut out.progress {
            if waiting_runs.contains(&p.subscription_id) {
                p.all_seen = false;
            }
        }
        // Oldest first, so per-batch spawn order follows commit order.
        out.deliveries.sort_unstable_by_key(|d| d.delivery_id);
        for (statement, ids) in [
            (PARK_UNREADABLE, &parked),
            (PARK_UNREADABLE_RUNS, &parked_runs),
        ] {
            if ids.is_empty() {
                continue;
            }
            // If this fails the leases simply expire: the deliveries wait either way.
            let retry = UNREADABLE_RETRY.as_secs_f64();
            if let Err(e) = client.execute(statement, &[ids, &owner, &retry]).await {
                tracing::debug!(error = %e, "parking deliveries of unreadable subscriptions failed; their leases expire instead");
            }
        }
        if !quiet.is_empty() || !off.is_empty() {
            // The leases above are committed: a failure here only leaves the
            // subscriptions due (looked at again by the next claim), never loses them.
            let settled = async {
                let stmt = client.prepare_cached(SETTLE_IDLE).await?;
                client
                    .execute(&stmt, &[&quiet, &quiet_marks, &off, &off_marks])
                    .await
            };
            if let Err(e) = settled.await {
                tracing::debug!(error = %e, "settling idle subscriptions failed; they stay due");
            }
        }
        Ok(out)
    }

    /// What a test send to `subscription_id` needs (DESIGN §1.5
    /// `POST /v1/subscriptions/{id}/test`): its URL, opened secrets and headers, with
    /// `event_id` and `body` to sign and send. Nothing is leased or recorded.
    pub async fn test_delivery(
        &self,
        subscription_id: &str,
        event_id: &str,
        body: &str,
    ) -> Result<ClaimedDelivery, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "select url, secret,
                        case when previous_secret_until > now() then previous_secret end,
                        headers
                   from hookrelay.subscriptions where id = $1",
                &[&subscription_id],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let opened = self
            .opened
            .open(
                &self.secrets,
                subscription_id,
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            )
            .ok_or_else(|| StoreError::Unreadable(subscription_id.to_owned()))?;
        Ok(ClaimedDelivery {
            delivery_id: 0,
            attempt: 1,
            subscription_id: subscription_id.to_owned(),
            url: opened.0,
            secrets: opened.1,
            headers: opened.2,
            event_id: event_id.to_owned(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            run: None,
        })
    }

    /// Records a batch of outcomes in one transaction. Outcomes whose lease was lost
    /// (expired and re-claimed elsewhere) are dropped from the delivery update but
    /// their attempts are still logged (as attempt rows). A retry is scheduled no
    /// later than the delivery's end of life (the store's max age), and a failed
    /// attempt after it fails the delivery (see `expiry`).
    pub async fn record_outcomes(
        &self,
        owner: &str,
        outcomes: &[Outcome],
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (in_runs, rows): (Vec<&Outcome>, Vec<&Outcome>) =
            outcomes.iter().partition(|o| o.run.is_some());
        let mut gone: Vec<&str> = Vec::new();
        for o in outcomes {
            if o.status == OutcomeStatus::Gone && !gone.contains(&o.subscription_id.as_str()) {
                gone.push(&o.subscription_id);
            }
        }
        let mut client = self.relaxed_client().await?;
        let tx = client.transaction().await?;
        let max_age = self.max_age.as_secs_f64();
        let expired = crate::expiry::expired_reason(self.max_age);
        if !rows.is_empty() {
            let p = OutcomeParams::new(&rows);
            let stmt = tx.prepare_cached(RECORD_OUTCOMES).await?;
            tx.execute(
                &stmt,
                &[
                    &p.ids,
                    &p.attempts,
                    &p.statuses,
                    &p.next_at,
                    &p.codes,
                    &p.errors(),
                    &owner,
                    &p.started,
                    &p.durations,
                    &p.bodies,
                    &max_age,
                    &expired,
                    &RECEIPT_MIN,
                ],
            )
            .await?;
        }
        // Per run in this batch: how many of its outcomes, and whether they are its
        // last ones (then it is deleted in this transaction).
        let mut counted: Vec<(&RunTicket, usize)> = Vec::new();
        for run in in_runs.iter().filter_map(|o| o.run.as_ref()) {
            match counted.iter_mut().find(|(r, _)| r.id == run.id) {
                Some((_, k)) => *k += 1,
                None => counted.push((run, 1)),
            }
        }
        if !in_runs.is_empty() {
            let (mut finished, mut released) = (Vec::<i64>::new(), Vec::<i64>::new());
            for (run, k) in &counted {
                if run.left.load(Ordering::Acquire) <= *k {
                    if run.rest {
                        released.push(run.id);
                    } else {
                        finished.push(run.id);
                    }
                }
            }
            let p = OutcomeParams::new(&in_runs);
            let stmt = tx.prepare_cached(RECORD_RUN_OUTCOMES).await?;
            tx.execute(
                &stmt,
                &[
                    &p.ids,
                    &p.runs,
                    &p.attempts,
                    &p.statuses,
                    &p.next_at,
                    &p.codes,
                    &p.errors(),
                    &p.started,
                    &p.durations,
                    &p.bodies,
                    &owner,
                    &max_age,
                    &expired,
                    &RECEIPT_MIN,
                    &finished,
                    &released,
                ],
            )
            .await?;
        }
        if !gone.is_empty() {
            tx.execute(DISABLE_GONE, &[&gone, &owner, &GONE_ERROR])
                .await?;
            crate::runs::fail_gone(&tx, &gone, owner, GONE_ERROR).await?;
        }
        tx.commit().await?;
        for (run, k) in counted {
            // Only the recorder of this process counts a run down, one batch at a time.
            let left = run.left.load(Ordering::Acquire);
            run.left.store(left.saturating_sub(k), Ordering::Release);
        }
        Ok(())
    }
}
