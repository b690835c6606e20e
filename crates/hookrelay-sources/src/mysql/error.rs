//! MySQL/MariaDB errors into the shared [`SourceError`], transient or not decided
//! here, once (DESIGN: Materialize's definite/indefinite split).

use crate::SourceError;

/// `ER_MASTER_FATAL_ERROR_READING_BINLOG`: the requested binlog is gone (purged) or
/// unreadable.
pub const ER_BINLOG_UNAVAILABLE: u16 = 1236;

/// Server error codes worth retrying: the server is busy, restarting, or dropped us.
fn is_transient_code(code: u16) -> bool {
    matches!(
        code,
        1040 // too many connections
            | 1053 // server shutdown in progress
            | 1077 // normal shutdown
            | 1079 // shutdown complete
            | 1152 // aborted connection
            | 1205 // lock wait timeout
            | 1213 // deadlock
            | 1927 // connection was killed
            | 2006 // server has gone away
            | 2013 // lost connection during query
            | 4052 // another replica with our server_id connected: retry, logged
    )
}

impl From<mysql_async::Error> for SourceError {
    fn from(e: mysql_async::Error) -> Self {
        if let mysql_async::Error::Server(s) = &e {
            if s.code == ER_BINLOG_UNAVAILABLE {
                return SourceError::HistoryLost(format!(
                    "the server cannot send the binlog from the checkpoint: {}",
                    s.message
                ));
            }
        }
        let transient = match &e {
            mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
            mysql_async::Error::Server(s) => is_transient_code(s.code),
            mysql_async::Error::Url(_) | mysql_async::Error::Other(_) => false,
        };
        SourceError::Database {
            message: e.to_string(),
            transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "m".into(),
            state: "HY000".into(),
        })
    }

    #[test]
    fn classification() {
        assert!(SourceError::from(server(2013)).is_transient());
        assert!(SourceError::from(server(4052)).is_transient());
        assert!(
            !SourceError::from(server(1045)).is_transient(),
            "access denied needs a human"
        );
        let lost = SourceError::from(server(ER_BINLOG_UNAVAILABLE));
        assert!(matches!(lost, SourceError::HistoryLost(_)) && !lost.is_transient());
        let io = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::other("reset")));
        assert!(SourceError::from(io).is_transient());
    }
}
