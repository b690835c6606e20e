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
//! Setup itself runs under ONE advisory lock, [`SETUP_LOCK_KEY`], that every source
//! and every hookrelay process takes in the source database, whichever source it
//! sets up: the schema, journal and capture functions are shared by all sources on
//! that database, and `create ... if not exists` / `create or replace` are not safe
//! against each other when run concurrently (a duplicate key in `pg_namespace`,
//! "tuple concurrently updated"). Under the lock every step is idempotent, so any
//! number of sources may start at once and a crash mid-setup leaves nothing the next
//! attempt cannot finish. The lock is per session: a dropped connection releases it.

use tokio_postgres::Client;

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
create or replace function hookrelay.capture() returns trigger
language plpgsql
set timezone = 'UTC' set datestyle = 'ISO, YMD' set intervalstyle = 'iso_8601'
set extra_float_digits = 3 set bytea_output = 'hex' set lc_monetary = 'C'
set search_path = pg_catalog, pg_temp
as $fn$
declare
    -- TG_ARGV: 0 source name, 1 per-source transaction counter (a GUC name), 2 lock key
    n integer := coalesce(nullif(current_setting(TG_ARGV[1], true), '')::integer + 1, 0);
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
            case when TG_OP <> 'INSERT' then to_json(OLD) end,
            case when TG_OP <> 'DELETE' then to_json(NEW) end);
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
            select TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, to_json(r)
              from hookrelay_new r;
        elsif added > 1 and added <= 1000 and stored <= 262144 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, after)
            select TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, added,
                   json_agg(to_json(r))
              from hookrelay_new r;
        elsif added > 1 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, after)
            select TG_ARGV[0], first + min(rn)::integer - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME,
                   TG_OP, count(*)::integer, json_agg(image order by rn)
              from (select rn, image, sum(octet_length(image::text)) over (order by rn) as size
                      from (select row_number() over () as rn, to_json(r) as image
                              from hookrelay_new r) numbered) sized
             group by (rn - 1) / 1000, size / 4194304
             order by min(rn);
        end if;
    elsif TG_OP = 'DELETE' then
        select count(*), sum(pg_column_size(r.*)) into added, stored from hookrelay_old r;
        if added = 1 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, before)
            select TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, to_json(r)
              from hookrelay_old r;
        elsif added > 1 and added <= 1000 and stored <= 262144 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, before)
            select TG_ARGV[0], first, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, added,
                   json_agg(to_json(r))
              from hookrelay_old r;
        elsif added > 1 then
            insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, before)
            select TG_ARGV[0], first + min(rn)::integer - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME,
                   TG_OP, count(*)::integer, json_agg(image order by rn)
              from (select rn, image, sum(octet_length(image::text)) over (order by rn) as size
                      from (select row_number() over () as rn, to_json(r) as image
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
    /// Each trigger this source installs on a table, with what follows `on <table>`
    /// in its `CREATE TRIGGER` and the function it runs.
    pub fn triggers(&self) -> [(String, &'static str, &'static str); 4] {
        let p = &self.trigger_prefix;
        [
            (
                format!("{p}_ins"),
                "after insert on {table} referencing new table as hookrelay_new for each statement",
                "capture_statement",
            ),
            (
                format!("{p}_del"),
                "after delete on {table} referencing old table as hookrelay_old for each statement",
                "capture_statement",
            ),
            (
                format!("{p}_upd"),
                "after update on {table} for each row",
                "capture",
            ),
            (
                format!("{p}_trunc"),
                "after truncate on {table} for each statement",
                "capture_statement",
            ),
        ]
    }

    /// Every trigger name this source may have left on a table, old versions' included.
    pub fn all_trigger_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.triggers().into_iter().map(|(n, _, _)| n).collect();
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

/// Installs the journal, the capture function and one trigger per table; sets
/// `REPLICA IDENTITY FULL`; drops this source's triggers from tables no longer listed.
pub(super) async fn install(
    client: &Client,
    names: &Names,
    tables: &[(String, String)],
) -> Result<(), SourceError> {
    under_setup_lock(client, install_locked(client, names, tables)).await
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
    tables: &[(String, String)],
) -> Result<(), SourceError> {
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
    let all_names = names.all_trigger_names();
    let mut problems = Vec::new();
    for (schema, table) in tables {
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
        if let Some(problem) = meta::table_problem(client, schema, table).await? {
            // A table that fails its checks gets no trigger: its changes could not
            // become events (no key), and a trigger left from before would fill the
            // journal with rows nothing sends.
            if !problem.missing {
                remove_triggers(client, &all_names, schema, table).await?;
            }
            problems.push(problem.text);
            continue;
        }
        let replident: String = client
            .query_one(
                "select c.relreplident::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  where n.nspname = $1 and c.relname = $2",
                &[schema, table],
            )
            .await
            .map_err(|e| SourceError::setup_step(format!("looking up table {schema}.{table}"), e))?
            .get(0);
        if replident != "f" {
            client
                .batch_execute(&format!("alter table {qualified} replica identity full"))
                .await
                .map_err(|e| {
                    SourceError::setup_step(format!("replica identity full on {schema}.{table}"), e)
                })?;
        }
        let args = format!(
            "{src}, {guc}, {key}",
            src = quote_literal(&names.source),
            guc = quote_literal(&names.counter_guc),
            key = quote_literal(&names.lock_key.to_string()),
        );
        for (trigger, when, function) in names.triggers() {
            let sql = format!(
                "create or replace trigger {trigger} {when} execute function hookrelay.{function}({args})",
                trigger = quote_ident(&trigger),
                when = when.replace("{table}", &qualified),
            );
            client.batch_execute(&sql).await.map_err(|e| {
                SourceError::setup_step(format!("trigger {trigger} on {schema}.{table}"), e)
            })?;
        }
        client
            .batch_execute(&format!(
                "drop trigger if exists {} on {qualified}",
                quote_ident(&names.legacy_trigger)
            ))
            .await
            .map_err(|e| {
                SourceError::setup_step(
                    format!(
                        "dropping the old trigger {} on {schema}.{table}",
                        names.legacy_trigger
                    ),
                    e,
                )
            })?;
    }
    // Tables dropped from the config stop being captured.
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
        if !tables.iter().any(|(s, t)| *s == schema && *t == table) {
            remove_triggers(client, &all_names, &schema, &table).await?;
            tracing::info!(table = %format!("{schema}.{table}"), "stopped capturing a table no longer in the config");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SourceError::Setup(problems.join("; ")))
    }
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

/// Whether this source's capture is in place in the source database: its triggers on
/// every configured table. Read-only; a standby process asks this to know that the
/// leader (whichever process) has begun capturing. The truncate trigger is created
/// last, so its presence means the others are there.
pub(super) async fn is_installed(
    client: &Client,
    names: &Names,
    tables: &[(String, String)],
) -> Result<bool, SourceError> {
    let schemas: Vec<&str> = tables.iter().map(|(s, _)| s.as_str()).collect();
    let relnames: Vec<&str> = tables.iter().map(|(_, t)| t.as_str()).collect();
    let last = names.triggers()[3].0.clone();
    let missing: i64 = client
        .query_one(
            "select count(*) from unnest($2::text[], $3::text[]) as w(nspname, relname)
              where not exists (
                select 1 from pg_trigger t
                  join pg_class c on c.oid = t.tgrelid
                  join pg_namespace n on n.oid = c.relnamespace
                 where t.tgname = $1 and n.nspname = w.nspname and c.relname = w.relname)",
            &[&last, &schemas, &relnames],
        )
        .await
        .map_err(|e| SourceError::setup_step(format!("checking trigger {last}"), e))?
        .get(0);
    Ok(missing == 0)
}

/// What `hookrelay uninstall` removed.
#[derive(Debug, Default)]
pub struct Uninstalled {
    /// Tables whose triggers were dropped.
    pub tables: Vec<String>,
    /// Journal rows of this source that were never delivered and are now gone
    /// (only with `force`).
    pub discarded: i64,
    /// No other source used the database, so the schema `hookrelay` went too.
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

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_safe() {
        let n = Names::new("shop-eu");
        assert_eq!(n.channel, "hookrelay_shop-eu");
        assert_eq!(n.legacy_trigger, "hookrelay_capture_shop_eu");
        assert_eq!(n.triggers()[0].0, "hookrelay_shop_eu_ins");
        assert_eq!(n.counter_guc, "hookrelay.seq_73686f702d6575");
        assert_eq!(n.lock_key, Names::new("shop-eu").lock_key);
        assert_ne!(n.lock_key, Names::new("shop_eu").lock_key);
        assert!(n.lock_key >= 0);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("o'k"), "'o''k'");
    }
}
