use std::sync::Arc;

use hookrelay_core::ChangeEvent;
use hookrelay_store::{BatchOutcome, Store, StoreError};
use tokio::sync::Notify;

use crate::BatchSink;

/// Commits a source's batches to the store and wakes the local dispatcher when they
/// created deliveries.
#[derive(Clone)]
pub struct StoreSink {
    store: Store,
    source: String,
    wake: Arc<Notify>,
}

impl StoreSink {
    pub fn new(store: Store, source: impl Into<String>, wake: Arc<Notify>) -> Self {
        Self {
            store,
            source: source.into(),
            wake,
        }
    }
}

impl BatchSink for StoreSink {
    async fn commit(&self, events: &[ChangeEvent], upto: &str) -> Result<BatchOutcome, StoreError> {
        let outcome = self.store.commit_batch(&self.source, events, upto).await?;
        if outcome.deliveries > 0 {
            self.wake.notify_one();
        }
        Ok(outcome)
    }
}
