//! `/v1/sources`: each configured source as an operator needs it (DESIGN §1.5):
//! what it is, its state in this process, who leads it, where it is, how far behind.
//!
//! ```text
//!  this process's live status (state, errors, events, ─┐
//!    notices; hookrelay_core::status)                  │
//!  store: checkpoint (position, newest event time)      ├─▶ one view per source
//!  store: lock table and epochs (who leads, since when, │
//!    last confirmed, under which epoch)                ─┘
//! ```

use axum::{extract::State, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    error::{ApiError, Problem},
    extract::PathId,
    ApiState,
};
use hookrelay_core::status::SourceSnapshot;

#[derive(Debug, Serialize, ToSchema)]
pub struct Leader {
    /// `<host>-<pid>` of the process reading the source.
    pub process: String,
    pub since: DateTime<Utc>,
    /// The process answering this request is the leader.
    pub is_this_process: bool,
    /// The leadership epoch, bumped at every takeover: the store takes the source's
    /// batches only under the current one.
    pub epoch: Option<i64>,
    /// When the store last saw the leader confirm its lock (every 2 s while it
    /// leads; a leader that cannot for 6 s stops reading).
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// Something upstream worth knowing that is neither an event nor a failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeView {
    /// `dropped`, `renamed`, `invalidated`, `history_lost`, `leadership_lost`,
    /// `update_images` (mongodb: where each collection's updates get their `after`).
    pub kind: String,
    pub at: DateTime<Utc>,
    pub detail: String,
}

/// A table the source's patterns match but that it does not capture.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedTableView {
    /// `schema.table`.
    pub table: String,
    /// Why (no primary key, an excluded key column, …).
    pub reason: String,
}

/// What a PostgreSQL or MySQL source captures now (empty for MongoDB).
#[derive(Debug, Serialize, ToSchema)]
pub struct TablesView {
    /// `schema.table` of each table captured.
    pub captured: Vec<String>,
    pub skipped: Vec<SkippedTableView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    pub kind: String,
    /// `running`, `connecting`, `standby` (another process leads), `error`, `stopped`.
    pub state: String,
    /// Capture has begun (what `/readyz` waits for).
    pub ready: bool,
    pub leader: Option<Leader>,
    /// The source position of the last committed batch (opaque, per kind).
    pub position: Option<String>,
    /// `committed_at` of the newest change the store holds for this source.
    pub last_event_at: Option<DateTime<Utc>>,
    /// How far capture is behind, in seconds: 0 while the reader has read everything
    /// there is (an idle source is not behind), else the time since the latest point
    /// known to be captured, growing while the reader works through a backlog, fails
    /// or is stuck. Known only to the process reading the source: null on standby
    /// (ask the leader) and before the first read.
    pub lag_seconds: Option<f64>,
    /// New events this process committed for the source since it started.
    pub events_captured: u64,
    /// Failures this process met reading the source since it started.
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// The latest notices this process saw, oldest first (at most five).
    pub notices: Vec<NoticeView>,
    /// The tables captured and those the patterns match but skipped, as this
    /// process's reader last saw them (empty while it does not lead the source).
    pub tables: TablesView,
    /// Times this process took the source's leadership since it started.
    pub takeovers: u64,
    /// Batches of this process the store refused because another process had taken
    /// the source over meanwhile.
    pub fenced_commits: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceList {
    data: Vec<SourceView>,
}

/// Every configured source, in config order.
#[utoipa::path(
    get,
    path = "/sources",
    operation_id = "listSources",
    tag = "sources",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every source", body = SourceList),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn list(State(state): State<ApiState>) -> Result<Json<SourceList>, ApiError> {
    let data = views(&state, state.sources.all()).await?;
    Ok(Json(SourceList { data }))
}

/// One source.
#[utoipa::path(
    get,
    path = "/sources/{name}",
    operation_id = "getSource",
    tag = "sources",
    params(("name" = String, Path, description = "Source name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The source", body = SourceView),
        (status = 400, description = "Unreadable body or parameter (names the `field`)", content_type = "application/problem+json", body = Problem),
        (status = 401, description = "Missing or invalid bearer token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such source", content_type = "application/problem+json", body = Problem),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get(
    State(state): State<ApiState>,
    PathId(name): PathId,
) -> Result<Json<SourceView>, ApiError> {
    let wanted: Vec<SourceSnapshot> = state
        .sources
        .all()
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    if wanted.is_empty() {
        return Err(ApiError::NotFound {
            what: "source",
            id: name,
        });
    }
    let mut views = views(&state, wanted).await?;
    views.pop().map(Json).ok_or(ApiError::NotFound {
        what: "source",
        id: name,
    })
}

async fn views(state: &ApiState, live: Vec<SourceSnapshot>) -> Result<Vec<SourceView>, ApiError> {
    let names: Vec<String> = live.iter().map(|s| s.name.clone()).collect();
    let leaders = state.store.leaders(&names).await?;
    let me = hookrelay_store::process_name();
    let now = Utc::now();
    let mut out = Vec::with_capacity(live.len());
    for s in live {
        let checkpoint = state.store.load_checkpoint(&s.name).await?;
        let last_event_at = checkpoint
            .as_ref()
            .and_then(|c| c.last_event_at)
            .or(s.last_event_at);
        let leader = leaders.iter().find(|l| l.source == s.name).map(|l| Leader {
            is_this_process: l.process == me,
            process: l.process.clone(),
            since: l.since,
            epoch: l.epoch,
            confirmed_at: l.confirmed_at,
        });
        let ready = s.is_ready();
        out.push(SourceView {
            lag_seconds: s.lag_seconds(now),
            position: checkpoint.map(|c| c.position),
            last_event_at,
            leader,
            name: s.name,
            kind: s.kind,
            state: s.state.as_str().to_owned(),
            ready,
            events_captured: s.events_captured,
            errors: s.errors,
            last_error: s.last_error,
            last_error_at: s.last_error_at,
            notices: s
                .notices
                .into_iter()
                .map(|n| NoticeView {
                    kind: n.kind,
                    at: n.at,
                    detail: n.detail,
                })
                .collect(),
            tables: TablesView {
                captured: s.captured_tables,
                skipped: s
                    .skipped_tables
                    .into_iter()
                    .map(|t| SkippedTableView {
                        table: t.table,
                        reason: t.reason,
                    })
                    .collect(),
            },
            takeovers: s.takeovers,
            fenced_commits: s.fenced_commits,
        });
    }
    Ok(out)
}
