//! Shared shape of the newest-first listings: a `WHERE` clause built from only the
//! filters given (so each combination gets its own cached plan that can use the
//! matching index), and keyset paging (`key < last seen`, one extra row fetched to
//! learn whether another page follows).

use tokio_postgres::types::ToSql;

/// The most rows one page returns, whatever the caller asks.
pub const MAX_PAGE: u32 = 1000;

/// `AND`-ed conditions with their positional parameters.
#[derive(Default)]
pub(crate) struct Conditions<'a> {
    conds: Vec<String>,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Conditions<'a> {
    /// Adds `expr`, whose every `?` stands for `value`'s parameter.
    pub(crate) fn add(&mut self, expr: &str, value: &'a (dyn ToSql + Sync)) {
        let p = self.param(value);
        self.conds.push(expr.replace('?', &p));
    }

    /// Adds `expr` as it is, with no parameter: for a status, so that the planner sees
    /// the value and can pick the partial index whose predicate it implies (a generic
    /// plan, which a parameter may get, cannot).
    pub(crate) fn add_fixed(&mut self, expr: String) {
        self.conds.push(expr);
    }

    /// Binds `value` and returns its placeholder (`$n`).
    pub(crate) fn param(&mut self, value: &'a (dyn ToSql + Sync)) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// ` where a and b`, or nothing.
    pub(crate) fn where_clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" where {}", self.conds.join(" and "))
        }
    }

    /// The ` where …` of the conditions added so far, which are then forgotten; their
    /// parameters stay, so conditions added next are numbered after them (two
    /// clauses of one statement).
    pub(crate) fn take_where(&mut self) -> String {
        let clause = self.where_clause();
        self.conds.clear();
        clause
    }

    pub(crate) fn params(&self) -> &[&'a (dyn ToSql + Sync)] {
        &self.params
    }
}

/// Rows to fetch for a page of `limit`: one more, to see whether a next page exists.
pub(crate) fn fetch_count(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_PAGE)) + 1
}

/// Trims the extra row and returns the key to continue after, `None` at the end.
pub(crate) fn page_end<T, K>(items: &mut Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> Option<K> {
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    if items.len() > limit {
        items.truncate(limit);
        items.last().map(key)
    } else {
        None
    }
}
