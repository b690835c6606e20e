//! `tracing` set-up: human-readable text by default, JSON lines with `log.format = "json"`.

use hookrelay_core::config::{LogConfig, LogFormat};
use tracing_subscriber::{fmt, EnvFilter};

/// What no filter can switch on: tokio_postgres logs every statement's parameters at
/// `debug` (secrets and header values among them).
const ALWAYS_QUIET: &str = "tokio_postgres::query=info";

/// Installs the global subscriber; `RUST_LOG` overrides `log.level`.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(&cfg.level).map_err(|e| {
            anyhow::anyhow!(
                "config key `log.level`: {:?} is not a valid filter: {e}",
                cfg.level
            )
        })?,
    };
    let filter = filter.add_directive(ALWAYS_QUIET.parse()?);
    // Colour codes only where a person reads them, not in files or journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
