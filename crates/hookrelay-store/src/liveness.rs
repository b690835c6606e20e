//! Bounded waits on every PostgreSQL connection hookrelay opens (DESIGN §1.11): a peer
//! that vanishes without a FIN or RST (a host crash, a hung VM, a silent partition)
//! fails the connection within seconds on both ends, not after the OS's two hours.
//!
//! ```text
//!  hookrelay ── TCP ── PostgreSQL
//!  client side: connect timeout; keepalive probes after 5 s idle, every 2 s, 3 of them;
//!               unacknowledged data for 10 s (TCP_USER_TIMEOUT) breaks the connection
//!  server side: the same, per session (startup options), so the server ends a vanished
//!               client's session and releases its locks (a leader's advisory lock,
//!               a batch's row locks); a running query also checks every 2 s that its
//!               client is still there
//! ```
//!
//! A silent peer is thus noticed 10 to 11 s after its last packet on either end. The
//! source lock's heartbeat (`leader`) is tighter still, so a leader stops reading
//! before the server can have handed its lock to another process.

use std::time::Duration;

/// How long a new connection may take to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;
const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a running query checks, on the server, that its client is still there.
const CLIENT_CHECK: Duration = Duration::from_secs(2);

/// The earliest the server can end a silent client's session after its last packet
/// (the user timeout; the keepalive bound, idle + interval × count, is 11 s): what the
/// source lock's heartbeat must stay under.
pub const SERVER_NOTICES_AFTER: Duration = USER_TIMEOUT;

/// The server's half, as `options` in the startup packet: no round trip, and it holds
/// for the session's whole life. The same figures as the client's.
fn server_side() -> String {
    format!(
        "-c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
         -c tcp_user_timeout={} -c client_connection_check_interval={}",
        KEEPALIVE_IDLE.as_secs(),
        KEEPALIVE_INTERVAL.as_secs(),
        KEEPALIVE_RETRIES,
        USER_TIMEOUT.as_millis(),
        CLIENT_CHECK.as_millis(),
    )
}

/// `pg` with keepalives and timeouts on both ends. A `connect_timeout` given in the
/// URL is kept.
pub fn bounded(mut pg: tokio_postgres::Config) -> tokio_postgres::Config {
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    pg.keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(USER_TIMEOUT);
    crate::with_options(pg, &server_side())
}

/// Parses `url` and bounds it (see [`bounded`]).
pub fn bounded_config(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    Ok(bounded(url.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_get_bounded_waits() {
        let pg = bounded_config("postgres://u@h/db").expect("url");
        assert!(pg.get_keepalives());
        assert_eq!(pg.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(pg.get_tcp_user_timeout(), Some(&USER_TIMEOUT));
        assert_eq!(pg.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let options = pg.get_options().expect("server-side options");
        assert!(options.contains("-c tcp_keepalives_idle=5 "), "{options}");
        assert!(options.contains("-c tcp_user_timeout=10000 "), "{options}");
        assert!(
            options.contains("client_connection_check_interval"),
            "{options}"
        );
    }

    #[test]
    fn a_connect_timeout_from_the_url_is_kept() {
        let pg = bounded_config("postgres://u@h/db?connect_timeout=3").expect("url");
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }
}
