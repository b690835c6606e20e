//! Workload 11: a backfill of a large table while live changes flow, on a PostgreSQL
//! source, in one run and one hookrelay process.
//!
//! ```text
//!  public.customers: N rows, one INSERT … SELECT generate_series before hookrelay
//!  starts (not journalled: only the backfill sends them)
//!  hookrelay watches public.orders and public.customers
//!    endpoint 0 ◀── orders.*      (live: single-row inserts into orders, 200/s)
//!    endpoint 1 ◀── customers.*   (the backfill's subscriber)
//!
//!  phase A: the live writer alone ─────────────┐ live latency before
//!  phase B: POST …/backfill of public.customers │ live latency during, backfill
//!           for endpoint 1, the writer still    │ rows/s, peak RSS
//!           going, until GET /v1/backfills/{id} │
//!           says completed and endpoint 1 has   │
//!           every row as a read event ──────────┘
//!  then the writer stops and its last events are awaited
//! ```
//!
//! Two rates: "read by the source" is the backfill's `created_at` → `ended_at` (the
//! API's request to the last chunk committed to the store); "delivered" is the start
//! request → the last read event received. Live latency is split by commit time:
//! before the start request, and from it to the last read event received. The check is
//! exact because the live writer never touches `customers`: endpoint 1 must hold
//! exactly N distinct read events, and endpoint 0 none.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::bail;

use crate::{
    db::Databases,
    proc_stats::{CpuSnapshot, CpuSpent, RssSampler},
    receiver::unix_us,
    relay::{BackfillStatus, SourceKind},
    report::{Latency, WorkloadResult},
    workloads::{self, Setup},
    writers, Ctx,
};

/// The live writer's commits per second, in both phases (workload 4's rate).
const LIVE_RATE: f64 = 200.0;
const LIVE: usize = 0;
const BACKFILLED: usize = 1;
const TABLE: &str = "public.customers";
/// How long the backfill may make no progress (rows read or delivered).
const STALL: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(15);

pub async fn run(ctx: &Ctx) -> WorkloadResult {
    let name = format!(
        "backfill: {} rows beside {LIVE_RATE:.0} commits/s",
        ctx.sizes.w11_rows
    );
    eprintln!("workload 11: {name}");
    workloads::or_failed("11", &name, workload(ctx, &name).await)
}

async fn workload(ctx: &Ctx, name: &str) -> anyhow::Result<WorkloadResult> {
    let rows = ctx.sizes.w11_rows;
    let dbs = Databases::fresh(&ctx.pg, ctx.explain_slow_ms).await?;
    let fill = Instant::now();
    dbs.fill_customers(rows).await?;
    eprintln!(
        "  {TABLE}: {rows} rows in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let (mut st, subs) = workloads::start_on(
        ctx,
        dbs,
        SourceKind::PostgresTables(&["public.orders", TABLE]),
        "w11-backfill",
        &[&["orders.*"], &["customers.*"]],
    )
    .await?;

    let clients = writers::open(&st.dbs.source_url(), 4).await?;
    let rss = RssSampler::start(st.relay.pid);
    let stop = Arc::new(AtomicBool::new(false));
    let phase_a_us = unix_us(SystemTime::now());
    let live = {
        let (clients, stop) = (clients.clone(), stop.clone());
        tokio::spawn(
            async move { writers::single_row_rate_until(&clients, LIVE_RATE, stop, 1).await },
        )
    };
    let phases = async {
        tokio::time::sleep(Duration::from_secs_f64(ctx.sizes.w11_seconds)).await;
        let rss_before = rss.peak_mib();
        rss.reset();
        let cpu0 = CpuSnapshot::take(Some(st.relay.pid));
        let window = Instant::now();
        let start_us = unix_us(SystemTime::now());
        let id = st.relay.start_backfill(&subs[BACKFILLED], &[TABLE]).await?;
        eprintln!(
            "  live writer alone for {:.0} s; backfill {id} started",
            ctx.sizes.w11_seconds
        );
        let status = wait_backfilled(ctx, &mut st, &id, rows).await?;
        let cpu = CpuSpent::between(&cpu0, &CpuSnapshot::take(Some(st.relay.pid)), ctx.ticks);
        anyhow::Ok((
            status,
            start_us,
            rss_before,
            cpu,
            window.elapsed().as_secs_f64(),
        ))
    }
    .await;
    // Whatever became of the backfill, the live writer stops here.
    stop.store(true, Ordering::Relaxed);
    let written = live.await??;
    let rss_during = rss.finish().await;
    let (status, start_us, rss_before, cpu, cpu_window) = phases?;
    workloads::wait_delivered(ctx, &mut st.relay, &[LIVE], written.rows).await?;
    drop(clients);

    let live_stats = ctx.receiver.stats(LIVE);
    let read_stats = ctx.receiver.stats(BACKFILLED);
    let done_us = read_stats.last_arrival_us.unwrap_or(start_us);
    let delivered_s = (done_us - start_us) as f64 / 1e6;
    let read_s = status
        .ended_at
        .map(|end| (end - status.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6);
    let per_s = |s: f64| (rows as f64 / s.max(1e-9)).round();
    let phase = |from_us, to_us| {
        let (latency, capture) = ctx.receiver.latencies_committed_in(LIVE, (from_us, to_us));
        (Latency::from_us(latency), Latency::from_us(capture))
    };
    let (before, capture_before) = phase(phase_a_us, start_us);
    let (during, capture_during) = phase(start_us, done_us);
    let check = if read_stats.reads == rows
        && read_stats.received == rows
        && live_stats.reads == 0
        && live_stats.received == written.rows
    {
        "ok".to_owned()
    } else {
        format!(
            "FAILED: {} distinct read events (of {} events) for {rows} rows; \
             {} read events and {} events at the live subscription for {} commits",
            read_stats.reads,
            read_stats.received,
            live_stats.reads,
            live_stats.received,
            written.rows
        )
    };

    let pair =
        |l: Option<Latency>| l.map_or("-".into(), |l| format!("{:.1} / {:.1}", l.p50, l.p99));
    eprintln!(
        "  backfill: {rows} rows read by the source in {} ({} rows/s); delivered in {delivered_s:.1} s ({:.0} rows/s)",
        read_s.map_or("-".into(), |s| format!("{s:.1} s")),
        read_s.map_or("-".into(), |s| format!("{:.0}", per_s(s))),
        per_s(delivered_s)
    );
    eprintln!(
        "  live latency p50 / p99: {} ms before, {} ms during the backfill \
         (commit→captured: {} ms before, {} ms during)",
        pair(before),
        pair(during),
        pair(capture_before),
        pair(capture_during)
    );
    eprintln!("  peak RSS: {rss_before:.1} MiB before, {rss_during:.1} MiB during the backfill");
    eprintln!("  check: {check}");

    let mut r = WorkloadResult::new("11", name);
    r.subscriptions = 2;
    r.events = rows;
    r.delivered = read_stats.received;
    r.duplicates = read_stats.duplicates + live_stats.duplicates;
    r.bad_signatures = [&read_stats, &live_stats]
        .iter()
        .map(|s| s.bad_signatures + s.bad_bodies)
        .sum();
    r.seconds = Some(delivered_s);
    r.events_per_s = Some(per_s(delivered_s));
    r.latency_ms = during;
    r.capture_latency_ms = capture_during;
    r.peak_rss_mib = Some(rss_during);
    r.hookrelay_cpu_s_per_10k_events = Some(cpu.hookrelay_s * 10_000.0 / rows as f64);
    r.cpu = Some(cpu);
    r.cpu_window_s = Some(cpu_window);
    r.writers = Some(written.clone());
    r.note(
        "events_per_s_means",
        "backfill rows delivered per s (start request → last read event received)",
    );
    r.note(
        "latency_means",
        "the live changes committed during the backfill",
    );
    r.note("check", &check);
    r.note("backfill_rows_reported", status.rows);
    r.note("backfill_read_s", read_s);
    r.note("backfill_read_rows_per_s", read_s.map(per_s));
    r.note("backfill_delivered_s", delivered_s);
    r.note("backfill_delivered_rows_per_s", per_s(delivered_s));
    r.note("live_commits", written.rows);
    r.note("live_latency_ms_before", before);
    r.note("live_latency_ms_during", during);
    r.note("live_captured_ms_before", capture_before);
    r.note("live_captured_ms_during", capture_during);
    r.note(
        "read_to_receipt_ms",
        Latency::from_us(ctx.receiver.latencies_us(&[BACKFILLED])),
    );
    r.note("peak_rss_mib_before", rss_before);
    r.note("peak_rss_mib_during", rss_during);
    let (bucket_s, rates) =
        workloads::timeline(&ctx.receiver.arrivals_us(&[BACKFILLED]), start_us, 20);
    r.note(
        &format!("read_deliveries_per_s_each_{bucket_s}s"),
        rates.iter().map(|x| x.round()).collect::<Vec<_>>(),
    );
    workloads::finish(&mut st, &mut r, true).await?;
    st.relay.stop(STOP_GRACE).await?;
    Ok(r)
}

/// Polls the backfill until it is completed and endpoint 1 has `rows` distinct
/// events; fails if it failed, was cancelled or stalled.
async fn wait_backfilled(
    ctx: &Ctx,
    st: &mut Setup,
    id: &str,
    rows: u64,
) -> anyhow::Result<BackfillStatus> {
    let mut last = ((0, 0), Instant::now());
    let mut report = Instant::now();
    loop {
        st.relay.check_alive()?;
        let status = st.relay.backfill(id).await?;
        let got = ctx.receiver.received(BACKFILLED);
        match status.state.as_str() {
            "completed" if got >= rows => return Ok(status),
            "completed" | "running" => {}
            other => bail!(
                "backfill {id} {other}: {}",
                status.error.as_deref().unwrap_or("no error given")
            ),
        }
        let progress = (status.rows, got);
        if progress != last.0 {
            last = (progress, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!(
                "backfill stalled: {} rows read, {got} of {rows} delivered, {} s without progress",
                status.rows,
                STALL.as_secs()
            );
        }
        if report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  … backfill {}: {} rows read, {got} delivered",
                status.state, status.rows
            );
            report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
