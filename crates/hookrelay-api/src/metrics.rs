//! `GET /metrics`: Prometheus text (OpenMetrics), built at scrape time from what the
//! process counts and what the store holds.
//!
//! ```text
//!  dispatcher's live counters (attempts, latency, in flight, recorder, ─┐
//!    circuits)                                                          │
//!  sources' live status (events captured, errors, ready)                ├─▶ one registry
//!  store aggregates (open backlog per subscription, newest event age)  ─┘   per scrape
//! ```
//! Counters count since this process started, as Prometheus expects; gauges are read
//! fresh. No secret or header value is ever a label.
//!
//! The registry encodes OpenMetrics, where a counter family `x` has the samples
//! `x_total`; the answer is that text rewritten to Prometheus's classic text format
//! (version 0.0.4), where HELP and TYPE name the sample itself (`x_total`). Both
//! formats scrape the same, but Prometheus's own linter (`promtool check metrics`)
//! and most exporters' tooling read the classic one, and with OpenMetrics names they
//! find counters without help text.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{error::Problem, ApiError, ApiState};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Prometheus (OpenMetrics) text.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "probes",
    responses(
        (status = 200, description = "Metrics, in Prometheus's text format (0.0.4)", content_type = "text/plain", body = String),
        (status = 503, description = "Store unreachable; retry (Retry-After)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let mut reg = Registry::default();

    let captured = Family::<Labels, Counter>::default();
    let source_errors = Family::<Labels, Counter>::default();
    let source_ready = Family::<Labels, Gauge>::default();
    let takeovers = Family::<Labels, Counter>::default();
    let leadership_lost = Family::<Labels, Counter>::default();
    let fenced = Family::<Labels, Counter>::default();
    let last_notice = Family::<Labels, Gauge>::default();
    let backfill_rows = Family::<Labels, Counter>::default();
    for s in state.sources.all() {
        let l = labels(&[("source", &s.name), ("kind", &s.kind)]);
        captured.get_or_create(&l).inc_by(s.events_captured);
        source_errors.get_or_create(&l).inc_by(s.errors);
        source_ready.get_or_create(&l).set(i64::from(s.is_ready()));
        takeovers.get_or_create(&l).inc_by(s.takeovers);
        leadership_lost.get_or_create(&l).inc_by(s.leadership_lost);
        fenced.get_or_create(&l).inc_by(s.fenced_commits);
        backfill_rows.get_or_create(&l).inc_by(s.backfill_rows);
        if let Some(n) = s.last_notice() {
            last_notice.get_or_create(&l).set(n.at.timestamp());
        }
    }
    reg.register(
        "hookrelay_source_takeovers",
        "Times this process took a source's leadership",
        takeovers,
    );
    reg.register(
        "hookrelay_source_leadership_lost",
        "Times this process stopped reading a source because it could not confirm its leadership",
        leadership_lost,
    );
    reg.register(
        "hookrelay_source_fenced_commits",
        "Batches the store refused because another process had taken the source over",
        fenced,
    );
    reg.register(
        "hookrelay_source_last_notice_timestamp_seconds",
        "When the source's newest notice (a drop, rename, invalidation, lost history or leadership; see /v1/sources) came",
        last_notice,
    );
    reg.register(
        "hookrelay_events_captured",
        "New events committed to the store, per source",
        captured,
    );
    reg.register(
        "hookrelay_source_errors",
        "Source failures (each retried), per source",
        source_errors,
    );
    reg.register(
        "hookrelay_backfill_rows_read",
        "Rows this process read from a source and sent as backfill read events, per source",
        backfill_rows,
    );
    let running = Gauge::<i64>::default();
    running.set(state.store.backfill_totals().await?.running);
    reg.register(
        "hookrelay_backfills_running",
        "Backfills in the store that are still reading",
        running,
    );
    reg.register(
        "hookrelay_source_ready",
        "1 while the source captures (or its leader does)",
        source_ready,
    );

    let lag = Family::<Labels, FloatGauge>::default();
    let now = Utc::now();
    for s in state.sources.all() {
        if let Some(secs) = s.lag_seconds(now) {
            lag.get_or_create(&labels(&[("source", &s.name)])).set(secs);
        }
    }
    reg.register(
        "hookrelay_source_lag_seconds",
        "How far capture is behind: 0 while the reader has read everything, else seconds since the latest point known captured (only from the process reading the source)",
        lag,
    );

    let unreadable = Family::<Labels, Gauge>::default();
    for sub in state.store.unreadable_secrets().into_keys() {
        unreadable
            .get_or_create(&labels(&[("subscription_id", &sub)]))
            .set(1);
    }
    reg.register(
        "hookrelay_subscription_secret_unreadable",
        "1 for a subscription whose signing secret or a header value does not open under the master key (its deliveries wait; see its secret_error)",
        unreadable,
    );

    let stats = &state.dispatch_stats;
    let attempts = Family::<Labels, Counter>::default();
    for (sub, outcome, n) in stats.attempts() {
        attempts
            .get_or_create(&labels(&[
                ("subscription_id", &sub),
                ("outcome", outcome.as_str()),
            ]))
            .inc_by(n);
    }
    reg.register(
        "hookrelay_delivery_attempts",
        "Delivery attempts by subscription and what they led to (succeeded, retrying, failed, gone)",
        attempts,
    );
    reg.register(
        "hookrelay_attempt_duration_seconds",
        "Time from sending a webhook to the end of its answer",
        stats.latency(),
    );
    let in_flight = Gauge::<i64>::default();
    in_flight.set(stats.in_flight());
    reg.register(
        "hookrelay_dispatch_in_flight",
        "Webhooks being sent right now",
        in_flight,
    );
    let recorder = Family::<Labels, Counter>::default();
    for (kind, n) in [
        ("retried", &stats.recorder_retries),
        ("refused", &stats.recorder_refused),
        ("dropped", &stats.recorder_dropped),
    ] {
        recorder
            .get_or_create(&labels(&[("kind", kind)]))
            .inc_by(n.load(Ordering::Relaxed));
    }
    reg.register(
        "hookrelay_recorder_errors",
        "Outcome writes retried (store unreachable), refused (recorded without details) or dropped (left to lease expiry)",
        recorder,
    );

    let taken = Family::<Labels, Counter>::default();
    for (how, n) in [
        ("claimed", &stats.claimed),
        ("handed_over", &stats.handed_over),
    ] {
        taken
            .get_or_create(&labels(&[("how", how)]))
            .inc_by(n.load(Ordering::Relaxed));
    }
    reg.register(
        "hookrelay_deliveries_taken",
        "Deliveries this process took to send: leased by a claim, or leased as a source's batch inserted them and handed over",
        taken,
    );

    let circuit_open = Family::<Labels, Gauge>::default();
    let failures = Family::<Labels, Gauge>::default();
    for (sub, c) in stats.circuits() {
        let l = labels(&[("subscription_id", &sub)]);
        let open = c.state(now) != hookrelay_core::stats::CircuitState::Closed;
        circuit_open.get_or_create(&l).set(i64::from(open));
        failures
            .get_or_create(&l)
            .set(i64::from(c.consecutive_failures));
    }
    reg.register(
        "hookrelay_subscription_circuit_open",
        "1 while the subscription's circuit in this process is open or half-open (held back after failures), else 0; for subscriptions that failed here",
        circuit_open,
    );
    reg.register(
        "hookrelay_subscription_consecutive_failures",
        "Failed attempts in a row since the subscription's last success, in this process",
        failures,
    );

    let filter_failures = Family::<Labels, Counter>::default();
    for (sub, n) in state.store.filter_failures() {
        filter_failures
            .get_or_create(&labels(&[("subscription_id", &sub)]))
            .inc_by(n);
    }
    reg.register(
        "hookrelay_subscription_filter_failures",
        "Events a subscription's filter could not judge (a missing field, a bad conversion), counted as not passing, in this process",
        filter_failures,
    );

    let backlog = Family::<Labels, Gauge>::default();
    let oldest = Family::<Labels, FloatGauge>::default();
    for b in state.store.backlog().await? {
        backlog
            .get_or_create(&labels(&[
                ("subscription_id", &b.subscription_id),
                ("status", "pending"),
            ]))
            .set(b.pending);
        backlog
            .get_or_create(&labels(&[
                ("subscription_id", &b.subscription_id),
                ("status", "retrying"),
            ]))
            .set(b.retrying);
        oldest
            .get_or_create(&labels(&[("subscription_id", &b.subscription_id)]))
            .set(b.oldest_seconds);
    }
    reg.register(
        "hookrelay_backlog_deliveries",
        "Open deliveries per subscription and status",
        backlog,
    );
    reg.register(
        "hookrelay_oldest_open_delivery_age_seconds",
        "Age of each subscription's oldest open delivery",
        oldest,
    );

    let (open, idle) = state.store.pool_connections();
    let pool = Family::<Labels, Gauge>::default();
    pool.get_or_create(&labels(&[("state", "in_use")]))
        .set(open.saturating_sub(idle) as i64);
    pool.get_or_create(&labels(&[("state", "idle")]))
        .set(idle as i64);
    reg.register(
        "hookrelay_store_connections",
        "Store connections by state",
        pool,
    );

    let pruned = Counter::<u64>::default();
    pruned.inc_by(state.store.pruned_total());
    reg.register(
        "hookrelay_pruned",
        "Finished deliveries and unreferenced events deleted by retention in this process",
        pruned,
    );

    let mut body = String::new();
    encode(&mut body, &reg)
        .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}").into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        classic_text(&body),
    )
        .into_response())
}

/// OpenMetrics text as Prometheus's classic text format: a counter family's HELP and
/// TYPE lines name its `_total` samples, and the OpenMetrics-only lines (`# UNIT`,
/// `# EOF`) go. Samples are unchanged.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::classic_text;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_lines_go() {
        let om = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total{s=\"x\"} 3\n\
                  # HELP a_lag_seconds Lag.\n# TYPE a_lag_seconds gauge\n# UNIT a_lag_seconds seconds\n\
                  a_lag_seconds 1.5\n# HELP a_d_seconds D.\n# TYPE a_d_seconds histogram\n\
                  a_d_seconds_bucket{le=\"+Inf\"} 1\na_d_seconds_sum 0.1\na_d_seconds_count 1\n# EOF\n";
        let want = "# HELP a_events_total Events.\n# TYPE a_events_total counter\na_events_total{s=\"x\"} 3\n\
                    # HELP a_lag_seconds Lag.\n# TYPE a_lag_seconds gauge\na_lag_seconds 1.5\n\
                    # HELP a_d_seconds D.\n# TYPE a_d_seconds histogram\n\
                    a_d_seconds_bucket{le=\"+Inf\"} 1\na_d_seconds_sum 0.1\na_d_seconds_count 1\n";
        assert_eq!(classic_text(om), want);
    }
}
