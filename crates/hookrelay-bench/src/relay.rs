//! hookrelay as a child process: the bench's tuned config, start (wait for `/readyz`
//! and for the capture trigger), subscriptions over the admin API, and a clean stop
//! (SIGTERM, then SIGKILL after a grace period). Each workload gets a fresh process.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::db::Databases;

pub const TOKEN: &str = "bench-admin-token";

/// The tuned config every workload runs with (placeholders filled in by [`config`]).
/// Defaults except: a 5 s attempt timeout (the bad neighbour's hanging requests time
/// out within the run), short backoff and more attempts (no delivery exhausts its
/// attempts during a run), and `warn` logging (no log line per failed attempt).
pub const CONFIG_TEMPLATE: &str = r#"[store]
url = "{store_url}"
pool_size = 16

[api]
listen = "127.0.0.1:{port}"
tokens = ["{token}"]

[dispatch]
workers = 64
per_subscription = 16
timeout = "5s"
max_attempts = 20
backoff = { initial = "500ms", max = "10s", multiplier = 2.0 }
allow_networks = ["127.0.0.0/8"]
poll_interval = "500ms"

[[sources]]
name = "bench"
kind = "postgres"
url = "{source_url}"
tables = ["public.orders"]
poll_interval = "1s"
batch_size = 1000

[log]
format = "text"
level = "warn"
"#;

pub fn config(dbs: &Databases, port: u16) -> String {
    CONFIG_TEMPLATE
        .replace("{store_url}", &dbs.store_url())
        .replace("{source_url}", &dbs.source_url())
        .replace("{port}", &port.to_string())
        .replace("{token}", TOKEN)
}

/// The same tuned config with a MySQL source reading `shop.orders` at `mysql_url`.
pub fn mysql_config(dbs: &Databases, mysql_url: &str, port: u16) -> String {
    let text = CONFIG_TEMPLATE
        .replace("{store_url}", &dbs.store_url())
        .replace("{source_url}", mysql_url)
        .replace("{port}", &port.to_string())
        .replace("{token}", TOKEN)
        .replace("kind = \"postgres\"", "kind = \"mysql\"")
        .replace("poll_interval = \"1s\"\n", "");
    watching(&text, &["shop.orders"])
}

/// `config` with the source watching `tables` instead of `public.orders` alone.
fn watching(config: &str, tables: &[&str]) -> String {
    config.replace(
        "tables = [\"public.orders\"]",
        &format!("tables = {}", json!(tables)),
    )
}

/// Which source the relay reads, and so what "ready" means beyond `/readyz`.
pub enum SourceKind<'a> {
    /// The bench's PostgreSQL source: its capture trigger installed too.
    Postgres,
    /// The bench's PostgreSQL source watching these tables (`public.orders` among
    /// them, whose capture trigger "ready" waits for).
    PostgresTables(&'a [&'a str]),
    /// A MySQL source at this URL: `/readyz` (the reader has its first checkpoint).
    Mysql(&'a str),
}

/// A running `hookrelay run`.
pub struct RelayProcess {
    child: Child,
    pub pid: u32,
    api: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl RelayProcess {
    /// Writes the config next to the log, starts the binary, waits until the admin API
    /// answers `/readyz` and the source's trigger is installed.
    pub async fn start(
        bin: &Path,
        dbs: &Databases,
        dir: &Path,
        tag: &str,
        overrides: &[(String, String)],
    ) -> anyhow::Result<Self> {
        Self::start_reading(bin, dbs, SourceKind::Postgres, dir, tag, overrides).await
    }

    /// [`Self::start`] for a given source kind.
    pub async fn start_reading(
        bin: &Path,
        dbs: &Databases,
        kind: SourceKind<'_>,
        dir: &Path,
        tag: &str,
        overrides: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let cfg_path = dir.join(format!("{tag}.toml"));
        let log = dir.join(format!("{tag}.log"));
        let text = match kind {
            SourceKind::Postgres => config(dbs, port),
            SourceKind::PostgresTables(tables) => watching(&config(dbs, port), tables),
            SourceKind::Mysql(url) => mysql_config(dbs, url, port),
        };
        let trigger = !matches!(kind, SourceKind::Mysql(_));
        std::fs::write(&cfg_path, text)
            .with_context(|| format!("writing {}", cfg_path.display()))?;
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // The config file alone decides; no stray overrides from the environment.
        for (k, _) in std::env::vars() {
            if k.starts_with("HOOKRELAY_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        // Secrets sealed as in production (the store is a scratch database).
        cmd.env("HOOKRELAY_MASTER_KEY", dbs.master_key());
        cmd.envs(overrides.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} (build it: scripts/bench.sh)", bin.display()))?;
        let mut relay = Self {
            pid: child.id(),
            child,
            api: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            log,
        };
        relay.wait_ready(dbs, trigger).await?;
        Ok(relay)
    }

    async fn wait_ready(&mut self, dbs: &Databases, trigger: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            let ready = self
                .http
                .get(format!("{}/readyz", self.api))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready && (!trigger || dbs.trigger_installed().await?) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "hookrelay did not become ready (readyz + capture trigger) within 60 s; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails with the exit status and the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "hookrelay exited ({status}); last log lines:\n{}",
                log_tail(&self.log, 15)
            );
        }
        Ok(())
    }

    /// `POST /v1/subscriptions` for `orders.*` with the given secret; the id.
    pub async fn subscribe(&self, url: &str, secret: &str) -> anyhow::Result<String> {
        self.subscribe_to(url, secret, &["orders.*"], false).await
    }

    /// `POST /v1/subscriptions` for `event_types` with the given secret; the id.
    /// `force` accepts globs no configured table matches.
    pub async fn subscribe_to(
        &self,
        url: &str,
        secret: &str,
        event_types: &[&str],
        force: bool,
    ) -> anyhow::Result<String> {
        self.create(
            json!({ "url": url, "event_types": event_types, "secret": secret }),
            secret,
            force,
        )
        .await
    }

    /// Subscribes `url` to every event, through a row `filter`.
    pub async fn subscribe_filtered(
        &self,
        url: &str,
        secret: &str,
        filter: &str,
    ) -> anyhow::Result<String> {
        self.create(
            json!({ "url": url, "secret": secret, "filter": filter }),
            secret,
            false,
        )
        .await
    }

    async fn create(&self, body: Value, secret: &str, force: bool) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/v1/subscriptions?force={force}", self.api))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .context("POST /v1/subscriptions")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.as_u16() != 201 {
            bail!("POST /v1/subscriptions answered {status}: {text}");
        }
        let v: Value = serde_json::from_str(&text).context("subscription JSON")?;
        if v["secret"].as_str() != Some(secret) {
            bail!("the created subscription does not carry the secret that was sent");
        }
        v["id"]
            .as_str()
            .map(str::to_owned)
            .context("subscription without an id")
    }

    /// `GET /v1/subscriptions`: how many it listed.
    pub async fn list_subscriptions(&self) -> anyhow::Result<usize> {
        let resp = self
            .http
            .get(format!("{}/v1/subscriptions", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .context("GET /v1/subscriptions")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET /v1/subscriptions answered {status}: {text}");
        }
        let v: Value = serde_json::from_str(&text).context("subscriptions JSON")?;
        let list = v.get("data").unwrap_or(&v);
        list.as_array()
            .map(Vec::len)
            .context("GET /v1/subscriptions did not answer a list")
    }

    /// `GET /v1/subscriptions?limit=&cursor=`: how many the page listed and its
    /// `next_cursor`, or `None` for the cursor when the answer had none at all (a
    /// hookrelay without paging, which lists everything).
    pub async fn list_subscriptions_page(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> anyhow::Result<(usize, Option<Option<String>>)> {
        let mut url = format!("{}/v1/subscriptions?limit={limit}", self.api);
        if let Some(c) = cursor {
            url.push_str("&cursor=");
            url.push_str(c);
        }
        let resp = self
            .http
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .context("GET /v1/subscriptions?limit=")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET /v1/subscriptions?limit= answered {status}: {text}");
        }
        let v: Value = serde_json::from_str(&text).context("subscriptions JSON")?;
        let n = v["data"]
            .as_array()
            .map(Vec::len)
            .context("a page without data")?;
        let next = v.get("next_cursor").map(|c| c.as_str().map(str::to_owned));
        Ok((n, next))
    }

    /// `POST /v1/subscriptions/{id}/backfill` of `tables`: the backfill's id.
    pub async fn start_backfill(
        &self,
        subscription: &str,
        tables: &[&str],
    ) -> anyhow::Result<String> {
        let req = self
            .http
            .post(format!(
                "{}/v1/subscriptions/{subscription}/backfill",
                self.api
            ))
            .header("content-type", "application/json")
            .body(json!({ "tables": tables }).to_string());
        let v = self
            .admin(req, "POST /v1/subscriptions/{id}/backfill")
            .await?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .context("a backfill without an id")
    }

    /// `GET /v1/backfills/{id}`: its state and progress.
    pub async fn backfill(&self, id: &str) -> anyhow::Result<BackfillStatus> {
        let req = self.http.get(format!("{}/v1/backfills/{id}", self.api));
        let v = self.admin(req, "GET /v1/backfills/{id}").await?;
        serde_json::from_value(v).context("backfill JSON")
    }

    /// Sends an admin API request with the token; its JSON answer, or the status and
    /// body of any answer other than 2xx.
    async fn admin(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(TOKEN)
            .send()
            .await
            .context(what.to_owned())?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{what} answered {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: not JSON"))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "  hookrelay (pid {}) did not stop within {grace:?} of SIGTERM; killing it",
            self.pid
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What `GET /v1/backfills/{id}` says of a backfill (docs/api.md, "Backfill").
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BackfillStatus {
    /// `running`, `completed`, `failed` or `cancelled`.
    pub state: String,
    /// Rows sent as read events so far.
    pub rows: i64,
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub ended_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `dispatch.per_subscription=64` → (`HOOKRELAY_DISPATCH__PER_SUBSCRIPTION`, `64`).
pub fn env_override(setting: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = setting
        .split_once('=')
        .with_context(|| format!("--set {setting:?}: expected SECTION.KEY=VALUE"))?;
    let Some((section, field)) = key.split_once('.') else {
        bail!("--set {setting:?}: expected SECTION.KEY=VALUE");
    };
    Ok((
        format!(
            "HOOKRELAY_{}__{}",
            section.to_ascii_uppercase(),
            field.to_ascii_uppercase()
        ),
        value.to_owned(),
    ))
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
