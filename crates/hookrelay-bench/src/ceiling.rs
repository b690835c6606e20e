//! Ceilings, measured in the same run with no hookrelay running:
//!
//! - the writers alone on a plain table (no trigger), for the trigger's own cost;
//! - the same writers with the capture trigger installed (hookrelay started once to
//!   install it, then stopped; the reader is marked busy so the trigger never
//!   notifies, as under load), the journal filling up and cleared afterwards. This is
//!   what hookrelay's throughput is compared with;
//! - the receiver's acceptance rate for the same signed POSTs from a plain reqwest
//!   client with hookrelay's per-subscription concurrency.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use hookrelay_core::signature::SigningKey;

use crate::{
    db::Databases,
    proc_stats::{CpuSnapshot, CpuSpent},
    relay::RelayProcess,
    report::Ceiling,
    writers::{self, Written},
    Ctx,
};

pub const TRIGGER_BATCH: &str = "trigger-batch";
pub const TRIGGER_SINGLE: &str = "trigger-single";
pub const RECEIVER: &str = "receiver";

/// The database ceilings: with and without the trigger, batched and single-row.
pub async fn database(ctx: &Ctx) -> anyhow::Result<Vec<Ceiling>> {
    let dbs = Databases::fresh(&ctx.pg, None).await?;
    let url = dbs.source_url();
    let mut out = Vec::new();
    let batch_name = |t: &str| {
        format!(
            "{t}: 4 writers x 100-row txns, {} rows",
            ctx.sizes.w1_events
        )
    };
    let single_name = |t: &str| {
        format!(
            "{t}: 8 writers x 1-row commits, {:.0} s",
            ctx.sizes.w7_seconds
        )
    };

    let c = measure(ctx, &url, 4, |w| async move {
        writers::batched(&w, 100, ctx.sizes.w1_events, 1).await
    })
    .await;
    out.push(ceiling("plain-batch", &batch_name("no trigger"), c));
    dbs.clear_source().await?;
    let c = measure(ctx, &url, 8, |w| async move {
        writers::single_row_max(&w, secs(ctx.sizes.w7_seconds), 1).await
    })
    .await;
    out.push(ceiling("plain-single", &single_name("no trigger"), c));
    dbs.clear_source().await?;

    // Install the trigger the way users get it: hookrelay installs it at start.
    let relay =
        RelayProcess::start(&ctx.bin, &dbs, &ctx.dir, "ceiling-install", &ctx.overrides).await?;
    relay.stop(Duration::from_secs(15)).await?;
    dbs.mark_reader_busy().await?;

    let c = measure(ctx, &url, 4, |w| async move {
        writers::batched(&w, 100, ctx.sizes.w1_events, 1).await
    })
    .await;
    out.push(ceiling(TRIGGER_BATCH, &batch_name("trigger only"), c));
    dbs.clear_source().await?;
    let c = measure(ctx, &url, 8, |w| async move {
        writers::single_row_max(&w, secs(ctx.sizes.w7_seconds), 1).await
    })
    .await;
    out.push(ceiling(TRIGGER_SINGLE, &single_name("trigger only"), c));
    dbs.clear_source().await?;
    Ok(out)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

async fn measure<F, Fut>(
    ctx: &Ctx,
    url: &str,
    n: usize,
    run: F,
) -> anyhow::Result<(Written, CpuSpent)>
where
    F: FnOnce(Vec<Arc<tokio_postgres::Client>>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Written>>,
{
    let clients = writers::open(url, n).await?;
    let cpu0 = CpuSnapshot::take(None);
    let w = run(clients.clone()).await?;
    let cpu = CpuSpent::between(&cpu0, &CpuSnapshot::take(None), ctx.ticks);
    drop(clients);
    Ok((w, cpu))
}

fn ceiling(id: &str, name: &str, r: anyhow::Result<(Written, CpuSpent)>) -> Ceiling {
    match r {
        Ok((w, cpu)) => Ceiling {
            id: id.into(),
            name: name.into(),
            per_s: w.rows_per_s(),
            unit: "rows/s committed".into(),
            writers: Some(w),
            cpu: Some(cpu),
            error: None,
        },
        Err(e) => Ceiling {
            id: id.into(),
            name: name.into(),
            per_s: 0.0,
            unit: String::new(),
            writers: None,
            cpu: None,
            error: Some(format!("{e:#}")),
        },
    }
}

/// The receiver's acceptance rate for signed event-sized POSTs over keep-alive.
pub async fn receiver(ctx: &Ctx, concurrency: usize) -> Ceiling {
    let name = format!(
        "receiver: {} signed POSTs from reqwest, {concurrency} in flight",
        ctx.sizes.receiver_requests
    );
    let r = receiver_rate(ctx, concurrency).await;
    let (per_s, error) = match r {
        Ok(v) => (v, None),
        Err(e) => (0.0, Some(format!("{e:#}"))),
    };
    Ceiling {
        id: RECEIVER.into(),
        name,
        per_s,
        unit: "requests/s accepted".into(),
        writers: None,
        cpu: None,
        error,
    }
}

async fn receiver_rate(ctx: &Ctx, concurrency: usize) -> anyhow::Result<f64> {
    let eps = ctx.receiver.reset(1)?;
    let ep = eps.into_iter().next().context("no endpoint")?;
    let key =
        Arc::new(SigningKey::from_secret(&ep.secret).map_err(|e| anyhow::anyhow!("secret: {e}"))?);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let total = ctx.sizes.receiver_requests;
    let next = Arc::new(AtomicU64::new(0));
    let clock = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, key, next, url) = (http.clone(), key.clone(), next.clone(), ep.url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let id = format!("evt_ceiling{i:016}");
                let body = sample_body(&id, i);
                let ts = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let sig = format!("v1,{}", key.sign(&id, ts, body.as_bytes()));
                let resp = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .context("POST to the receiver")?;
                if !resp.status().is_success() {
                    bail!("receiver answered {}", resp.status());
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("client task panicked")??;
    }
    let rate = total as f64 / clock.elapsed().as_secs_f64();
    let got = ctx.receiver.received(0);
    if got != total {
        bail!("receiver recorded {got} of {total} requests");
    }
    Ok(rate)
}

/// An envelope shaped and sized like hookrelay's for an `orders` insert.
fn sample_body(id: &str, i: u64) -> String {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    format!(
        r#"{{"id":"{id}","type":"orders.insert","source":{{"name":"bench","kind":"postgres","database":"hookrelay_bench_src","schema":"public","table":"orders","position":"{tx}/0"}},"op":"insert","key":{{"id":{i}}},"before":null,"after":{{"id":{i},"status":"pending","total":"19.99","updated_at":"{now}"}},"txn":{{"id":"{tx}","seq":0}},"committed_at":"{now}","captured_at":"{now}"}}"#,
        tx = 100_000 + i
    )
}
