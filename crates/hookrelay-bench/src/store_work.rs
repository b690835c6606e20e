//! Store work per event: what the database does for hookrelay, counted
//! rather than timed, so figures compare even on a machine busy with other work.
//!
//! ```text
//!  begin: physical slot (keeps the WAL), start LSN, row counters of both databases
//!    … workload … hookrelay stopped, its backends gone (their counters flushed) …
//!  finish: end LSN; row counters again; the WAL records in between (pg_walinspect),
//!          each given to a database by the relation it touches (a commit record by
//!          its transaction's), and to a relation; index use of the store
//! ```
//!
//! Row writes are `n_tup_ins + n_tup_upd + n_tup_del` of the tables in schema
//! `hookrelay` (the writers' own `public.orders` is not hookrelay's work). WAL bytes
//! are `record_length` (full-page images included) of the records that touch the
//! store database, or the source's `hookrelay` relations; the LSN difference is
//! given too, but it is server-wide: every database on the server writes to it.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::Client;

use crate::db::{self, Databases};

/// Row writes of one table (or a whole database's hookrelay tables).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RowWrites {
    pub inserts: i64,
    pub updates: i64,
    /// Of `updates`, those that were HOT (no index entry written).
    pub hot_updates: i64,
    pub deletes: i64,
}

impl RowWrites {
    pub fn total(&self) -> i64 {
        self.inserts + self.updates + self.deletes
    }

    fn minus(self, o: Self) -> Self {
        Self {
            inserts: self.inserts - o.inserts,
            updates: self.updates - o.updates,
            hot_updates: self.hot_updates - o.hot_updates,
            deletes: self.deletes - o.deletes,
        }
    }

    fn add(&mut self, o: Self) {
        self.inserts += o.inserts;
        self.updates += o.updates;
        self.hot_updates += o.hot_updates;
        self.deletes += o.deletes;
    }
}

/// One database's share.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DbWork {
    /// Row writes of its `hookrelay` tables.
    pub rows: RowWrites,
    pub rows_by_table: BTreeMap<String, RowWrites>,
    /// WAL attributed to hookrelay here: the whole store database; in the source,
    /// the `hookrelay` relations (journal, readers).
    pub wal_bytes: i64,
    pub wal_records: i64,
    /// Of `wal_bytes`, full-page images.
    pub wal_fpi_bytes: i64,
    /// WAL bytes by relation (commit records of a transaction: "(commit)"), largest first.
    pub wal_by_relation: Vec<(String, i64)>,
}

/// Use of one store index during the workload.
#[derive(Debug, Clone, Serialize)]
pub struct IndexUse {
    pub index: String,
    pub scans: i64,
    pub tuples_read: i64,
}

/// What a workload cost the databases.
#[derive(Debug, Clone, Serialize)]
pub struct StoreWork {
    pub events: u64,
    pub store: DbWork,
    pub source: DbWork,
    /// `pg_current_wal_lsn()` difference: every database on the server.
    pub server_wal_bytes: i64,
    pub row_writes_per_event: f64,
    pub wal_bytes_per_event: f64,
    pub server_wal_bytes_per_event: f64,
    pub store_indexes: Vec<IndexUse>,
    pub source_indexes: Vec<IndexUse>,
}

/// The counters at the start of a workload.
pub struct Probe {
    slot: String,
    start_lsn: String,
    store0: BTreeMap<String, RowWrites>,
    source0: BTreeMap<String, RowWrites>,
}

const TABLE_COUNTS: &str = "
select schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
  from pg_stat_user_tables where schemaname = 'hookrelay'";

const INDEX_USE: &str = "
select indexrelname, idx_scan, idx_tup_read from pg_stat_user_indexes
 where schemaname = 'hookrelay' order by relname, indexrelname";

/// WAL records between two LSNs by (database oid, relfilenode); records without a
/// block (commits) go to the database their transaction touched, relfilenode null.
const WAL_BY_RELATION: &str = "
with r as (
    select xid::text as xid, record_length, fpi_length,
           regexp_match(block_ref, 'rel \\d+/(\\d+)/(\\d+)') as m
      from pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn)
),
x as (select distinct xid, m[1] as db from r where m is not null and xid <> '0')
select coalesce(r.m[1], x.db), r.m[2], count(*)::bigint, sum(r.record_length)::bigint,
       sum(r.fpi_length)::bigint
  from r left join x on r.m is null and x.xid = r.xid
 where coalesce(r.m[1], x.db) in ($3, $4)
 group by 1, 2";

/// relfilenode → name, with whether it is hookrelay's (its schema, or the TOAST of
/// one of its tables).
const RELATIONS: &str = "
select c.relfilenode::text, n.nspname || '.' || c.relname,
       n.nspname = 'hookrelay' or exists (
           select 1 from pg_class t join pg_namespace tn on tn.oid = t.relnamespace
            where tn.nspname = 'hookrelay' and t.reltoastrelid in (c.oid, (
                select i.indrelid from pg_index i where i.indexrelid = c.oid)))
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relfilenode <> 0";

fn slot_name() -> String {
    format!("{}_wal", db::store_db())
}

async fn counts(c: &Client) -> anyhow::Result<BTreeMap<String, RowWrites>> {
    let rows = c.query(TABLE_COUNTS, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                RowWrites {
                    inserts: r.get(1),
                    updates: r.get(2),
                    hot_updates: r.get(3),
                    deletes: r.get(4),
                },
            )
        })
        .collect())
}

/// Drops the bench's WAL slot if one was left behind (a run that stopped early).
pub async fn drop_slot(c: &Client) -> anyhow::Result<()> {
    c.execute(
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1",
        &[&slot_name()],
    )
    .await
    .context("dropping the bench's WAL slot")?;
    Ok(())
}

impl Probe {
    /// Keeps the WAL from here on (a physical slot) and reads the counters.
    pub async fn begin(dbs: &Databases) -> anyhow::Result<Self> {
        let store = dbs.store().await?;
        store
            .batch_execute("create extension if not exists pg_walinspect")
            .await
            .context("pg_walinspect (postgresql-contrib)")?;
        drop_slot(&store).await?;
        let slot = slot_name();
        store
            .execute(
                "select pg_create_physical_replication_slot($1, true)",
                &[&slot],
            )
            .await
            .context("creating a WAL slot")?;
        let start_lsn: String = store
            .query_one("select pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        Ok(Self {
            slot,
            start_lsn,
            store0: counts(&store).await?,
            source0: counts(&dbs.source().await?).await?,
        })
    }

    /// Call once hookrelay has stopped: waits until its backends are gone (a backend
    /// flushes its counters when it exits), then reads everything and drops the slot.
    pub async fn finish(self, dbs: &Databases, events: u64) -> anyhow::Result<StoreWork> {
        let store = dbs.store().await?;
        let source = dbs.source().await?;
        let result = self.read(&store, &source, events).await;
        let dropped = store
            .execute("select pg_drop_replication_slot($1)", &[&self.slot])
            .await;
        let work = result?;
        dropped.context("dropping the WAL slot")?;
        Ok(work)
    }

    async fn read(
        &self,
        store: &Client,
        source: &Client,
        events: u64,
    ) -> anyhow::Result<StoreWork> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let others: i64 = store
                .query_one(
                    "select count(*) from pg_stat_activity
                      where datname in ($1, $2) and pid <> pg_backend_pid()
                        and backend_type = 'client backend'",
                    &[&db::store_db(), &db::source_db()],
                )
                .await?
                .get(0);
            // Our `source` connection is one of them.
            if others <= 1 || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The flushed end: pg_walinspect refuses an end it cannot read yet, and every
        // commit of the workload was flushed when it returned.
        let end_lsn: String = store
            .query_one("select pg_current_wal_flush_lsn()::text", &[])
            .await?
            .get(0);
        let server_wal_bytes: i64 = store
            .query_one(
                "select pg_wal_lsn_diff($2::text::pg_lsn, $1::text::pg_lsn)::bigint",
                &[&self.start_lsn, &end_lsn],
            )
            .await?
            .get(0);
        let oid = |name: &'static str| async move {
            let row = store
                .query_one(
                    "select oid::text from pg_database where datname = $1",
                    &[&name],
                )
                .await?;
            anyhow::Ok(row.get::<_, String>(0))
        };
        let (store_oid, source_oid) = (oid(db::store_db()).await?, oid(db::source_db()).await?);
        let wal = store
            .query(
                WAL_BY_RELATION,
                &[&self.start_lsn, &end_lsn, &store_oid, &source_oid],
            )
            .await
            .context("reading the WAL (pg_walinspect)")?;
        let mut out = StoreWork {
            events,
            store: db_work(store, &self.store0, &wal, &store_oid, true).await?,
            source: db_work(source, &self.source0, &wal, &source_oid, false).await?,
            server_wal_bytes,
            row_writes_per_event: 0.0,
            wal_bytes_per_event: 0.0,
            server_wal_bytes_per_event: 0.0,
            store_indexes: index_use(store).await?,
            source_indexes: index_use(source).await?,
        };
        let per = |x: i64| x as f64 / events.max(1) as f64;
        out.row_writes_per_event = per(out.store.rows.total() + out.source.rows.total());
        out.wal_bytes_per_event = per(out.store.wal_bytes + out.source.wal_bytes);
        out.server_wal_bytes_per_event = per(server_wal_bytes);
        Ok(out)
    }
}

async fn index_use(c: &Client) -> anyhow::Result<Vec<IndexUse>> {
    Ok(c.query(INDEX_USE, &[])
        .await?
        .iter()
        .map(|r| IndexUse {
            index: r.get(0),
            scans: r.get(1),
            tuples_read: r.get(2),
        })
        .collect())
}

/// One database's row writes since `before` and its WAL records from `wal`. With
/// `whole`, every record of the database counts; else only hookrelay's relations.
async fn db_work(
    c: &Client,
    before: &BTreeMap<String, RowWrites>,
    wal: &[tokio_postgres::Row],
    oid: &str,
    whole: bool,
) -> anyhow::Result<DbWork> {
    let mut w = DbWork::default();
    for (table, now) in counts(c).await? {
        let d = now.minus(before.get(&table).copied().unwrap_or_default());
        w.rows.add(d);
        w.rows_by_table.insert(table, d);
    }
    let names: BTreeMap<String, (String, bool)> = c
        .query(RELATIONS, &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2))))
        .collect();
    let mut by_rel: BTreeMap<String, i64> = BTreeMap::new();
    for r in wal.iter().filter(|r| r.get::<_, String>(0) == oid) {
        let node: Option<String> = r.get(1);
        let (name, ours) = match &node {
            None => ("(commit)".to_owned(), whole),
            Some(n) => names
                .get(n)
                .cloned()
                .unwrap_or_else(|| (format!("relfilenode {n}"), whole)),
        };
        if !(whole || ours) {
            continue;
        }
        let (records, bytes, fpi): (i64, i64, i64) = (r.get(2), r.get(3), r.get(4));
        w.wal_records += records;
        w.wal_bytes += bytes;
        w.wal_fpi_bytes += fpi;
        *by_rel.entry(name).or_default() += bytes;
    }
    let mut rels: Vec<(String, i64)> = by_rel.into_iter().collect();
    rels.sort_by_key(|r| std::cmp::Reverse(r.1));
    w.wal_by_relation = rels;
    Ok(w)
}
