//! Every scenario on a PostgreSQL source.

use std::{collections::BTreeMap, future::Future, pin::Pin};

use super::{Fixture, Writer};
use crate::harness::*;

/// A fresh source database with `public.items (id bigint primary key, v bigint,
/// note text, at timestamptz)`.
pub struct Postgres {
    db: TestDb,
}

impl Postgres {
    pub async fn new() -> Self {
        init_logs();
        Self {
            db: TestDb::new("bfsrc").await,
        }
    }
}

struct PgWriter(tokio_postgres::Client);

impl Writer for PgWriter {
    fn insert(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0
                .execute(
                    "insert into public.items (id, v, note) values ($1, 0, 'new')",
                    &[&id],
                )
                .await
                .expect("insert");
        })
    }

    fn bump(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0
                .execute("update public.items set v = v + 1 where id = $1", &[&id])
                .await
                .expect("update");
        })
    }

    fn delete(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0
                .execute("delete from public.items where id = $1", &[&id])
                .await
                .expect("delete");
        })
    }
}

impl Fixture for Postgres {
    fn source_toml(&self) -> String {
        format!(
            r#"
[[sources]]
name = "src"
kind = "postgres"
url = "{}"
tables = ["public.items"]
poll_interval = "200ms"
batch_size = 500
"#,
            self.db.url()
        )
    }

    fn table(&self) -> &'static str {
        "public.items"
    }

    fn rows_read_series(&self) -> String {
        r#"hookrelay_backfill_rows_read_total{source="src",kind="postgres"}"#.to_owned()
    }

    async fn fill(&self, n: i64) {
        self.db
            .connect()
            .await
            .batch_execute(&format!(
                "create table public.items (
                    id bigint primary key, v bigint not null, note text,
                    at timestamptz not null default '2026-01-02 03:04:05.678+00');
                 insert into public.items (id, v, note)
                 select i, 0, 'row ' || i from generate_series(1, {n}) i"
            ))
            .await
            .expect("create and fill items");
    }

    async fn writer(&self) -> Box<dyn Writer> {
        Box::new(PgWriter(self.db.connect().await))
    }

    async fn rows(&self) -> BTreeMap<i64, i64> {
        self.db
            .connect()
            .await
            .query("select id, v from public.items", &[])
            .await
            .expect("read items")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

super::scenarios!(Postgres::new().await);
