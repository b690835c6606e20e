//! MySQL/MariaDB sources end to end (issue 9): a throwaway MariaDB with its binlog on,
//! hookrelay in-process, a real HTTP receiver.

#[cfg(feature = "failpoints")]
mod chunks;
mod kills;
mod leader;
mod mariadb;
mod metadata;
mod pipeline;
mod values;

use hookrelay_core::Config;
pub use mariadb::{exec, Binlog, MariaDbInstance};

use crate::harness::TOKEN;

/// The usual fast test settings, with one `kind = "mysql"` source named `legacy`.
pub fn mysql_config(store_url: &str, source_url: &str, tables: &[&str], extra: &str) -> Config {
    let tables = tables
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"
[store]
url = "{store_url}"
pool_size = 8
[api]
listen = "127.0.0.1:0"
tokens = ["{TOKEN}"]
[dispatch]
workers = 16
timeout = "3s"
max_attempts = 4
backoff = {{ initial = "50ms", max = "400ms", multiplier = 2.0 }}
allow_networks = ["127.0.0.0/8"]
poll_interval = "100ms"
[[sources]]
name = "legacy"
kind = "mysql"
url = "{source_url}"
tables = [{tables}]
batch_size = 500
{extra}
"#
    );
    crate::harness::with_test_master_key(Config::from_toml(&text).expect("test config"))
}

/// A MariaDB with binlog on and database `shop`.
pub async fn shop() -> MariaDbInstance {
    crate::harness::init_logs();
    let my = MariaDbInstance::start(Binlog::Ready).await;
    let mut c = my.connect("mysql").await;
    exec(&mut c, "CREATE DATABASE shop").await;
    my
}
