-- A receiver's answer is arbitrary bytes: a NUL or invalid UTF-8 in a `text` column
-- made PostgreSQL refuse the whole outcome batch (issue 7). Bodies are kept exactly,
-- as bytes; the API shows them as text (invalid UTF-8 replaced) and as base64.
alter table hookrelay.attempts
    alter column response_body type bytea using convert_to(response_body, 'UTF8');

-- A source change hookrelay cannot turn into an event (a journal row it cannot read)
-- is set aside here, with the reason, instead of stopping its source for good: the
-- reader goes on with the rest, and an operator can see what was skipped.
create table hookrelay.rejected_changes (
    id          bigint generated always as identity primary key,
    source      text not null,
    position    text not null,
    reason      text not null,
    raw         text not null,          -- the change as the source gave it
    created_at  timestamptz not null default now(),
    unique (source, position)
);
