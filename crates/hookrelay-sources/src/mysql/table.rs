//! A watched table as one table map event describes it, and its rows as the
//! contract's row images.
//!
//! With `binlog_row_metadata = FULL` every table map carries the column names,
//! signedness, charsets, ENUM/SET members and the primary key *as they were when the
//! row was written*, so a backlog read after an ALTER TABLE is labelled by the columns
//! it was written with. A table map without names (written before FULL was turned
//! on) is refused with its position, never guessed.

use std::collections::{HashMap, HashSet};

use mysql_async::{
    binlog::{
        events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent},
        row::BinlogRow,
    },
    consts::ColumnType,
};

use super::value::{self, Charset, ColumnSpec, ValueError};

/// Column layout and primary key of one table map.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub columns: Vec<ColumnSpec>,
    /// Primary key column indexes, in table order.
    pub key: Vec<usize>,
    /// Per column: excluded (`exclude_columns`), never decoded nor written.
    pub excluded: Vec<bool>,
}

/// Why a watched table's rows cannot become events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// The table map says the table has no primary key.
    NoKey,
    /// `exclude_columns` matches this key column.
    ExcludedKey(String),
    /// The table map cannot be read as the contract needs.
    Unreadable(String),
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::NoKey => f.write_str(
                "it has no primary key; hookrelay needs one for the event key and per-key ordering",
            ),
            LayoutError::ExcludedKey(c) => write!(
                f,
                "exclude_columns excludes {c}, part of its primary key; key columns cannot be excluded"
            ),
            LayoutError::Unreadable(e) => f.write_str(e),
        }
    }
}

impl From<String> for LayoutError {
    fn from(e: String) -> Self {
        LayoutError::Unreadable(e)
    }
}

impl TableLayout {
    /// Reads the layout from `tme`; `json` names MariaDB JSON columns (see setup),
    /// `excluded` says which columns `exclude_columns` leaves out.
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        charsets: &HashMap<u16, Charset>,
        json: &HashSet<String>,
        excluded: &dyn Fn(&str) -> bool,
    ) -> Result<Self, LayoutError> {
        let n = usize::try_from(tme.columns_count()).map_err(|e| e.to_string())?;
        let meta =
            OptionalMetaExtractor::new(tme.iter_optional_meta()).map_err(|e| e.to_string())?;
        let names: Vec<String> = meta
            .iter_column_name()
            .map(|r| r.map(|c| c.name().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if names.len() != n {
            return Err(LayoutError::Unreadable(
                "the table map has no column names: it was written while binlog_row_metadata was not FULL"
                    .into(),
            ));
        }
        let mut enums = Vec::new();
        let mut sets = Vec::new();
        for field in tme.iter_optional_meta() {
            match field.map_err(|e| e.to_string())? {
                OptionalMetadataField::EnumStrValue(v) => {
                    for members in v.iter_values() {
                        let members = members.map_err(|e| e.to_string())?;
                        enums.push(
                            members
                                .values()
                                .iter()
                                .map(|m| m.value().into_owned())
                                .collect::<Vec<_>>(),
                        );
                    }
                }
                OptionalMetadataField::SetStrValue(v) => {
                    for members in v.iter_values() {
                        let members = members.map_err(|e| e.to_string())?;
                        sets.push(
                            members
                                .values()
                                .iter()
                                .map(|m| m.value().into_owned())
                                .collect::<Vec<_>>(),
                        );
                    }
                }
                _ => {}
            }
        }
        let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
        let mut signedness = meta.iter_signedness();
        let mut charset_ids = meta.iter_charset();
        let mut enum_set_charsets = meta.iter_enum_and_set_charset();
        let mut columns = Vec::with_capacity(n);
        for (i, name) in names.into_iter().enumerate() {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| format!("column {name}: {e}"))?
                .ok_or_else(|| format!("column {name}: no type"))?;
            let unsigned = ty.is_numeric_type() && signedness.next().unwrap_or(false);
            let charset = if ty.is_character_type() {
                let id = charset_ids.next().transpose().map_err(|e| e.to_string())?;
                id.and_then(|id| charsets.get(&id).cloned())
                    .unwrap_or(Charset::Other)
            } else if ty.is_enum_or_set_type() {
                let _ = enum_set_charsets.next();
                Charset::Utf8
            } else {
                Charset::Binary
            };
            let members = match ty {
                ColumnType::MYSQL_TYPE_ENUM => enums.next().unwrap_or_default(),
                ColumnType::MYSQL_TYPE_SET => sets.next().unwrap_or_default(),
                _ => Vec::new(),
            };
            columns.push(ColumnSpec {
                json: json.contains(&name) && ty == ColumnType::MYSQL_TYPE_BLOB,
                name,
                ty,
                meta: tme.get_column_metadata(i).unwrap_or(&[]).to_vec(),
                unsigned,
                charset,
                members,
            });
        }
        let mut key: Vec<usize> = meta
            .iter_primary_key()
            .map(|r| r.map(|i| i as usize))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if key.is_empty() {
            return Err(LayoutError::NoKey);
        }
        key.sort_unstable();
        key.dedup();
        let excluded: Vec<bool> = columns.iter().map(|c| excluded(&c.name)).collect();
        if let Some(&k) = key.iter().find(|&&k| excluded.get(k) == Some(&true)) {
            return Err(LayoutError::ExcludedKey(columns[k].name.clone()));
        }
        Ok(Self {
            columns,
            key,
            excluded,
        })
    }

    /// Appends the row image `{"col": value, …}` to `out` and its key columns to
    /// `key_out` (`{"id": 42}`). The row must be a full image.
    pub fn render(
        &self,
        row: &BinlogRow,
        out: &mut String,
        key_out: &mut String,
    ) -> Result<(), ValueError> {
        if row.len() != self.columns.len() {
            return Err(ValueError {
                column: String::new(),
                reason: format!(
                    "row image has {} of {} columns: binlog_row_image is not FULL",
                    row.len(),
                    self.columns.len()
                ),
            });
        }
        out.push('{');
        key_out.push('{');
        let mut first = true;
        for (i, col) in self.columns.iter().enumerate() {
            if self.excluded[i] {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            let start = out.len();
            out.push_str(&serde_json::to_string(&col.name).unwrap_or_default());
            out.push(':');
            match row.as_ref(i) {
                Some(v) => value::to_json(col, v, out)?,
                None => out.push_str("null"),
            }
            if self.key.binary_search(&i).is_ok() {
                if key_out.len() > 1 {
                    key_out.push(',');
                }
                let rendered = out[start..].to_owned();
                key_out.push_str(&rendered);
            }
        }
        out.push('}');
        key_out.push('}');
        Ok(())
    }
}
