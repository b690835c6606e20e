//! What every source shares: hold the source's leadership lock, run it, and after a
//! failure report it and retry with capped, jittered backoff, never a crash loop.

use std::time::Duration;

use hookrelay_store::{LockLost, Store};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

pub use hookrelay_core::status::{Notice, SourceSnapshot, SourceState, SourceStatus};

use crate::{Source, SourceError, StoreSink};

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STANDBY_RECHECK: Duration = Duration::from_secs(2);
/// On standby, how soon to look again while the leader's capture is not installed
/// yet: this process's readiness waits on it.
const STANDBY_CONFIRM: Duration = Duration::from_millis(200);

/// After failing to read its source, how long a leader stays away from the lock at
/// least: longer than a standby takes to look again, so a process that may reach the
/// source when this one cannot gets to take over (DESIGN §1.11).
const YIELD_AFTER_FAILURE: Duration = Duration::from_secs(3);

/// Runs `source` until `stop`, holding its leadership lock in `store` while reading
/// and committing its batches under that lock's epoch.
pub async fn supervise<S: Source>(
    source: S,
    store: Store,
    sink: StoreSink,
    status: SourceStatus,
    stop: CancellationToken,
) {
    let span = tracing::info_span!("source", source = %source.name());
    async move {
        let mut failures: u32 = 0;
        while !stop.is_cancelled() {
            let mut lock = match store.try_lock_source(source.name()).await {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    let snap = status.snapshot();
                    let was_confirmed = snap.state == SourceState::Standby && snap.leader_capturing;
                    let confirmed = was_confirmed
                        || match source.capture_installed().await {
                            Ok(installed) => installed,
                            Err(e) => {
                                debug!(error = %e, "on standby; cannot tell yet whether capture is installed");
                                false
                            }
                        };
                    status.set_standby(confirmed);
                    if confirmed && !was_confirmed {
                        info!("standby: another process leads this source; its capture is installed");
                    }
                    let recheck = if confirmed { STANDBY_RECHECK } else { STANDBY_CONFIRM };
                    if sleep_or_stop(recheck, &stop).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    let delay = backoff(failures);
                    warn!(error = %e, retry_in = ?delay, "cannot reach the store to take the source lock");
                    status.set_error(format!("store: {e}"));
                    if sleep_or_stop(delay, &stop).await {
                        break;
                    }
                    continue;
                }
            };
            let epoch = lock.epoch();
            info!(epoch, "source lock held; setting up");
            status.note_takeover(epoch);
            let term = sink.under_epoch(epoch);
            let watch_lock = !ignores_lost_lock();
            // Dropping `run` mid-batch is safe: anything not yet acknowledged upstream is
            // read again and dedupes on its event id; a commit already on its way is
            // fenced by the epoch.
            let result = tokio::select! {
                r = source.run(&term, &status, &stop) => r,
                why = lost(&mut lock), if watch_lock => Err(SourceError::LostLeadership(why)),
            };
            drop(lock);
            match result {
                Ok(()) => {
                    failures = 0;
                }
                Err(e) if e.is_lost_leadership() => {
                    // Ordinary: another process leads now, or soon will. Straight back
                    // to standby, no backoff.
                    warn!(epoch, error = %e, "stopped reading: leadership lost; back to standby");
                    status.note_leadership_lost(e.to_string());
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    let delay = if e.is_transient() { backoff(failures) } else { backoff(failures).max(Duration::from_secs(5)) };
                    let delay = delay.max(YIELD_AFTER_FAILURE);
                    warn!(error = %e, transient = e.is_transient(), retry_in = ?delay, "source failed; lock released, will retry");
                    status.set_error(e.to_string());
                    if sleep_or_stop(delay, &stop).await {
                        break;
                    }
                }
            }
        }
        status.set_state(SourceState::Stopped);
        info!("source stopped");
    }
    .instrument(span)
    .await
}

/// Resolves when the lock is lost.
async fn lost(lock: &mut hookrelay_store::SourceLock) -> LockLost {
    lock.lost().await
}

/// Fault injection: the leader does not notice that it lost its lock, so the tests
/// can show that the store still refuses its late commits.
fn ignores_lost_lock() -> bool {
    fail::fail_point!("leader.ignore_lost", |_| true);
    false
}

/// Capped exponential backoff with full jitter, never below `MIN_BACKOFF`.
fn backoff(failures: u32) -> Duration {
    let cap = MIN_BACKOFF
        .saturating_mul(1u32 << failures.min(10))
        .min(MAX_BACKOFF);
    let ms = rand::thread_rng()
        .gen_range(MIN_BACKOFF.as_millis()..=cap.as_millis().max(MIN_BACKOFF.as_millis()));
    Duration::from_millis(ms as u64)
}

/// Sleeps; true if `stop` fired first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}
