//! Source leadership: one process reads a source at a time, or per-key order breaks.
//! The holder keeps a session advisory lock on a connection of its own; when the
//! process dies the connection drops, the lock is released, and another process's
//! next attempt takes over.

use tokio::task::JoinHandle;

use crate::{Store, StoreError};

/// A held source lock. Dropping it closes the connection and releases the lock.
pub struct SourceLock {
    client: tokio_postgres::Client,
    conn: JoinHandle<()>,
}

impl SourceLock {
    /// Resolves when the lock's connection is gone (the lock is then lost).
    pub async fn lost(&mut self) {
        (&mut self.conn).await.ok();
    }

    /// Is the connection still up?
    pub fn is_held(&self) -> bool {
        !self.client.is_closed()
    }
}

impl Drop for SourceLock {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Store {
    /// Tries to become the reader of `source`; `None` when another process is.
    pub async fn try_lock_source(&self, source: &str) -> Result<Option<SourceLock>, StoreError> {
        let (client, conn) = self.connector.connect().await?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let got: bool = client
            .query_one(
                "select pg_try_advisory_lock(hashtextextended('hookrelay.source:' || $1, 0))",
                &[&source],
            )
            .await?
            .get(0);
        if got {
            // Names the leader for `/v1/sources` in any process (see `leaders`).
            let name = format!("hookrelay leader {}", crate::process_name());
            client
                .execute("select set_config('application_name', $1, false)", &[&name])
                .await?;
            Ok(Some(SourceLock { client, conn }))
        } else {
            conn.abort();
            Ok(None)
        }
    }
}

/// Who holds each source's lock right now, from the store's lock table: the leading
/// process's name (`<host>-<pid>`) and since when its lock connection exists.
const LEADERS: &str = "
select w.source, substr(a.application_name, length('hookrelay leader ') + 1), a.backend_start
  from unnest($1::text[]) as w(source)
  cross join lateral (select hashtextextended('hookrelay.source:' || w.source, 0) as k) key
  join pg_locks l on l.locktype = 'advisory' and l.granted and l.objsubid = 1
   and l.database = (select oid from pg_database where datname = current_database())
   and l.classid = ((key.k >> 32) & 4294967295)::oid
   and l.objid = (key.k & 4294967295)::oid
  join pg_stat_activity a on a.pid = l.pid";

impl Store {
    /// The current leader of each of `sources` that has one: (source, process, since).
    pub async fn leaders(
        &self,
        sources: &[String],
    ) -> Result<Vec<(String, String, chrono::DateTime<chrono::Utc>)>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(LEADERS, &[&sources]).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }
}
