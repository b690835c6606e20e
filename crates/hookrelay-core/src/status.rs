//! A source's live status in this process: one type, written by the source's
//! supervisor and reader, read whole by `/readyz`, `/v1/sources` and `/metrics`.
//!
//! ```text
//!  supervise / reader ──set_*, note_*, notice──▶ SourceStatus ──snapshot()──▶ API
//! ```

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How recent a reader's last empty look must be for the source to count as caught
/// up. Every reader looks at least this often while idle (PostgreSQL at its
/// `poll_interval`, MySQL at each server heartbeat, MongoDB at each empty getMore).
pub const CAUGHT_UP_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// How many notices a source keeps for `/v1/sources`.
pub const NOTICES_KEPT: usize = 5;

/// A source's lifecycle in this process.
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

/// Something upstream an operator should know that is neither an event nor a failure:
/// a watched collection dropped or renamed, a stream invalidated, history lost and
/// capture restarted from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// A short, stable word: `dropped`, `renamed`, `invalidated`, `history_lost`, …
    pub kind: String,
    pub at: DateTime<Utc>,
    pub detail: String,
}

/// A table a source's patterns match but that it does not capture, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedTable {
    /// `schema.table`.
    pub table: String,
    pub reason: String,
}

/// Everything known about one source in this process, as one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceSnapshot {
    pub name: String,
    /// `postgres`, `mysql` or `mongodb`.
    pub kind: String,
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
    /// When the reader last looked and found nothing more to read: every change
    /// committed before then is captured.
    pub caught_up_at: Option<DateTime<Utc>>,
    /// The reader's last look found nothing, and no batch came since.
    pub caught_up: bool,
    /// The latest notices, oldest first (at most [`NOTICES_KEPT`]).
    pub notices: Vec<Notice>,
    /// The tables (`schema.table`) captured now, as the reader last saw them.
    pub captured_tables: Vec<String>,
    /// Tables the patterns match that are not captured, with why.
    pub skipped_tables: Vec<SkippedTable>,
    /// The leadership epoch this process reads the source under, while it leads.
    pub epoch: Option<i64>,
    /// Times this process took the source's leadership since start.
    pub takeovers: u64,
    /// Times it gave the leadership up because it could not confirm it (or another
    /// process had taken over).
    pub leadership_lost: u64,
    /// Batches the store refused because another process had taken over meanwhile.
    pub fenced_commits: u64,
    /// Rows this process sent as backfill `read` events for the source since start.
    pub backfill_rows: u64,
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

    /// How far capture is behind, in seconds, as this process sees it: 0 while its
    /// reader is caught up (its last look, within [`CAUGHT_UP_FRESH`], found nothing
    /// to read); else the time since the latest point known to be captured (the
    /// newest captured change's commit, or the reader's last empty look), so a reader
    /// that is working through a backlog, failing or stuck shows a growing figure.
    /// None where this process does not read the source (standby) or knows nothing yet.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        if matches!(self.state, SourceState::Standby | SourceState::Stopped) {
            return None;
        }
        let fresh = self.caught_up_at.is_some_and(|t| {
            now - t <= chrono::Duration::from_std(CAUGHT_UP_FRESH).unwrap_or_default()
        });
        if self.state == SourceState::Running && self.caught_up && fresh {
            return Some(0.0);
        }
        let known = self.caught_up_at.max(self.last_event_at)?;
        Some((now - known).num_milliseconds().max(0) as f64 / 1000.0)
    }

    /// The newest notice, if any.
    pub fn last_notice(&self) -> Option<&Notice> {
        self.notices.last()
    }
}

/// Shared, cheap-to-read status of one source.
#[derive(Debug, Clone)]
pub struct SourceStatus(Arc<Mutex<SourceSnapshot>>);

impl SourceStatus {
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self(Arc::new(Mutex::new(SourceSnapshot {
            name: name.into(),
            kind: kind.into(),
            state: SourceState::Starting,
            leader_capturing: false,
            last_error: None,
            last_error_at: None,
            errors: 0,
            events_captured: 0,
            last_event_at: None,
            caught_up_at: None,
            caught_up: false,
            notices: Vec::new(),
            captured_tables: Vec::new(),
            skipped_tables: Vec::new(),
            epoch: None,
            takeovers: 0,
            leadership_lost: 0,
            fenced_commits: 0,
            backfill_rows: 0,
        })))
    }

    /// A status only ever written under its own lock, so a panic elsewhere cannot
    /// leave it half-written: a poisoned lock is still read.
    fn lock(&self) -> MutexGuard<'_, SourceSnapshot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> SourceSnapshot {
        self.lock().clone()
    }

    pub fn set_state(&self, state: SourceState) {
        let mut g = self.lock();
        g.state = state;
        g.caught_up = false;
        g.leader_capturing = false;
        if state != SourceState::Running && state != SourceState::Starting {
            g.epoch = None;
        }
    }

    pub fn set_standby(&self, leader_capturing: bool) {
        let mut g = self.lock();
        g.state = SourceState::Standby;
        g.leader_capturing = leader_capturing;
        g.epoch = None;
    }

    /// A failure, retried after a backoff.
    pub fn set_error(&self, err: String) {
        let mut g = self.lock();
        g.state = SourceState::Retrying;
        g.leader_capturing = false;
        g.epoch = None;
        g.last_error = Some(err);
        g.last_error_at = Some(Utc::now());
        g.errors += 1;
    }

    /// Records an upstream happening for `/v1/sources` without changing the state.
    pub fn notice(&self, kind: &str, detail: String) {
        let mut g = self.lock();
        let mut kept: VecDeque<Notice> = std::mem::take(&mut g.notices).into();
        if kept.len() == NOTICES_KEPT {
            kept.pop_front();
        }
        kept.push_back(Notice {
            kind: kind.to_owned(),
            at: Utc::now(),
            detail,
        });
        g.notices = kept.into();
    }

    /// A batch committed `events` new events, the newest committed at `last`.
    /// The tables captured and skipped now; each table newly skipped is also a notice
    /// (`skipped`), so it shows in the API's history (the reader logs it).
    pub fn set_tables(&self, captured: Vec<String>, skipped: Vec<SkippedTable>) {
        let fresh: Vec<SkippedTable> = {
            let g = self.lock();
            skipped
                .iter()
                .filter(|s| !g.skipped_tables.contains(s))
                .cloned()
                .collect()
        };
        for s in fresh {
            self.notice("skipped", format!("{}: {}", s.table, s.reason));
        }
        let mut g = self.lock();
        g.captured_tables = captured;
        g.skipped_tables = skipped;
    }

    pub fn note_batch(&self, events: u64, last: Option<DateTime<Utc>>) {
        let mut g = self.lock();
        g.events_captured += events;
        if events > 0 {
            g.caught_up = false;
        }
        if last.is_some() {
            g.last_event_at = last;
        }
    }

    /// The reader looked and found nothing more to read.
    pub fn note_caught_up(&self) {
        let mut g = self.lock();
        g.caught_up = true;
        g.caught_up_at = Some(Utc::now());
    }

    /// A backfill chunk committed `rows` read events.
    pub fn note_backfill_rows(&self, rows: u64) {
        self.lock().backfill_rows += rows;
    }

    /// This process took the source's leadership under `epoch`.
    pub fn note_takeover(&self, epoch: i64) {
        let mut g = self.lock();
        g.takeovers += 1;
        g.epoch = Some(epoch);
        g.state = SourceState::Starting;
        g.leader_capturing = false;
    }

    /// This process gave the leadership up (`why`, kept as a notice: an ordinary
    /// event, not a failure) and is back on standby.
    pub fn note_leadership_lost(&self, why: String) {
        {
            let mut g = self.lock();
            g.leadership_lost += 1;
            g.epoch = None;
            g.state = SourceState::Standby;
            g.leader_capturing = false;
        }
        self.notice("leadership_lost", why);
    }

    /// The store refused a batch: another process leads the source now.
    pub fn note_fenced(&self) {
        self.lock().fenced_commits += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_when_caught_up_and_grows_while_behind() {
        let s = SourceStatus::new("shop", "postgres");
        let now = Utc::now();
        assert_eq!(s.snapshot().lag_seconds(now), None, "nothing known yet");
        s.set_state(SourceState::Running);
        let old = now - chrono::Duration::seconds(7);
        s.note_batch(3, Some(old));
        let lag = s.snapshot().lag_seconds(now).expect("a lag");
        assert!(
            (6.9..8.0).contains(&lag),
            "behind by the newest change's age: {lag}"
        );
        s.note_caught_up();
        assert_eq!(
            s.snapshot().lag_seconds(Utc::now()),
            Some(0.0),
            "idle is not behind"
        );
        let later = Utc::now() + chrono::Duration::seconds(5);
        assert_eq!(
            s.snapshot().lag_seconds(later),
            Some(0.0),
            "idle for a while is not behind"
        );
        s.note_batch(1, Some(Utc::now()));
        let much_later = Utc::now() + chrono::Duration::seconds(90);
        let lag = s.snapshot().lag_seconds(much_later).expect("a lag");
        assert!(lag >= 89.0, "a batch, then no look for 90 s: {lag}");
        s.note_caught_up();
        let stale = Utc::now() + CAUGHT_UP_FRESH + chrono::Duration::seconds(10);
        assert!(
            s.snapshot().lag_seconds(stale).expect("a lag") >= 39.0,
            "a look too long ago"
        );
        s.set_standby(true);
        assert_eq!(s.snapshot().lag_seconds(now), None, "only the reader knows");
    }

    #[test]
    fn a_newly_skipped_table_is_one_notice() {
        let s = SourceStatus::new("shop", "postgres");
        let nokey = SkippedTable {
            table: "public.nokey".into(),
            reason: "no primary key".into(),
        };
        s.set_tables(vec!["public.orders".into()], vec![nokey.clone()]);
        s.set_tables(
            vec!["public.orders".into(), "public.late".into()],
            vec![nokey.clone()],
        );
        let snap = s.snapshot();
        assert_eq!(snap.captured_tables, ["public.orders", "public.late"]);
        assert_eq!(snap.skipped_tables, [nokey]);
        let notices: Vec<(&str, &str)> = snap
            .notices
            .iter()
            .map(|n| (n.kind.as_str(), n.detail.as_str()))
            .collect();
        assert_eq!(notices, [("skipped", "public.nokey: no primary key")]);
    }

    #[test]
    fn notices_keep_the_latest_few_in_order() {
        let s = SourceStatus::new("docs", "mongodb");
        for i in 0..(NOTICES_KEPT + 2) {
            s.notice("dropped", format!("n{i}"));
        }
        let snap = s.snapshot();
        assert_eq!(snap.notices.len(), NOTICES_KEPT);
        assert_eq!(snap.notices[0].detail, "n2");
        assert_eq!(
            snap.last_notice().map(|n| n.detail.as_str()),
            Some(format!("n{}", NOTICES_KEPT + 1).as_str())
        );
    }

    #[test]
    fn leadership_comes_and_goes_with_its_epoch() {
        let s = SourceStatus::new("shop", "postgres");
        s.note_takeover(7);
        s.set_state(SourceState::Running);
        assert_eq!(s.snapshot().epoch, Some(7));
        assert!(s.snapshot().is_ready());
        s.note_fenced();
        s.note_leadership_lost("deposed".into());
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.state,
                snap.epoch,
                snap.takeovers,
                snap.leadership_lost,
                snap.fenced_commits
            ),
            (SourceState::Standby, None, 1, 1, 1)
        );
        assert_eq!(
            snap.last_notice().map(|n| n.kind.as_str()),
            Some("leadership_lost")
        );
        assert!(
            !snap.is_ready(),
            "a standby is ready only once capture is known installed"
        );
    }
}
