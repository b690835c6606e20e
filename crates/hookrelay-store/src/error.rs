/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store url: {0}")]
    Config(#[source] tokio_postgres::Error),
    #[error("store {0}")]
    Connect(#[from] crate::connect::ConnectSetupError),
    /// The store URL leads through a transaction-mode pooler (see `pooler`).
    #[error("store.url: {0}")]
    Pooler(String),
    #[error("store setup: {0}")]
    Setup(String),
    #[error("store database: {}", describe_pg(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("store pool: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("store migration: {0}")]
    Migration(#[from] refinery::Error),
    #[error("not found")]
    NotFound,
    /// The request is well-formed but clashes with the current state (e.g. replaying
    /// deliveries of a disabled subscription).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A stored secret does not open under the master key given: never sent on as
    /// if it were the secret.
    #[error("stored secret: {0}")]
    Secret(#[from] hookrelay_core::sealing::OpenError),
    /// A subscription's secret or a header value does not open (tampered, sealed
    /// under another key): that subscription waits, nothing else does.
    #[error("subscription {0}: its signing secret or a header value cannot be opened under the master key; rotate the secret (grace \"0s\") or set the headers again")]
    Unreadable(String),
    /// A wait on the store that has a bound took longer (see `liveness`).
    #[error("store: timed out {0}")]
    Timeout(&'static str),
    /// A batch of a source this process no longer leads: another took it over (a
    /// newer epoch), so the batch was rolled back (DESIGN §1.11).
    #[error(
        "source {source_name} is led by another process now (epoch {epoch} is over); batch refused"
    )]
    Fenced { source_name: String, epoch: i64 },
}

impl StoreError {
    /// Worth retrying: the database is down, restarting or overloaded, or a
    /// serialization conflict; not a bad query or bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => is_transient_pg(e),
            StoreError::Pool(deadpool_postgres::PoolError::Backend(pg)) => {
                !crate::connect::is_tls_refusal(pg)
            }
            StoreError::Pool(_) | StoreError::Timeout(_) => true,
            StoreError::Config(_)
            | StoreError::Connect(_)
            | StoreError::Pooler(_)
            | StoreError::Setup(_)
            | StoreError::Migration(_)
            | StoreError::NotFound
            | StoreError::Conflict(_)
            | StoreError::Corrupt(_)
            | StoreError::Secret(_)
            | StoreError::Unreadable(_)
            | StoreError::Fenced { .. } => false,
        }
    }
}

impl StoreError {
    /// The source was taken over by another process: not a failure to retry, the
    /// end of this process's leadership.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }

    /// The data cannot be stored as it is (SQLSTATE class 22: a NUL byte, invalid
    /// UTF-8, a value out of range) or breaks a constraint (class 23): retrying the
    /// same write cannot succeed, so callers split or refuse it instead.
    pub fn is_bad_data(&self) -> bool {
        match self {
            StoreError::Db(e) => e
                .code()
                .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")),
            _ => false,
        }
    }

    /// A unique violation of `constraint` (SQLSTATE 23505).
    pub fn violates(&self, constraint: &str) -> bool {
        match self {
            StoreError::Db(e) => e.as_db_error().is_some_and(|db| {
                db.code().code() == "23505" && db.constraint() == Some(constraint)
            }),
            _ => false,
        }
    }

    /// The SQLSTATE, when the database answered with one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Db(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }
}

/// A Postgres error as a person needs it: SQLSTATE and the server's message (plus
/// detail and hint), or the connection-level cause chain. `tokio_postgres::Error`'s
/// own Display says only "db error".
pub fn describe_pg(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!("SQLSTATE {}: {}", db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            out.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = db.hint() {
            out.push_str(&format!(" (hint: {hint})"));
        }
        if crate::pooler::looks_like_transaction_pooler(e) {
            out.push_str(&format!(" ({})", crate::pooler::POOLER_HINT));
        }
        return out;
    }
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        out.push_str(": ");
        if let Some(tls) = crate::connect::describe_tls(cause) {
            out.push_str(&tls);
            break;
        }
        out.push_str(&cause.to_string());
        src = cause.source();
    }
    out
}

/// The pool wraps the connection's own error, whose cause is what a person needs
/// (refused, no such database, authentication failed).
fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => describe_pg(pg),
        other => other.to_string(),
    }
}

/// Connection-level failures and the SQLSTATE classes that mean "try again".
pub fn is_transient_pg(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if crate::connect::is_tls_refusal(e) {
        return false;
    }
    match e.code() {
        None => true, // I/O or protocol error: the connection broke
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("53") // insufficient resources
                || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                || c == "40001" // serialization failure
                || c == "40P01" // deadlock detected
                || c == "55P03" // lock not available
        }
    }
}
