//! The benchmark's workloads (docs/benchmarks.md). Each one runs against fresh databases and a fresh
//! hookrelay process, so figures never mix:
//!
//! ```text
//!  fresh dbs ─▶ receiver endpoints ─▶ hookrelay (child) ─▶ subscriptions (admin API)
//!     ─▶ CPU snapshot + RSS sampler ─▶ writers commit ─▶ wait: every event 2xx at
//!        every measured endpoint ─▶ CPU snapshot, store size ─▶ SIGTERM hookrelay
//! ```
//!
//! events/s is first commit → last 2xx; latency is the envelope's `committed_at` →
//! receipt (`committed_at` has millisecond precision, truncated, so latencies read up
//! to 1 ms high).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};

use crate::{
    ceiling,
    db::Databases,
    pg_activity::ActivitySampler,
    proc_stats::{self, CpuSnapshot, CpuSpent, RssSampler},
    receiver::{unix_us, Mode},
    relay::{RelayProcess, SourceKind},
    report::{Latency, WorkloadResult},
    store_work,
    writers::{self, Written},
    Ctx,
};

/// How long delivery may make no progress before a workload is declared stuck.
const STALL: Duration = Duration::from_secs(60);
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// What the writers do.
#[derive(Debug, Clone, Copy)]
enum Load {
    Batched {
        writers: usize,
        rows: u64,
        total: u64,
    },
    Rate {
        writers: usize,
        rate: f64,
        seconds: f64,
    },
    Max {
        writers: usize,
        seconds: f64,
    },
}

impl Load {
    fn writers(self) -> usize {
        match self {
            Load::Batched { writers, .. }
            | Load::Rate { writers, .. }
            | Load::Max { writers, .. } => writers,
        }
    }

    async fn drive(self, clients: &[Arc<tokio_postgres::Client>]) -> anyhow::Result<Written> {
        match self {
            Load::Batched { rows, total, .. } => writers::batched(clients, rows, total, 1).await,
            Load::Rate { rate, seconds, .. } => {
                writers::single_row_rate(clients, rate, Duration::from_secs_f64(seconds), 1).await
            }
            Load::Max { seconds, .. } => {
                writers::single_row_max(clients, Duration::from_secs_f64(seconds), 1).await
            }
        }
    }
}

/// One standard workload: `subs` subscriptions, writers, wait for every event at the
/// measured endpoints. `bad` scripts endpoint 0, which is then not measured.
struct Spec {
    id: &'static str,
    name: String,
    tag: &'static str,
    subs: usize,
    load: Load,
    bad: Option<Mode>,
    ceiling: Option<&'static str>,
    /// Subscriptions created beside the measured ones whose `event_types` never match
    /// (`other.*`): they must cost nothing.
    idle: usize,
    /// Subscriptions beside the measured ones that match every event by type but
    /// carry a row filter that is never true: each is evaluated for every event.
    filtered: usize,
}

/// A hookrelay with fresh databases and subscribed endpoints.
pub struct Setup {
    pub dbs: Databases,
    pub relay: RelayProcess,
}

async fn setup(ctx: &Ctx, tag: &str, subs: usize) -> anyhow::Result<Setup> {
    let dbs = Databases::fresh(&ctx.pg, ctx.explain_slow_ms).await?;
    let (setup, _) = start_on(ctx, dbs, SourceKind::Postgres, tag, &vec![ORDERS; subs]).await?;
    Ok(setup)
}

/// `orders.*`: every change of the bench's table.
pub const ORDERS: &[&str] = &["orders.*"];

/// hookrelay on `dbs` reading `kind` (`--store-sql` run once it migrated), and one
/// fresh receiver endpoint per entry of `event_types`, subscribed to those types; the
/// subscriptions' ids, in the endpoints' order.
pub async fn start_on(
    ctx: &Ctx,
    dbs: Databases,
    kind: SourceKind<'_>,
    tag: &str,
    event_types: &[&[&str]],
) -> anyhow::Result<(Setup, Vec<String>)> {
    let endpoints = ctx.receiver.reset(event_types.len())?;
    let relay =
        RelayProcess::start_reading(&ctx.bin, &dbs, kind, &ctx.dir, tag, &ctx.overrides).await?;
    if let Some(sql) = &ctx.store_sql {
        dbs.store()
            .await?
            .batch_execute(sql)
            .await
            .context("--store-sql")?;
    }
    let mut ids = Vec::with_capacity(endpoints.len());
    for (ep, types) in endpoints.iter().zip(event_types) {
        ids.push(
            relay
                .subscribe_to(&ep.url, &ep.secret, types, false)
                .await?,
        );
    }
    eprintln!(
        "  hookrelay pid {} ({} subscription{}); log {}/{tag}.log",
        relay.pid,
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        ctx.dir.display()
    );
    Ok((Setup { dbs, relay }, ids))
}

pub async fn run_standard(ctx: &Ctx, which: &str) -> WorkloadResult {
    let s = &ctx.sizes;
    let spec = match which {
        "1" => Spec {
            id: "1",
            name: "throughput: 4 writers x 100-row txns, 1 sub".into(),
            tag: "w1-throughput",
            subs: 1,
            load: Load::Batched {
                writers: 4,
                rows: 100,
                total: s.w1_events,
            },
            bad: None,
            ceiling: Some(ceiling::TRIGGER_BATCH),
            idle: 0,
            filtered: 0,
        },
        "2" => Spec {
            id: "2",
            name: format!("latency: 1-row commits at 1000/s x {:.0} s", s.w2_seconds),
            tag: "w2-latency",
            subs: 1,
            load: Load::Rate {
                writers: 4,
                rate: 1000.0,
                seconds: s.w2_seconds,
            },
            bad: None,
            ceiling: None,
            idle: 0,
            filtered: 0,
        },
        "3" => Spec {
            id: "3",
            name: format!("fan-out: {} events x 10 subs", s.w3_events),
            tag: "w3-fanout",
            subs: 10,
            load: Load::Batched {
                writers: 4,
                rows: 100,
                total: s.w3_events,
            },
            bad: None,
            ceiling: None,
            idle: 0,
            filtered: 0,
        },
        "4a" => Spec {
            id: "4a",
            name: format!("control: 10 healthy subs, {:.0}/s", s.w4_rate),
            tag: "w4a-control",
            subs: 10,
            load: Load::Rate {
                writers: 4,
                rate: s.w4_rate,
                seconds: s.w4_seconds,
            },
            bad: None,
            ceiling: None,
            idle: 0,
            filtered: 0,
        },
        "4b" => Spec {
            id: "4b",
            name: format!("bad neighbour: 9 healthy + 1 slow, {:.0}/s", s.w4_rate),
            tag: "w4b-bad-neighbour",
            subs: 10,
            load: Load::Rate {
                writers: 4,
                rate: s.w4_rate,
                seconds: s.w4_seconds,
            },
            bad: Some(Mode::SlowOrTimeout),
            ceiling: None,
            idle: 0,
            filtered: 0,
        },
        "7" => Spec {
            id: "7",
            name: format!("8 writers x 1-row commits, max, {:.0} s", s.w7_seconds),
            tag: "w7-single-row-max",
            subs: 1,
            load: Load::Max {
                writers: 8,
                seconds: s.w7_seconds,
            },
            bad: None,
            ceiling: Some(ceiling::TRIGGER_SINGLE),
            idle: 0,
            filtered: 0,
        },
        "8" => Spec {
            id: "8",
            name: format!(
                "idle: {} events x 10 subs beside {} idle subs",
                s.w3_events, s.w8_idle
            ),
            tag: "w8-idle",
            subs: 10,
            load: Load::Batched {
                writers: 4,
                rows: 100,
                total: s.w3_events,
            },
            bad: None,
            ceiling: None,
            idle: s.w8_idle,
            filtered: 0,
        },
        "9" => Spec {
            id: "9",
            name: format!("fan-out: {} events x {} subs", s.w9_events, s.w9_subs),
            tag: "w9-fanout-wide",
            subs: s.w9_subs,
            load: Load::Batched {
                writers: 4,
                rows: 100,
                total: s.w9_events,
            },
            bad: None,
            ceiling: None,
            idle: 0,
            filtered: 0,
        },
        "10" => Spec {
            id: "10",
            name: format!(
                "filters: {} events x 10 subs beside {} filtered subs",
                s.w3_events, s.w10_filtered
            ),
            tag: "w10-filtered",
            subs: 10,
            load: Load::Batched {
                writers: 4,
                rows: 100,
                total: s.w3_events,
            },
            bad: None,
            ceiling: None,
            idle: 0,
            filtered: s.w10_filtered,
        },
        other => return WorkloadResult::failed(other, "unknown", format!("no workload {other}")),
    };
    eprintln!("workload {}: {}", spec.id, spec.name);
    or_failed(spec.id, &spec.name, standard(ctx, &spec).await)
}

/// A workload's figures, or a record of why it failed (printed too).
pub fn or_failed(id: &str, name: &str, outcome: anyhow::Result<WorkloadResult>) -> WorkloadResult {
    outcome.unwrap_or_else(|e| {
        eprintln!("  FAILED: {e:#}");
        WorkloadResult::failed(id, name, format!("FAILED: {e:#}"))
    })
}

async fn standard(ctx: &Ctx, spec: &Spec) -> anyhow::Result<WorkloadResult> {
    let mut st = setup(ctx, spec.tag, spec.subs).await?;
    let admin = if spec.idle > 0 {
        Some(add_idle(&st.relay, &st.dbs, spec.idle).await?)
    } else {
        None
    };
    if spec.filtered > 0 {
        add_filtered(&st.relay, spec.filtered).await?;
    }
    let measured: Vec<usize> = match spec.bad {
        Some(mode) => {
            ctx.receiver.set_mode(0, mode)?;
            (1..spec.subs).collect()
        }
        None => (0..spec.subs).collect(),
    };
    let clients = writers::open(&st.dbs.source_url(), spec.load.writers()).await?;
    let probe = match store_work::Probe::begin(&st.dbs).await {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("  store work not measured: {e:#}");
            None
        }
    };
    let cpu0 = CpuSnapshot::take(Some(st.relay.pid));
    let window = Instant::now();
    let rss = RssSampler::start(st.relay.pid);
    // Workload 7 is always sampled: it reports the writers' lock waits that
    // hookrelay's trigger could cause on their commit path.
    let activity = if ctx.pg_activity || spec.id == "7" {
        Some(ActivitySampler::start(&ctx.pg).await?)
    } else {
        None
    };

    let written = spec.load.drive(&clients).await?;
    eprintln!(
        "  committed {} rows in {:.1} s ({:.0} rows/s); waiting for delivery",
        written.rows,
        written.seconds,
        written.rows_per_s()
    );
    wait_delivered(ctx, &mut st.relay, &measured, written.rows).await?;
    let cpu = CpuSpent::between(&cpu0, &CpuSnapshot::take(Some(st.relay.pid)), ctx.ticks);
    let cpu_window = window.elapsed().as_secs_f64();
    let peak = rss.finish().await;
    drop(clients);

    let mut r = WorkloadResult::new(spec.id, &spec.name);
    r.subscriptions = spec.subs + spec.idle + spec.filtered;
    fill(ctx, &mut r, &written, &measured, cpu, peak);
    if let Some(admin) = admin {
        r.note("idle_subscriptions", spec.idle);
        r.note("api_create_ms", admin.create);
        r.note("api_list_ms", admin.list);
        r.note("api_list_page_of_100_ms", admin.page);
        r.note("api_list_pages", admin.pages);
        r.note("store_mib_with_subscriptions_only", admin.store_mib);
        r.note("store_tables_with_subscriptions_only_kib", admin.tables_kib);
    }
    if measured.len() > 1 {
        per_subscription(ctx, &mut r, &measured, unix_us(written.started));
    }
    r.cpu_window_s = Some(cpu_window);
    if let Some(a) = activity {
        let all = a.finish(usize::MAX).await;
        if spec.id == "7" {
            writer_waits(&mut r, &all);
        }
        r.pg_activity = Some(all.into_iter().take(8).collect());
    }
    if let (Some(id), Some(eps)) = (spec.ceiling, r.events_per_s) {
        if let Some(c) = ctx.ceiling(id) {
            r.ceiling_fraction = Some(eps / c);
            r.ceiling = Some(id.into());
        }
    }
    if spec.id == "7" {
        if let Some(c) = ctx.ceiling(ceiling::TRIGGER_SINGLE) {
            r.note("writers_commits_per_s", written.commits_per_s().round());
            r.note(
                "writers_vs_trigger_only_pct",
                (written.commits_per_s() / c * 100.0).round(),
            );
        }
    }
    if spec.bad.is_some() {
        let bad = ctx.receiver.stats(0);
        r.note("bad_endpoint_requests", bad.requests);
        r.note("bad_endpoint_accepted", bad.received);
        r.note("bad_endpoint_of", written.rows);
        r.note("measured", "the 9 healthy endpoints");
    }
    finish(&mut st, &mut r, spec.bad.is_none()).await?;
    st.relay.stop(STOP_GRACE).await?;
    if let Some(p) = probe {
        match p.finish(&st.dbs, r.events).await {
            Ok(w) => r.store_work = Some(w),
            Err(e) => eprintln!("  store work not measured: {e:#}"),
        }
    }
    Ok(r)
}

/// Each subscription's own figures, so one starved while others are served shows:
/// the spread of the per-subscription p99 latency and of when each one got its last
/// delivery (s after the first commit).
fn per_subscription(ctx: &Ctx, r: &mut WorkloadResult, measured: &[usize], start_us: i64) {
    let mut p99 = Vec::with_capacity(measured.len());
    let mut done_s = Vec::with_capacity(measured.len());
    for &n in measured {
        if let Some(l) = Latency::from_us(ctx.receiver.latencies_us(&[n])) {
            p99.push((l.p99, n));
        }
        if let Some(last) = ctx.receiver.stats(n).last_arrival_us {
            done_s.push((last - start_us) as f64 / 1e6);
        }
    }
    p99.sort_by(|a, b| a.0.total_cmp(&b.0));
    done_s.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| -> Option<f64> {
        let n = v.len();
        (n > 0).then(|| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
    };
    let p99s: Vec<f64> = p99.iter().map(|x| x.0).collect();
    r.note(
        "per_subscription_p99_ms",
        serde_json::json!({
            "best": at(&p99s, 0.0),
            "median": at(&p99s, 0.5),
            "p90": at(&p99s, 0.9),
            "worst": at(&p99s, 1.0),
        }),
    );
    if let Some(&(_, worst)) = p99.last() {
        r.note("worst_subscription", worst);
    }
    r.note(
        "per_subscription_last_delivery_s",
        serde_json::json!({
            "first_done": at(&done_s, 0.0),
            "median": at(&done_s, 0.5),
            "last_done": at(&done_s, 1.0),
        }),
    );
}

/// How the admin API and the store fared with the idle subscriptions.
struct AdminLatency {
    create: Option<Latency>,
    /// The whole listing, unpaged.
    list: Option<Latency>,
    /// One page of 100, walking the whole listing; `None` from a hookrelay without
    /// paging.
    page: Option<Latency>,
    pages: usize,
    /// The store's tables holding the subscriptions (before any event).
    store_mib: f64,
    tables_kib: serde_json::Map<String, serde_json::Value>,
}

/// Creates `n` subscriptions that never match (`other.*`) over the admin API, 8 at a
/// time, then lists them 10 times whole and once by pages of 100, and measures the
/// store's tables; the latency of each call.
async fn add_idle(relay: &RelayProcess, dbs: &Databases, n: usize) -> anyhow::Result<AdminLatency> {
    const AT_ONCE: usize = 8;
    let t = Instant::now();
    let mut create_us = Vec::with_capacity(n);
    let secret = "whsec_aWRsZS1zdWJzY3JpcHRpb24tc2VjcmV0LTMyYnl0ZXM=";
    for chunk in (0..n).collect::<Vec<_>>().chunks(AT_ONCE) {
        let calls = chunk.iter().map(|i| async move {
            let url = format!("http://127.0.0.1:9/idle/{i}");
            let t = Instant::now();
            // `other` is no configured table: forced, as they must never match.
            relay.subscribe_to(&url, secret, &["other.*"], true).await?;
            anyhow::Ok(t.elapsed().as_micros() as i64)
        });
        for us in futures_util::future::join_all(calls).await {
            create_us.push(us?);
        }
    }
    let mut list_us = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let listed = relay.list_subscriptions().await?;
        list_us.push(t.elapsed().as_micros() as i64);
        if listed < n {
            bail!("GET /v1/subscriptions listed {listed} of at least {n}");
        }
    }
    let mut page_us = Vec::new();
    let mut cursor: Option<String> = None;
    let mut paged = 0;
    loop {
        let t = Instant::now();
        let (got, next) = relay
            .list_subscriptions_page(100, cursor.as_deref())
            .await?;
        let Some(next) = next else {
            eprintln!("  this hookrelay does not page GET /v1/subscriptions");
            page_us.clear();
            break;
        };
        page_us.push(t.elapsed().as_micros() as i64);
        paged += got;
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if !page_us.is_empty() && paged < n {
        bail!("GET /v1/subscriptions?limit=100 paged through {paged} of at least {n}");
    }
    let tables = dbs.schema_tables().await?;
    let store_mib = tables.iter().map(|t| t.1).sum::<i64>() as f64 / 1048576.0;
    let tables_kib = tables
        .iter()
        .filter(|t| t.0.starts_with("subscription"))
        .map(|(name, bytes)| (name.clone(), (bytes / 1024).into()))
        .collect();
    eprintln!(
        "  created {n} idle subscriptions in {:.1} s; store {store_mib:.1} MiB",
        t.elapsed().as_secs_f64()
    );
    Ok(AdminLatency {
        create: Latency::from_us(create_us),
        list: Latency::from_us(list_us),
        pages: page_us.len(),
        page: Latency::from_us(page_us),
        store_mib,
        tables_kib,
    })
}

/// Creates `n` subscriptions to every `orders` change whose filter is never true
/// (`after.id < 0` on a serial key, a delete's null `after` failing it too): each is a
/// candidate for every event and its filter runs for each, but none gets a delivery.
async fn add_filtered(relay: &RelayProcess, n: usize) -> anyhow::Result<()> {
    const AT_ONCE: usize = 8;
    let t = Instant::now();
    let secret = "whsec_aWRsZS1zdWJzY3JpcHRpb24tc2VjcmV0LTMyYnl0ZXM=";
    for chunk in (0..n).collect::<Vec<_>>().chunks(AT_ONCE) {
        let calls = chunk.iter().map(|i| async move {
            let url = format!("http://127.0.0.1:9/filtered/{i}");
            relay.subscribe_filtered(&url, secret, "after.id < 0").await
        });
        for created in futures_util::future::join_all(calls).await {
            created?;
        }
    }
    eprintln!(
        "  created {n} filtered subscriptions in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Workload 5: the endpoint hangs (accepts, never answers; hookrelay times out after
/// 5 s) while the writers commit the backlog; once every event is in the store the
/// endpoint comes up and the drain is timed.
pub async fn run_backlog(ctx: &Ctx) -> WorkloadResult {
    let name = format!(
        "backlog: {} events while down, then drain",
        ctx.sizes.w5_events
    );
    eprintln!("workload 5: {name}");
    or_failed("5", &name, backlog(ctx, &name).await)
}

async fn backlog(ctx: &Ctx, name: &str) -> anyhow::Result<WorkloadResult> {
    let total = ctx.sizes.w5_events;
    let mut st = setup(ctx, "w5-backlog", 1).await?;
    ctx.receiver.set_mode(0, Mode::Hang)?;
    let clients = writers::open(&st.dbs.source_url(), 4).await?;
    let cpu0 = CpuSnapshot::take(Some(st.relay.pid));
    let window = Instant::now();
    let rss = RssSampler::start(st.relay.pid);
    let activity = start_activity(ctx).await?;
    let written = writers::batched(&clients, 100, total, 1).await?;

    // Backlog: wait until every event is in the store and the journal is empty.
    let clock = Instant::now();
    let mut last = (-1, Instant::now());
    loop {
        st.relay.check_alive()?;
        let stored = st.dbs.stored_events().await?;
        if stored >= total as i64 && st.dbs.journal_rows().await? == 0 {
            break;
        }
        if stored != last.0 {
            last = (stored, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!("capture stalled at {stored} of {total} events in the store");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let capture_s = written.seconds + clock.elapsed().as_secs_f64();
    let backlog_store = st.dbs.store_size().await?;
    // Let it sit on the backlog a moment so the sampler sees the resting footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let backlog_rss = rss.peak_mib();
    let down = ctx.receiver.stats(0);
    eprintln!(
        "  {total} events stored in {capture_s:.1} s with the endpoint down; peak RSS {backlog_rss:.1} MiB; endpoint up"
    );

    rss.reset();
    let up_at = unix_us(SystemTime::now());
    ctx.receiver.set_mode(0, Mode::Ok)?;
    wait_delivered(ctx, &mut st.relay, &[0], total).await?;
    let cpu = CpuSpent::between(&cpu0, &CpuSnapshot::take(Some(st.relay.pid)), ctx.ticks);
    let cpu_window = window.elapsed().as_secs_f64();
    let drain_rss = rss.finish().await;
    drop(clients);

    let mut r = WorkloadResult::new("5", name);
    r.subscriptions = 1;
    fill(ctx, &mut r, &written, &[0], cpu, drain_rss.max(backlog_rss));
    r.cpu_window_s = Some(cpu_window);
    if let Some(a) = activity {
        r.pg_activity = Some(a.finish(8).await);
    }
    // Latency here is mostly time spent down; the drain is the figure.
    r.latency_ms = None;
    r.capture_latency_ms = None;
    let mut arrivals = ctx.receiver.arrivals_us(&[0]);
    arrivals.sort_unstable();
    if let Some(&last_us) = arrivals.last() {
        let drain_s = (last_us - up_at) as f64 / 1e6;
        let i99 = ((arrivals.len() as f64 * 0.99).ceil() as usize).clamp(1, arrivals.len()) - 1;
        let drain99_s = (arrivals[i99] - up_at) as f64 / 1e6;
        r.events_per_s = Some(total as f64 / drain_s.max(1e-9));
        r.seconds = Some(drain_s);
        r.note("drain_events_per_s", (total as f64 / drain_s).round());
        r.note("drain_s", drain_s);
        r.note("drain_to_99pct_s", drain99_s);
        r.note(
            "drain_99pct_events_per_s",
            (0.99 * total as f64 / drain99_s.max(1e-9)).round(),
        );
    }
    r.note("events_per_s_means", "drain rate (endpoint up → last 2xx)");
    r.note("capture_while_down_s", capture_s);
    r.note("peak_rss_mib_while_down", backlog_rss);
    r.note("peak_rss_mib_draining", drain_rss);
    r.note("accepted_while_down", down.received);
    r.note("requests_while_down", down.requests);
    r.note(
        "store_mib_with_backlog",
        backlog_store.tables_bytes as f64 / 1048576.0,
    );
    finish(&mut st, &mut r, true).await?;
    st.relay.stop(STOP_GRACE).await?;
    Ok(r)
}

/// What the writers (the source database's active backends) waited on, as average
/// backends, and the part of it on locks the capture trigger takes: its shared
/// advisory lock (`Lock:advisory`, against the reader's exclusive one) and
/// `pg_notify`'s commit-time lock and queue (`Lock:object`, `LWLock:Notify*`). WAL
/// writes and flushes are the commit itself, with or without hookrelay.
fn writer_waits(r: &mut WorkloadResult, all: &[crate::pg_activity::ActivityEntry]) {
    let mut waits: std::collections::BTreeMap<&str, f64> = Default::default();
    for e in all.iter().filter(|e| e.db == "source") {
        *waits.entry(e.wait.as_str()).or_default() += e.avg_active;
    }
    let hookrelay: f64 = waits
        .iter()
        .filter(|(w, _)| {
            **w == "Lock:advisory" || **w == "Lock:object" || w.starts_with("LWLock:Notify")
        })
        .map(|(_, n)| n)
        .sum();
    let round = |n: f64| (n * 1000.0).round() / 1000.0;
    let rounded: std::collections::BTreeMap<&str, f64> =
        waits.iter().map(|(w, n)| (*w, round(*n))).collect();
    r.note("writers_waits_avg_backends", serde_json::json!(rounded));
    r.note(
        "writers_hookrelay_lock_waits_avg_backends",
        round(hookrelay),
    );
}

async fn start_activity(ctx: &Ctx) -> anyhow::Result<Option<ActivitySampler>> {
    if ctx.pg_activity {
        Ok(Some(ActivitySampler::start(&ctx.pg).await?))
    } else {
        Ok(None)
    }
}

/// Polls the receiver until every measured endpoint has `expected` distinct events.
pub async fn wait_delivered(
    ctx: &Ctx,
    relay: &mut RelayProcess,
    endpoints: &[usize],
    expected: u64,
) -> anyhow::Result<()> {
    let want = expected * endpoints.len() as u64;
    let mut last = (0u64, Instant::now());
    let mut report = Instant::now();
    loop {
        let got: u64 = endpoints.iter().map(|&n| ctx.receiver.received(n)).sum();
        if got >= want {
            return Ok(());
        }
        relay.check_alive()?;
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!(
                "delivery stalled: {got} of {want} deliveries after {} s without progress",
                STALL.as_secs()
            );
        }
        if report.elapsed() > Duration::from_secs(10) {
            eprintln!("  … {got} of {want} delivered");
            report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The figures every workload shares.
pub fn fill(
    ctx: &Ctx,
    r: &mut WorkloadResult,
    written: &Written,
    measured: &[usize],
    cpu: CpuSpent,
    peak_rss: f64,
) {
    r.events = written.rows;
    let stats: Vec<_> = measured.iter().map(|&n| ctx.receiver.stats(n)).collect();
    r.delivered = stats.iter().map(|s| s.received).sum();
    r.duplicates = stats.iter().map(|s| s.duplicates).sum();
    r.bad_signatures = stats.iter().map(|s| s.bad_signatures + s.bad_bodies).sum();
    r.note("requests", stats.iter().map(|s| s.requests).sum::<u64>());
    let last = stats.iter().filter_map(|s| s.last_arrival_us).max();
    if let Some(last) = last {
        let secs = (last - unix_us(written.started)) as f64 / 1e6;
        r.seconds = Some(secs);
        r.events_per_s = Some(written.rows as f64 / secs.max(1e-9));
        r.deliveries_per_s = Some(r.delivered as f64 / secs.max(1e-9));
    }
    r.latency_ms = Latency::from_us(ctx.receiver.latencies_us(measured));
    r.capture_latency_ms = Latency::from_us(ctx.receiver.capture_us(measured));
    let (bucket_s, rates) = timeline(
        &ctx.receiver.arrivals_us(measured),
        unix_us(written.started),
        20,
    );
    r.note(
        &format!("deliveries_per_s_each_{bucket_s}s"),
        rates.iter().map(|x| x.round()).collect::<Vec<_>>(),
    );
    r.peak_rss_mib = Some(peak_rss);
    r.hookrelay_cpu_s_per_10k_events = Some(cpu.hookrelay_s * 10_000.0 / written.rows as f64);
    r.cpu = Some(cpu);
    r.writers = Some(written.clone());
}

/// Store size and the process's high-water mark, after the outcomes are recorded.
pub async fn finish(
    st: &mut Setup,
    r: &mut WorkloadResult,
    all_delivered: bool,
) -> anyhow::Result<()> {
    if all_delivered {
        // Outcomes are written in batches just after the 2xx; wait for the last ones.
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = st.dbs.store().await?;
        while open_deliveries(&store).await? > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, hwm) = proc_stats::memory_kib(st.relay.pid)?;
    r.hwm_rss_mib = Some(hwm as f64 / 1024.0);
    let size = st.dbs.store_size().await?;
    r.store_mib_per_10k_events =
        Some(size.tables_bytes as f64 / 1048576.0 * 10_000.0 / r.events.max(1) as f64);
    r.store = Some(size);
    let c = st.dbs.store().await?;
    let rows = c
        .query(
            "select status, count(*) from hookrelay.deliveries group by status order by status",
            &[],
        )
        .await
        .context("counting deliveries")?;
    let by_status: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1).into()))
        .collect();
    r.note("deliveries", by_status);
    let attempts: i64 = c
        .query_one("select count(*) from hookrelay.attempts", &[])
        .await?
        .get(0);
    r.note("attempts", attempts);
    Ok(())
}

/// Delivery rate over time: arrivals counted in at most `max_buckets` buckets of
/// whole seconds from `start_us`; (bucket seconds, deliveries/s per bucket).
pub fn timeline(arrivals_us: &[i64], start_us: i64, max_buckets: usize) -> (u64, Vec<f64>) {
    let Some(&last) = arrivals_us.iter().max() else {
        return (1, Vec::new());
    };
    let span_s = ((last - start_us).max(0) as f64 / 1e6).ceil() as u64;
    let bucket_s = span_s.div_ceil(max_buckets as u64).max(1);
    let mut counts =
        vec![0u64; ((last - start_us).max(0) as u64 / 1_000_000 / bucket_s) as usize + 1];
    for &a in arrivals_us {
        let i = ((a - start_us).max(0) as u64 / 1_000_000 / bucket_s) as usize;
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    let rates = counts.iter().map(|&c| c as f64 / bucket_s as f64).collect();
    (bucket_s, rates)
}

/// Deliveries not yet settled (pending or retrying), on the caller's store connection.
pub async fn open_deliveries(store: &tokio_postgres::Client) -> anyhow::Result<i64> {
    let row = store
        .query_one(
            "select count(*) from hookrelay.deliveries where status in ('pending', 'retrying')",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_buckets_whole_seconds() {
        let s = 1_000_000_000;
        let arrivals = [s + 100, s + 900_000, s + 1_500_000, s + 3_999_999];
        assert_eq!(timeline(&arrivals, s, 20), (1, vec![2.0, 1.0, 0.0, 1.0]));
        let (bucket, rates) = timeline(&arrivals, s, 2);
        assert_eq!((bucket, rates), (2, vec![1.5, 0.5]));
        assert_eq!(timeline(&[], s, 20), (1, vec![]));
    }
}
