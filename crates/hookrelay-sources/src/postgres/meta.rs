//! Per-table facts the reader needs: primary-key columns (the event `key`) and the
//! columns whose JSON form must be converted. Loaded lazily and reloaded when a row
//! shows a column we have not seen (ALTER TABLE while running).
//!
//! A column's kind comes from its type's OID, followed through domains (to the base
//! type), arrays (to the element type) and composites (to each field), so the value
//! rules apply at any depth.

use std::{collections::HashMap, future::Future, pin::Pin};

use tokio_postgres::Client;

use super::row::ColumnKind;
use crate::SourceError;

#[derive(Debug, Default)]
pub(super) struct TableMeta {
    pub key: Vec<String>,
    pub kinds: HashMap<String, ColumnKind>,
    pub columns: Vec<String>,
}

pub(super) async fn load(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<TableMeta>, SourceError> {
    let rows = client
        .query(
            "select a.attname::text, a.atttypid,
                    -- int2vector is 0-based: make the key position 1-based, 0 = not a key column
                    coalesce(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) + 1, 0)
               from pg_attribute a
               join pg_class c on c.oid = a.attrelid
               join pg_namespace n on n.oid = c.relnamespace
               left join pg_index i on i.indrelid = c.oid and i.indisprimary
              where n.nspname = $1 and c.relname = $2 and a.attnum > 0 and not a.attisdropped
              order by a.attnum",
            &[&schema, &table],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut meta = TableMeta::default();
    let mut key: Vec<(i32, String)> = Vec::new();
    let mut types = HashMap::new();
    for r in rows {
        let name: String = r.try_get(0)?;
        let ty: u32 = r.try_get(1)?;
        let key_pos: i32 = r.try_get(2)?;
        if let Some(kind) = kind_of(client, ty, &mut types, 0).await? {
            meta.kinds.insert(name.clone(), kind);
        }
        if key_pos > 0 {
            key.push((key_pos, name.clone()));
        }
        meta.columns.push(name);
    }
    key.sort();
    meta.key = key.into_iter().map(|(_, n)| n).collect();
    Ok(Some(meta))
}

// The built-in types whose `to_json` form the contract changes (pg_type.dat).
const BYTEA: u32 = 17;
const INT8: u32 = 20;
const MONEY: u32 = 790;
const DATE: u32 = 1082;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const NUMERIC: u32 = 1700;

/// Deeper nesting than this (domains of arrays of composites …) passes through as is.
const MAX_DEPTH: u32 = 16;

type KindFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ColumnKind>, SourceError>> + Send + 'a>>;

/// The kind of type `oid`, or `None` when `to_json` already writes it as the contract
/// wants. `seen` caches answers for one table load (one catalog query per type).
fn kind_of<'a>(
    client: &'a Client,
    oid: u32,
    seen: &'a mut HashMap<u32, Option<ColumnKind>>,
    depth: u32,
) -> KindFuture<'a> {
    Box::pin(async move {
        let direct = match oid {
            BYTEA => Some(ColumnKind::Bytes),
            INT8 => Some(ColumnKind::Int8),
            MONEY => Some(ColumnKind::Money),
            DATE => Some(ColumnKind::Date),
            TIMESTAMP => Some(ColumnKind::Timestamp),
            TIMESTAMPTZ => Some(ColumnKind::TimestampTz),
            NUMERIC => Some(ColumnKind::Decimal),
            _ => None,
        };
        if direct.is_some() {
            return Ok(direct);
        }
        if let Some(known) = seen.get(&oid) {
            return Ok(known.clone());
        }
        if depth > MAX_DEPTH {
            return Ok(None);
        }
        let Some(t) = client
            .query_opt(
                "select typtype::text, typbasetype, typelem, typrelid,
                        typcategory::text = 'A' and typelem <> 0
                   from pg_type where oid = $1",
                &[&oid],
            )
            .await?
        else {
            return Ok(None);
        };
        let (typtype, base, elem, relid, is_array): (String, u32, u32, u32, bool) = (
            t.try_get(0)?,
            t.try_get(1)?,
            t.try_get(2)?,
            t.try_get(3)?,
            t.try_get(4)?,
        );
        let kind = if typtype == "d" {
            kind_of(client, base, seen, depth + 1).await?
        } else if is_array {
            kind_of(client, elem, seen, depth + 1)
                .await?
                .map(|k| ColumnKind::Array(Box::new(k)))
        } else if typtype == "c" {
            let fields = client
                .query(
                    "select attname::text, atttypid from pg_attribute
                      where attrelid = $1 and attnum > 0 and not attisdropped order by attnum",
                    &[&relid],
                )
                .await?;
            let mut kinds = HashMap::new();
            for f in fields {
                if let Some(k) = kind_of(client, f.try_get(1)?, seen, depth + 1).await? {
                    kinds.insert(f.try_get::<_, String>(0)?, k);
                }
            }
            (!kinds.is_empty()).then_some(ColumnKind::Composite(kinds))
        } else {
            None
        };
        seen.insert(oid, kind.clone());
        Ok(kind)
    })
}

/// Why a configured table cannot be captured.
pub(super) struct TableProblem {
    pub text: String,
    /// The table does not exist (so there is nothing to remove triggers from).
    pub missing: bool,
}

/// A configured table must exist, be a table, and have a primary key: the key is the
/// event `key` and the unit of per-key ordering. A table without one is refused,
/// not keyed by all its columns: identical rows would share a key, and an update
/// would become a different key, so neither dedupe nor order would mean anything.
pub(super) async fn table_problem(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<TableProblem>, SourceError> {
    let name = format!("{schema}.{table}");
    let kind = client
        .query_opt(
            "select c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = $1 and c.relname = $2",
            &[&schema, &table],
        )
        .await?
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?;
    let problem = |text: String, missing: bool| Ok(Some(TableProblem { text, missing }));
    match kind.as_deref() {
        None => problem(format!("table {name} does not exist in the source database"), true),
        Some("r" | "p") => match load(client, schema, table).await? {
            Some(m) if m.key.is_empty() => problem(
                format!("table {name} has no primary key; hookrelay needs one for the event key and per-key ordering (add one, or remove the table from `tables`)"),
                false,
            ),
            _ => Ok(None),
        },
        Some(other) => problem(
            format!("{name} is not a table (relkind {other}); only tables can be captured"),
            false,
        ),
    }
}
