use std::sync::Arc;

use hookrelay_core::ChangeEvent;
use hookrelay_store::{
    model::RejectedChange, Backfill, BackfillChunk, BatchOutcome, ChunkOutcome, DispatchSignal,
    Store, StoreError,
};

use crate::{BatchSink, SourceStatus};

/// Commits a source's batches to the store, hands the local dispatcher the deliveries
/// leased to it at insert, and wakes it for the others (the protocol:
/// `hookrelay_store::DispatchSignal`).
#[derive(Clone)]
pub struct StoreSink {
    store: Store,
    source: String,
    signal: Arc<DispatchSignal>,
    status: Option<SourceStatus>,
    /// The leadership epoch batches commit under (see `under_epoch`); none: unfenced.
    epoch: Option<i64>,
}

impl StoreSink {
    pub fn new(store: Store, source: impl Into<String>, signal: Arc<DispatchSignal>) -> Self {
        Self {
            store,
            source: source.into(),
            signal,
            status: None,
            epoch: None,
        }
    }

    /// This sink for one leadership term: the store refuses its batches once another
    /// process has taken the source over (DESIGN §1.11).
    pub fn under_epoch(&self, epoch: i64) -> Self {
        Self {
            epoch: Some(epoch),
            ..self.clone()
        }
    }

    /// Counts committed events in `status` (for `/v1/sources` and metrics).
    pub fn reporting_to(mut self, status: SourceStatus) -> Self {
        self.status = Some(status);
        self
    }
}

impl BatchSink for StoreSink {
    async fn commit(&self, events: &[ChangeEvent], upto: &str) -> Result<BatchOutcome, StoreError> {
        Ok(self.commit_chunk(events, upto, None).await?.0)
    }

    async fn commit_with_backfill(
        &self,
        events: &[ChangeEvent],
        upto: &str,
        chunk: &BackfillChunk,
    ) -> Result<(BatchOutcome, ChunkOutcome), StoreError> {
        let (outcome, chunked) = self.commit_chunk(events, upto, Some(chunk)).await?;
        if let Some(status) = &self.status {
            status.note_backfill_rows(if chunked.applied {
                chunk.events.len() as u64
            } else {
                0
            });
        }
        Ok((outcome, chunked))
    }

    async fn running_backfill(&self) -> Result<Option<Backfill>, StoreError> {
        self.store.running_backfill(&self.source).await
    }

    async fn fail_backfill(&self, id: &str, error: &str) -> Result<(), StoreError> {
        self.store
            .fail_backfill(id, error, &self.source, self.epoch)
            .await
    }

    async fn reject(&self, change: &RejectedChange) -> Result<(), StoreError> {
        self.store.reject_change(change).await
    }
}

impl StoreSink {
    async fn commit_chunk(
        &self,
        events: &[ChangeEvent],
        upto: &str,
        chunk: Option<&BackfillChunk>,
    ) -> Result<(BatchOutcome, ChunkOutcome), StoreError> {
        // The dispatcher's standing offer, if any: this batch leases it fresh
        // deliveries as it inserts them. A batch that fails used it up; the dispatcher
        // offers again when it next looks.
        let offer = if events.is_empty() {
            None
        } else {
            self.signal.take_offer()
        };
        if let Some(delay) = commit_delay() {
            tokio::time::sleep(delay).await;
        }
        let committed = self
            .store
            .commit_batch_with_backfill(
                &self.source,
                events,
                upto,
                offer.as_deref(),
                self.epoch,
                chunk,
            )
            .await;
        let (outcome, handed, chunked) = match committed {
            Ok(done) => done,
            Err(e) => {
                if let (true, Some(status)) = (e.is_fenced(), &self.status) {
                    status.note_fenced();
                }
                return Err(e);
            }
        };
        self.signal.hand(handed);
        if let Some(first) = outcome.first_waiting {
            self.signal.due_from(first);
        }
        if let Some(status) = &self.status {
            status.note_batch(outcome.events, events.last().map(|e| e.committed_at));
        }
        Ok((outcome, chunked))
    }
}

/// Fault injection: holds a batch back before its commit (`return(<ms>)`), as a
/// network that delivers it late would.
fn commit_delay() -> Option<std::time::Duration> {
    fail::fail_point!("source.before_commit", |ms| ms
        .and_then(|ms| ms.parse().ok())
        .map(std::time::Duration::from_millis));
    None
}
