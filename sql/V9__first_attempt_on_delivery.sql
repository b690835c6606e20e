-- Issue 14: less store work per event. A delivery whose first attempt succeeds (in
-- a healthy system, nearly every one) keeps that attempt on its own row, in these
-- columns, instead of as a row of hookrelay.attempts: the outcome update writes them
-- anyway, so an attempt costs no insert into attempts and its index. GET
-- /v1/deliveries/{id} lists it as attempt 1, before any attempt rows. Failures,
-- retries, later attempts (after a replay) and attempts whose lease was lost still go
-- to hookrelay.attempts. Nullable without defaults: adding them rewrites nothing.
alter table hookrelay.deliveries
    add column first_attempt_at   timestamptz,  -- its started_at; null: not kept here
    add column first_attempt_ms   integer,      -- duration
    add column first_attempt_code integer,      -- HTTP status
    add column first_attempt_body bytea;        -- first 4 KiB of the answer, exactly

-- Every delivery is updated twice: its lease (no indexed column changes, so it can be
-- HOT: no new index entries) and its outcome (status is in the partial indexes'
-- predicates, so never HOT). At fillfactor 80 a claim of a whole page of fresh
-- deliveries found room for the new versions of only about a third of them; the
-- rest were non-HOT and wrote an entry into each of five indexes. At 50, bench
-- workload 1 measured 87-91 % of lease updates HOT (26-34 % at 80) and 11 % less WAL
-- per event (not counting full-page images); 30 made every lease HOT but saved only 3 %
-- more for a sparser table. Applies to pages filled from now on.
alter table hookrelay.deliveries set (fillfactor = 50);
