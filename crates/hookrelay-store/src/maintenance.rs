//! Keeping the planner's statistics current. A burst of changes can grow the
//! deliveries queue from empty to hundreds of thousands of rows within seconds, long
//! before autovacuum's next analyze; with statistics that still say "empty" the
//! planner picks indexes that make every claim scan the whole queue. The store counts
//! what it inserts and re-analyzes once the queue has grown noticeably.

use std::sync::atomic::Ordering;

use crate::{Store, StoreError};

/// Re-analyze after this many new deliveries at least...
const MIN_GROWTH: u64 = 2_000;

impl Store {
    pub(crate) fn note_inserted(&self, deliveries: u64) {
        self.grown.fetch_add(deliveries, Ordering::Relaxed);
    }

    /// Runs `ANALYZE` on the queue tables when they grew by more than `MIN_GROWTH`
    /// rows and by more than a fifth since the last time. Returns whether it ran.
    pub async fn analyze_if_grown(&self) -> Result<bool, StoreError> {
        let grown = self.grown.load(Ordering::Relaxed);
        let last = self.analyzed_at_size.load(Ordering::Relaxed);
        if grown < MIN_GROWTH || grown < last / 5 {
            return Ok(false);
        }
        let client = self.client().await?;
        client
            // Only the queue: events are read by primary key and unique id alone, and
            // sampling their bodies cost a tenth of the store's time under load. Only
            // the columns the claim and fan-out plans filter and join on, each with a
            // statistics target of 10 (sql/V10): a 3,000-row sample, not 30,000.
            .batch_execute(
                "analyze hookrelay.deliveries
                     (id, event_seq, subscription_id, order_key, status, next_attempt_at, lease_until)",
            )
            .await?;
        let size: i64 = client
            .query_one("select reltuples::bigint from pg_class where oid = 'hookrelay.deliveries'::regclass", &[])
            .await?
            .try_get(0)?;
        self.grown.fetch_sub(grown, Ordering::Relaxed);
        self.analyzed_at_size
            .store(size.max(0) as u64, Ordering::Relaxed);
        tracing::debug!(grown, size, "analyzed the delivery queue");
        Ok(true)
    }
}
