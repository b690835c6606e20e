//! What every source shares: hold the source's leadership lock, run it, and after a
//! failure report it and retry with capped, jittered backoff, never a crash loop.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use hookrelay_store::Store;
use rand::Rng;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::{BatchSink, Source};

/// A source's lifecycle, as `/v1/sources` and `/readyz` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Leading the source and setting up its capture.
    Starting,
    /// Another process holds this source's leadership lock.
    Standby,
    /// Set up and capturing.
    Running,
    /// Failed; retrying after a backoff.
    Retrying,
    Stopped,
}

impl SourceState {
    /// The contract's name for the state (DESIGN §1.5): `connecting` while setting
    /// up, `error` while waiting to retry after a failure.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Starting => "connecting",
            SourceState::Standby => "standby",
            SourceState::Running => "running",
            SourceState::Retrying => "error",
            SourceState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceSnapshot {
    pub state: SourceState,
    /// On standby: the source's capture is known to be installed in the source
    /// database (by the leading process, or an earlier run), so nothing is missed.
    pub leader_capturing: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Failures since start (each one retried).
    pub errors: u64,
    /// New events this process committed for the source since start.
    pub events_captured: u64,
    /// `committed_at` of the newest of them.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Something upstream an operator should know that is not an event and not a
    /// failure (a watched collection dropped or renamed, a stream invalidated).
    pub last_notice: Option<String>,
    pub last_notice_at: Option<DateTime<Utc>>,
}

impl SourceSnapshot {
    /// Capture has begun (DESIGN §1.3): this process captures the source, or it is on
    /// standby and the source's capture is installed, so every change committed from
    /// now on is journalled and read by whichever process leads. A standby whose
    /// leader has not finished setting up is not ready: a change committed then would
    /// be missed, whichever process's `/readyz` the client asked.
    pub fn is_ready(&self) -> bool {
        match self.state {
            SourceState::Running => true,
            SourceState::Standby => self.leader_capturing,
            SourceState::Starting | SourceState::Retrying | SourceState::Stopped => false,
        }
    }
}

/// Shared, cheap-to-read status of one source.
#[derive(Debug, Clone)]
pub struct SourceStatus(Arc<Mutex<SourceSnapshot>>);

impl Default for SourceStatus {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(SourceSnapshot {
            state: SourceState::Starting,
            leader_capturing: false,
            last_error: None,
            last_error_at: None,
            errors: 0,
            events_captured: 0,
            last_event_at: None,
            last_notice: None,
            last_notice_at: None,
        })))
    }
}

impl SourceStatus {
    pub fn snapshot(&self) -> SourceSnapshot {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_state(&self, state: SourceState) {
        if let Ok(mut g) = self.0.lock() {
            g.state = state;
            g.leader_capturing = false;
        }
    }

    /// Records an upstream happening for `/v1/sources` without changing the state.
    pub fn notice(&self, what: String) {
        if let Ok(mut g) = self.0.lock() {
            g.last_notice = Some(what);
            g.last_notice_at = Some(Utc::now());
        }
    }

    fn set_standby(&self, leader_capturing: bool) {
        if let Ok(mut g) = self.0.lock() {
            g.state = SourceState::Standby;
            g.leader_capturing = leader_capturing;
        }
    }

    fn set_error(&self, err: String) {
        if let Ok(mut g) = self.0.lock() {
            g.state = SourceState::Retrying;
            g.leader_capturing = false;
            g.last_error = Some(err);
            g.last_error_at = Some(Utc::now());
            g.errors += 1;
        }
    }

    /// A batch committed `events` new events, the newest committed at `last`.
    pub fn note_batch(&self, events: u64, last: Option<DateTime<Utc>>) {
        if let Ok(mut g) = self.0.lock() {
            g.events_captured += events;
            if last.is_some() {
                g.last_event_at = last;
            }
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STANDBY_RECHECK: Duration = Duration::from_secs(2);
/// On standby, how soon to look again while the leader's capture is not installed
/// yet: this process's readiness waits on it.
const STANDBY_CONFIRM: Duration = Duration::from_millis(200);

/// Runs `source` until `stop`, holding its leadership lock in `store` while reading.
pub async fn supervise<S: Source, K: BatchSink>(
    source: S,
    store: Store,
    sink: K,
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
            info!("source lock held; setting up");
            status.set_state(SourceState::Starting);
            // Dropping `run` mid-batch is safe: anything not yet acknowledged upstream is
            // read again and dedupes on its event id.
            let result = tokio::select! {
                r = source.run(&sink, &status, &stop) => r,
                _ = lock.lost() => Err(crate::SourceError::Setup("lost the source lock (store connection closed)".into())),
            };
            drop(lock);
            match result {
                Ok(()) => {
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    let delay = if e.is_transient() { backoff(failures) } else { backoff(failures).max(Duration::from_secs(5)) };
                    warn!(error = %e, transient = e.is_transient(), retry_in = ?delay, "source failed; will retry");
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
