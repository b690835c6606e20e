//! What a MySQL/MariaDB server must provide before the binlog can be read exactly,
//! and the lookups the reader needs besides the binlog itself. Nothing here changes
//! the server: every missing prerequisite is reported with the statement that fixes
//! it, all of them at once (`hookrelay check` prints the list; `run` refuses with it).

use std::collections::{HashMap, HashSet};

use mysql_async::{prelude::Queryable, Conn};

use hookrelay_core::{scope::TableScope, status::SkippedTable};

use super::{position::BinlogPosition, table::LayoutError, value::Charset};
use crate::SourceError;

/// A stable replica id from the source name (FNV-1a), in the upper half of the id
/// space where hand-assigned ids rarely are, never 0.
pub fn default_server_id(source: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in source.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x8000_0000 | (h & 0x7fff_ffff)
}

/// Server settings the reader depends on, and how to fix each.
const REQUIRED: [(&str, &str, &str); 4] = [
    (
        "log_bin",
        "ON",
        "log_bin is OFF: start the server with --log-bin (log_bin = ON in its config; needs a restart)",
    ),
    (
        "binlog_format",
        "ROW",
        "binlog_format is {}: SET GLOBAL binlog_format = 'ROW'; (and binlog_format = ROW in the server config)",
    ),
    (
        "binlog_row_image",
        "FULL",
        "binlog_row_image is {}: SET GLOBAL binlog_row_image = 'FULL'; (and in the server config)",
    ),
    (
        "binlog_row_metadata",
        "FULL",
        "binlog_row_metadata is {}: SET GLOBAL binlog_row_metadata = 'FULL'; (and in the server config) so every table map carries column names, signedness, ENUM/SET members and the primary key",
    ),
];

/// Every missing prerequisite for reading `tables`, each with its fix; empty = ready.
pub async fn problems(
    conn: &mut Conn,
    tables: &[(String, String)],
) -> Result<Vec<String>, SourceError> {
    let mut out = Vec::new();
    let vars: HashMap<String, String> = conn
        .query::<(String, String), _>(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', 'log_bin_compress', 'binlog_row_value_options')",
        )
        .await?
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    for (name, want, fix) in REQUIRED {
        match vars.get(name) {
            Some(v) if v.eq_ignore_ascii_case(want) => {}
            Some(v) => out.push(fix.replace("{}", v)),
            None => out.push(format!(
                "{name} is not a server variable here: this server is too old (MariaDB 10.5+ or MySQL 8.0.1+ is needed)"
            )),
        }
    }
    if vars
        .get("log_bin_compress")
        .is_some_and(|v| v.eq_ignore_ascii_case("ON"))
    {
        out.push("log_bin_compress is ON: compressed row events cannot be read; SET GLOBAL log_bin_compress = OFF;".into());
    }
    if vars
        .get("binlog_row_value_options")
        .is_some_and(|v| v.to_ascii_uppercase().contains("PARTIAL_JSON"))
    {
        out.push("binlog_row_value_options has PARTIAL_JSON: JSON updates would carry no full value; SET GLOBAL binlog_row_value_options = '';".into());
    }
    // Fix lines name the user hookrelay connects as: `TO CURRENT_USER` in a statement
    // an administrator runs would grant the administrator.
    let user: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await?
        .unwrap_or_else(|| "the hookrelay user".into());
    let quoted = quote_account(&user);
    out.extend(missing_grants(conn, &user, &quoted).await?);
    for (db, table) in tables {
        let key_columns: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS
                  WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_KEY = 'PRI'",
                (db, table),
            )
            .await?;
        if !key_columns.is_empty() {
            continue;
        }
        let exists: Option<String> = conn
            .exec_first(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await?;
        out.push(match exists {
            Some(_) => format!(
                "table {db}.{table} has no primary key: events need one for their key and per-key order; ALTER TABLE `{db}`.`{table}` ADD PRIMARY KEY (…);"
            ),
            None => format!(
                "table {db}.{table} does not exist or this user cannot see it: create it, or GRANT SELECT ON `{db}`.`{table}` TO {quoted};"
            ),
        });
    }
    Ok(out)
}

/// Every existing base table the patterns match, with its primary-key columns (empty
/// for none), in name order.
async fn matching_tables(
    conn: &mut Conn,
    scope: &TableScope,
) -> Result<Vec<(String, String, Vec<String>)>, SourceError> {
    // One row per key column (one with NULL for a table without a key).
    let rows: Vec<(String, String, Option<String>)> = conn
        .query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, k.COLUMN_NAME
               FROM information_schema.TABLES t
               LEFT JOIN information_schema.COLUMNS k
                 ON k.TABLE_SCHEMA = t.TABLE_SCHEMA AND k.TABLE_NAME = t.TABLE_NAME AND k.COLUMN_KEY = 'PRI'
              WHERE t.TABLE_TYPE = 'BASE TABLE'
                AND t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
              ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME, k.ORDINAL_POSITION",
        )
        .await?;
    let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
    for (db, table, key) in rows {
        if !scope.captures(&db, &table) {
            continue;
        }
        match out.last_mut() {
            Some((d, t, k)) if *d == db && *t == table => k.extend(key),
            _ => out.push((db, table, key.into_iter().collect())),
        }
    }
    Ok(out)
}

/// The tables the patterns match now.
#[derive(Debug, Default)]
pub struct ScopeNow {
    /// `db.table` of each table with a primary key, none of it excluded.
    pub captured: Vec<String>,
    /// The others, with why.
    pub skipped: Vec<SkippedTable>,
    /// `exclude_columns` removing a key column of a matching table: such a config is
    /// refused at start.
    pub excluded_keys: Vec<String>,
}

/// One look at the server's tables (information_schema is slow on MariaDB: once).
pub async fn scope_now(conn: &mut Conn, scope: &TableScope) -> Result<ScopeNow, SourceError> {
    let mut now = ScopeNow::default();
    for (db, table, key) in matching_tables(conn, scope).await? {
        let qualified = format!("{db}.{table}");
        let reason = if key.is_empty() {
            LayoutError::NoKey
        } else if let Some(col) = scope.excluded_key(&db, &table, &key) {
            now.excluded_keys.push(format!(
                "exclude_columns would exclude {db}.{table}.{col}, part of the table's primary key: key columns are each event's identity and cannot be excluded"
            ));
            LayoutError::ExcludedKey(col.to_owned())
        } else {
            now.captured.push(qualified);
            continue;
        };
        now.skipped.push(SkippedTable {
            table: qualified,
            reason: reason.to_string(),
        });
    }
    Ok(now)
}

/// REPLICATION SLAVE (to read the binlog) and REPLICATION CLIENT (MariaDB 10.5+
/// calls it BINLOG MONITOR; to ask for the current position and the binlog list).
async fn missing_grants(
    conn: &mut Conn,
    user: &str,
    quoted: &str,
) -> Result<Vec<String>, SourceError> {
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let global: Vec<String> = grants
        .iter()
        .map(|g| g.to_ascii_uppercase())
        .filter(|g| g.contains(" ON *.* "))
        .collect();
    let has = |names: &[&str]| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || names.iter().any(|n| g.contains(n)))
    };
    let mut out = Vec::new();
    if !has(&["REPLICATION SLAVE", "REPLICATION REPLICA"]) {
        out.push(format!(
            "{user} lacks REPLICATION SLAVE (needed to read the binlog): GRANT REPLICATION SLAVE ON *.* TO {quoted};"
        ));
    }
    if !has(&["REPLICATION CLIENT", "BINLOG MONITOR"]) {
        out.push(format!(
            "{user} lacks REPLICATION CLIENT (needed for the binlog position and list): GRANT REPLICATION CLIENT ON *.* TO {quoted};"
        ));
    }
    Ok(out)
}

/// `cdc@%` as an account name a GRANT takes: `'cdc'@'%'`.
pub fn quote_account(user: &str) -> String {
    match user.rsplit_once('@') {
        Some((u, h)) => format!("'{u}'@'{h}'"),
        None => format!("'{user}'"),
    }
}

/// What to run when the server refuses the configured user (access denied): the
/// account with the privileges a source needs, named as the url names it.
pub fn access_denied_fix(user: &str, tables: &[(String, String)]) -> String {
    let account = format!("'{user}'@'%'");
    let selects: Vec<String> = tables
        .iter()
        .map(|(db, t)| format!("GRANT SELECT ON `{db}`.`{t}` TO {account};"))
        .collect();
    format!(
        "check the user and password in the source's url; the user needs (run as an administrator, host part as your network needs): \
         CREATE USER {account} IDENTIFIED BY '…'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {account}; {}",
        selects.join(" ")
    )
}

/// The server's current binlog end: where a new source starts capturing.
pub async fn current_position(conn: &mut Conn) -> Result<BinlogPosition, SourceError> {
    let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let row = row.ok_or_else(|| {
        SourceError::Setup("SHOW MASTER STATUS returned nothing: log_bin is OFF".into())
    })?;
    let file: String = row
        .get_opt(0)
        .and_then(Result::ok)
        .ok_or_else(|| SourceError::Setup("SHOW MASTER STATUS: no file".into()))?;
    let offset: u64 = row
        .get_opt(1)
        .and_then(Result::ok)
        .ok_or_else(|| SourceError::Setup("SHOW MASTER STATUS: no position".into()))?;
    Ok(BinlogPosition {
        file,
        offset,
        gtid: None,
    })
}

/// Binlog files the server still has.
pub async fn binlog_files(conn: &mut Conn) -> Result<HashSet<String>, SourceError> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get_opt::<String, _>(0).and_then(Result::ok))
        .collect())
}

/// Collation id → how its bytes decode, for every collation the server knows.
pub async fn charsets(conn: &mut Conn) -> Result<HashMap<u16, Charset>, SourceError> {
    // MariaDB 10.10+ lists collations without an id (NULL): they never appear in a
    // table map.
    let rows: Vec<(Option<u64>, Option<String>)> = conn
        .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, cs)| {
            let (id, cs) = (id?, cs?);
            let kind = match cs.as_str() {
                "binary" => Charset::Binary,
                "utf8" | "utf8mb3" | "utf8mb4" | "ascii" => Charset::Utf8,
                "latin1" => Charset::Latin1,
                _ => Charset::Other,
            };
            u16::try_from(id).ok().map(|id| (id, kind))
        })
        .collect())
}

/// MariaDB's JSON columns of `db.table`: LONGTEXT whose check is `json_valid(col)`
/// (the binlog shows them as plain text). Read from the current schema, so a column
/// that stopped being JSON after an ALTER TABLE shows as JSON in older events only
/// if its text still parses; MySQL's JSON type is in the binlog itself.
pub async fn json_columns(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<HashSet<String>, SourceError> {
    let checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
              WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await
        .unwrap_or_default();
    Ok(checks
        .iter()
        .filter_map(|c| {
            let c = c.trim();
            let inner = c.strip_prefix("json_valid(")?.strip_suffix(')')?;
            Some(inner.trim_matches('`').to_owned())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_server_ids_are_stable_distinct_and_high() {
        let a = default_server_id("legacy");
        assert_eq!(a, default_server_id("legacy"));
        assert_ne!(a, default_server_id("legacy2"));
        assert!(a >= 0x8000_0000);
        // Pinned: a change here would make every deployed source register anew.
        assert_eq!(
            default_server_id(""),
            0x8000_0000 | (0x811c_9dc5 & 0x7fff_ffff)
        );
    }
}
