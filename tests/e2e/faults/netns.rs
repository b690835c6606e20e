//! A network namespace joined to the host by veth links, for partition tests. A process
//! started inside reaches the host's services only over these links; taking a link's
//! inner end down cuts it silently (no RST, no FIN: the host's packets just stop
//! arriving), as a dead host or a failed switch would.
//!
//! ```text
//!   host                                      namespace
//!   169.254.X.1  ══ link 0 (veth pair) ══  169.254.X.2
//!   169.254.X.5  ══ link 1 (veth pair) ══  169.254.X.6
//! ```
//!
//! Names carry the creating process's pid, so runs never clash, and a namespace left by
//! a run that died without cleaning up (its pid gone) is removed by the next one.
//! Making one needs root (CAP_NET_ADMIN); without it `create` says why.

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use rand::Rng;

const PREFIX: &str = "hookrelay-part-";

/// One veth pair between the host and the namespace, a /30 of its own.
pub struct Link {
    pub host_dev: String,
    pub ns_dev: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
    /// The link's /30, e.g. for a pg_hba line or `dispatch.allow_networks`.
    pub net: String,
}

pub struct Netns {
    pub name: String,
    pub links: Vec<Link>,
}

impl Netns {
    /// A namespace with `links` veth links to the host, all up. `Err` says why one
    /// cannot be made here (typically: not root).
    pub fn create(links: usize) -> Result<Self, String> {
        assert!(links <= 60, "one /24 holds the links");
        // Tests of one process (plain `cargo test`) make theirs one at a time, so two
        // never pick the same free /24.
        static CREATING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}-{n}");
        ip(&["netns", "add", &name])?;
        let octet = free_link_local_octet();
        let mut ns = Self {
            name,
            links: Vec::new(),
        };
        // From here on `ns` is dropped (and the namespace deleted) if a step fails.
        ns.exec_ip(&["link", "set", "lo", "up"])?;
        for i in 0..links {
            // Interface names are at most 15 bytes: "hr" + pid (≤ 7) + "x" + n + i + side.
            let base = format!("hr{pid}x{n}{i}");
            let host_ip = Ipv4Addr::new(169, 254, octet, (i * 4 + 1) as u8);
            let ns_ip = Ipv4Addr::new(169, 254, octet, (i * 4 + 2) as u8);
            let link = Link {
                host_dev: format!("{base}h"),
                ns_dev: format!("{base}n"),
                host_ip,
                ns_ip,
                net: format!("169.254.{octet}.{}/30", i * 4),
            };
            assert!(link.host_dev.len() <= 15, "{} is too long", link.host_dev);
            ip(&[
                "link",
                "add",
                &link.host_dev,
                "type",
                "veth",
                "peer",
                "name",
                &link.ns_dev,
                "netns",
                &ns.name,
            ])?;
            ip(&[
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &link.host_dev,
            ])?;
            ip(&["link", "set", &link.host_dev, "up"])?;
            ns.exec_ip(&["addr", "add", &format!("{ns_ip}/30"), "dev", &link.ns_dev])?;
            ns.exec_ip(&["link", "set", &link.ns_dev, "up"])?;
            ns.links.push(link);
        }
        Ok(ns)
    }

    /// `program` to be run inside the namespace (`ip netns exec` execs it in place, so
    /// the child's pid is the program's own).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Takes link `i`'s inner end down: from now on nothing crosses it, silently.
    pub fn cut(&self, i: usize) {
        self.exec_ip(&["link", "set", &self.links[i].ns_dev, "down"])
            .unwrap_or_else(|e| panic!("cut link {i}: {e}"));
    }

    /// Brings link `i` back (its addresses stay configured while it is down).
    pub fn heal(&self, i: usize) {
        self.exec_ip(&["link", "set", &self.links[i].ns_dev, "up"])
            .unwrap_or_else(|e| panic!("heal link {i}: {e}"));
    }

    fn exec_ip(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        ip(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; the namespace itself goes once
        // nothing runs in it (the test kills its processes before this).
        for link in &self.links {
            let _ = ip(&["link", "del", &link.host_dev]);
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("could not delete network namespace {}: {e}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes namespaces of earlier runs whose process is gone (a crash, a `kill -9`).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing network namespace {name} left by a run that died");
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A third octet for 169.254.X.0/24 that no address on this host uses yet (nor the
/// 169.254.169.x of cloud metadata services).
fn free_link_local_octet() -> u8 {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    loop {
        let octet: u8 = rand::thread_rng().gen_range(1..=254);
        if octet != 169 && !out.contains(&format!("169.254.{octet}.")) {
            return octet;
        }
    }
}
