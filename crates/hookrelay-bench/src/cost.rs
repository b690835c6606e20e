//! Workload 12, the pipeline's own cost: WAL bytes and CPU per event (12a, one
//! subscription) and per delivery (12b, ten), beyond what the writes themselves cost,
//! measured from outside:
//!
//! ```text
//!  fresh dbs ─▶ hookrelay + subscriptions ─▶ stop hookrelay
//!  baseline: CHECKPOINT ─▶ LSN, CPU ─▶ N rows in 100-row txns (trigger in place,
//!            hookrelay stopped) ─▶ LSN, CPU
//!  hookrelay again ─▶ it delivers that backlog, every outcome recorded (not measured)
//!  pipeline: CHECKPOINT ─▶ LSN, CPU ─▶ the same N rows again ─▶ every delivery received
//!            and none open in the store ─▶ LSN, CPU
//!  cost = (pipeline − baseline) / (N × subscriptions)
//! ```
//!
//! WAL is the server's `pg_current_wal_lsn()` difference. CPU is utime + stime +
//! cutime + cstime of every `postgres` process (a backend that exits counts on in the
//! postmaster's), of hookrelay (pipeline only) and of the writer; the receiver is not
//! counted. Both are server- and machine-wide, so other work on the server shows in
//! them: the "other" CPU of each window says how much ran beside.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use crate::{
    db::{self, Databases},
    proc_stats::{self, CpuSnapshot, CpuSpent},
    relay::{RelayProcess, SourceKind},
    report::WorkloadResult,
    workloads::{self, Setup},
    writers::{self, Written},
    Ctx,
};

/// Rows per transaction, as workload 1's writers.
const ROWS_PER_TXN: u64 = 100;
/// How long outcomes may take to be recorded once every delivery was received.
const SETTLE: Duration = Duration::from_secs(30);

/// What one window (baseline or pipeline) cost.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CostWindow {
    /// First write → last write (baseline) or → every outcome recorded (pipeline).
    pub seconds: f64,
    /// `pg_current_wal_lsn()` difference: every database on the server.
    pub wal_bytes: i64,
    /// Every `postgres` process, with the backends that exited meanwhile.
    pub postgres_cpu_s: f64,
    pub hookrelay_cpu_s: f64,
    /// The writer's thread in this process (client side of the writes).
    pub writer_cpu_s: f64,
    /// Who else was busy meanwhile (`other_s`: work that is not the bench's).
    pub attribution: CpuSpent,
}

impl CostWindow {
    pub fn cpu_s(&self) -> f64 {
        self.postgres_cpu_s + self.hookrelay_cpu_s + self.writer_cpu_s
    }
}

/// The pipeline's cost beyond the writes, per event (one subscription) or per
/// delivery.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineCost {
    pub subscriptions: usize,
    pub events: u64,
    /// events × subscriptions: what the differences are divided by.
    pub units: u64,
    pub baseline: CostWindow,
    pub pipeline: CostWindow,
    pub wal_bytes_per_unit: f64,
    pub cpu_us_per_unit: f64,
}

/// Workload 12a (one subscription, per event) and 12b (ten, per delivery).
pub async fn run(ctx: &Ctx) -> Vec<WorkloadResult> {
    let s = &ctx.sizes;
    let mut out = Vec::new();
    for (id, subs, events, per) in [
        ("12a", 1, s.w12_events_one, "event"),
        ("12b", 10, s.w12_events_ten, "delivery"),
    ] {
        let name = format!(
            "cost: {events} events x {subs} sub{}, per {per}",
            if subs == 1 { "" } else { "s" }
        );
        eprintln!("workload {id}: {name}");
        let tag = format!("w{id}-cost");
        out.push(workloads::or_failed(
            id,
            &name,
            case(ctx, id, &name, &tag, subs, events).await,
        ));
    }
    out
}

async fn case(
    ctx: &Ctx,
    id: &str,
    name: &str,
    tag: &str,
    subs: usize,
    events: u64,
) -> anyhow::Result<WorkloadResult> {
    let dbs = Databases::fresh(&ctx.pg, ctx.explain_slow_ms).await?;
    let (Setup { dbs, relay }, _) = workloads::start_on(
        ctx,
        dbs,
        SourceKind::Postgres,
        tag,
        &vec![workloads::ORDERS; subs],
    )
    .await?;
    relay.stop(workloads::STOP_GRACE).await?;
    // Connections held for the whole case: a backend started or ended inside a window
    // would count its own start-up and exit.
    let admin = db::connect(&format!("{}/postgres", ctx.pg)).await?;
    let store = dbs.store().await?;
    let writer = Writer::open(dbs.source_url(), ctx.ticks)?;
    let endpoints: Vec<usize> = (0..subs).collect();

    let baseline = {
        let w = Window::open(&admin, None).await?;
        let (written, writer_s) = writer.write(1, events).await?;
        eprintln!(
            "  baseline: {} rows in {:.1} s with hookrelay stopped",
            written.rows, written.seconds
        );
        w.close(ctx, &admin, None, writer_s).await?
    };

    let mut relay = RelayProcess::start(
        &ctx.bin,
        &dbs,
        &ctx.dir,
        &format!("{tag}-2"),
        &ctx.overrides,
    )
    .await?;
    workloads::wait_delivered(ctx, &mut relay, &endpoints, events).await?;
    settle(&store).await?;
    eprintln!(
        "  hookrelay pid {} delivered the baseline's rows",
        relay.pid
    );

    let w = Window::open(&admin, Some(relay.pid)).await?;
    let (written, writer_s) = writer.write(events as i64 + 1, events).await?;
    workloads::wait_delivered(ctx, &mut relay, &endpoints, 2 * events).await?;
    settle(&store).await?;
    let pipeline = w.close(ctx, &admin, Some(relay.pid), writer_s).await?;
    relay.stop(workloads::STOP_GRACE).await?;

    let units = events * subs as u64;
    let cost = PipelineCost {
        subscriptions: subs,
        events,
        units,
        baseline,
        pipeline,
        wal_bytes_per_unit: (pipeline.wal_bytes - baseline.wal_bytes) as f64 / units as f64,
        cpu_us_per_unit: (pipeline.cpu_s() - baseline.cpu_s()) * 1e6 / units as f64,
    };
    eprintln!(
        "  {:.0} B WAL and {:.0} µs CPU per {} beyond the writes",
        cost.wal_bytes_per_unit,
        cost.cpu_us_per_unit,
        if subs == 1 { "event" } else { "delivery" }
    );

    let mut r = WorkloadResult::new(id, name);
    r.subscriptions = subs;
    r.events = events;
    r.delivered = endpoints.iter().map(|&n| ctx.receiver.received(n)).sum();
    r.duplicates = endpoints
        .iter()
        .map(|&n| ctx.receiver.stats(n).duplicates)
        .sum();
    r.seconds = Some(pipeline.seconds);
    r.cpu = Some(pipeline.attribution);
    r.cpu_window_s = Some(pipeline.seconds);
    r.writers = Some(written);
    r.pipeline_cost = Some(cost);
    Ok(r)
}

/// Waits until the store has recorded every outcome: no delivery pending or retrying.
async fn settle(store: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let open = workloads::open_deliveries(store).await?;
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{open} deliveries still open {} s after every one was received",
                SETTLE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The counters at the start of a window.
struct Window {
    clock: Instant,
    lsn: String,
    postgres: u64,
    hookrelay: u64,
    snapshot: CpuSnapshot,
}

impl Window {
    /// CHECKPOINT first, so both windows start with the same full-page-image state.
    async fn open(admin: &Client, hookrelay: Option<u32>) -> anyhow::Result<Self> {
        admin
            .batch_execute("checkpoint")
            .await
            .context("checkpoint")?;
        let lsn: String = admin
            .query_one("select pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        Ok(Self {
            postgres: proc_stats::all_postgres_ticks(),
            hookrelay: hookrelay
                .and_then(proc_stats::ticks_with_children)
                .unwrap_or(0),
            snapshot: CpuSnapshot::take(hookrelay),
            clock: Instant::now(),
            lsn,
        })
    }

    async fn close(
        self,
        ctx: &Ctx,
        admin: &Client,
        hookrelay: Option<u32>,
        writer_cpu_s: f64,
    ) -> anyhow::Result<CostWindow> {
        let seconds = self.clock.elapsed().as_secs_f64();
        let postgres = proc_stats::all_postgres_ticks();
        let relay = hookrelay
            .and_then(proc_stats::ticks_with_children)
            .unwrap_or(0);
        let snapshot = CpuSnapshot::take(hookrelay);
        let wal_bytes: i64 = admin
            .query_one(
                "select (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint",
                &[&self.lsn],
            )
            .await?
            .get(0);
        let s = |a: u64, b: u64| b.saturating_sub(a) as f64 / ctx.ticks;
        Ok(CostWindow {
            seconds,
            wal_bytes,
            postgres_cpu_s: s(self.postgres, postgres),
            hookrelay_cpu_s: s(self.hookrelay, relay),
            writer_cpu_s,
            attribution: CpuSpent::between(&self.snapshot, &snapshot, ctx.ticks),
        })
    }
}

type Job = (i64, u64, oneshot::Sender<anyhow::Result<(Written, f64)>>);

/// One connection on a thread of its own for every write of a case: one backend
/// serves them all, and the thread's CPU is the writer's alone, apart from the
/// receiver's in this process.
struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    fn open(url: String, ticks: f64) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the writer's runtime")?;
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("cost-writer".into())
            .spawn(move || {
                rt.block_on(async move {
                    // The connection's task is spawned here too, on this thread.
                    let client = db::connect(&url).await.map(std::sync::Arc::new);
                    while let Some((first_id, rows, reply)) = rx.recv().await {
                        let result = match &client {
                            Ok(c) => timed_write(c.clone(), first_id, rows, ticks).await,
                            Err(e) => Err(anyhow::anyhow!("writer connection: {e:#}")),
                        };
                        let _ = reply.send(result);
                    }
                })
            })
            .context("starting the writer thread")?;
        Ok(Self { jobs })
    }

    /// `rows` rows from id `first_id`; what was written and the writer's CPU seconds.
    async fn write(&self, first_id: i64, rows: u64) -> anyhow::Result<(Written, f64)> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((first_id, rows, reply))
            .map_err(|_| anyhow::anyhow!("the writer thread has ended"))?;
        answer.await.context("the writer thread has ended")?
    }
}

async fn timed_write(
    client: std::sync::Arc<Client>,
    first_id: i64,
    rows: u64,
    ticks: f64,
) -> anyhow::Result<(Written, f64)> {
    let t0 = proc_stats::thread_ticks()?;
    let written = writers::batched(&[client], ROWS_PER_TXN, rows, first_id).await?;
    let t1 = proc_stats::thread_ticks()?;
    Ok((written, t1.saturating_sub(t0) as f64 / ticks))
}
