//! MySQL/MariaDB sources end to end: a throwaway MariaDB with its binlog on,
//! hookrelay in-process, a real HTTP receiver.

#[cfg(feature = "failpoints")]
mod chunks;
mod mariadb;
mod metadata;
mod pipeline;
mod scope;
mod values;

use hookrelay_core::Config;
pub use mariadb::{exec, Binlog, MariaDbInstance, MariaDbTls};

/// The usual fast test settings, with one `kind = "mysql"` source named `legacy`.
pub fn mysql_config(store_url: &str, source_url: &str, tables: &[&str], extra: &str) -> Config {
    let tables = tables
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    crate::harness::test_config(
        store_url,
        &format!(
            r#"
[[sources]]
name = "legacy"
kind = "mysql"
url = "{source_url}"
tables = [{tables}]
batch_size = 500
{extra}
"#
        ),
    )
}

/// A MariaDB with binlog on and database `shop`.
pub async fn shop() -> MariaDbInstance {
    crate::harness::init_logs();
    let my = MariaDbInstance::start(Binlog::Ready).await;
    let mut c = my.connect("mysql").await;
    exec(&mut c, "CREATE DATABASE shop").await;
    my
}
