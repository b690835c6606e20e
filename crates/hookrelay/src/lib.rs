//! The hookrelay process: wires config, store, sources, dispatcher and admin API.
//! It holds no logic of its own beyond start-up order and shutdown.
//!
//! ```text
//!  config ─▶ store (migrate) ─▶ sources (one supervised task each) ─┐ wake
//!                            └▶ dispatcher ◀────────────────────────┘
//!                            └▶ admin API (axum) on api.listen
//!                            └▶ probes and metrics on api.health_listen (optional)
//! ```

pub mod check;
pub mod demo;
pub mod logging;
pub mod watch;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use hookrelay_api::{ApiState, ConnectionGauge, ServeLimits, SourcesReadiness};
use hookrelay_core::{config::SourceKind, Config};
use hookrelay_dispatch::Dispatcher;
use hookrelay_sources::{
    mongodb::MongoSource, mysql::MysqlSource, postgres::PostgresSource, supervise, SourceStatus,
    StoreSink,
};
use hookrelay_store::{DispatchSignal, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The probes' own listener (`api.health_listen`): room for kubelets and scrapers,
/// and no more.
const HEALTH_MAX_CONNECTIONS: usize = 128;
const HEALTH_MAX_CONNECTIONS_PER_PEER: usize = 32;

/// A running hookrelay; `shutdown` stops it cleanly.
pub struct Relay {
    /// Where the admin API listens (useful with port 0).
    pub api_addr: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` listen on their own, if configured.
    pub health_addr: Option<SocketAddr>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    sources: Vec<(String, SourceStatus)>,
    grace: std::time::Duration,
    /// While held, `rotate-master-key` refuses (this process holds the current key).
    _presence: hookrelay_store::Presence,
    /// Fires when a watched task ends unexpectedly (see `watch`).
    failure: watch::Failure,
}

impl Relay {
    /// Migrates the store, then starts sources, dispatcher and API.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        let secrets = cfg.secrets()?;
        match secrets.key() {
            Some(key) => info!(master_key = key.id(), "endpoint secrets are encrypted at rest"),
            None => tracing::warn!(
                "ENDPOINT SECRETS AND HEADER VALUES ARE STORED IN PLAINTEXT \
                 (store.insecure_plaintext_secrets = true, no HOOKRELAY_MASTER_KEY); development only"
            ),
        }
        let store = Store::connect(&cfg.store.url, cfg.store.pool_size)
            .context("store")?
            .with_secrets(secrets)
            .with_max_age(cfg.dispatch.max_age);
        let applied = migrate_when_reachable(&store).await?;
        if !applied.is_empty() {
            info!(migrations = ?applied, "store migrated");
        }
        // Before anything is sent: plaintext rows are sealed, and a key that opens
        // nothing stored stops start-up here (a single unreadable subscription only
        // waits).
        let sealed = store
            .seal_plaintext_secrets()
            .await
            .context("checking stored secrets against HOOKRELAY_MASTER_KEY")?;
        for (subscription_id, error) in &sealed.unreadable {
            tracing::error!(
                subscription_id,
                error,
                "a secret or header value of this subscription does not open; its deliveries \
                 wait until the secret is rotated or the headers are set again"
            );
        }
        if sealed.rewritten > 0 {
            info!(
                subscriptions = sealed.rewritten,
                "sealed secrets stored in plaintext"
            );
        }
        let presence = store.announce_running();
        let stop = CancellationToken::new();
        let signal = Arc::new(DispatchSignal::default());
        let mut tasks = JoinSet::new();
        let mut statuses = Vec::new();
        let health = hookrelay_core::tasks::TaskHealth::default();
        let failure = watch::Failure::default();
        let watched =
            |tasks: &mut JoinSet<()>,
             name: String,
             task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
                watch::spawn_watched(tasks, name, task, &stop, &health, &failure)
            };

        for src in &cfg.sources {
            let status = SourceStatus::new(&src.name, src.kind.as_str());
            statuses.push((src.name.clone(), status.clone()));
            let sink = StoreSink::new(store.clone(), &src.name, signal.clone())
                .reporting_to(status.clone());
            match src.kind {
                SourceKind::Postgres => {
                    let source = PostgresSource::new(src.clone())
                        .with_context(|| format!("source {}", src.name))?
                        .with_backfill_rate(cfg.backfill.max_rows_per_second);
                    watched(
                        &mut tasks,
                        format!("source {}", src.name),
                        Box::pin(supervise(source, store.clone(), sink, status, stop.clone())),
                    );
                }
                SourceKind::Mongodb => {
                    let source = MongoSource::new(src.clone(), store.clone())
                        .with_context(|| format!("source {}", src.name))?
                        .with_backfill_rate(cfg.backfill.max_rows_per_second);
                    watched(
                        &mut tasks,
                        format!("source {}", src.name),
                        Box::pin(supervise(source, store.clone(), sink, status, stop.clone())),
                    );
                }
                SourceKind::Mysql => {
                    let source = MysqlSource::new(src.clone(), store.clone())
                        .with_context(|| format!("source {}", src.name))?
                        .with_backfill_rate(cfg.backfill.max_rows_per_second);
                    watched(
                        &mut tasks,
                        format!("source {}", src.name),
                        Box::pin(supervise(source, store.clone(), sink, status, stop.clone())),
                    );
                }
            }
        }

        let owner = hookrelay_store::process_name();
        let dispatcher =
            Dispatcher::new(store.clone(), cfg.dispatch.clone(), owner, signal.clone())?;
        let dispatch_stats = dispatcher.stats();
        let test_sender = {
            let client = dispatcher.client();
            let dispatch_cfg = Arc::new(cfg.dispatch.clone());
            hookrelay_api::TestSender::new(move |d| {
                let (client, dispatch_cfg) = (client.clone(), dispatch_cfg.clone());
                async move { hookrelay_dispatch::attempt(&client, &dispatch_cfg, d).await }
            })
        };
        watched(
            &mut tasks,
            "dispatcher".to_owned(),
            Box::pin(dispatcher.run(stop.clone())),
        );
        watched(
            &mut tasks,
            "retention".to_owned(),
            Box::pin(retention(
                store.clone(),
                cfg.retention.clone(),
                stop.clone(),
            )),
        );

        if cfg.api.insecure_no_auth {
            tracing::warn!("admin API runs WITHOUT authentication (api.insecure_no_auth = true); development only");
        }
        let state = ApiState {
            store: store.clone(),
            tokens: cfg.api.tokens.clone(),
            insecure_no_auth: cfg.api.insecure_no_auth,
            allow_networks: cfg.dispatch.allow_networks.clone(),
            dispatch_signal: signal.clone(),
            sources: SourcesReadiness::new(statuses.iter().map(|(_, s)| s.clone()).collect()),
            catalog: Arc::new(hookrelay_core::catalog::Catalog::new(&cfg.sources)),
            dispatch_stats,
            test_sender,
            tasks: health.clone(),
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
        let limits = ServeLimits {
            header_read_timeout: cfg.api.header_read_timeout,
            idle_timeout: cfg.api.idle_timeout,
            max_connections: cfg.api.max_connections,
            max_connections_per_peer: cfg.api.max_connections_per_peer,
        };
        let health_addr = match cfg.api.health_listen {
            Some(addr) => {
                let health = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("config key `api.health_listen`: cannot listen on {addr}")
                })?;
                let health_addr = health.local_addr()?;
                let health_limits = ServeLimits {
                    max_connections: HEALTH_MAX_CONNECTIONS,
                    max_connections_per_peer: HEALTH_MAX_CONNECTIONS_PER_PEER,
                    ..limits.clone()
                };
                let app = hookrelay_api::health_router(state.clone());
                let health_stop = stop.clone();
                watched(
                    &mut tasks,
                    "health listener".to_owned(),
                    Box::pin(async move {
                        hookrelay_api::serve(
                            health,
                            app,
                            health_limits,
                            ConnectionGauge::default(),
                            async move { health_stop.cancelled().await },
                        )
                        .await;
                    }),
                );
                Some(health_addr)
            }
            None => None,
        };
        let api_stop = stop.clone();
        watched(
            &mut tasks,
            "admin API".to_owned(),
            Box::pin(async move {
                let app = hookrelay_api::router(state);
                hookrelay_api::serve(
                    listener,
                    app,
                    limits,
                    ConnectionGauge::default(),
                    async move { api_stop.cancelled().await },
                )
                .await;
            }),
        );
        info!(%api_addr, health_addr = ?health_addr, sources = cfg.sources.len(), "hookrelay running");
        Ok(Self {
            api_addr,
            health_addr,
            stop,
            tasks,
            sources: statuses,
            grace: cfg.dispatch.shutdown_grace,
            _presence: presence,
            failure,
        })
    }

    /// Stops claiming and reading, lets in-flight deliveries finish, and returns within
    /// `dispatch.shutdown_grace` whatever the store, sources and endpoints are doing:
    /// what has not finished by then is aborted (unrecorded outcomes are left to lease
    /// expiry, unacknowledged changes are read again; nothing is lost).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let joined = tokio::time::timeout(self.grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                grace = ?self.grace,
                tasks = self.tasks.len(),
                "shutdown grace elapsed; aborting what is still running"
            );
            self.tasks.abort_all();
            // Aborted tasks end at their next await point.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
                while self.tasks.join_next().await.is_some() {}
            })
            .await;
        }
    }

    /// Each source's name and live status.
    pub fn sources(&self) -> &[(String, SourceStatus)] {
        &self.sources
    }

    /// Every source has begun capturing (what `/readyz` reports, the store aside).
    pub fn is_ready(&self) -> bool {
        self.sources.iter().all(|(_, s)| s.snapshot().is_ready())
    }

    /// Completes when a task of this relay (a source, the dispatcher, retention, a
    /// listener) has ended unexpectedly, saying which and how; the relay should then
    /// be shut down and the process exit with an error, for its supervisor to
    /// restart it.
    pub async fn failed(&self) -> String {
        self.failure.wait().await
    }

    /// A token that stops this relay when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Prunes finished deliveries and unreferenced events past `[retention]`.
async fn retention(
    store: Store,
    cfg: hookrelay_core::config::RetentionConfig,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        // Each pass deletes in small batches (see `hookrelay_store::retention`).
        let wait = if first {
            cfg.interval.min(std::time::Duration::from_secs(5))
        } else {
            cfg.interval
        };
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        match store.prune(cfg.succeeded, cfg.failed).await {
            Ok(Some(p)) if p.deliveries + p.events > 0 => info!(
                deliveries = p.deliveries,
                attempts = p.attempts,
                events = p.events,
                "retention pruned the store"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; trying again later"),
        }
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
