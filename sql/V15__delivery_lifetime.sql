-- A delivery's life is bounded by dispatch.max_age (DESIGN §1.12), counted from its
-- creation, or from the replay that started it over: replaying a delivery that ended
-- (failed or succeeded) gives it a whole life again. Null until a replay sets it, so
-- a delivery's insert writes nothing more (a null costs a bit in the row's null
-- bitmap, which the row already has), and no index: the expiry sweep finds old
-- deliveries through the indexes the claim uses (hookrelay-store/src/expiry.rs).
alter table hookrelay.deliveries add column replayed_at timestamptz;
