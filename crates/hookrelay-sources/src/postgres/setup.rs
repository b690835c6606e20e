//! What hookrelay installs in a Postgres source database, idempotently, at start:
//!
//! ```text
//!  watched table ──AFTER INSERT / DELETE statement triggers (transition tables)──┐
//!                ──AFTER UPDATE row trigger (old and new row paired for certain)─┼─▶ hookrelay.journal
//!                ──AFTER TRUNCATE statement trigger (one row, op TRUNCATE)────────┘   (a row per update or
//!                                                                                      truncate, a row per
//!                                                                                      chunk of ≤1,000 rows
//!                                                                                      inserted or deleted)
//!                        │ first change of a transaction, only if the reader is idle:
//!                        └──────────────▶ pg_notify('hookrelay_<source>', '')  (wake-up, no data)
//! ```
//!
//! Inserts and deletes are journalled once per statement, from its transition table:
//! one function call for the whole statement instead of one per row (measured on 100k
//! rows: plain insert 0.34 s, a row trigger 1.2 s, a statement trigger 0.62 s), and
//! in chunks of up to 1,000 rows per journal row (a JSON array of their images). A
//! single row keeps the one-change form and a small statement is one chunk with no
//! numbering pass (pgbench, one session, commits not waiting for fsync: 100-row
//! statements 1.5-1.6k/s with a journal row per row, 1.9-2.0k/s chunked through a
//! window, 2.3-2.4k/s now, 4.3-4.5k/s with no trigger; single rows 9.2-9.5k/s,
//! 8.2-8.4k/s, 9.5k/s and 11.8k/s). An update needs its old and new row paired,
//! which only a row trigger knows for certain.
//!
//! Both functions pin every setting that changes `to_json`'s output (`TimeZone`,
//! `DateStyle`, `IntervalStyle`, `extra_float_digits`, `bytea_output`, `lc_monetary`,
//! `search_path`): a function's `SET` clause applies for its own call and is undone
//! after, so the writer's session is untouched and its settings cannot change the
//! bytes receivers get (DESIGN §1.3).
//!
//! `pg_notify` serialises committing transactions on a global lock, so it is sent at
//! most once per transaction and only while the reader waits (`hookrelay.readers.idle`);
//! a busy reader polls instead. The writer also takes a shared advisory lock for the
//! rest of its transaction: a reader about to sleep sets `idle` and then tries the
//! exclusive lock, which only succeeds once every writer that might have seen
//! `idle = false` has finished, so its last poll cannot miss a silent commit.
//!
//! Which tables: every one the source's `tables` patterns match (globs allowed,
//! `hookrelay_core::scope`). The patterns and `exclude_columns` are saved in
//! `hookrelay.scopes`, and `hookrelay.capture_table` installs a table's triggers from
//! them, whoever calls it: setup for the tables that exist, and the event trigger
//! `hookrelay_scope` (`ddl_command_end` of CREATE TABLE / CREATE TABLE AS / SELECT
//! INTO / ALTER TABLE) for a table created later, inside the creating transaction.
//! So no row of a new table can be written before its capture is in place, and no
//! change after its `CREATE TABLE` is missed, whether or not hookrelay is running;
//! a `scope` notification tells the reader to list its tables again (a dropped table
//! too, from `sql_drop`). Event triggers need a superuser: without one, new tables are
//! captured from the next start, and the source says so in a notice.
//!
//! Excluded columns are passed to the triggers as `LIKE` patterns (a fourth
//! argument, only on tables that have some) and removed from each row image before it
//! is journalled (`hookrelay.without`), so the journal never holds them; a column
//! added later that matches is excluded too.
//!
//! Setup itself runs under ONE advisory lock, [`SETUP_LOCK_KEY`], that every source
//! and every hookrelay process takes in the source database, whichever source it
//! sets up: the schema, journal and capture functions are shared by all sources on
//! that database, and `create ... if not exists` / `create or replace` are not safe
//! against each other when run concurrently (a duplicate key in `pg_namespace`,
//! "tuple concurrently updated"). Under the lock every step is idempotent, so any
//! number of sources may start at once and a crash mid-setup leaves nothing the next
//! attempt cannot finish. The lock is per session: a dropped connection releases it.

use hookrelay_core::{scope::TableScope, status::SkippedTable};
use tokio_postgres::{error::SqlState, Client};

use super::meta;
use crate::SourceError;

/// The advisory lock every setup takes. Negative, so it can never equal a source's
/// writer/reader key ([`Names::lock_key`] is non-negative); advisory locks are
/// per-database, so sources on other databases do not wait for it.
pub(super) const SETUP_LOCK_KEY: i64 = -0x686f_6f6b_7365_7475; // "-hooksetu"
const _: () = assert!(SETUP_LOCK_KEY < 0, "never a source's own lock key");

pub(super) const SCHEMA_SQL: &str = r#"
create schema if not exists hookrelay;
create table if not exists hookrelay.journal (
    id          bigint generated always as identity primary key,
    source      text not null,
    txid        xid8 not null default pg_current_xact_id(),
    seq         integer not null,
    schema_name text not null,
    table_name  text not null,
    op          text not null,
    before      json,
    after       json,
    changed_at  timestamptz not null default clock_timestamp()
);
-- null: one change (`before`/`after` are row images); n: a chunk of n changes of one
-- statement (the images are a JSON array), seq..seq+n-1.
alter table hookrelay.journal add column if not exists rows integer;
-- The writers pay for compressing the images (a 100-row chunk is ~10 kB): lz4 costs
-- them a fraction of pglz's CPU (100-row statements committed 8-12 % faster). Set
-- once; a server without lz4 (or before PostgreSQL 14) keeps its default.
do $lz4$
begin
    if exists (select 1 from pg_catalog.pg_attribute
                where attrelid = 'hookrelay.journal'::regclass
                  and attname in ('before', 'after') and attcompression <> 'l') then
        alter table hookrelay.journal
            alter column before set compression lz4, alter column after set compression lz4;
    end if;
exception when feature_not_supported or undefined_column then null;
end
$lz4$;
create index if not exists journal_source_id on hookrelay.journal (source, id);
create table if not exists hookrelay.readers (
    source text primary key,
    idle   boolean not null default false
);
-- A row image without its excluded columns (LIKE patterns), keys in table order: only
-- tables with exclusions pay for it, and the journal never holds those columns.
create or replace function hookrelay.without(image json, excluded text[]) returns json
language sql immutable parallel safe
as $fn$
select coalesce(json_object_agg(e.key, e.value order by e.n), '{}'::json)
  from json_each(image) with ordinality as e(key, value, n)
 where not e.key like any (excluded)
$fn$;
create or replace function hookrelay.capture() returns trigger
language plpgsql
set timezone = 'UTC' set datestyle = 'ISO, YMD' set intervalstyle = 'iso_8601'
set extra_float_digits = 3 set bytea_output = 'hex' set lc_monetary = 'C'
set search_path = pg_catalog, pg_temp
as $fn$
declare
    -- TG_ARGV: 0 source name, 1 per-source transaction counter (a GUC name), 2 lock key,
    -- 3 (only when some are) the excluded columns as LIKE patterns
    n integer := coalesce(nullif(current_setting(TG_ARGV[1], true), '')::integer + 1, 0);
    excluded text[] := case when TG_NARGS > 3 then TG_ARGV[3]::text[] end;
begin
    perform set_config(TG_ARGV[1], n::text, true);
    if n = 0 then
        perform pg_advisory_xact_lock_shared(TG_ARGV[2]::bigint);
        if exists (select 1 from hookrelay.readers r where r.source = TG_ARGV[0] and r.idle) then
            perform pg_notify('hookrelay_' || TG_ARGV[0], '');
        end if;
    end if;
    insert into hookrelay.journal (source, seq, schema_name, table_name, op, before, after)
    values (TG_ARGV[0], n, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP,
            case when TG_OP = 'INSERT' then null
                 when excluded is null then to_json(OLD)
                 else hookrelay.without(to_json(OLD), excluded) end,
            case when TG_OP = 'DELETE' then null
                 when excluded is null then to_json(NEW)
                 else hookrelay.without(to_json(NEW), excluded) end);
    return null;
end
$fn$;
create or replace function hookrelay.capture_statement() returns trigger
language plpgsql
set timezone = 'UTC' set datestyle = 'ISO, YMD' set intervalstyle = 'iso_8601'
set extra_float_digits = 3 set bytea_output = 'hex' set lc_monetary = 'C'
set search_path = pg_catalog, pg_temp
as $fn$
declare
    -- TG_ARGV as for capture(); `first` is this statement's first txn.seq
    first integer := coalesce(nullif(current_setting(TG_ARGV[1], true), '')::integer + 1, 0);
    excluded text[] := case when TG_NARGS > 3 then TG_ARGV[3]::text[] end;
    added integer;
    stored bigint;
begin
    -- A statement's rows go in as chunks, one journal row holding a JSON array of up
    -- to 1,000 images (fewer past 4 MiB of JSON, so no chunk nears a value's 1 GB
    -- limit), `rows` of them, `seq` numbering the first: one heap row and two index
    -- entries per chunk instead of per row. Most statements are small, and numbering
    -- and sizing every image (a window and a sort) cost a fifth of the trigger, so a
    -- counting step first takes the rows and their stored size: one row goes in the
    -- one-change form, up to 1,000 rows stored in at most 256 KiB as one chunk (even
    -- compressed 255:1 and escaped 6:1 that is far below 1 GB), only larger
    -- statements are cut by count and JSON size.
    if TG_OP = 'INSERT' then
        select count(*), sum(pg_column_size(r.*)) into added, stored from hookrelay_new r;
        if added = 1 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, after)
            select TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, case when excluded is null then to_json(r) else hookrelay.without(to_json(r), excluded) end
              from hookrelay_new r;
        elsif added > 1 and added <= 1000 and stored <= 262144 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, after)
            select TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, added,
                   json_agg(case when excluded is null then to_json(r) else hookrelay.without(to_json(r), excluded) end)
              from hookrelay_new r;
        elsif added > 1 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, after)
            select TG_ARGV[0], first + min(rn)::integer - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME,
                   TG_OP, count(*)::integer, json_agg(image order by rn)
              from (select rn, image, sum(octet_length(image::text)) over (order by rn) as size
                      from (select row_number() over () as rn, case when excluded is null then to_json(r) else hookrelay.without(to_json(r), excluded) end as image
                              from hookrelay_new r) numbered) sized
             group by (rn - 1) / 1000, size / 4194304
             order by min(rn);
        end if;
    elsif TG_OP = 'DELETE' then
        select count(*), sum(pg_column_size(r.*)) into added, stored from hookrelay_old r;
        if added = 1 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, before)
            select TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, case when excluded is null then to_json(r) else hookrelay.without(to_json(r), excluded) end
              from hookrelay_old r;
        elsif added > 1 and added <= 1000 and stored <= 262144 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, before)
            select TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, added,
                   json_agg(case when excluded is null then to_json(r) else hookrelay.without(to_json(r), excluded) end)
              from hookrelay_old r;
        elsif added > 1 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, before)
            select TG_ARGV[0], first + min(rn)::integer - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME,
                   TG_OP, count(*)::integer, json_agg(image order by rn)
              from (select rn, image, sum(octet_length(image::text)) over (order by rn) as size
                      from (select row_number() over () as rn, case when excluded is null then to_json(r) else hookrelay.without(to_json(r), excluded) end as image
                              from hookrelay_old r) numbered) sized
             group by (rn - 1) / 1000, size / 4194304
             order by min(rn);
        end if;
    else
        insert into hookrelay.journal (source, seq, schema_name, table_name, op)
        values (TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP);
        get diagnostics added = row_count;
    end if;
    if added > 0 then
        perform set_config(TG_ARGV[1], (first + added - 1)::text, true);
        if first = 0 then
            perform pg_advisory_xact_lock_shared(TG_ARGV[2]::bigint);
            if exists (select 1 from hookrelay.readers r where r.source = TG_ARGV[0] and r.idle) then
                perform pg_notify('hookrelay_' || TG_ARGV[0], '');
            end if;
        end if;
    end if;
    return null;
end
$fn$;
-- What each source captures, for the event trigger: its `tables` and
-- `exclude_columns` patterns as LIKE patterns, and what its capture triggers need.
create table if not exists hookrelay.scopes (
    source          text primary key,
    schema_likes    text[] not null,
    table_likes     text[] not null,
    -- per pattern: it has no wildcard (names one table)
    exact           boolean[] not null,
    exclude_schemas text[] not null,
    exclude_tables  text[] not null,
    exclude_columns text[] not null,
    trigger_prefix  text not null,
    legacy_trigger  text not null,
    counter_guc     text not null,
    lock_key        text not null
);
-- Why source `src` cannot capture a table, or null when it can.
create or replace function hookrelay.capture_problem(src text, nsp text, rel text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $fn$
declare
    sc hookrelay.scopes;
    tbl oid;
    kind text;
    key_cols text[];
    bad text;
begin
    select * into sc from hookrelay.scopes where source = src;
    if not found then
        return 'the source has no scope in this database';
    end if;
    select c.oid, c.relkind::text into tbl, kind
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = nsp and c.relname = rel;
    if tbl is null then
        return 'it does not exist';
    elsif kind not in ('r', 'p') then
        return format('it is not a table (relkind %s)', kind);
    end if;
    select array_agg(a.attname::text) into key_cols
      from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey)
     where i.indrelid = tbl and i.indisprimary;
    if key_cols is null then
        return 'it has no primary key; hookrelay needs one for the event key and per-key ordering';
    end if;
    select k into bad from unnest(key_cols) as k
     where exists (select 1 from unnest(sc.exclude_schemas, sc.exclude_tables, sc.exclude_columns) as e(s, t, c)
                    where nsp like e.s and rel like e.t and k like e.c)
     limit 1;
    if bad is not null then
        return format('exclude_columns excludes %s, part of its primary key; key columns cannot be excluded', bad);
    end if;
    return null;
end
$fn$;
-- Installs source `src`'s capture on one table; null when done, else why not (the
-- table is not captured then). Called by setup and by the event trigger.
create or replace function hookrelay.capture_table(src text, nsp text, rel text) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $fn$
declare
    sc hookrelay.scopes;
    excluded text[];
    args text;
    names text[];
    whens text[];
    target text := format('%I.%I', nsp, rel);
    why text := hookrelay.capture_problem(src, nsp, rel);
begin
    if why is not null then
        return why;
    end if;
    select * into strict sc from hookrelay.scopes where source = src;
    select array_agg(e.c order by e.n) into excluded
      from unnest(sc.exclude_schemas, sc.exclude_tables, sc.exclude_columns) with ordinality as e(s, t, c, n)
     where nsp like e.s and rel like e.t;
    args := format('%L, %L, %L', sc.source, sc.counter_guc, sc.lock_key);
    if excluded is not null then
        args := args || format(', %L', excluded::text);
    end if;
    -- Triggers first: the ALTER TABLE below fires the event trigger again, which then
    -- finds this source's capture in place.
    names := array[sc.trigger_prefix || '_ins', sc.trigger_prefix || '_del',
                   sc.trigger_prefix || '_upd', sc.trigger_prefix || '_trunc'];
    whens := array[
        'after insert on %s referencing new table as hookrelay_new for each statement execute function hookrelay.capture_statement(%s)',
        'after delete on %s referencing old table as hookrelay_old for each statement execute function hookrelay.capture_statement(%s)',
        'after update on %s for each row execute function hookrelay.capture(%s)',
        'after truncate on %s for each statement execute function hookrelay.capture_statement(%s)'];
    for i in 1..4 loop
        begin
            execute format('create or replace trigger %I ', names[i]) || format(whens[i], target, args);
        exception when others then
            -- Name the trigger and table in the error, keeping its SQLSTATE.
            raise exception using errcode = sqlstate,
                message = format('trigger %s on %s.%s: %s', names[i], nsp, rel, sqlerrm);
        end;
    end loop;
    execute format('drop trigger if exists %I on %s', sc.legacy_trigger, target);
    if (select relreplident from pg_class where oid = target::regclass) <> 'f' then
        execute format('alter table %s replica identity full', target);
    end if;
    return null;
end
$fn$;
-- The sources whose `tables` patterns match a table (a partition is captured through
-- its parent, so only a pattern naming it exactly matches it).
create or replace function hookrelay.scopes_of(nsp text, rel text, partition boolean) returns setof hookrelay.scopes
language sql stable
set search_path = pg_catalog, pg_temp
as $fn$
select sc.* from hookrelay.scopes sc
 where exists (select 1 from unnest(sc.schema_likes, sc.table_likes, sc.exact) as p(s, t, x)
                where nsp like p.s and rel like p.t and (x or not partition))
$fn$;
-- ddl_command_end of CREATE TABLE (and AS / SELECT INTO) and ALTER TABLE (a primary
-- key added later): capture a matching table within the very transaction that
-- created it, before any row can be written to it, and tell its sources' readers.
create or replace function hookrelay.on_ddl() returns event_trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
    obj record;
    sc hookrelay.scopes;
    nsp text;
    rel text;
    part boolean;
    why text;
begin
    for obj in select * from pg_event_trigger_ddl_commands() where object_type = 'table' loop
        select n.nspname::text, c.relname::text, c.relispartition into nsp, rel, part
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.oid = obj.objid and c.relkind in ('r', 'p');
        continue when nsp is null or nsp = 'hookrelay' or nsp like 'pg\_temp%' or nsp like 'pg\_toast%';
        for sc in select * from hookrelay.scopes_of(nsp, rel, part) loop
            continue when exists (select 1 from pg_trigger t
                                   where t.tgrelid = obj.objid and t.tgname = sc.trigger_prefix || '_trunc');
            begin
                why := hookrelay.capture_table(sc.source, nsp, rel);
            exception when others then
                why := sqlerrm;
            end;
            if why is not null then
                raise warning 'hookrelay: %.% is not captured for source %: %', nsp, rel, sc.source, why;
            end if;
            perform pg_notify('hookrelay_' || sc.source, 'scope');
        end loop;
    end loop;
end
$fn$;
-- sql_drop: a dropped table's triggers went with it; its sources' readers update
-- the tables they list.
create or replace function hookrelay.on_drop() returns event_trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
    obj record;
    sc hookrelay.scopes;
begin
    for obj in select * from pg_event_trigger_dropped_objects() where object_type = 'table' loop
        for sc in select * from hookrelay.scopes_of(obj.schema_name, obj.object_name, false) loop
            perform pg_notify('hookrelay_' || sc.source, 'scope');
        end loop;
    end loop;
end
$fn$;
"#;

/// The event triggers that capture tables created later (see `hookrelay.on_ddl`).
/// Creating an event trigger needs a superuser: without one, new tables are captured
/// from the next start only, and the source says so in a notice.
pub(super) const EVENT_TRIGGERS_SQL: &str = r#"
do $et$
begin
    if not exists (select 1 from pg_event_trigger where evtname = 'hookrelay_scope') then
        create event trigger hookrelay_scope on ddl_command_end
            when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
            execute function hookrelay.on_ddl();
    end if;
    if not exists (select 1 from pg_event_trigger where evtname = 'hookrelay_scope_drop') then
        create event trigger hookrelay_scope_drop on sql_drop
            when tag in ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
            execute function hookrelay.on_drop();
    end if;
end
$et$;
"#;

/// Names derived from the source name, shared by the trigger and the reader.
pub(super) struct Names {
    pub source: String,
    pub channel: String,
    /// The one row trigger of versions before statement triggers; removed on install.
    pub legacy_trigger: String,
    /// `<prefix>_ins`, `_del`, `_upd`, `_trunc`: see [`Names::triggers`].
    pub trigger_prefix: String,
    pub counter_guc: String,
    pub lock_key: i64,
}

impl Names {
    pub fn new(source: &str) -> Self {
        let safe: String = source
            .chars()
            .map(|c| if c == '-' { '_' } else { c })
            .collect();
        let hex: String = source.bytes().map(|b| format!("{b:02x}")).collect();
        Self {
            source: source.to_owned(),
            channel: format!("hookrelay_{source}"),
            legacy_trigger: format!("hookrelay_capture_{safe}"),
            trigger_prefix: format!("hookrelay_{safe}"),
            counter_guc: format!("hookrelay.seq_{hex}"),
            lock_key: lock_key(source),
        }
    }
}

impl Names {
    /// Each trigger this source installs on a table (`hookrelay.capture_table`
    /// creates them, the truncate trigger last).
    pub fn trigger_names(&self) -> [String; 4] {
        let p = &self.trigger_prefix;
        [
            format!("{p}_ins"),
            format!("{p}_del"),
            format!("{p}_upd"),
            format!("{p}_trunc"),
        ]
    }

    /// Every trigger name this source may have left on a table, old versions' included.
    pub fn all_trigger_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.trigger_names().into();
        names.push(self.legacy_trigger.clone());
        names
    }
}

/// A stable 63-bit key for the source's writer/reader advisory lock.
fn lock_key(source: &str) -> i64 {
    // FNV-1a: stable across versions and processes, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"hookrelay.reader:".iter().chain(source.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// What setup left in place: the tables captured and those the patterns match but
/// that are not, with why; and whether tables created later are captured too.
#[derive(Debug, Default)]
pub(super) struct Installed {
    pub captured: Vec<String>,
    pub skipped: Vec<SkippedTable>,
    /// The event trigger is in place (it needs a superuser to create).
    pub follows_new_tables: bool,
}

/// Installs the journal, the capture functions, this source's scope and its triggers
/// on every table its patterns match (`REPLICA IDENTITY FULL`); drops its triggers
/// from tables no longer matched; creates the event trigger that captures tables
/// created later. A table named without wildcards that cannot be captured is an
/// error; one a glob matches is skipped (listed, not fatal).
pub(super) async fn install(
    client: &Client,
    names: &Names,
    scope: &TableScope,
) -> Result<Installed, SourceError> {
    under_setup_lock(client, install_locked(client, names, scope)).await
}

/// Runs `work` holding the one setup lock every source and process on this database
/// takes (see the module doc).
async fn under_setup_lock<T>(
    client: &Client,
    work: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    client
        .execute("select pg_advisory_lock($1)", &[&SETUP_LOCK_KEY])
        .await
        .map_err(|e| SourceError::setup_step("the setup lock (pg_advisory_lock)", e))?;
    let result = work.await;
    // If unlocking fails the session is gone, and the lock with it.
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&SETUP_LOCK_KEY])
        .await;
    result
}

async fn install_locked(
    client: &Client,
    names: &Names,
    scope: &TableScope,
) -> Result<Installed, SourceError> {
    client.batch_execute(SCHEMA_SQL).await.map_err(|e| {
        SourceError::setup_step("schema hookrelay (journal, readers, capture functions)", e)
    })?;
    client
        .execute(
            "insert into hookrelay.readers (source, idle) values ($1, false) on conflict (source) do update set idle = false",
            &[&names.source],
        )
        .await
        .map_err(|e| SourceError::setup_step(format!("hookrelay.readers row for source {}", names.source), e))?;
    save_scope(client, names, scope).await?;
    let all_names = names.all_trigger_names();
    let mut problems = Vec::new();
    let mut done = Installed::default();
    for (schema, table) in matching_tables(client, scope).await? {
        let named = scope.names(&schema, &table);
        if named {
            if let Some(problem) = meta::table_problem(client, &schema, &table).await? {
                // A table that fails its checks gets no trigger: its changes could not
                // become events (no key), and a trigger left from before would fill the
                // journal with rows nothing sends.
                if !problem.missing {
                    remove_triggers(client, &all_names, &schema, &table).await?;
                }
                problems.push(problem.text);
                continue;
            }
        }
        // One query for the key columns (not the reader's full column metadata):
        // setup is kept short, since a new table's capture starts when it ends.
        let key: Vec<String> = client
            .query(
                "select a.attname::text from pg_index i
                   join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey)
                  where i.indisprimary and i.indrelid = (select c.oid from pg_class c
                          join pg_namespace n on n.oid = c.relnamespace
                         where n.nspname = $1 and c.relname = $2)",
                &[&schema, &table],
            )
            .await
            .map_err(|e| SourceError::setup_step(format!("primary key of {schema}.{table}"), e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(col) = scope.excluded_key(&schema, &table, &key) {
            problems.push(format!(
                "exclude_columns would exclude {schema}.{table}.{col}, part of the table's primary key: key columns are each event's identity and cannot be excluded"
            ));
            continue;
        }
        let why: Option<String> = client
            .query_one(
                "select hookrelay.capture_table($1, $2, $3)",
                &[&names.source, &schema, &table],
            )
            .await
            .map_err(|e| SourceError::setup_step(format!("capture of {schema}.{table}"), e))?
            .get(0);
        let qualified = format!("{schema}.{table}");
        match why {
            None => done.captured.push(qualified),
            Some(why) if named => problems.push(format!("table {qualified}: {why}")),
            Some(why) => {
                remove_triggers(client, &all_names, &schema, &table).await?;
                done.skipped.push(SkippedTable {
                    table: qualified,
                    reason: why,
                });
            }
        }
    }
    // Tables no longer matched stop being captured.
    let rows = client
        .query(
            "select distinct n.nspname, c.relname from pg_trigger t
               join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
              where t.tgname = any ($1)",
            &[&all_names],
        )
        .await
        .map_err(|e| {
            SourceError::setup_step(format!("listing triggers {}_*", names.trigger_prefix), e)
        })?;
    for r in rows {
        let (schema, table): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        if !done.captured.contains(&format!("{schema}.{table}")) {
            remove_triggers(client, &all_names, &schema, &table).await?;
            tracing::info!(table = %format!("{schema}.{table}"), "stopped capturing a table no longer in the config");
        }
    }
    if !problems.is_empty() {
        return Err(SourceError::Setup(problems.join("; ")));
    }
    done.follows_new_tables = match client.batch_execute(EVENT_TRIGGERS_SQL).await {
        Ok(()) => true,
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => false,
        Err(e) => {
            return Err(SourceError::setup_step(
                "event triggers hookrelay_scope*",
                e,
            ))
        }
    };
    Ok(done)
}

/// Records this source's patterns for the event trigger (`hookrelay.scopes`).
async fn save_scope(client: &Client, names: &Names, scope: &TableScope) -> Result<(), SourceError> {
    let schema_likes: Vec<String> = scope.tables.iter().map(|p| p.schema.to_like()).collect();
    let table_likes: Vec<String> = scope.tables.iter().map(|p| p.table.to_like()).collect();
    let exact: Vec<bool> = scope.tables.iter().map(|p| p.exact().is_some()).collect();
    let ex_schemas: Vec<String> = scope
        .exclude
        .iter()
        .map(|e| e.table.schema.to_like())
        .collect();
    let ex_tables: Vec<String> = scope
        .exclude
        .iter()
        .map(|e| e.table.table.to_like())
        .collect();
    let ex_columns: Vec<String> = scope.exclude.iter().map(|e| e.column.to_like()).collect();
    client
        .execute(
            "insert into hookrelay.scopes as s (source, schema_likes, table_likes, exact, exclude_schemas,
                    exclude_tables, exclude_columns, trigger_prefix, legacy_trigger, counter_guc, lock_key)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             on conflict (source) do update set schema_likes = excluded.schema_likes,
                    table_likes = excluded.table_likes, exact = excluded.exact,
                    exclude_schemas = excluded.exclude_schemas, exclude_tables = excluded.exclude_tables,
                    exclude_columns = excluded.exclude_columns, trigger_prefix = excluded.trigger_prefix,
                    legacy_trigger = excluded.legacy_trigger, counter_guc = excluded.counter_guc,
                    lock_key = excluded.lock_key",
            &[
                &names.source,
                &schema_likes,
                &table_likes,
                &exact,
                &ex_schemas,
                &ex_tables,
                &ex_columns,
                &names.trigger_prefix,
                &names.legacy_trigger,
                &names.counter_guc,
                &names.lock_key.to_string(),
            ],
        )
        .await
        .map_err(|e| SourceError::setup_step(format!("hookrelay.scopes row for source {}", names.source), e))?;
    Ok(())
}

/// Every table the patterns match: the tables named exactly, in config order (even
/// missing ones, so their problem is reported), then each other existing table a
/// glob matches, in name order (not partitions, which their parent's triggers cover).
pub(super) async fn matching_tables(
    client: &Client,
    scope: &TableScope,
) -> Result<Vec<(String, String)>, SourceError> {
    let rows = client
        .query(
            "select n.nspname::text, c.relname::text, c.relispartition
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where c.relkind in ('r', 'p')
                and n.nspname not in ('pg_catalog', 'information_schema', 'hookrelay')
                and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%'",
            &[],
        )
        .await
        .map_err(|e| SourceError::setup_step("listing tables", e))?;
    let mut globbed: Vec<(String, String)> = Vec::new();
    for r in rows {
        let (schema, table, partition): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
        if !partition && scope.captures(&schema, &table) && !scope.names(&schema, &table) {
            globbed.push((schema, table));
        }
    }
    globbed.sort();
    let mut out = scope.named();
    out.dedup();
    out.extend(globbed);
    Ok(out)
}

/// For `hookrelay check`, changing nothing: the problems that keep the source from
/// starting (a table named exactly that cannot be captured, an excluded key column)
/// and, as notes, the tables a glob matches that would be skipped.
pub(super) async fn check(
    client: &Client,
    scope: &TableScope,
) -> Result<(Vec<String>, Vec<String>), SourceError> {
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    for (schema, table) in matching_tables(client, scope).await? {
        if let Some(p) = meta::table_problem(client, &schema, &table).await? {
            if scope.names(&schema, &table) {
                problems.push(p.text);
            } else {
                notes.push(format!("skipped: {}", p.text));
            }
            continue;
        }
        if let Some(m) = meta::load(client, &schema, &table).await? {
            if let Some(col) = scope.excluded_key(&schema, &table, &m.key) {
                problems.push(format!(
                    "exclude_columns would exclude {schema}.{table}.{col}, part of the table's primary key: key columns are each event's identity and cannot be excluded"
                ));
            }
        }
    }
    Ok((problems, notes))
}

/// The tables captured now and those matched but not, with why: what the reader
/// reports after setup and whenever the event trigger says its scope changed.
pub(super) async fn scope_now(
    client: &Client,
    names: &Names,
    scope: &TableScope,
) -> Result<(Vec<String>, Vec<SkippedTable>), SourceError> {
    let [.., last] = names.trigger_names();
    let with_capture: Vec<(String, String)> = client
        .query(
            "select n.nspname::text, c.relname::text from pg_trigger t
               join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
              where t.tgname = $1",
            &[&last],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (mut captured, mut skipped) = (Vec::new(), Vec::new());
    for (schema, table) in matching_tables(client, scope).await? {
        let qualified = format!("{schema}.{table}");
        if with_capture.contains(&(schema.clone(), table.clone())) {
            captured.push(qualified);
            continue;
        }
        let problem: Option<String> = client
            .query_one(
                "select hookrelay.capture_problem($1, $2, $3)",
                &[&names.source, &schema, &table],
            )
            .await?
            .get(0);
        let reason = problem.unwrap_or_else(|| {
            "its capture could not be installed (see the PostgreSQL log)".to_owned()
        });
        skipped.push(SkippedTable {
            table: qualified,
            reason,
        });
    }
    Ok((captured, skipped))
}

/// Drops every trigger of this source from one table.
async fn remove_triggers(
    client: &Client,
    all_names: &[String],
    schema: &str,
    table: &str,
) -> Result<(), SourceError> {
    for name in all_names {
        client
            .batch_execute(&format!(
                "drop trigger if exists {} on {}.{}",
                quote_ident(name),
                quote_ident(schema),
                quote_ident(table)
            ))
            .await
            .map_err(|e| {
                SourceError::setup_step(format!("dropping trigger {name} on {schema}.{table}"), e)
            })?;
    }
    Ok(())
}

/// Whether this source's capture is in place in the source database: its scope saved
/// and its triggers on every table its patterns match that has a primary key (a
/// table named exactly counts even without one: setup refuses it). Read-only; a
/// standby process asks this to know that the leader (whichever process) has begun
/// capturing. The truncate trigger is created last, so its presence means the
/// others are there.
pub(super) async fn is_installed(
    client: &Client,
    names: &Names,
    scope: &TableScope,
) -> Result<bool, SourceError> {
    let has_scopes: bool = client
        .query_one("select to_regclass('hookrelay.scopes') is not null", &[])
        .await?
        .get(0);
    if !has_scopes {
        return Ok(false);
    }
    let saved: bool = client
        .query_one(
            "select exists (select 1 from hookrelay.scopes where source = $1)",
            &[&names.source],
        )
        .await?
        .get(0);
    let tables = matching_tables(client, scope).await?;
    let schemas: Vec<&str> = tables.iter().map(|(s, _)| s.as_str()).collect();
    let relnames: Vec<&str> = tables.iter().map(|(_, t)| t.as_str()).collect();
    let named: Vec<bool> = tables.iter().map(|(s, t)| scope.names(s, t)).collect();
    let [.., last] = names.trigger_names();
    let missing: i64 = client
        .query_one(
            "select count(*) from unnest($2::text[], $3::text[], $4::bool[]) as w(nspname, relname, named)
              where not exists (
                select 1 from pg_trigger t
                  join pg_class c on c.oid = t.tgrelid
                  join pg_namespace n on n.oid = c.relnamespace
                 where t.tgname = $1 and n.nspname = w.nspname and c.relname = w.relname)
                and (w.named or exists (
                select 1 from pg_index i join pg_class c on c.oid = i.indrelid
                  join pg_namespace n on n.oid = c.relnamespace
                 where i.indisprimary and n.nspname = w.nspname and c.relname = w.relname))",
            &[&last, &schemas, &relnames, &named],
        )
        .await
        .map_err(|e| SourceError::setup_step(format!("checking trigger {last}"), e))?
        .get(0);
    Ok(saved && missing == 0)
}

/// What `hookrelay uninstall` removed.
#[derive(Debug, Default)]
pub struct Uninstalled {
    /// Tables whose triggers were dropped.
    pub tables: Vec<String>,
    /// Journal rows of this source that were never delivered and are now gone
    /// (only with `force`).
    pub discarded: i64,
    /// No other source used the database, so the schema `hookrelay` went too, and
    /// the event triggers that capture new tables.
    pub schema_dropped: bool,
}

/// Removes what this source installed: its triggers, its reader row and (with
/// `force`) its undelivered journal rows; then the shared schema, journal and
/// functions once no source uses them. Refuses while journal rows wait, unless
/// forced, since they are changes nobody has been sent yet.
pub(super) async fn uninstall(
    client: &Client,
    names: &Names,
    force: bool,
) -> Result<Uninstalled, SourceError> {
    under_setup_lock(client, uninstall_locked(client, names, force)).await
}

async fn uninstall_locked(
    client: &Client,
    names: &Names,
    force: bool,
) -> Result<Uninstalled, SourceError> {
    let mut done = Uninstalled::default();
    let installed: bool = client
        .query_one(
            "select exists (select 1 from pg_namespace where nspname = 'hookrelay')",
            &[],
        )
        .await?
        .try_get(0)?;
    if !installed {
        return Ok(done);
    }
    let waiting: i64 = client
        .query_one(
            "select count(*) from hookrelay.journal where source = $1",
            &[&names.source],
        )
        .await?
        .try_get(0)?;
    if waiting > 0 && !force {
        return Err(SourceError::Setup(format!(
            "source {} has {waiting} journalled change(s) not yet delivered to the store; \
             run hookrelay until they drain, or pass --force to discard them",
            names.source
        )));
    }
    let all_names = names.all_trigger_names();
    let rows = client
        .query(
            "select distinct n.nspname, c.relname from pg_trigger t
               join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
              where t.tgname = any ($1)",
            &[&all_names],
        )
        .await?;
    for r in rows {
        let (schema, table): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        remove_triggers(client, &all_names, &schema, &table).await?;
        done.tables.push(format!("{schema}.{table}"));
    }
    done.discarded = client
        .execute(
            "delete from hookrelay.journal where source = $1",
            &[&names.source],
        )
        .await? as i64;
    client
        .execute(
            "delete from hookrelay.readers where source = $1",
            &[&names.source],
        )
        .await?;
    let has_scopes: bool = client
        .query_one("select to_regclass('hookrelay.scopes') is not null", &[])
        .await?
        .get(0);
    if has_scopes {
        client
            .execute(
                "delete from hookrelay.scopes where source = $1",
                &[&names.source],
            )
            .await?;
    }
    // Other sources on this database keep the shared objects.
    let others: i64 = client
        .query_one(
            "select (select count(*) from hookrelay.readers)
                  + (select count(*) from pg_trigger t join pg_proc p on p.oid = t.tgfoid
                       join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'hookrelay')",
            &[],
        )
        .await?
        .try_get(0)?;
    if others == 0 {
        // The event triggers run functions of the schema: they go first, by name.
        client
            .batch_execute(
                "drop event trigger if exists hookrelay_scope; drop event trigger if exists hookrelay_scope_drop",
            )
            .await
            .map_err(|e| SourceError::setup_step("dropping event triggers hookrelay_scope*", e))?;
        client
            .batch_execute("drop schema hookrelay cascade")
            .await
            .map_err(|e| SourceError::setup_step("dropping schema hookrelay", e))?;
        done.schema_dropped = true;
    }
    Ok(done)
}

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_safe() {
        let n = Names::new("shop-eu");
        assert_eq!(n.channel, "hookrelay_shop-eu");
        assert_eq!(n.legacy_trigger, "hookrelay_capture_shop_eu");
        assert_eq!(n.trigger_names()[0], "hookrelay_shop_eu_ins");
        assert_eq!(n.counter_guc, "hookrelay.seq_73686f702d6575");
        assert_eq!(n.lock_key, Names::new("shop-eu").lock_key);
        assert_ne!(n.lock_key, Names::new("shop_eu").lock_key);
        assert!(n.lock_key >= 0);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
