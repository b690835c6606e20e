-- Issue 14: the dispatcher re-analyzes the delivery queue as it grows (see
-- hookrelay-store/src/maintenance.rs), about 25 times while it grows from empty to
-- 200,000 rows. At the default target each ANALYZE sampled 30,000 rows (60 ms on
-- 200,000 deliveries), 5-7 % of the store's CPU in bench workloads 1 and 3. The claim
-- and fan-out plans need the queue's size and a rough spread of these columns, not
-- fine histograms: a target of 10 samples 3,000 rows (7-14 ms). The maintenance
-- ANALYZE names only these columns, so the sample stays small whatever columns are
-- added later; autovacuum's own analyze still covers every column.
alter table hookrelay.deliveries
    alter column id set statistics 10,
    alter column event_seq set statistics 10,
    alter column subscription_id set statistics 10,
    alter column order_key set statistics 10,
    alter column status set statistics 10,
    alter column next_attempt_at set statistics 10,
    alter column lease_until set statistics 10;
