//! Configuration: plain serde structs with defaults, loaded in layers (TOML file, then
//! `HOOKRELAY_<SECTION>__<KEY>` environment variables) and validated once at start-up.
//! Every error names the key, the value and why, so a bad config is fixed from the
//! message alone.

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::scope::{ColumnPattern, FieldPattern, TablePattern};
use crate::sealing::{MasterKey, Secrets};

/// The environment variable holding the master key that seals secrets at rest.
pub const MASTER_KEY_ENV: &str = "HOOKRELAY_MASTER_KEY";

/// A refused configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    /// A variable read from the environment only (`HOOKRELAY_MASTER_KEY`), not a key.
    #[error("environment variable `{name}`: {reason}")]
    Environment { name: String, reason: String },
    /// Neither a file nor `HOOKRELAY_<SECTION>__<KEY>` variables.
    #[error("no config file given: pass --config FILE or set HOOKRELAY_CONFIG (deploy/hookrelay.toml is a complete example)")]
    NoConfig,
}

impl ConfigError {
    fn environment(name: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Environment {
            name: name.into(),
            reason: reason.into(),
        }
    }

    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub dispatch: DispatchConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub backfill: BackfillConfig,
}

/// Backfills (DESIGN §1.8): reading a source's current rows for one subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// The most rows a source reads per second for backfills; 0 = unlimited. The
    /// default leaves live changes their usual latency on a small machine (measured
    /// by bench workload 11: unlimited, a backfill took the whole machine and live
    /// changes waited behind its chunks).
    #[serde(default = "defaults::backfill_rows_per_second")]
    pub max_rows_per_second: u32,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        Self {
            max_rows_per_second: defaults::backfill_rows_per_second(),
        }
    }
}

/// How long finished deliveries (with their attempts, and events nothing refers to
/// any more) stay in the store before they are pruned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "defaults::retention_succeeded", with = "humantime_serde")]
    pub succeeded: Duration,
    #[serde(default = "defaults::retention_failed", with = "humantime_serde")]
    pub failed: Duration,
    /// How often a pass runs; each deletes at most 50,000 deliveries, in batches.
    #[serde(default = "defaults::retention_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            succeeded: defaults::retention_succeeded(),
            failed: defaults::retention_failed(),
            interval: defaults::retention_interval(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// hookrelay's own state lives in schema `hookrelay` of this database.
    pub url: String,
    /// Connections in the store pool.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// Keep endpoint secrets and header values in plaintext when no
    /// `HOOKRELAY_MASTER_KEY` is set (development only; warns at start).
    #[serde(default)]
    pub insecure_plaintext_secrets: bool,
    /// From `HOOKRELAY_MASTER_KEY` (environment only, never a file or a log line).
    #[serde(skip)]
    pub master_key: Option<MasterKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Serve the admin API without tokens (development only; warns at start).
    #[serde(default)]
    pub insecure_no_auth: bool,
    /// A request's headers must arrive within this, counted from the connection's
    /// start or the previous response (so it is also the keep-alive idle limit).
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections at most, all peers together. When full, the oldest
    /// connection not serving a request is closed to make room.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Open connections of one peer (an IPv4 address, or an IPv6 /64) at most; a peer
    /// at its cap gives up its own oldest connection not serving a request.
    #[serde(default = "defaults::max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// A second listener serving only `/healthz`, `/readyz` and `/metrics`, with a
    /// connection budget of its own, for probes and scrapers (they stay on `listen`
    /// too). Keep it on an internal network: `/metrics` needs no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            tokens: Vec::new(),
            insecure_no_auth: false,
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: defaults::max_connections(),
            max_connections_per_peer: defaults::max_connections_per_peer(),
            health_listen: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Concurrent HTTP deliveries in total.
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// Concurrent deliveries to one subscription, so one slow endpoint cannot take the
    /// whole pool.
    #[serde(default = "defaults::per_subscription")]
    pub per_subscription: usize,
    /// Per attempt, connect to last byte.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// CIDRs exempt from the private-address block on endpoint URLs.
    #[serde(default)]
    pub allow_networks: Vec<IpNet>,
    /// Outbound proxy (`http://host:port`); empty = none. Environment proxies
    /// (`HTTP_PROXY`, …) are always ignored.
    #[serde(default)]
    pub proxy: String,
    /// How often the dispatcher looks for due retries when nothing wakes it sooner.
    #[serde(default = "defaults::dispatch_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// SIGINT/SIGTERM stop the process within this, whatever the store and endpoints
    /// are doing; outcomes not recorded by then are left to lease expiry.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A delivery older than this (counted from its creation, or from the replay that
    /// started it over) ends `failed`, whether or not its circuit let it be tried, so
    /// a dead endpoint's deliveries become visible and replayable in bounded time.
    #[serde(default = "defaults::max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// The per-subscription circuit breaker.
    #[serde(default)]
    pub circuit: CircuitConfig,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            workers: defaults::workers(),
            per_subscription: defaults::per_subscription(),
            timeout: defaults::timeout(),
            max_attempts: defaults::max_attempts(),
            backoff: BackoffConfig::default(),
            allow_networks: Vec::new(),
            proxy: String::new(),
            poll_interval: defaults::dispatch_poll(),
            shutdown_grace: defaults::shutdown_grace(),
            max_age: defaults::max_age(),
            circuit: CircuitConfig::default(),
        }
    }
}

/// The circuit breaker each subscription gets: after `failures` failed attempts in a
/// row its endpoint gets nothing for a cool-down (1 s, doubling on every failed probe
/// up to `max_cooldown`), then one probe; a success closes it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive failed attempts that open the circuit; 0 turns the breaker off
    /// (every due retry is sent whatever the endpoint did before).
    #[serde(default = "defaults::circuit_failures")]
    pub failures: u32,
    /// The longest cool-down between probes of an open circuit.
    #[serde(default = "defaults::circuit_max_cooldown", with = "humantime_serde")]
    pub max_cooldown: Duration,
}

impl CircuitConfig {
    /// The breaker is off (`failures = 0`).
    pub fn is_off(&self) -> bool {
        self.failures == 0
    }
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failures: defaults::circuit_failures(),
            max_cooldown: defaults::circuit_max_cooldown(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "defaults::backoff_initial", with = "humantime_serde")]
    pub initial: Duration,
    #[serde(default = "defaults::backoff_max", with = "humantime_serde")]
    pub max: Duration,
    #[serde(default = "defaults::backoff_multiplier")]
    pub multiplier: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: defaults::backoff_initial(),
            max: defaults::backoff_max(),
            multiplier: defaults::backoff_multiplier(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
    Mysql,
    Mongodb,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::Mysql => "mysql",
            SourceKind::Mongodb => "mongodb",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    pub url: String,
    /// `schema.table` (postgres, mysql); either part may be a glob (`public.*`,
    /// `sales.order_*`, see [`crate::scope`]).
    #[serde(default)]
    pub tables: Vec<String>,
    /// `db.collection` (mongodb).
    #[serde(default)]
    pub collections: Vec<String>,
    /// `schema.table.column` (postgres, mysql), any part a glob: left out of every
    /// event. A primary-key column cannot be excluded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_columns: Vec<String>,
    /// `db.collection.path.to.field` (mongodb): left out of every event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_fields: Vec<String>,
    /// Safety-net poll when no wake-up arrives.
    #[serde(default = "defaults::source_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Changes per store transaction.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// mysql: the replica id hookrelay registers with; two readers with one id kick
    /// each other off, so the default is derived from the source name (stable across
    /// restarts, distinct per source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
    /// mysql, mongodb: what to do when the stored position is no longer available
    /// upstream (binlogs purged). `fail` keeps the source in error until a human acts.
    #[serde(default)]
    pub on_history_lost: OnHistoryLost,
    /// mongodb: where an update's `after` comes from (see [`PostImages`]).
    #[serde(default)]
    pub post_images: PostImages,
}

/// Where a MongoDB update's `after` comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostImages {
    /// The post-image of that change where the collection keeps them
    /// (`changeStreamPreAndPostImages`), else the document as it is when the change is
    /// read (a lookup, which may already hold later changes).
    #[default]
    WhenAvailable,
    /// Every watched collection must keep post-images; a change without one stops
    /// the source with an error rather than sending a looked-up document.
    Required,
}

impl PostImages {
    pub fn as_str(self) -> &'static str {
        match self {
            PostImages::WhenAvailable => "when_available",
            PostImages::Required => "required",
        }
    }
}

/// What a source does when its checkpoint points at history the server no longer has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHistoryLost {
    /// Stay in error (changes were lost; an operator decides).
    #[default]
    Fail,
    /// Log loudly and capture from the server's current position.
    RestartFromNow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `hookrelay_dispatch=debug,info`.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: defaults::log_level(),
        }
    }
}

mod defaults {
    use std::{net::SocketAddr, time::Duration};

    pub fn pool_size() -> usize {
        16
    }
    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_connections() -> usize {
        1024
    }
    pub fn max_connections_per_peer() -> usize {
        256
    }
    pub fn workers() -> usize {
        64
    }
    pub fn per_subscription() -> usize {
        16
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_attempts() -> u32 {
        10
    }
    pub fn backoff_initial() -> Duration {
        Duration::from_secs(1)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn backoff_multiplier() -> f64 {
        2.0
    }
    pub fn dispatch_poll() -> Duration {
        Duration::from_millis(500)
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_age() -> Duration {
        Duration::from_secs(3 * 24 * 3600)
    }
    pub fn circuit_failures() -> u32 {
        10
    }
    pub fn circuit_max_cooldown() -> Duration {
        Duration::from_secs(60)
    }
    pub fn source_poll() -> Duration {
        Duration::from_secs(1)
    }
    pub fn batch_size() -> usize {
        1000
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn retention_succeeded() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn retention_failed() -> Duration {
        Duration::from_secs(30 * 24 * 3600)
    }
    pub fn backfill_rows_per_second() -> u32 {
        2000
    }

    pub fn retention_interval() -> Duration {
        Duration::from_secs(60)
    }
}

/// Environment variables read directly, not as config keys.
const ENV_NOT_KEYS: [&str; 3] = ["config", "master_key", "new_master_key"];

impl Config {
    /// File (if any), then `HOOKRELAY_…` env overrides, then validation.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    reason: "no such file".into(),
                });
            }
            fig = fig.merge(Toml::file_exact(path));
        } else if !std::env::vars().any(|(k, _)| k.starts_with("HOOKRELAY_") && k.contains("__")) {
            return Err(ConfigError::NoConfig);
        }
        fig = fig.merge(
            Env::prefixed("HOOKRELAY_")
                .filter(|k| !ENV_NOT_KEYS.contains(&k.as_str().to_ascii_lowercase().as_str()))
                .split("__"),
        );
        let mut cfg = Self::from_figment(fig)?;
        cfg.store.master_key = master_key_from_env(MASTER_KEY_ENV)?;
        Ok(cfg)
    }

    /// How the store keeps secrets: sealed under the master key, or in plaintext only
    /// when there is no key and `store.insecure_plaintext_secrets` allows it.
    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        match (
            &self.store.master_key,
            self.store.insecure_plaintext_secrets,
        ) {
            (Some(key), _) => Ok(Secrets::Sealed(key.clone())),
            (None, true) => Ok(Secrets::Plaintext),
            (None, false) => Err(ConfigError::environment(
                MASTER_KEY_ENV,
                "is not set: endpoint secrets are encrypted at rest under it (base64 of 32 \
                 random bytes, e.g. `openssl rand -base64 32`); for local development only, \
                 store.insecure_plaintext_secrets = true keeps them in plaintext",
            )),
        }
    }

    /// Parses TOML text (no environment), for tests and `check`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let cfg: Config = fig.extract().map_err(|e| {
            let e = e
                .into_iter()
                .next()
                .expect("figment errors are never empty");
            let key = display_path(&e.path);
            if is_secret_key(&key) {
                // The kind's text quotes the value (`found string "…"`): say only
                // what was expected.
                let reason = match &e.kind {
                    figment::error::Kind::InvalidType(_, expected) => {
                        format!("invalid type: expected {expected} (value not shown)")
                    }
                    _ => "invalid value (not shown)".to_owned(),
                };
                return ConfigError::invalid(key, reason);
            }
            let mut reason = match &e.kind {
                figment::error::Kind::Message(m) if key == TOP_LEVEL => {
                    format!("not valid TOML: {m}")
                }
                kind => kind.to_string(),
            };
            if !e.path.is_empty() {
                if let Some(value) = find_value(&fig, &e.path) {
                    if !matches!(
                        value,
                        figment::value::Value::Dict(..) | figment::value::Value::Array(..)
                    ) {
                        reason.push_str(&format!(" (got {})", show_value(&value)));
                    }
                }
            }
            ConfigError::invalid(key, reason)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rules serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.store.url.starts_with("postgres://")
            && !self.store.url.starts_with("postgresql://")
        {
            return Err(ConfigError::invalid(
                "store.url",
                format!("{:?} is not a postgres:// URL", self.store.url),
            ));
        }
        crate::tls::parse_pg_url(&self.store.url)
            .map_err(|e| ConfigError::invalid("store.url", e.to_string()))?;
        if self.store.pool_size < 2 {
            return Err(ConfigError::invalid(
                "store.pool_size",
                format!("{} is below the minimum of 2", self.store.pool_size),
            ));
        }
        if self.api.insecure_no_auth && !self.api.listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "api.insecure_no_auth",
                format!(
                    "is only allowed with a loopback api.listen address, not {}: \
                     anyone who can reach it could change subscriptions",
                    self.api.listen
                ),
            ));
        }
        if self.api.tokens.is_empty() && !self.api.insecure_no_auth {
            return Err(ConfigError::invalid(
                "api.tokens",
                "is empty: set at least one admin token, or api.insecure_no_auth = true for local development",
            ));
        }
        if let Some(i) = self.api.tokens.iter().position(|t| t.trim().len() < 8) {
            return Err(ConfigError::invalid(
                format!("api.tokens[{i}]"),
                "must be at least 8 characters",
            ));
        }
        let api = &self.api;
        if api.header_read_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "api.header_read_timeout",
                "must be greater than 0",
            ));
        }
        if api.idle_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "api.idle_timeout",
                "must be greater than 0",
            ));
        }
        if api.max_connections == 0 || api.max_connections > 100_000 {
            return Err(ConfigError::invalid(
                "api.max_connections",
                format!("{} is outside 1..=100000", api.max_connections),
            ));
        }
        if api.max_connections_per_peer == 0 || api.max_connections_per_peer > api.max_connections {
            return Err(ConfigError::invalid(
                "api.max_connections_per_peer",
                format!(
                    "{} is outside 1..=api.max_connections ({})",
                    api.max_connections_per_peer, api.max_connections
                ),
            ));
        }
        if let Some(health) = api.health_listen {
            if health == api.listen && health.port() != 0 {
                return Err(ConfigError::invalid(
                    "api.health_listen",
                    format!("{health} is api.listen itself; give the probes a port of their own"),
                ));
            }
        }
        let d = &self.dispatch;
        if d.workers == 0 || d.workers > 10_000 {
            return Err(ConfigError::invalid(
                "dispatch.workers",
                format!("{} is outside 1..=10000", d.workers),
            ));
        }
        if d.per_subscription == 0 {
            return Err(ConfigError::invalid(
                "dispatch.per_subscription",
                "must be at least 1",
            ));
        }
        if d.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "dispatch.timeout",
                "must be greater than 0",
            ));
        }
        if d.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "dispatch.max_attempts",
                "must be at least 1",
            ));
        }
        if !(d.backoff.multiplier >= 1.0 && d.backoff.multiplier.is_finite()) {
            return Err(ConfigError::invalid(
                "dispatch.backoff.multiplier",
                format!("{} must be a finite number >= 1.0", d.backoff.multiplier),
            ));
        }
        if d.backoff.initial > d.backoff.max {
            return Err(ConfigError::invalid(
                "dispatch.backoff.initial",
                format!(
                    "{:?} is longer than dispatch.backoff.max ({:?})",
                    d.backoff.initial, d.backoff.max
                ),
            ));
        }
        if !d.proxy.is_empty() && !is_proxy_url(&d.proxy) {
            return Err(ConfigError::invalid(
                "dispatch.proxy",
                format!(
                    "{:?} must be an http:// or https:// URL with a host (or \"\" for none)",
                    redact_url(&d.proxy)
                ),
            ));
        }
        if d.poll_interval.is_zero() {
            return Err(ConfigError::invalid(
                "dispatch.poll_interval",
                "must be greater than 0",
            ));
        }
        for (key, keep) in [
            ("retention.succeeded", self.retention.succeeded),
            ("retention.failed", self.retention.failed),
        ] {
            if keep < Duration::from_secs(60) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{keep:?} is too short: keep finished deliveries at least 1m"),
                ));
            }
        }
        let every = self.retention.interval;
        if every < Duration::from_secs(1) || every > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::invalid(
                "retention.interval",
                format!("{every:?} is out of range: 1s to 24h"),
            ));
        }
        if d.shutdown_grace < Duration::from_secs(1) || d.shutdown_grace > Duration::from_secs(3600)
        {
            return Err(ConfigError::invalid(
                "dispatch.shutdown_grace",
                format!("{:?} must be between 1s and 1h", d.shutdown_grace),
            ));
        }
        // At least one attempt's timeout, and no more than a year: past that the
        // store's timestamps, not the endpoint, would decide when a delivery ends.
        if d.max_age < d.timeout.max(Duration::from_secs(1))
            || d.max_age > Duration::from_secs(365 * 24 * 3600)
        {
            return Err(ConfigError::invalid(
                "dispatch.max_age",
                format!(
                    "{} must be between dispatch.timeout ({}) and 365d",
                    humantime::format_duration(d.max_age),
                    humantime::format_duration(d.timeout)
                ),
            ));
        }
        let cooldown = d.circuit.max_cooldown;
        if cooldown < Duration::from_secs(1) || cooldown > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::invalid(
                "dispatch.circuit.max_cooldown",
                format!(
                    "{} must be between 1s (the first cool-down) and 24h",
                    humantime::format_duration(cooldown)
                ),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = |k: &str| format!("sources[{i}].{k}");
            if !is_source_name(&s.name) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("{:?} must be 1 to 48 characters of [a-z0-9_-]", s.name),
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("{:?} is used by another source", s.name),
                ));
            }
            if s.batch_size == 0 || s.batch_size > 100_000 {
                return Err(ConfigError::invalid(
                    key("batch_size"),
                    format!("{} is outside 1..=100000", s.batch_size),
                ));
            }
            if s.poll_interval.is_zero() {
                return Err(ConfigError::invalid(
                    key("poll_interval"),
                    "must be greater than 0",
                ));
            }
            match s.kind {
                SourceKind::Postgres | SourceKind::Mysql => {
                    if s.tables.is_empty() {
                        return Err(ConfigError::invalid(
                            key("tables"),
                            "is empty: list at least one \"schema.table\"",
                        ));
                    }
                    for (j, t) in s.tables.iter().enumerate() {
                        if TablePattern::parse(t).is_none() {
                            return Err(ConfigError::invalid(
                                format!("sources[{i}].tables[{j}]"),
                                format!("{t:?} is not of the form \"schema.table\" (letters, digits, _ and $, globs * and ?: \"public.*\"; double-quote other names: '\"Sales\".\"Order Items\"')"),
                            ));
                        }
                    }
                    for (j, c) in s.exclude_columns.iter().enumerate() {
                        let Some(p) = ColumnPattern::parse(c) else {
                            return Err(ConfigError::invalid(
                                format!("sources[{i}].exclude_columns[{j}]"),
                                format!("{c:?} is not of the form \"schema.table.column\" (each part a name or a glob: \"*.*.ssn\")"),
                            ));
                        };
                        if !s
                            .tables
                            .iter()
                            .filter_map(|t| TablePattern::parse(t))
                            .any(|t| {
                                crate::filter::globs_overlap(
                                    t.schema.as_glob(),
                                    p.table.schema.as_glob(),
                                ) && crate::filter::globs_overlap(
                                    t.table.as_glob(),
                                    p.table.table.as_glob(),
                                )
                            })
                        {
                            return Err(ConfigError::invalid(
                                format!("sources[{i}].exclude_columns[{j}]"),
                                format!("{c:?} names a column of no table in `tables`"),
                            ));
                        }
                    }
                    if !s.exclude_fields.is_empty() {
                        return Err(ConfigError::invalid(
                            key("exclude_fields"),
                            "is only for kind = \"mongodb\" (use exclude_columns)",
                        ));
                    }
                    if !s.collections.is_empty() {
                        return Err(ConfigError::invalid(
                            key("collections"),
                            "is only for kind = \"mongodb\"",
                        ));
                    }
                }
                SourceKind::Mongodb => {
                    if s.collections.is_empty() {
                        return Err(ConfigError::invalid(
                            key("collections"),
                            "is empty: list at least one \"db.collection\"",
                        ));
                    }
                    for (j, c) in s.collections.iter().enumerate() {
                        let ok = c
                            .split_once('.')
                            .is_some_and(|(d, n)| !d.is_empty() && !n.is_empty());
                        if !ok {
                            return Err(ConfigError::invalid(
                                format!("sources[{i}].collections[{j}]"),
                                format!("{c:?} is not of the form \"db.collection\" or \"db.*\""),
                            ));
                        }
                    }
                    for (j, f) in s.exclude_fields.iter().enumerate() {
                        let Some(p) = FieldPattern::parse(f) else {
                            return Err(ConfigError::invalid(
                                format!("sources[{i}].exclude_fields[{j}]"),
                                format!("{f:?} is not of the form \"db.collection.field\" (a dotted path for a nested field: \"app.users.profile.ssn\")"),
                            ));
                        };
                        if p.path[0] == "_id" {
                            return Err(ConfigError::invalid(
                                format!("sources[{i}].exclude_fields[{j}]"),
                                format!("{f:?} would exclude _id, the event key: key fields cannot be excluded"),
                            ));
                        }
                    }
                    if !s.exclude_columns.is_empty() {
                        return Err(ConfigError::invalid(
                            key("exclude_columns"),
                            "is only for kind = \"postgres\" or \"mysql\" (use exclude_fields)",
                        ));
                    }
                }
            }
            if s.server_id.is_some() && s.kind != SourceKind::Mysql {
                return Err(ConfigError::invalid(
                    key("server_id"),
                    "is only for kind = \"mysql\"",
                ));
            }
            if s.server_id == Some(0) {
                return Err(ConfigError::invalid(
                    key("server_id"),
                    "0 is not a valid replica server id (use 1..=4294967295)",
                ));
            }
            if s.post_images != PostImages::WhenAvailable && s.kind != SourceKind::Mongodb {
                return Err(ConfigError::invalid(
                    key("post_images"),
                    "is only for kind = \"mongodb\"",
                ));
            }
            if s.on_history_lost != OnHistoryLost::Fail && s.kind == SourceKind::Postgres {
                return Err(ConfigError::invalid(
                    key("on_history_lost"),
                    "is only for kind = \"mysql\" or \"mongodb\"",
                ));
            }
            let scheme_ok = match s.kind {
                SourceKind::Postgres => {
                    s.url.starts_with("postgres://") || s.url.starts_with("postgresql://")
                }
                SourceKind::Mysql => {
                    s.url.starts_with("mysql://") || s.url.starts_with("mariadb://")
                }
                SourceKind::Mongodb => {
                    s.url.starts_with("mongodb://") || s.url.starts_with("mongodb+srv://")
                }
            };
            if !scheme_ok {
                return Err(ConfigError::invalid(
                    key("url"),
                    format!(
                        "{:?} does not match kind = {:?}",
                        redact_url(&s.url),
                        s.kind.as_str()
                    ),
                ));
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            let tls = match s.kind {
                SourceKind::Postgres => crate::tls::parse_pg_url(&s.url).map(drop),
                SourceKind::Mysql => crate::tls::parse_mysql_url(&s.url).map(drop),
                SourceKind::Mongodb => Ok(()),
            };
            tls.map_err(|e| ConfigError::invalid(format!("sources[{i}].url"), e.to_string()))?;
        }
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::invalid("log.level", "must not be empty"));
        }
        Ok(())
    }
}

/// The master key in environment variable `name`, if set. An invalid one is refused
/// with the variable named and its value never shown.
pub fn master_key_from_env(name: &str) -> Result<Option<MasterKey>, ConfigError> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(ConfigError::environment(name, "is not base64"))
        }
        Ok(text) => MasterKey::from_base64(&text)
            .map(Some)
            .map_err(|e| ConfigError::environment(name, e.to_string())),
    }
}

/// `http(s)://[user:pass@]host[:port][/]`, nothing else.
fn is_proxy_url(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && !authority.contains(['/', '?', '#'])
        && !text.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Source names: 1 to 48 characters of `[a-z0-9_-]`.
pub fn is_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

const TOP_LEVEL: &str = "(top level)";

/// `sources.0.kind` → `sources[0].kind`, the way users write it.
fn display_path(path: &[String]) -> String {
    if path.is_empty() {
        return TOP_LEVEL.to_owned();
    }
    let mut out = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Like `Figment::find_value`, but also steps into arrays (`sources.0.kind`).
fn find_value(fig: &Figment, path: &[String]) -> Option<figment::value::Value> {
    let (first, rest) = path.split_first()?;
    let mut value = fig.find_value(first).ok()?;
    for part in rest {
        value = match value {
            figment::value::Value::Dict(_, mut d) => d.remove(part)?,
            figment::value::Value::Array(_, mut a) => {
                let i: usize = part.parse().ok()?;
                (i < a.len()).then(|| a.swap_remove(i))?
            }
            _ => return None,
        };
    }
    Some(value)
}

/// Keys whose values are secrets: never echoed in an error.
fn is_secret_key(key: &str) -> bool {
    key == "api.tokens" || key.starts_with("api.tokens[")
}

fn show_value(value: &figment::value::Value) -> String {
    match value {
        figment::value::Value::String(_, s) => format!("{:?}", redact_url(s)),
        other => serde_json::to_string(other).unwrap_or_else(|_| "?".into()),
    }
}

/// Splits `schema.table` into its two names. Each is either plain (letters, digits,
/// `_`, `$`, not starting with a digit; used exactly as written) or double-quoted
/// like SQL (`"Sales"."Order Items"`, a `"` inside doubled), for any other name.
pub fn split_qualified(name: &str) -> Option<(String, String)> {
    let (schema, rest) = one_identifier(name)?;
    let rest = rest.strip_prefix('.')?;
    let (table, rest) = one_identifier(rest)?;
    rest.is_empty().then_some((schema, table))
}

/// The identifier at the start of `s`, and what follows it.
fn one_identifier(s: &str) -> Option<(String, &str)> {
    let (name, rest) = if let Some(quoted) = s.strip_prefix('"') {
        unquote(quoted)?
    } else {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        if s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
        (s[..end].to_owned(), &s[end..])
    };
    (!name.is_empty() && name.len() <= 63 && !name.contains('\0')).then_some((name, rest))
}

/// A double-quoted name after its opening `"`, SQL-style (a `"` inside doubled): the
/// name and what follows the closing `"`; `None` when it is never closed.
pub(crate) fn unquote(quoted: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = quoted.char_indices();
    let end = loop {
        let (i, c) = chars.next()?;
        if c == '"' {
            if quoted[i + 1..].starts_with('"') {
                chars.next();
                name.push('"');
                continue;
            }
            break i + 1;
        }
        name.push(c);
    };
    Some((name, &quoted[end..]))
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[store]
url = "postgres://postgres@127.0.0.1:5432/hookrelay"
[api]
tokens = ["change-me-please"]
[[sources]]
name = "shop"
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/shop"
tables = ["public.orders"]
"#;

    #[test]
    fn good_config_loads_with_defaults() {
        let cfg = Config::from_toml(GOOD).unwrap();
        assert_eq!(cfg.dispatch.workers, 64);
        assert_eq!(cfg.dispatch.timeout, Duration::from_secs(10));
        assert_eq!(cfg.dispatch.max_attempts, 10);
        assert_eq!(cfg.dispatch.backoff, BackoffConfig::default());
        assert_eq!(cfg.dispatch.max_age, Duration::from_secs(3 * 24 * 3600));
        assert_eq!(cfg.dispatch.circuit.failures, 10);
        assert_eq!(cfg.dispatch.circuit.max_cooldown, Duration::from_secs(60));
        assert_eq!(cfg.api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.sources[0].tables, ["public.orders"]);
    }

    #[test]
    fn table_globs_and_exclusions_load() {
        let text = GOOD.replace(
            "tables = [\"public.orders\"]",
            "tables = [\"public.*\", \"sales.order_*\"]\nexclude_columns = [\"public.users.password_hash\", \"*.*.ssn\"]",
        );
        let cfg = Config::from_toml(&text).unwrap();
        assert_eq!(cfg.sources[0].tables, ["public.*", "sales.order_*"]);
        assert_eq!(
            cfg.sources[0].exclude_columns,
            ["public.users.password_hash", "*.*.ssn"]
        );
    }

    /// Each bad config names the key it is about, and says why.
    #[test]
    fn bad_configs_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("[api]\ntokens=[\"change-me-please\"]", "store", "missing field"),
            ("[store]\nurl = \"mysql://x\"\n[api]\ntokens=[\"change-me-please\"]", "store.url", "not a postgres:// URL"),
            ("[store]\nurl = \"postgres://x?sslmode=verify\"\n[api]\ntokens=[\"change-me-please\"]", "store.url", "not one of disable"),
            (&GOOD.replace("127.0.0.1:5432/shop\"", "127.0.0.1:5432/shop?sslmode=verify-full\""), "sources[0].url", "needs sslrootcert"),
            ("[store]\nurl = \"postgres://x\"", "api.tokens", "is empty"),
            ("[store]\nurl = \"postgres://x\"\n[api]\ntokens=[\"short\"]", "api.tokens[0]", "at least 8"),
            (&format!("{GOOD}\n[dispatch]\nworkers = 0"), "dispatch.workers", "outside"),
            (&format!("{GOOD}\n[dispatch]\ntimeout = \"ten seconds\""), "dispatch.timeout", "ten seconds"),
            (&format!("{GOOD}\n[dispatch]\nmax_attempts = -1"), "dispatch.max_attempts", "-1"),
            (&format!("{GOOD}\n[dispatch]\nbackoff = {{ multiplier = 0.5 }}"), "dispatch.backoff.multiplier", "0.5"),
            (&format!("{GOOD}\n[dispatch]\nbackoff = {{ initial = \"2h\" }}"), "dispatch.backoff.initial", "longer than"),
            (&format!("{GOOD}\n[dispatch]\nallow_networks = [\"10.0.0.0/33\"]"), "dispatch.allow_networks[0]", "10.0.0.0/33"),
            (&format!("{GOOD}\n[dispatch]\nwokers = 3"), "dispatch.wokers", "unknown field"),
            (&format!("{GOOD}\n[dispatch]\nproxy = \"socks5://u:pw@p:1080\""), "dispatch.proxy", "u:***@p"),
            (&format!("{GOOD}\n[dispatch]\nproxy = \"http://p:3128/path\""), "dispatch.proxy", "http://"),
            (&GOOD.replace("name = \"shop\"", "name = \"Shop!\""), "sources[0].name", "Shop!"),
            (&GOOD.replace("kind = \"postgres\"", "kind = \"oracle\""), "sources[0].kind", "oracle"),
            (&GOOD.replace("public.orders", "orders"), "sources[0].tables[0]", "schema.table"),
            (&GOOD.replace("tables = [\"public.orders\"]", "tables = []"), "sources[0].tables", "is empty"),
            (&GOOD.replace("public.orders", "public.order s"), "sources[0].tables[0]", "schema.table"),
            (&GOOD.replace("tables = [", "exclude_columns = [\"public.users\"]\ntables = ["), "sources[0].exclude_columns[0]", "schema.table.column"),
            (&GOOD.replace("tables = [", "exclude_columns = [\"sales.*.ssn\"]\ntables = ["), "sources[0].exclude_columns[0]", "no table in `tables`"),
            (&GOOD.replace("tables = [", "exclude_fields = [\"a.b.c\"]\ntables = ["), "sources[0].exclude_fields", "only for kind"),
            (&GOOD.replace("kind = \"postgres\"", "kind = \"mongodb\"").replace("postgres@127.0.0.1:5432/shop", "x").replace("postgres://x", "mongodb://127.0.0.1:27017/?replicaSet=rs0").replace("tables = [\"public.orders\"]", "collections = [\"app.users\"]\nexclude_fields = [\"app.users._id.x\"]"), "sources[0].exclude_fields[0]", "_id, the event key"),
            (&GOOD.replace("url = \"postgres://postgres@127.0.0.1:5432/shop\"", "url = \"mysql://u:pw@h/db\""), "sources[0].url", "u:***@h"),
            (&format!("{GOOD}\n[[sources]]\nname = \"shop\"\nkind = \"postgres\"\nurl = \"postgres://x\"\ntables = [\"a.b\"]"), "sources[1].name", "used by another"),
            ("[store\nurl=", "(top level)", "TOML"),
            ("[store]\nurl = \"postgres://x\"\n[api]\ninsecure_no_auth = true\nlisten = \"0.0.0.0:8080\"", "api.insecure_no_auth", "loopback"),
            (&format!("{GOOD}\n[log]\nformat = \"xml\""), "log.format", "xml"),
            (&GOOD.replace("[api]", "[api]\nmax_connections = 10\nmax_connections_per_peer = 11"), "api.max_connections_per_peer", "outside 1..="),
            (&GOOD.replace("[api]", "[api]\nlisten = \"127.0.0.1:8080\"\nhealth_listen = \"127.0.0.1:8080\""), "api.health_listen", "port of their own"),
            (&GOOD.replace("[api]", "[api]\nhealth_listen = \"localhost\""), "api.health_listen", "localhost"),
            (&format!("{GOOD}\n[retention]\ninterval = \"500ms\""), "retention.interval", "1s to 24h"),
            (&format!("{GOOD}\n[dispatch]\nmax_age = \"3s\""), "dispatch.max_age", "between dispatch.timeout (10s)"),
            (&format!("{GOOD}\n[dispatch]\nmax_age = \"400d\""), "dispatch.max_age", "365d"),
            (&format!("{GOOD}\n[dispatch]\nmax_age = \"forever\""), "dispatch.max_age", "forever"),
            (&format!("{GOOD}\n[dispatch]\ncircuit = {{ failures = -1 }}"), "dispatch.circuit.failures", "-1"),
            (&format!("{GOOD}\n[dispatch]\ncircuit = {{ max_cooldown = \"500ms\" }}"), "dispatch.circuit.max_cooldown", "1s"),
            (&format!("{GOOD}\n[dispatch]\ncircuit = {{ failure = 3 }}"), "dispatch.circuit.failure", "unknown field"),
            (&GOOD.replace("kind = \"postgres\"", "kind = \"mongodb\"").replace("postgres@127.0.0.1:5432/shop", "x").replace("postgres://x", "mongodb://127.0.0.1:27017/?replicaSet=rs0").replace("tables = [\"public.orders\"]", "collections = [\"orders\"]"), "sources[0].collections[0]", "db.collection"),
            (&GOOD.replace("tables = [", "server_id = 7\ntables = ["), "sources[0].server_id", "only for kind"),
            (&MYSQL.replace("server_id = 4242", "server_id = 0"), "sources[0].server_id", "0 is not"),
            (&MYSQL.replace("server_id = 4242", "server_id = -1"), "sources[0].server_id", "-1"),
            (&MYSQL.replace("\"fail\"", "\"skip\""), "sources[0].on_history_lost", "skip"),
            (&GOOD.replace("tables = [", "on_history_lost = \"restart_from_now\"\ntables = ["), "sources[0].on_history_lost", "only for kind"),
            (&GOOD.replace("tables = [", "post_images = \"required\"\ntables = ["), "sources[0].post_images", "only for kind"),
            (&GOOD.replace("tables = [", "post_images = \"always\"\ntables = ["), "sources[0].post_images", "always"),
        ];
        for (text, key, why) in cases {
            let err = Config::from_toml(text).expect_err(text).to_string();
            assert!(
                err.contains(&format!("`{key}`")),
                "expected key {key} in: {err}"
            );
            assert!(err.contains(why), "expected {why:?} in: {err}");
        }
    }

    #[test]
    fn lifetime_and_circuit_keys() {
        let cfg = Config::from_toml(&format!(
            "{GOOD}\n[dispatch]\nmax_age = \"20s\"\ncircuit = {{ failures = 0 }}"
        ))
        .unwrap();
        assert_eq!(cfg.dispatch.max_age, Duration::from_secs(20));
        assert!(cfg.dispatch.circuit.is_off());
        assert_eq!(cfg.dispatch.circuit.max_cooldown, Duration::from_secs(60));
        let cfg = Config::from_toml(&format!(
            "{GOOD}\n[dispatch]\ncircuit = {{ failures = 3, max_cooldown = \"5m\" }}"
        ))
        .unwrap();
        assert_eq!(cfg.dispatch.circuit.failures, 3);
        assert_eq!(cfg.dispatch.circuit.max_cooldown, Duration::from_secs(300));
        assert!(!cfg.dispatch.circuit.is_off());
    }

    const MYSQL: &str = r#"
[store]
url = "postgres://postgres@127.0.0.1:5432/hookrelay"
[api]
tokens = ["change-me-please"]
[[sources]]
name = "legacy"
kind = "mysql"
url = "mysql://cdc:pw@127.0.0.1:3306/shop"
tables = ["shop.orders"]
server_id = 4242
on_history_lost = "fail"
"#;

    #[test]
    fn mysql_source_keys() {
        let cfg = Config::from_toml(MYSQL).unwrap();
        assert_eq!(cfg.sources[0].server_id, Some(4242));
        assert_eq!(cfg.sources[0].on_history_lost, OnHistoryLost::Fail);
        let cfg = Config::from_toml(
            &MYSQL
                .replace("server_id = 4242\n", "")
                .replace("\"fail\"", "\"restart_from_now\""),
        )
        .unwrap();
        assert_eq!(cfg.sources[0].server_id, None);
        assert_eq!(
            cfg.sources[0].on_history_lost,
            OnHistoryLost::RestartFromNow
        );
    }

    /// A token given with the wrong type is refused without being echoed.
    #[test]
    fn token_values_are_never_printed() {
        for text in [
            "[store]\nurl = \"postgres://x\"\n[api]\ntokens = \"sekrit-token-value\"",
            "[store]\nurl = \"postgres://x\"\n[api]\ntokens = [\"sekrit-token-value\", 42]",
            "[store]\nurl = \"postgres://x\"\n[api]\ntokens = [[\"sekrit-token-value\"]]",
        ] {
            let err = Config::from_toml(text).expect_err(text).to_string();
            assert!(err.contains("`api.tokens"), "{err}");
            assert!(!err.contains("sekrit"), "{err}");
        }
        let err = Config::from_toml(&format!("{GOOD}\n[dispatch]\nproxy = 5"))
            .expect_err("proxy type")
            .to_string();
        assert!(err.contains("dispatch.proxy"), "{err}");
        assert!(Config::from_toml("[store]\nurl = \"postgres://x\"\n[api]\ninsecure_no_auth = true\nlisten = \"127.0.0.1:1\"").is_ok());
        assert!(Config::from_toml(
            "[store]\nurl = \"postgres://x\"\n[api]\ninsecure_no_auth = true\nlisten = \"[::1]:1\""
        )
        .is_ok());
    }

    #[test]
    fn secrets_need_a_key_unless_plaintext_is_allowed() {
        let mut cfg = Config::from_toml(GOOD).unwrap();
        let err = cfg.secrets().unwrap_err().to_string();
        assert!(
            err.starts_with("environment variable `HOOKRELAY_MASTER_KEY`"),
            "{err}"
        );
        cfg.store.insecure_plaintext_secrets = true;
        assert!(cfg.secrets().unwrap().key().is_none());
        cfg.store.master_key = Some(MasterKey::from_bytes([1; 32]));
        assert!(cfg.secrets().unwrap().key().is_some(), "a key wins");
        // The key never appears in the serialized config (files written for tests).
        assert!(!serde_json::to_string(&cfg).unwrap().contains("master_key"));
    }

    #[test]
    fn qualified_names() {
        let ok = [
            ("public.orders", "public", "orders"),
            (r#""Sales"."Order Items""#, "Sales", "Order Items"),
            (r#"public."we""ird.name""#, "public", r#"we"ird.name"#),
            (r#""x".y$1"#, "x", "y$1"),
        ];
        for (input, schema, table) in ok {
            assert_eq!(
                split_qualified(input),
                Some((schema.to_owned(), table.to_owned())),
                "{input}"
            );
        }
        for bad in [
            "orders",
            ".orders",
            "public.",
            "pub lic.orders",
            "public.or\"ders",
            "1a.b",
            r#""unterminated.x"#,
            r#""".x"#,
            r#""a"b.c"#,
            "a.b.c",
        ] {
            assert_eq!(split_qualified(bad), None, "{bad}");
        }
    }
}
