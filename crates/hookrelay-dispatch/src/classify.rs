//! What an attempt's result means for the delivery (DESIGN §1.4), as a pure function.

use std::time::Duration;

/// The response (or failure) of one attempt, reduced to what decides the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// 410: disable the subscription.
    Gone,
    /// Try again, not sooner than `not_before` (from `Retry-After`).
    Retry {
        not_before: Option<Duration>,
    },
}

/// `status` is `None` when no response arrived (timeout, connection error).
pub fn classify(status: Option<u16>, retry_after: Option<Duration>) -> Verdict {
    match status {
        Some(s) if (200..300).contains(&s) => Verdict::Succeeded,
        Some(410) => Verdict::Gone,
        Some(429) | Some(503) => Verdict::Retry {
            not_before: retry_after,
        },
        _ => Verdict::Retry { not_before: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_verdicts() {
        let ra = Some(Duration::from_secs(7));
        let cases = [
            (Some(200), None, Verdict::Succeeded),
            (Some(204), ra, Verdict::Succeeded),
            (Some(299), None, Verdict::Succeeded),
            (Some(410), None, Verdict::Gone),
            (Some(429), ra, Verdict::Retry { not_before: ra }),
            (Some(503), ra, Verdict::Retry { not_before: ra }),
            (Some(500), ra, Verdict::Retry { not_before: None }),
            (Some(302), None, Verdict::Retry { not_before: None }),
            (Some(404), None, Verdict::Retry { not_before: None }),
            (None, None, Verdict::Retry { not_before: None }),
        ];
        for (status, retry_after, want) in cases {
            assert_eq!(classify(status, retry_after), want, "{status:?}");
        }
    }
}
