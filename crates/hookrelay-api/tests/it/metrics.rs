//! `/metrics` against the rules of Prometheus's own linter (`promtool check metrics`,
//! its `promlint` package): every family has help text and a type naming its samples,
//! counters and only counters end in `_total`, units are base units spelled out, and
//! no name carries its type or a histogram's reserved suffix.

use std::collections::BTreeMap;

use std::{sync::atomic::Ordering, time::Duration};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use chrono::Utc;
use hookrelay_api::SourcesReadiness;
use hookrelay_core::{
    stats::AttemptOutcome,
    status::{SourceState, SourceStatus},
};
use serde_json::json;

use crate::harness::{event, TestApi};

/// Name shapes promlint refuses: non-base or abbreviated units, a type in the name.
const REFUSED_PARTS: &[&str] = &[
    "_milliseconds",
    "_microseconds",
    "_nanoseconds",
    "_minutes",
    "_hours",
    "_days",
    "_ms",
    "_us",
    "_ns",
    "_sec",
    "_secs",
    "_kilobytes",
    "_megabytes",
    "_gigabytes",
    "_kb",
    "_mb",
    "_gb",
    "_percent",
    "_counter",
    "_gauge",
    "_histogram",
    "_summary",
];

#[tokio::test]
async fn metrics_pass_prometheus_lint_rules() {
    // Every family with samples: a source that captured, attempts, a circuit that
    // opened, recorder and hand-off counts, and open deliveries in the store.
    let source = SourceStatus::new("shop", "postgres");
    source.note_takeover(1);
    source.set_state(SourceState::Running);
    source.note_batch(2, Some(Utc::now()));
    source.notice("renamed", "a watched collection was renamed".into());
    let api = TestApi::with(|state| {
        state.sources = SourcesReadiness::new(vec![source.clone()]);
    })
    .await;
    let sub = api
        .subscribe(json!({"url": "https://a.example.com/"}))
        .await;
    let sub = sub["id"].as_str().expect("id");
    let stats = &api.state.dispatch_stats;
    stats.attempt(sub, AttemptOutcome::Succeeded, Duration::from_millis(12));
    stats.attempt(sub, AttemptOutcome::Retrying, Duration::from_millis(40));
    stats.circuit_failed(sub, Some(Duration::from_secs(1)), Utc::now());
    stats.recorder_retries.fetch_add(1, Ordering::Relaxed);
    stats.claimed.fetch_add(1, Ordering::Relaxed);
    api.store()
        .commit_batch("shop", &[event(1, "orders.insert", Utc::now())], "1")
        .await
        .expect("commit");

    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .expect("request");
    let res = api.send(req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.content_type().starts_with("text/plain; version=0.0.4"),
        "{}",
        res.content_type()
    );
    let text = String::from_utf8(res.body).expect("utf-8");

    let mut help = BTreeMap::new();
    let mut kind = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name.to_owned(), h.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').expect("TYPE name type");
            kind.insert(name.to_owned(), t.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().expect("sample name");
            samples.push(name.to_owned());
        }
    }
    assert!(kind.len() > 10, "too few families: {text}");

    let mut problems = Vec::new();
    for (name, t) in &kind {
        if help.get(name).is_none_or(|h| h.trim().is_empty()) {
            problems.push(format!("{name}: no help text"));
        }
        if !name.starts_with("hookrelay_")
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            problems.push(format!("{name}: not a lower_snake_case hookrelay_ name"));
        }
        if (t == "counter") != name.ends_with("_total") {
            problems.push(format!("{name}: a {t} (only counters end in _total)"));
        }
        if t != "histogram" && t != "summary" {
            for reserved in ["_bucket", "_count", "_sum"] {
                if name.ends_with(reserved) {
                    problems.push(format!("{name}: a {t} ending in {reserved}"));
                }
            }
        }
        for part in REFUSED_PARTS {
            if name.ends_with(part) || name.contains(&format!("{part}_")) {
                problems.push(format!("{name}: contains {part}"));
            }
        }
    }
    for sample in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .into_iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find(|f| kind.get(*f).is_some_and(|t| t == "histogram"))
            .unwrap_or(sample);
        if !kind.contains_key(family) {
            problems.push(format!("sample {sample}: no TYPE or HELP for it"));
        }
    }
    assert!(problems.is_empty(), "{}\n\n{text}", problems.join("\n"));

    // Prometheus's linter itself, where it is installed (Debian's `prometheus`
    // package has it); elsewhere the rules above stand in for it.
    match run_with_stdin("promtool", &["check", "metrics"], text.as_bytes()) {
        Some((ok, said)) => assert!(ok, "promtool check metrics: {said}\n\n{text}"),
        None => eprintln!("promtool is not installed: its rules were checked above"),
    }
}

/// Runs `program` with `input` on stdin: (exit success, what it printed), or None
/// when the program is not there.
pub fn run_with_stdin(program: &str, args: &[&str], input: &[u8]) -> Option<(bool, String)> {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}
