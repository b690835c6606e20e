//! Batches outcomes into one store transaction each.
//!
//! ```text
//!  outcomes ──batch (≤ 512)──▶ record_outcomes ──ok──▶ wake the claimer if a key waits
//!                                   │ transient (store down): keep the batch, back off, retry
//!                                   │ bad data (SQLSTATE 22/23): split in halves, record each
//!                                   ▼ one outcome refused on its own
//!                              record it without its response body and error text,
//!                              with a note saying why; refused again: log it and leave
//!                              the delivery to lease expiry (it is sent again)
//! ```
//!
//! So one outcome the store cannot take never holds up the others, while an
//! unreachable store loses nothing: the deliveries' leases cover their outcomes until
//! they are written. When the process must stop (`abandon`), the outcomes not yet
//! written are logged by delivery id and left to lease expiry (at-least-once).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use hookrelay_core::stats::DispatchStats;
use hookrelay_store::{DispatchSignal, Outcome, Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Outcomes written per transaction at most.
const MAX_BATCH: usize = 512;

/// Longest wait between attempts to write a batch while the store is unreachable.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

pub(crate) struct Recorder {
    pub store: Store,
    pub owner: String,
    pub signal: Arc<DispatchSignal>,
    pub key_blocked: Arc<AtomicBool>,
    /// Counts of what went wrong while recording, for `/metrics`.
    pub stats: Arc<DispatchStats>,
}

/// Why a write stopped without being done.
enum Stopped {
    /// The store refused this data; retrying the same write cannot help.
    Refused(StoreError),
    /// Shutdown's grace ran out.
    Abandoned,
}

impl Recorder {
    /// Records outcomes until the channel closes (every worker finished) or `abandon`.
    pub async fn run(self, mut rx: mpsc::Receiver<Outcome>, abandon: CancellationToken) {
        let mut batch: Vec<Outcome> = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                o = rx.recv() => o,
                _ = abandon.cancelled() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(o) => batch.push(o),
                    Err(_) => break,
                }
            }
            if !self.record(&batch, &abandon).await {
                leave_to_lease_expiry(&batch);
                batch.clear();
                break;
            }
            batch.clear();
            // A recorded outcome can unblock the next delivery of the same key.
            if self.key_blocked.load(Ordering::Relaxed) {
                self.signal.wake();
            }
        }
        // Whatever workers still hand in after an abandon is not written.
        rx.close();
        while let Ok(o) = rx.try_recv() {
            batch.push(o);
        }
        if !batch.is_empty() {
            leave_to_lease_expiry(&batch);
        }
    }

    /// Writes `batch`, splitting around outcomes the store refuses. False if abandoned
    /// before everything was written (then nothing more should be tried).
    async fn record(&self, batch: &[Outcome], abandon: &CancellationToken) -> bool {
        // Depth-first over halves, so outcomes are still written roughly in order.
        let mut todo: Vec<&[Outcome]> = vec![batch];
        while let Some(part) = todo.pop() {
            match self.write(part, abandon).await {
                Ok(()) => {}
                Err(Stopped::Abandoned) => {
                    // The parts not yet written: this one and those still queued.
                    for rest in std::iter::once(part).chain(todo.into_iter().rev()) {
                        leave_to_lease_expiry(rest);
                    }
                    return false;
                }
                Err(Stopped::Refused(e)) if part.len() > 1 => {
                    warn!(error = %e, outcomes = part.len(), "the store refused an outcome batch; splitting it to find the outcome at fault");
                    let (a, b) = part.split_at(part.len() / 2);
                    todo.push(b);
                    todo.push(a);
                }
                Err(Stopped::Refused(e)) => {
                    if !self.record_plain(&part[0], &e, abandon).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// One outcome the store refused: written again without the text and bytes that
    /// came from outside, with a note instead.
    async fn record_plain(
        &self,
        outcome: &Outcome,
        refused: &StoreError,
        abandon: &CancellationToken,
    ) -> bool {
        self.stats.recorder_refused.fetch_add(1, Ordering::Relaxed);
        let note = format!(
            "hookrelay could not store this attempt's details ({}); the response body and error were dropped",
            refused.sqlstate().unwrap_or("store error")
        );
        warn!(
            delivery_id = outcome.delivery_id,
            subscription_id = %outcome.subscription_id,
            attempt = outcome.attempt,
            error = %refused,
            "the store refused an outcome; recording it without its details"
        );
        let plain = Outcome {
            error: Some(note),
            response_body: None,
            ..outcome.clone()
        };
        match self.write(std::slice::from_ref(&plain), abandon).await {
            Ok(()) => true,
            Err(Stopped::Abandoned) => {
                leave_to_lease_expiry(std::slice::from_ref(outcome));
                false
            }
            Err(Stopped::Refused(e)) => {
                self.stats.recorder_dropped.fetch_add(1, Ordering::Relaxed);
                error!(
                    delivery_id = outcome.delivery_id,
                    subscription_id = %outcome.subscription_id,
                    attempt = outcome.attempt,
                    error = %e,
                    "the store refused an outcome even without its details; the delivery will be sent again when its lease expires"
                );
                true
            }
        }
    }

    /// One write, retried with backoff while the failure is transient.
    async fn write(&self, part: &[Outcome], abandon: &CancellationToken) -> Result<(), Stopped> {
        let mut delay = Duration::from_millis(100);
        loop {
            let t = std::time::Instant::now();
            let r = self.store.record_outcomes(&self.owner, part).await;
            tracing::trace!(
                us = t.elapsed().as_micros() as u64,
                n = part.len(),
                "recorded"
            );
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.is_bad_data() => return Err(Stopped::Refused(e)),
                Err(e) => {
                    self.stats.recorder_retries.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        error = %e,
                        outcomes = part.len(),
                        delivery_ids = ?ids(part),
                        retry_in = ?delay,
                        "recording outcomes failed; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = abandon.cancelled() => return Err(Stopped::Abandoned),
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }
}

/// The delivery ids of `part`, for logs (the first few, then a count).
fn ids(part: &[Outcome]) -> String {
    const SHOWN: usize = 16;
    let mut s = part
        .iter()
        .take(SHOWN)
        .map(|o| o.delivery_id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    if part.len() > SHOWN {
        s.push_str(&format!(",… ({} in all)", part.len()));
    }
    s
}

fn leave_to_lease_expiry(part: &[Outcome]) {
    if part.is_empty() {
        return;
    }
    warn!(
        outcomes = part.len(),
        delivery_ids = %part.iter().map(|o| o.delivery_id.to_string()).collect::<Vec<_>>().join(","),
        "stopping before these outcomes were recorded; their deliveries will be sent again (same event id) when their leases expire"
    );
}
