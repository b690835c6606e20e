/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store url: {0}")]
    Config(#[source] tokio_postgres::Error),
    #[error("store setup: {0}")]
    Setup(String),
    #[error("store database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("store pool: {0}")]
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
}

impl StoreError {
    /// Worth retrying: the database is down, restarting or overloaded, or a
    /// serialization conflict; not a bad query or bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => is_transient_pg(e),
            StoreError::Pool(_) => true,
            StoreError::Config(_)
            | StoreError::Setup(_)
            | StoreError::Migration(_)
            | StoreError::NotFound
            | StoreError::Conflict(_)
            | StoreError::Corrupt(_) => false,
        }
    }
}

/// Connection-level failures and the SQLSTATE classes that mean "try again".
pub fn is_transient_pg(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
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
