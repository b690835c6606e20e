-- Issue 14: less store work per delivery. deliveries_event (event_seq) served only
-- retention's "does this event still have a delivery?", yet every delivery wrote an
-- entry into it twice (its insert and its outcome, which is never HOT): about 145 B
-- of WAL per delivery, 10 % of bench workload 3's. An event now counts its own
-- deliveries instead: the batch that fans it out sets the count (the same matches it
-- inserts), and whoever deletes deliveries (retention, a subscription's delete)
-- takes them off it. Retention deletes an event when its count reaches zero; events
-- with none (nobody subscribed, or their subscription was deleted) wait in a small
-- partial index for the succeeded retention.
alter table hookrelay.events add column deliveries_left integer not null default 0;

-- Existing events get their counts once (a rewrite of every event that has deliveries).
update hookrelay.events e
   set deliveries_left = c.n
  from (select event_seq, count(*)::int as n from hookrelay.deliveries group by event_seq) c
 where e.seq = c.event_seq;

create index events_unreferenced on hookrelay.events (created_at)
    where deliveries_left = 0;

drop index hookrelay.deliveries_event;
