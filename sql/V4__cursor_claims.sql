-- Claims now walk each subscription's pending deliveries by id from a cursor the
-- dispatcher keeps (see hookrelay-store/src/claim.rs), so they seek past the dead
-- index entries that finished deliveries leave at the head of a queue index, instead
-- of stepping over them on every claim. Retries due later have their own small index.
drop index hookrelay.deliveries_due;
drop index hookrelay.deliveries_subscription_due;
create index deliveries_pending on hookrelay.deliveries (subscription_id, id)
    where status = 'pending';
create index deliveries_retrying on hookrelay.deliveries (subscription_id, next_attempt_at, id)
    where status = 'retrying';
-- Listing by status: only failed deliveries are looked up by status alone often
-- enough to need an index; the others are found through the indexes above or by id.
-- Every index here is written once per delivery and again per outcome.
drop index hookrelay.deliveries_status;
create index deliveries_failed on hookrelay.deliveries (id) where status = 'failed';
-- Attempts are only read by delivery (attempts_delivery).
alter table hookrelay.attempts drop constraint attempts_pkey;
