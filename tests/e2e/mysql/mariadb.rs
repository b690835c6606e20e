//! A throwaway MariaDB on a temp dir and a free port, binlog on (ROW, FULL image,
//! FULL metadata) unless asked otherwise, killed and removed on drop. The machine's
//! own MariaDB (binlog off) is never touched. `scripts/test.sh` installs the
//! server binaries where they are missing. Self-contained (std, tokio, mysql_async,
//! uuid): `hookrelay-bench` includes this file for its MySQL workload.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mysql_async::{prelude::Queryable, Conn, Opts};

pub struct MariaDbInstance {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
    /// Started with `require_secure_transport`: the harness's own connections use
    /// TLS too (without verifying: they are not what a test is about).
    tls_only: bool,
}

/// Files a TLS-only server is started with (PEM paths).
pub struct MariaDbTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// How the server logs changes.
pub enum Binlog {
    /// log_bin, ROW, FULL image, FULL metadata: what hookrelay needs.
    Ready,
    /// No binlog at all, and the other settings at their defaults: for `check`.
    Off,
    /// As `Ready`, with `binlog_ignore_db` leaving this database out of the binlog.
    Ignoring(&'static str),
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn require(bin: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} is missing: install the MariaDB server (apt-get install mariadb-server; scripts/test.sh does this)");
}

impl MariaDbInstance {
    pub async fn start(binlog: Binlog) -> Self {
        Self::start_with(binlog, None).await
    }

    /// A server that accepts TLS connections only (`require_secure_transport`).
    pub async fn start_tls(binlog: Binlog, tls: &MariaDbTls) -> Self {
        Self::start_with(binlog, Some(tls)).await
    }

    async fn start_with(binlog: Binlog, tls: Option<&MariaDbTls>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hookrelay-mariadb-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("mariadb dir");
        // Owned from here on, so a failed bootstrap still removes the directory.
        let mut inst = Self {
            dir: dir.clone(),
            port: free_port(),
            child: None,
            args: Vec::new(),
            tls_only: tls.is_some(),
        };
        let data = dir.join("data");
        // A bootstrap racing another one on a loaded machine has been seen to fail
        // once (1051 on mysql.tmp_user_sys); a second try on a fresh datadir works.
        for attempt in 1..=3 {
            let _ = std::fs::remove_dir_all(&data);
            let out = Command::new(require("mariadb-install-db"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", dir.display()))
                .args([
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ])
                .output()
                .expect("run mariadb-install-db");
            if out.status.success() {
                break;
            }
            assert!(
                attempt < 3,
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = inst.port;
        let mut args = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", dir.join("sock").display()),
            format!("--pid-file={}", dir.join("pid").display()),
            format!("--tmpdir={}", dir.display()),
            format!("--log-error={}", dir.join("error.log").display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--user=root".into(),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=64M".into(),
            "--innodb-log-file-size=32M".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--sync-binlog=0".into(),
            "--max-connections=50".into(),
        ];
        if let Binlog::Ignoring(db) = binlog {
            args.push(format!("--binlog-ignore-db={db}"));
        }
        match binlog {
            Binlog::Ready | Binlog::Ignoring(_) => args.extend([
                format!("--log-bin={}", data.join("binlog").display()),
                "--binlog-format=ROW".into(),
                "--binlog-row-image=FULL".into(),
                "--binlog-row-metadata=FULL".into(),
                "--server-id=1".into(),
            ]),
            Binlog::Off => args.extend([
                "--binlog-format=MIXED".into(),
                "--binlog-row-image=MINIMAL".into(),
            ]),
        }
        if let Some(tls) = tls {
            args.extend([
                format!("--ssl-cert={}", tls.cert.display()),
                format!("--ssl-key={}", tls.key.display()),
                format!("--ssl-ca={}", tls.ca.display()),
                "--require-secure-transport=ON".into(),
            ]);
        }
        inst.args = args;
        // The port was free when picked, but a test running beside this one may take
        // it before the server binds it: then the server exits, and a fresh port is
        // tried (only here: a restart must keep its port).
        for attempt in 1..=3 {
            match inst.spawn().await {
                Ok(()) => return inst,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    inst.port = free_port();
                    let port_arg = format!("--port={}", inst.port);
                    for a in inst.args.iter_mut().filter(|a| a.starts_with("--port=")) {
                        *a = port_arg.clone();
                    }
                }
                Err(log) => panic!("mariadbd did not start: {log}"),
            }
        }
        inst
    }

    /// Starts the server and waits until it accepts connections; if it exits (or
    /// does not answer within 60 s) the end of its error log is the error.
    async fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(require("mariadbd"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let opts = self.opts("mysql");
        let log_tail = |dir: &PathBuf| {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        };
        loop {
            if let Ok(c) = Conn::new(opts.clone()).await {
                let _ = c.disconnect().await;
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return Err(format!("it exited; its log ends:\n{}", log_tail(&self.dir)));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no connection within 60 s; its log ends:\n{}",
                    log_tail(&self.dir)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9` of the server, then start it again on the same data and port.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn().await {
            panic!("mariadbd did not restart: {log}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    fn opts(&self, db: &str) -> Opts {
        let opts = Opts::from_url(&self.url(db)).expect("url");
        if !self.tls_only {
            return opts;
        }
        let ssl = mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true);
        mysql_async::OptsBuilder::from_opts(opts)
            .ssl_opts(ssl)
            .into()
    }

    pub async fn connect(&self, db: &str) -> Conn {
        Conn::new(self.opts(db))
            .await
            .unwrap_or_else(|e| panic!("connect to mariadb on {}: {e}", self.port))
    }
}

impl Drop for MariaDbInstance {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs each statement, panicking with the statement on error.
pub async fn exec(conn: &mut Conn, sql: &str) {
    conn.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
