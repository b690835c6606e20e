-- Deliveries in runs: a batch gives each subscription its new deliveries as runs of
-- up to 64, one row each holding them as arrays (ids, event seqs, order keys),
-- instead of a row per delivery. A run is leased and sent as a whole: to the local
-- dispatcher as the batch inserts it (when it has room), or to a claim later. Each
-- delivery's outcome then goes where a delivery row's would end: a receipt for a
-- first success (sql/V17), a row of `deliveries` for anything else (a retry, a
-- failure, a success among too few of its subscription for a receipt), written once,
-- as it ends. The outcome that finishes a run deletes it, in the same transaction.
--
-- A delivery row cost its insert, an entry in each queue index, its lease update and
-- its delete; a run costs one row for up to 64 deliveries.
--
-- Ids come from the deliveries' own identity sequence, in event order: an id is fixed
-- from the moment its event is stored, and a run's delivery that later gets a row
-- (a retry) keeps it. A run's delivery is open (pending) while it has neither a
-- receipt nor a row; a run whose lease ran out (its process died) is claimed again
-- for its open deliveries only.
--
-- Only deliveries that may go at once by per-key order go into runs: no key, or the
-- first of its key in the batch with none of that key open (in a row or a run). The
-- others, and those of paused or filtered subscriptions and of backfills, are rows as
-- before. So no two deliveries of a key are open in runs at once, and a row waits
-- behind a run's delivery of its key with a lower id as it waits behind a row.
create table hookrelay.runs (
    id              bigint primary key,   -- its first delivery id
    last_delivery   bigint not null,
    subscription_id text not null,
    created_at      timestamptz not null default now(),
    lease_owner     text,                 -- null: waiting for a claim
    lease_until     timestamptz,
    leases          integer not null default 0,  -- times leased: its deliveries' attempt number
    -- handed out in part (a claim's room ended inside it) and given back: some of its
    -- deliveries have an outcome, which a claim passes over
    partial         boolean not null default false,
    -- one element per delivery, in delivery id order
    delivery_ids    bigint[] not null,
    event_seqs      bigint[] not null,
    order_keys      bigint[] not null     -- null elements: no per-key order
);
-- a subscription's runs, oldest first: claims, open keys, listings
create index runs_subscription on hookrelay.runs (subscription_id, id);
-- Runs live for milliseconds and are deleted whole: keep dead rows and statistics
-- from going stale, as for the queue (sql/V3). Half of each page is left free, so a
-- lease (a claim's update of a few columns before the arrays) stays on its page: its
-- WAL record then holds the changed bytes only, not the whole 1.7 KB row again.
alter table hookrelay.runs set (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 1000
);
