//! `hookrelay run | migrate | check | demo | uninstall | rotate-master-key`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookrelay::{logging, Relay};
use hookrelay_core::{config::master_key_from_env, sealing::Secrets, Config};

/// Where `rotate-master-key` reads the key it re-encrypts to.
const NEW_MASTER_KEY_ENV: &str = "HOOKRELAY_NEW_MASTER_KEY";

#[derive(Parser)]
#[command(
    name = "hookrelay",
    version,
    about = "Database changes to signed webhooks"
)]
struct Cli {
    /// Config file (TOML); every key can be overridden as HOOKRELAY_<SECTION>__<KEY>.
    /// `demo` reads none: it makes its own.
    #[arg(long, short, global = true, env = "HOOKRELAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the store, then capture, deliver and serve the admin API until SIGINT/SIGTERM.
    ///
    /// Needs HOOKRELAY_MASTER_KEY in the environment (base64 of 32 random bytes, e.g.
    /// `openssl rand -base64 32`): endpoint secrets and custom header values are
    /// encrypted in the store under it. Without it, `run` refuses to start unless
    /// `store.insecure_plaintext_secrets = true` (development only). On SIGINT/SIGTERM
    /// in-flight deliveries finish within `dispatch.shutdown_grace`. Each source logs
    /// `capturing` once changes committed from then on will be sent; /readyz answers
    /// 200 once every source has.
    Run,
    /// Apply pending store migrations and exit.
    Migrate,
    /// Validate the config and check that the store and every source are reachable.
    ///
    /// Checks the master key, the store, and each source's prerequisites (tables
    /// with primary keys; for MySQL the binlog settings and grants; for MongoDB a
    /// replica set and the privileges), printing one line per component and one FAIL
    /// line per problem, with the statement that fixes it where there is one.
    ///
    /// Exit codes: 0 everything is ready; 1 at least one problem (the last line counts
    /// them); 2 the config itself is invalid (the message names the key).
    Check,
    /// A self-contained tour on a local PostgreSQL: scratch databases, a built-in
    /// receiver that verifies every signature, a stream of changes, a retry, a replay.
    ///
    /// Needs no config file (a global --config is ignored here) and no master key:
    /// it makes scratch databases on --database-url's server and drops them when it
    /// ends.
    Demo {
        /// A PostgreSQL server to create scratch databases on.
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Changes to write.
        #[arg(long, default_value_t = 30)]
        events: usize,
        /// Exit once the tour is done instead of serving until Ctrl-C.
        #[arg(long)]
        exit_after: bool,
    },
    /// Remove what hookrelay installed in a Postgres source database (triggers,
    /// journal, functions). Stop hookrelay first, or remove the source from its config.
    Uninstall {
        /// The source's name in the config.
        #[arg(long)]
        source: String,
        /// Also discard journalled changes that were never delivered to the store.
        #[arg(long)]
        force: bool,
    },
    /// Re-encrypt every stored secret from HOOKRELAY_MASTER_KEY to
    /// HOOKRELAY_NEW_MASTER_KEY, in one transaction; then restart with the new key.
    RotateMasterKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo makes its own config; every other command reads one.
    let cfg = if matches!(cli.command, Command::Demo { .. }) {
        None
    } else {
        match Config::load(cli.config.as_deref()) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                eprintln!("hookrelay: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let log = cfg.as_ref().map(|c| c.log.clone()).unwrap_or_else(|| {
        hookrelay_core::config::LogConfig {
            // The demo prints its own story; the pool's reconnect chatter is noise there.
            level: "warn,deadpool=error".into(),
            ..Default::default()
        }
    });
    if let Err(e) = logging::init(&log) {
        eprintln!("hookrelay: {e:#}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookrelay: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match (cli.command, cfg) {
            (
                Command::Demo {
                    database_url,
                    events,
                    exit_after,
                },
                _,
            ) => {
                hookrelay::demo::demo(hookrelay::demo::DemoOptions {
                    database_url,
                    events,
                    exit_after,
                })
                .await
            }
            (_, None) => Err(anyhow::anyhow!("no configuration")),
            (Command::Run, Some(cfg)) => run(cfg).await,
            (Command::Migrate, Some(cfg)) => migrate(cfg).await,
            (Command::Check, Some(cfg)) => hookrelay::check::check(&cfg).await,
            (Command::Uninstall { source, force }, Some(cfg)) => {
                uninstall(&cfg, &source, force).await
            }
            (Command::RotateMasterKey, Some(cfg)) => rotate_master_key(cfg).await,
        }
    });
    // Blocking work still queued (a DNS lookup to a dead resolver) must not keep the
    // process alive past its shutdown grace.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookrelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let signal = shutdown_signal();
    tokio::pin!(signal);
    // Start-up waits for an unreachable store; a signal meanwhile still stops it.
    let relay = tokio::select! {
        r = Relay::start(cfg) => r?,
        _ = &mut signal => {
            tracing::info!("signal received during start-up; exiting");
            return Ok(());
        }
    };
    tokio::select! {
        () = &mut signal => {
            tracing::info!("signal received; shutting down");
            relay.shutdown().await;
            Ok(())
        }
        what = relay.failed() => {
            tracing::error!(cause = %what, "shutting down after a task ended unexpectedly");
            relay.shutdown().await;
            Err(anyhow::anyhow!("{what}; exiting so that a supervisor restarts hookrelay"))
        }
    }
}

async fn migrate(cfg: Config) -> anyhow::Result<()> {
    let store = hookrelay_store::Store::connect(&cfg.store.url, 2)?;
    let applied = store.migrate().await.context("migrating the store")?;
    if applied.is_empty() {
        println!("store is up to date");
    } else {
        println!("applied: {}", applied.join(", "));
    }
    Ok(())
}

async fn uninstall(cfg: &Config, source: &str, force: bool) -> anyhow::Result<()> {
    let Some(src) = cfg.sources.iter().find(|s| s.name == source) else {
        anyhow::bail!("no source named {source:?} in the config");
    };
    if src.kind != hookrelay_core::config::SourceKind::Postgres {
        anyhow::bail!(
            "source {source} is a {} source; only postgres sources install anything",
            src.kind.as_str()
        );
    }
    let pg = hookrelay_sources::postgres::PostgresSource::new(src.clone())?;
    let done = pg.uninstall(force).await?;
    for table in &done.tables {
        println!("removed triggers from {table}");
    }
    if done.discarded > 0 {
        println!("discarded {} undelivered journal row(s)", done.discarded);
    }
    if done.schema_dropped {
        println!("dropped schema hookrelay (no other source uses this database)");
    }
    println!("source {source} uninstalled");
    Ok(())
}

/// The new key comes from the environment, like the current one, so neither is ever
/// on a command line (visible in `ps`) or in a file hookrelay reads.
async fn rotate_master_key(cfg: Config) -> anyhow::Result<()> {
    let new = master_key_from_env(NEW_MASTER_KEY_ENV)?.with_context(|| {
        format!("{NEW_MASTER_KEY_ENV} is not set: put the new key (base64 of 32 bytes) there")
    })?;
    let old = match cfg.store.master_key.clone() {
        Some(key) => Secrets::Sealed(key),
        // A store kept in plaintext can be rotated into encryption.
        None => Secrets::Plaintext,
    };
    let store = hookrelay_store::Store::connect(&cfg.store.url, 2)?.with_secrets(old);
    store.migrate().await.context("migrating the store")?;
    let report = store
        .rotate_master_key(&new)
        .await
        .context("re-encrypting stored secrets (nothing was changed)")?;
    println!(
        "re-encrypted the secrets of {} subscription(s) under master key {}; \
         restart every hookrelay with HOOKRELAY_MASTER_KEY set to the new key",
        report.rewritten,
        new.id()
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
