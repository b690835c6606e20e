//! The bench's two databases on the local server, dropped and recreated for every
//! workload: `hookrelay_bench_store` (hookrelay's state) and `hookrelay_bench_src` (the
//! source, with `public.orders`), plus the queries the bench reads figures from.

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

/// The database names, `hookrelay_bench_store` and `hookrelay_bench_src` plus the
/// `--db-suffix` (so two benches on one server do not drop each other's databases).
static NAMES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Fixes the database names for this run (before any workload; later calls are ignored).
pub fn set_suffix(suffix: &str) {
    let _ = NAMES.set((
        format!("hookrelay_bench_store{suffix}"),
        format!("hookrelay_bench_src{suffix}"),
    ));
}

fn names() -> &'static (String, String) {
    NAMES.get_or_init(|| ("hookrelay_bench_store".into(), "hookrelay_bench_src".into()))
}

/// hookrelay's store database.
pub fn store_db() -> &'static str {
    &names().0
}

/// The source database (`public.orders`).
pub fn source_db() -> &'static str {
    &names().1
}

const ORDERS: &str = "create table public.orders (
    id bigint primary key,
    status text,
    total numeric(12,2),
    updated_at timestamptz default now()
)";

/// Workload 11's large table, filled in one statement: realistic columns, and no
/// trigger yet (hookrelay is not started), so only a backfill can send its rows.
const CUSTOMERS: &str = "create table public.customers (
    id bigint primary key,
    name text not null,
    email text not null,
    country text not null,
    balance numeric(12,2) not null,
    created_at timestamptz not null
);
insert into public.customers
select g, 'Customer ' || g, 'customer' || g || '@example.com',
       (array['DE', 'FR', 'GB', 'US', 'JP', 'BR'])[1 + g % 6], (g % 100000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
  from generate_series(1, {rows}) g";

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The store and source databases of one workload.
pub struct Databases {
    base: String,
    /// One per fresh store: a hookrelay restarted on it must open the secrets the
    /// first one sealed.
    master_key: String,
}

/// Bytes the store holds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StoreSize {
    /// `pg_total_relation_size` of events + deliveries + attempts (tables, indexes, TOAST).
    pub tables_bytes: i64,
    pub events_bytes: i64,
    pub deliveries_bytes: i64,
    pub attempts_bytes: i64,
    /// `pg_database_size` of the store database.
    pub database_bytes: i64,
}

impl Databases {
    /// Drops and recreates both databases and the source table. With `explain_ms`,
    /// every session on the store logs the plan of statements slower than that to the
    /// server log (auto_explain), for profiling.
    pub async fn fresh(base: &str, explain_ms: Option<u32>) -> anyhow::Result<Self> {
        let admin = connect(&format!("{base}/postgres")).await?;
        for db in [store_db(), source_db()] {
            // Two statements: DROP/CREATE DATABASE refuse to share a transaction.
            admin
                .batch_execute(&format!("drop database if exists {db} with (force)"))
                .await
                .with_context(|| format!("dropping database {db}"))?;
            admin
                .batch_execute(&format!("create database {db}"))
                .await
                .with_context(|| format!("creating database {db}"))?;
        }
        if let Some(ms) = explain_ms {
            admin
                .batch_execute(&format!(
                    "alter database {store} set session_preload_libraries = 'auto_explain';
                     alter database {store} set auto_explain.log_min_duration = {ms}",
                    store = store_db()
                ))
                .await
                .context("enabling auto_explain on the store")?;
        }
        let dbs = Self {
            base: base.to_owned(),
            master_key: hookrelay_core::sealing::MasterKey::generate_base64(),
        };
        connect(&dbs.source_url())
            .await?
            .batch_execute(ORDERS)
            .await
            .context("creating public.orders")?;
        Ok(dbs)
    }

    /// `HOOKRELAY_MASTER_KEY` for every hookrelay on this store.
    pub fn master_key(&self) -> &str {
        &self.master_key
    }

    pub fn store_url(&self) -> String {
        format!("{}/{}", self.base, store_db())
    }

    pub fn source_url(&self) -> String {
        format!("{}/{}", self.base, source_db())
    }

    pub async fn source(&self) -> anyhow::Result<Client> {
        connect(&self.source_url()).await
    }

    pub async fn store(&self) -> anyhow::Result<Client> {
        connect(&self.store_url()).await
    }

    /// Creates `public.customers` with `rows` rows (ids 1 to `rows`), vacuumed and
    /// analysed as a table that has been there a while would be.
    pub async fn fill_customers(&self, rows: u64) -> anyhow::Result<()> {
        let c = self.source().await?;
        c.batch_execute(&CUSTOMERS.replace("{rows}", &rows.to_string()))
            .await
            .context("creating and filling public.customers")?;
        // Alone: VACUUM refuses a multi-statement string.
        c.batch_execute("vacuum (analyze) public.customers")
            .await
            .context("vacuuming public.customers")
    }

    /// True once hookrelay's capture trigger is on `public.orders`.
    pub async fn trigger_installed(&self) -> anyhow::Result<bool> {
        let row = self
            .source()
            .await?
            .query_one(
                "select exists (select 1 from pg_trigger
                  where tgrelid = 'public.orders'::regclass and tgname like 'hookrelay_%')",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// For the trigger-only ceiling with hookrelay stopped: mark the reader busy, so
    /// the trigger never notifies (as while hookrelay keeps up under load).
    pub async fn mark_reader_busy(&self) -> anyhow::Result<()> {
        self.source()
            .await?
            .batch_execute("update hookrelay.readers set idle = false")
            .await
            .context("marking the reader busy")
    }

    /// Empties the orders table and the journal a ceiling run filled.
    pub async fn clear_source(&self) -> anyhow::Result<()> {
        let c = self.source().await?;
        c.batch_execute("truncate public.orders")
            .await
            .context("truncating public.orders")?;
        c.batch_execute(
            "do $$ begin
               if to_regclass('hookrelay.journal') is not null then truncate hookrelay.journal; end if;
             end $$",
        )
        .await
        .context("truncating the journal")?;
        c.batch_execute("checkpoint").await.context("checkpoint")?;
        Ok(())
    }

    /// Events the store holds.
    pub async fn stored_events(&self) -> anyhow::Result<i64> {
        let row = self
            .store()
            .await?
            .query_one("select count(*) from hookrelay.events", &[])
            .await?;
        Ok(row.get(0))
    }

    /// Rows still in the source journal.
    pub async fn journal_rows(&self) -> anyhow::Result<i64> {
        let row = self
            .source()
            .await?
            .query_one("select count(*) from hookrelay.journal", &[])
            .await?;
        Ok(row.get(0))
    }

    pub async fn store_size(&self) -> anyhow::Result<StoreSize> {
        let row = self
            .store()
            .await?
            .query_one(
                "select pg_total_relation_size('hookrelay.events'),
                        pg_total_relation_size('hookrelay.deliveries'),
                        pg_total_relation_size('hookrelay.attempts'),
                        pg_database_size(current_database())",
                &[],
            )
            .await
            .context("measuring the store")?;
        let (e, d, a): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        Ok(StoreSize {
            tables_bytes: e + d + a,
            events_bytes: e,
            deliveries_bytes: d,
            attempts_bytes: a,
            database_bytes: row.get(3),
        })
    }

    /// Every table of the store's schema with its total size (indexes and TOAST
    /// included), largest first.
    pub async fn schema_tables(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = self
            .store()
            .await?
            .query(
                "select c.relname::text, pg_total_relation_size(c.oid)
                   from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  where n.nspname = 'hookrelay' and c.relkind = 'r'
                  order by 2 desc, 1",
                &[],
            )
            .await
            .context("measuring the store's tables")?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Drops both databases (at the end of the run).
    pub async fn drop_all(base: &str) -> anyhow::Result<()> {
        let admin = connect(&format!("{base}/postgres")).await?;
        for db in [store_db(), source_db()] {
            admin
                .batch_execute(&format!("drop database if exists {db} with (force)"))
                .await
                .with_context(|| format!("dropping database {db}"))?;
        }
        Ok(())
    }
}

/// The server's version string and a few settings that shape the figures.
pub async fn server_info(base: &str) -> anyhow::Result<serde_json::Value> {
    let c = connect(&format!("{base}/postgres")).await?;
    let row = c
        .query_one(
            "select version(), current_setting('fsync'), current_setting('synchronous_commit'),
                    current_setting('shared_buffers'), current_setting('wal_level'),
                    current_setting('max_wal_size')",
            &[],
        )
        .await
        .context("reading server settings")?;
    Ok(serde_json::json!({
        "version": row.get::<_, String>(0),
        "fsync": row.get::<_, String>(1),
        "synchronous_commit": row.get::<_, String>(2),
        "shared_buffers": row.get::<_, String>(3),
        "wal_level": row.get::<_, String>(4),
        "max_wal_size": row.get::<_, String>(5),
    }))
}
