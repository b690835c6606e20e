//! Per-table facts the reader needs: primary-key columns (the event `key`) and the
//! columns whose JSON form must be converted. Loaded lazily and reloaded when a row
//! shows a column we have not seen (ALTER TABLE while running).

use std::collections::HashMap;

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
            "select a.attname::text, format_type(a.atttypid, a.atttypmod),
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
    for r in rows {
        let name: String = r.get(0);
        let ty: String = r.get(1);
        let key_pos: i32 = r.get(2);
        if let Some(kind) = ColumnKind::from_type_name(&ty) {
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

/// The configured tables must have a primary key: it is the event `key` and the unit
/// of per-key ordering.
pub(super) async fn check_keys(
    client: &Client,
    tables: &[(String, String)],
) -> Result<(), SourceError> {
    for (schema, table) in tables {
        match load(client, schema, table).await? {
            None => return Err(SourceError::Setup(format!("table {schema}.{table} does not exist"))),
            Some(m) if m.key.is_empty() => {
                return Err(SourceError::Setup(format!(
                    "table {schema}.{table} has no primary key; hookrelay needs one for the event key and per-key ordering"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
