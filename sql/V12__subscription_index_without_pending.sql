-- Issue 14: less store work per event. Every delivery is inserted `pending` and goes
-- into deliveries_pending (subscription_id, id); the full (subscription_id, id) index
-- took an entry for it too, at insert and again at its outcome (never a HOT update).
-- It now holds only the deliveries past pending: the outcome still writes its entry,
-- the insert no longer does. A listing by subscription reads both indexes, merged by
-- id (see hookrelay-store's deliveries.rs). Quick bench runs: 7-8 % less WAL per
-- event in workloads 1 and 3 (README, issue 14, sixth pass).
drop index hookrelay.deliveries_subscription;
create index deliveries_subscription_not_pending on hookrelay.deliveries (subscription_id, id)
    where status <> 'pending';
