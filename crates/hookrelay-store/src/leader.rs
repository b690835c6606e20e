//! Source leadership: one process reads a source at a time, or per-key order breaks.
//! The holder keeps a session advisory lock on a connection of its own; when the
//! process dies the connection drops, the lock is released, and another process's
//! next attempt takes over.

use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

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
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await?;
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
            Ok(Some(SourceLock { client, conn }))
        } else {
            conn.abort();
            Ok(None)
        }
    }
}
