-- Issue 16: idle subscriptions must cost nothing. Claims used to name every enabled
-- subscription and probe each one's indexes: with 1,000 enabled subscriptions that
-- never matched, 10 active ones fell from ~12k to ~0.9k deliveries/s. Claims now
-- start from the subscriptions that may have due work, kept here.
--
-- due_at: from when the subscription may have due work; null = nothing open.
--   Writers of new work (a batch's fan-out, a replay, re-enabling) set it to now and
--   bump `marks`. Only a claim clears it (see hookrelay-store/src/claim.rs,
--   SETTLE_IDLE), after it looked from the start and found nothing open, setting it
--   to the subscription's next retry time (or null), and only if `marks` is still
--   what the claim read: a writer that committed in between keeps it due.
-- A delivery that is in flight (leased) keeps its subscription due, so a lease that
-- expires (a crashed process) is found by the next claim after it expires.
create table hookrelay.subscription_work (
    subscription_id text primary key,
    due_at          timestamptz,
    marks           bigint not null default 0
);
-- Claims read only the due entries; idle ones are not in this index.
create index subscription_work_due on hookrelay.subscription_work (due_at)
    where due_at is not null;
-- Updated on every batch that gives the subscription work: leave room for HOT updates.
alter table hookrelay.subscription_work set (fillfactor = 50);

-- Every subscription with open deliveries starts due; the first claims settle the
-- ones that have nothing due.
insert into hookrelay.subscription_work (subscription_id, due_at)
select distinct subscription_id, now()
  from hookrelay.deliveries
 where status in ('pending', 'retrying');
