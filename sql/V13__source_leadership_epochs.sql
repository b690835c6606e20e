-- Leadership epochs (DESIGN §1.11). A process that takes a source's advisory lock bumps
-- the source's epoch here; every batch and checkpoint of that source commits only while
-- the epoch it took over with is still the current one (see batch.rs). A deposed leader
-- that comes back after a partition therefore cannot commit beside the new one, and a
-- checkpoint never moves backwards. The takeover's update waits for any batch still
-- holding the row FOR SHARE, so the two are ordered.
create table hookrelay.source_leaders (
    source text primary key,
    epoch bigint not null,
    -- `<host>-<pid>` of the process that took it, and when
    holder text not null,
    since timestamptz not null default now()
);
