-- A delivery whose first attempt succeeds (in a healthy system, nearly every one)
-- leaves the queue: its row is deleted and the attempt is kept in a receipt, one row
-- per subscription per recorded batch of outcomes, as arrays. The row's outcome was
-- an update that could never be HOT (status is in the queue indexes' predicates), so
-- it wrote a new version and an entry into each index that took it; a delete writes
-- one small record and no index entry, and a receipt's row and index entries are
-- shared by every delivery in it. A batch with only a few of a subscription's
-- successes (fewer than the recorder's RECEIPT_MIN) keeps them on their rows as
-- before (sql/V9): a receipt of one or two would cost more than their updates.
--
-- Everything else keeps its row: retries, failures, later attempts, and deliveries
-- replayed (a replayed receipt entry gets its row back, with the same id; the listing
-- then shows the row, and the receipt's attempt stays the first of its history).
-- Rows already succeeded before this migration stay as they are.
create table hookrelay.receipts (
    id              bigint generated always as identity primary key,
    subscription_id text not null,
    first_delivery  bigint not null,      -- the lowest and highest delivery id in it
    last_delivery   bigint not null,
    recorded_at     timestamptz not null default now(),
    -- one element per delivery, in delivery id order
    delivery_ids    bigint[] not null,
    event_seqs      bigint[] not null,
    created_ats     timestamptz[] not null,  -- when each delivery was created
    started_ats     timestamptz[] not null,  -- when its attempt started
    durations_ms    integer[] not null,
    status_codes    integer[] not null,
    bodies          bytea[] not null         -- first 4 KiB of each answer, exactly
);
-- GET /v1/deliveries/{id}: the receipt whose range holds the id
create index receipts_range on hookrelay.receipts
    using gist (int8range(first_delivery, last_delivery, '[]'));
-- listings newest first, of one subscription or of all
create index receipts_subscription on hookrelay.receipts (subscription_id, last_delivery);
create index receipts_last on hookrelay.receipts (last_delivery);
