//! Store migrations: numbered files under `sql/`, embedded at build time and applied by
//! refinery, which records a checksum per migration and refuses to run when an applied
//! file has changed. An advisory lock serialises concurrent `migrate` runs.

use crate::{Store, StoreError};

mod embedded {
    refinery::embed_migrations!("../../sql");
}

/// Advisory-lock key for migrations ("hookrelay" in ASCII, truncated).
const MIGRATE_LOCK: i64 = 0x686f_6f6b_7265_6c61;

impl Store {
    /// Creates schema `hookrelay` and applies pending migrations. Returns the names
    /// of the migrations applied by this call.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.migrate_until(None).await
    }

    /// Applies the migrations up to `version` only: for tests of what a migration
    /// does to a store written by the version before it.
    #[doc(hidden)]
    pub async fn migrate_to(&self, version: u32) -> Result<Vec<String>, StoreError> {
        self.migrate_until(Some(version)).await
    }

    async fn migrate_until(&self, version: Option<u32>) -> Result<Vec<String>, StoreError> {
        self.refuse_transaction_pooler().await?;
        let (mut client, conn) = self.connector.connect().await?;
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "migration connection closed");
            }
        });
        client
            .execute("select pg_advisory_lock($1)", &[&MIGRATE_LOCK])
            .await?;
        // "schema already exists, skipping" and the like are not news on every start.
        client
            .batch_execute(
                "set client_min_messages = warning; create schema if not exists hookrelay",
            )
            .await?;
        let mut runner = embedded::migrations::runner();
        runner.set_migration_table_name("hookrelay.schema_history");
        if let Some(v) = version {
            runner = runner.set_target(refinery::Target::Version(v));
        }
        let report = runner
            .set_abort_divergent(true)
            .run_async(&mut client)
            .await;
        let _ = client
            .execute("select pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
            .await;
        drop(client);
        let _ = conn.await;
        let applied = report?
            .applied_migrations()
            .iter()
            .map(|m| format!("V{}__{}", m.version(), m.name()))
            .collect();
        Ok(applied)
    }
}
