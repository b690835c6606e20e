//! A throwaway PostgreSQL server on a temp dir and a free port, so restart tests never
//! touch the machine's shared server. `initdb`/`pg_ctl` run as the `postgres` user
//! when the tests run as root (PostgreSQL refuses to run as root).

use std::{net::IpAddr, path::PathBuf, process::Command};

pub struct PgInstance {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    /// Addresses the server listens on besides 127.0.0.1.
    also_listen: Vec<IpAddr>,
}

fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version with pg_ctl")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl PgInstance {
    pub fn start() -> Self {
        Self::start_also_on(&[], &[])
    }

    /// A server that also listens on `addrs` (e.g. the host end of a veth pair) and
    /// trusts clients from the `trusted` CIDRs there, as it trusts 127.0.0.1.
    pub fn start_also_on(addrs: &[IpAddr], trusted: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("hookrelay-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let inst = Self {
            dir,
            port: free_port(),
            bin: pg_bin_dir(),
            also_listen: addrs.to_vec(),
        };
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&inst.dir));
        }
        inst.pg(
            &["initdb"],
            &[
                "-D",
                &inst.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        if !trusted.is_empty() {
            let hba = inst.dir.join("data").join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            for net in trusted {
                text.push_str(&format!("host all all {net} trust\n"));
            }
            std::fs::write(&hba, text).expect("write pg_hba.conf");
        }
        inst.start_server();
        inst
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The same database reached at another of the server's addresses.
    pub fn url_via(&self, addr: IpAddr, db: &str) -> String {
        format!("postgres://postgres@{addr}:{}/{db}", self.port)
    }

    fn pg(&self, tool: &[&str], args: &[&str]) {
        let exe = self.bin.join(tool[0]);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(&self.dir);
        run(&mut cmd);
    }

    fn start_server(&self) {
        let listen: Vec<String> = std::iter::once("127.0.0.1".to_owned())
            .chain(self.also_listen.iter().map(|a| a.to_string()))
            .collect();
        let opts = format!(
            "-p {} -c listen_addresses={} -k {} -c fsync=off -c max_connections=100",
            self.port,
            listen.join(","),
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.pg(
            &["pg_ctl"],
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// `pg_ctl stop -m immediate`: a crash from the clients' point of view.
    pub fn crash(&self) {
        self.pg(
            &["pg_ctl"],
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub fn start_again(&self) {
        self.start_server();
    }

    /// `pg_ctl restart -m immediate`.
    pub fn restart_immediate(&self) {
        self.crash();
        self.start_server();
    }

    pub async fn create_db(&self, name: &str) {
        let c = crate::harness::connect(&self.url("postgres")).await;
        c.batch_execute(&format!("create database \"{name}\""))
            .await
            .expect("create db");
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
