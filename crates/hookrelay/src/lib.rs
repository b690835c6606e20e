//! The hookrelay process: wires config, store, sources, dispatcher and admin API.
//! It holds no logic of its own beyond start-up order and shutdown.
//!
//! ```text
//!  config ─▶ store (migrate) ─▶ sources (one supervised task each) ─┐ wake
//!                            └▶ dispatcher ◀────────────────────────┘
//!                            └▶ admin API (axum) on api.listen
//! ```

pub mod check;
pub mod logging;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use hookrelay_api::ApiState;
use hookrelay_core::{config::SourceKind, Config};
use hookrelay_dispatch::Dispatcher;
use hookrelay_sources::{
    mysql::MysqlSource, postgres::PostgresSource, supervise, SourceStatus, StoreSink,
};
use hookrelay_store::{DispatchSignal, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A running hookrelay; `shutdown` stops it cleanly.
pub struct Relay {
    /// Where the admin API listens (useful with port 0).
    pub api_addr: SocketAddr,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    sources: Vec<(String, SourceStatus)>,
}

impl Relay {
    /// Migrates the store, then starts sources, dispatcher and API.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        let store = Store::connect(&cfg.store.url, cfg.store.pool_size).context("store")?;
        let applied = migrate_when_reachable(&store).await?;
        if !applied.is_empty() {
            info!(migrations = ?applied, "store migrated");
        }
        let stop = CancellationToken::new();
        let signal = Arc::new(DispatchSignal::default());
        let mut tasks = JoinSet::new();
        let mut statuses = Vec::new();

        for src in &cfg.sources {
            let status = SourceStatus::default();
            statuses.push((src.name.clone(), status.clone()));
            let sink = StoreSink::new(store.clone(), &src.name, signal.clone());
            match src.kind {
                SourceKind::Postgres => {
                    let source = PostgresSource::new(src.clone()).with_context(|| format!("source {}", src.name))?;
                    tasks.spawn(supervise(source, store.clone(), sink, status, stop.clone()));
                }
                SourceKind::Mysql => {
                    let source = MysqlSource::new(src.clone(), store.clone())
                        .with_context(|| format!("source {}", src.name))?;
                    tasks.spawn(supervise(source, store.clone(), sink, status, stop.clone()));
                }
                kind => anyhow::bail!(
                    "config key `sources[{}].kind`: {:?} sources are not supported by this version yet",
                    cfg.sources.iter().position(|s| s.name == src.name).unwrap_or(0),
                    kind.as_str()
                ),
            }
        }

        let owner = format!("{}-{}", hostname(), std::process::id());
        let dispatcher =
            Dispatcher::new(store.clone(), cfg.dispatch.clone(), owner, signal.clone())?;
        tasks.spawn(dispatcher.run(stop.clone()));

        if cfg.api.insecure_no_auth {
            tracing::warn!("admin API runs WITHOUT authentication (api.insecure_no_auth = true); development only");
        }
        let state = ApiState {
            store: store.clone(),
            tokens: cfg.api.tokens.clone(),
            insecure_no_auth: cfg.api.insecure_no_auth,
            allow_networks: cfg.dispatch.allow_networks.clone(),
            dispatch_signal: signal.clone(),
        };
        let listener = tokio::net::TcpListener::bind(cfg.api.listen)
            .await
            .with_context(|| {
                format!(
                    "config key `api.listen`: cannot listen on {}",
                    cfg.api.listen
                )
            })?;
        let api_addr = listener.local_addr()?;
        let api_stop = stop.clone();
        tasks.spawn(async move {
            let app = hookrelay_api::router(state);
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { api_stop.cancelled().await });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "admin API server failed");
            }
        });
        info!(%api_addr, sources = cfg.sources.len(), "hookrelay running");
        Ok(Self {
            api_addr,
            stop,
            tasks,
            sources: statuses,
        })
    }

    /// Stops claiming and reading, lets in-flight deliveries finish, and returns.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Each source's name and live status.
    pub fn sources(&self) -> &[(String, SourceStatus)] {
        &self.sources
    }

    /// A token that stops this relay when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Migrates the store, waiting (with capped backoff, reporting each failure) while it
/// is unreachable, so a relay started before its database comes up rather than
/// exiting into a supervisor's crash loop. Non-transient failures (a changed migration,
/// bad credentials) stop start-up with the cause.
async fn migrate_when_reachable(store: &Store) -> anyhow::Result<Vec<String>> {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        match store.migrate().await {
            Ok(applied) => return Ok(applied),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in = ?delay, "store unreachable; waiting for it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("migrating the store")),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hookrelay".into())
}
