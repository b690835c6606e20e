//! TLS to every database: throwaway PostgreSQL and MariaDB servers that accept TLS
//! connections only, with certificates the test makes (see `certs`). The store and
//! both source kinds connect under each mode and deliver; a wrong CA, an expired
//! certificate and a host-name mismatch are each refused with their own message.

mod certs;
mod mysql;
mod postgres;

use hookrelay_store::PgConnector;

/// A connection over `url` (its TLS parameters apply), driven in the background.
pub async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connector = PgConnector::from_url(url).map_err(|e| e.to_string())?;
    let (client, conn) = connector
        .connect()
        .await
        .map_err(|e| hookrelay_store::describe_pg(&e))?;
    tokio::spawn(conn);
    Ok(client)
}
