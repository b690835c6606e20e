//! Batches outcomes into one store transaction each; while the store is down it keeps
//! the batch and retries, so no outcome is dropped (the deliveries' leases cover them).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use hookrelay_store::{DispatchSignal, Outcome, Store};
use tokio::sync::mpsc;
use tracing::warn;

/// Outcomes written per transaction at most.
const MAX_BATCH: usize = 512;

pub(crate) async fn run(
    store: Store,
    owner: String,
    mut rx: mpsc::Receiver<Outcome>,
    signal: Arc<DispatchSignal>,
    key_blocked: Arc<AtomicBool>,
) {
    let mut batch: Vec<Outcome> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let t = std::time::Instant::now();
            let r = store.record_outcomes(&owner, &batch).await;
            tracing::trace!(
                us = t.elapsed().as_micros() as u64,
                n = batch.len(),
                "recorded"
            );
            match r {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, outcomes = batch.len(), retry_in = ?delay, "recording outcomes failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        batch.clear();
        // A recorded outcome can unblock the next delivery of the same key.
        if key_blocked.load(Ordering::Relaxed) {
            signal.wake();
        }
    }
}
