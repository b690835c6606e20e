-- Backfills (DESIGN §1.8): a subscription's request for the current rows of one
-- source's tables. The source's leader reads them in primary-key chunks; each chunk's
-- progress (last_key, tables_done, rows) commits in the batch transaction that stores
-- the chunk's read events and their deliveries, under the leadership epoch, so a
-- restart or a takeover resumes at the chunk it was in.
create table hookrelay.backfills (
    id              text primary key,
    subscription_id text not null references hookrelay.subscriptions (id) on delete cascade,
    source          text not null,
    tables          text[] not null,          -- as configured, read in this order
    tables_done     integer not null default 0,
    -- the key of the last row read in tables[tables_done + 1], as JSON text (the row
    -- image's key columns); null: that table from its start
    last_key        text,
    rows            bigint not null default 0, -- rows sent as read events
    state           text not null default 'running'
                    check (state in ('running', 'completed', 'failed', 'cancelled')),
    error           text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    ended_at        timestamptz
);
create index backfills_running on hookrelay.backfills (source, created_at) where state = 'running';
create index backfills_subscription on hookrelay.backfills (subscription_id, created_at);
