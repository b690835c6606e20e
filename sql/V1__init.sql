-- hookrelay store, version 1. Everything lives in schema "hookrelay" (created by the
-- migrator before this runs). No foreign keys on the hot tables: events, deliveries and
-- attempts are only ever written by hookrelay-store, in the transactions that keep them
-- consistent, and per-row FK checks would cost the throughput they protect.

create table hookrelay.subscriptions (
    id                    text primary key,
    url                   text not null,
    description           text not null default '',
    event_types           text[],            -- globs as given; null = every type
    type_patterns         text[],            -- the same globs as LIKE patterns
    sources               text[],            -- source names; null = every source
    headers               jsonb not null default '{}',
    ordering              text not null default 'key' check (ordering in ('key', 'none')),
    enabled               boolean not null default true,
    disabled_reason       text,
    secret                text not null,
    previous_secret       text,              -- still signs until previous_secret_until
    previous_secret_until timestamptz,
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now()
);

create table hookrelay.events (
    seq          bigint generated always as identity primary key,
    id           text not null unique,
    source       text not null,
    event_type   text not null,
    order_key    bigint not null,
    committed_at timestamptz not null,
    created_at   timestamptz not null default now(),
    body         text not null               -- the exact bytes every attempt sends
);
create index events_type on hookrelay.events (event_type, seq);

create table hookrelay.deliveries (
    id               bigint generated always as identity primary key,
    event_seq        bigint not null,
    subscription_id  text not null,
    order_key        bigint,                 -- null when the subscription has ordering = 'none'
    status           text not null default 'pending'
                     check (status in ('pending', 'retrying', 'succeeded', 'failed')),
    attempts         integer not null default 0,
    next_attempt_at  timestamptz not null default now(),
    lease_owner      text,
    lease_until      timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);
create index deliveries_due on hookrelay.deliveries (next_attempt_at, id)
    where status in ('pending', 'retrying');
create index deliveries_key_open on hookrelay.deliveries (subscription_id, order_key, id)
    where status in ('pending', 'retrying') and order_key is not null;
create index deliveries_subscription on hookrelay.deliveries (subscription_id, id);
create index deliveries_status on hookrelay.deliveries (status, id);
create index deliveries_event on hookrelay.deliveries (event_seq);

create table hookrelay.attempts (
    id            bigint generated always as identity primary key,
    delivery_id   bigint not null,
    attempt       integer not null,
    started_at    timestamptz not null,
    duration_ms   integer not null,
    status_code   integer,
    error         text,
    response_body text                       -- first 4 KiB
);
create index attempts_delivery on hookrelay.attempts (delivery_id, id);

create table hookrelay.checkpoints (
    source        text primary key,
    position      text not null,
    last_event_at timestamptz,
    updated_at    timestamptz not null default now()
);
