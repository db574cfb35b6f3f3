//! How a call ended, as plain functions of what Pingora reports: the error
//! answer for a failed proxy attempt, and whether an admitted call is
//! billed.

use paygate_core::ErrorCode;
use pingora::{ErrorSource, ErrorType};

/// The error paygate answers for a failed proxy attempt, or `None` when
/// nothing can be answered (the client is gone).
pub fn failure_code(etype: &ErrorType, source: &ErrorSource) -> Option<ErrorCode> {
    match etype {
        // Our own limit, raised from the request-body filter.
        ErrorType::HTTPStatus(413) => Some(ErrorCode::BodyTooLarge),
        ErrorType::HTTPStatus(s) if *s >= 500 => Some(ErrorCode::UpstreamUnavailable),
        ErrorType::HTTPStatus(_) => Some(ErrorCode::BadRequest),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout if *source == ErrorSource::Upstream => {
            Some(ErrorCode::UpstreamTimeout)
        }
        ErrorType::ConnectTimedout => Some(ErrorCode::UpstreamUnavailable),
        _ => match source {
            ErrorSource::Upstream => Some(ErrorCode::UpstreamUnavailable),
            ErrorSource::Downstream => match etype {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => None,
                _ => Some(ErrorCode::BadRequest),
            },
            ErrorSource::Internal | ErrorSource::Unset => Some(ErrorCode::Internal),
        },
    }
}

/// The message that goes with [`failure_code`]'s answer.
pub fn failure_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::UpstreamTimeout => "the upstream did not answer in time",
        ErrorCode::UpstreamUnavailable => "no healthy upstream target could take the call",
        ErrorCode::BodyTooLarge => "the request body is too large",
        ErrorCode::BadRequest => "the request is malformed",
        _ => "internal error",
    }
}

/// Whether an admitted call is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// The upstream answered below 500 and the exchange completed: the
    /// reservation is kept and the usage event is billable.
    Billable,
    /// Anything else: the reservation is given back, the event records the
    /// call with nothing charged.
    NotBillable,
}

/// The billable rule: the upstream answered below 500 and the exchange
/// completed; only the client walking away afterwards is still the
/// client's call. `failure` is where the error that ended the call came
/// from, if one did.
pub fn billing(upstream_status: Option<u16>, failure: Option<&ErrorSource>) -> Billing {
    // An upgraded WebSocket was served, however its stream ended later.
    if upstream_status == Some(101) {
        return Billing::Billable;
    }
    let completed = failure.is_none_or(|s| *s == ErrorSource::Downstream);
    if upstream_status.is_some_and(|s| s < 500) && completed {
        Billing::Billable
    } else {
        Billing::NotBillable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_the_documented_answers() {
        let cases = [
            (
                ErrorType::HTTPStatus(413),
                ErrorSource::Internal,
                Some(ErrorCode::BodyTooLarge),
            ),
            (
                ErrorType::HTTPStatus(502),
                ErrorSource::Upstream,
                Some(ErrorCode::UpstreamUnavailable),
            ),
            (
                ErrorType::HTTPStatus(400),
                ErrorSource::Downstream,
                Some(ErrorCode::BadRequest),
            ),
            (
                ErrorType::ReadTimedout,
                ErrorSource::Upstream,
                Some(ErrorCode::UpstreamTimeout),
            ),
            (
                ErrorType::WriteTimedout,
                ErrorSource::Upstream,
                Some(ErrorCode::UpstreamTimeout),
            ),
            (
                ErrorType::ConnectTimedout,
                ErrorSource::Upstream,
                Some(ErrorCode::UpstreamUnavailable),
            ),
            (
                ErrorType::ConnectRefused,
                ErrorSource::Upstream,
                Some(ErrorCode::UpstreamUnavailable),
            ),
            (
                ErrorType::ConnectNoRoute,
                ErrorSource::Upstream,
                Some(ErrorCode::UpstreamUnavailable),
            ),
            // A slow client is not an upstream timeout.
            (
                ErrorType::ReadTimedout,
                ErrorSource::Downstream,
                Some(ErrorCode::BadRequest),
            ),
            (ErrorType::ConnectionClosed, ErrorSource::Downstream, None),
            (ErrorType::WriteError, ErrorSource::Downstream, None),
            (
                ErrorType::InternalError,
                ErrorSource::Internal,
                Some(ErrorCode::Internal),
            ),
        ];
        for (etype, source, expected) in cases {
            assert_eq!(
                failure_code(&etype, &source),
                expected,
                "{etype:?} from {source:?}"
            );
        }
        assert_eq!(ErrorCode::UpstreamTimeout.status(), 504);
        assert_eq!(ErrorCode::UpstreamUnavailable.status(), 502);
    }

    #[test]
    fn billable_only_below_500_and_complete() {
        use Billing::*;
        let cases = [
            (Some(200), None, Billable),
            (Some(404), None, Billable),
            (Some(499), None, Billable),
            (Some(500), None, NotBillable),
            (Some(503), None, NotBillable),
            // Never reached the upstream (connect error, refused).
            (None, None, NotBillable),
            (None, Some(ErrorSource::Upstream), NotBillable),
            // The upstream's body broke off mid-way.
            (Some(200), Some(ErrorSource::Upstream), NotBillable),
            // Our own failure (a body over the limit) is not the client's bill.
            (Some(200), Some(ErrorSource::Internal), NotBillable),
            // The client went away after the upstream answered: billed.
            (Some(200), Some(ErrorSource::Downstream), Billable),
        ];
        for (status, failure, expected) in cases {
            assert_eq!(
                billing(status, failure.as_ref()),
                expected,
                "{status:?} {failure:?}"
            );
        }
    }
}
