//! The driver's errors, classified once: what retrying can fix, and the one error
//! that means changes were lost (the resume token fell off the oplog).

use ::mongodb::error::{Error, ErrorKind};

use crate::SourceError;

/// ChangeStreamHistoryLost: the resume point is no longer in the oplog.
pub(super) const HISTORY_LOST: i32 = 286;

/// Server codes after which the same request can succeed later: elections, shutdowns,
/// a node not (yet) primary, interrupted or timed-out operations.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    43,    // CursorNotFound (the driver resumes it; if it reaches us, reopen)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

pub(super) fn command_code(e: &Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// Unauthorized (13): the user lacks a privilege for what was asked, as a command
/// error or as the error of one write.
pub(super) fn is_unauthorized(e: &Error) -> bool {
    const UNAUTHORIZED: i32 = 13;
    match &*e.kind {
        ErrorKind::Command(c) => c.code == UNAUTHORIZED,
        ErrorKind::Write(::mongodb::error::WriteFailure::WriteError(w)) => w.code == UNAUTHORIZED,
        _ => false,
    }
}

pub(super) fn is_history_lost(e: &Error) -> bool {
    command_code(e) == Some(HISTORY_LOST)
}

fn is_transient(e: &Error) -> bool {
    match &*e.kind {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        _ => {
            e.contains_label("RetryableWriteError")
                || e.contains_label("ResumableChangeStreamError")
        }
    }
}

impl From<Error> for SourceError {
    fn from(e: Error) -> Self {
        if is_history_lost(&e) {
            return SourceError::HistoryLost(e.to_string());
        }
        SourceError::Database {
            transient: is_transient(&e),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(code: i32) -> Error {
        let reply = ::mongodb::bson::doc! { "ok": 0, "code": code, "codeName": "X", "errmsg": "m" };
        let e: ::mongodb::error::CommandError =
            ::mongodb::bson::from_document(reply).expect("command error");
        Error::from(ErrorKind::Command(e))
    }

    #[test]
    fn classification() {
        let lost = SourceError::from(command(HISTORY_LOST));
        assert!(matches!(lost, SourceError::HistoryLost(_)) && !lost.is_transient());
        assert!(SourceError::from(command(10107)).is_transient());
        assert!(SourceError::from(command(189)).is_transient());
        // Unauthorized, and "$changeStream only on replica sets": a human must act.
        assert!(!SourceError::from(command(13)).is_transient());
        assert!(!SourceError::from(command(40573)).is_transient());
        let io = Error::from(ErrorKind::Io(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        ))));
        assert!(SourceError::from(io).is_transient());
    }
}
