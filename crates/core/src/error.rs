//! The error codes of SPEC §3 and §5, and validation errors for domain values.

use std::fmt;

/// A value that failed validation; `field` names the offending field so the
/// admin API and config checks can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every `error.code` paygate can answer with, and the HTTP status it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NoRoute,
    MethodNotAllowed,
    MissingCredentials,
    InvalidCredentials,
    RouteNotInPlan,
    RateLimited,
    TooManyWebsockets,
    QuotaExhausted,
    InsufficientCredits,
    /// x402: the offer to a caller without credentials.
    PaymentRequired,
    /// x402: a payment that does not match the offer, was already used or
    /// that the facilitator found invalid.
    PaymentInvalid,
    /// x402: the facilitator could not settle the payment.
    PaymentFailed,
    /// x402: a payment header that is not base64 of a payment.
    InvalidPayment,
    /// x402: the facilitator did not answer in time.
    FacilitatorTimeout,
    LimiterUnavailable,
    IssuerUnavailable,
    UpstreamUnavailable,
    UpstreamTimeout,
    BodyTooLarge,
    UriTooLong,
    HeadersTooLarge,
    BadRequest,
    Unauthorized,
    NotFound,
    Conflict,
    InvalidRequest,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            Self::NoRoute | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::MissingCredentials | Self::InvalidCredentials | Self::Unauthorized => 401,
            Self::RouteNotInPlan => 403,
            Self::RateLimited | Self::TooManyWebsockets => 429,
            Self::QuotaExhausted
            | Self::InsufficientCredits
            | Self::PaymentRequired
            | Self::PaymentInvalid
            | Self::PaymentFailed => 402,
            Self::LimiterUnavailable | Self::IssuerUnavailable => 503,
            Self::UpstreamUnavailable => 502,
            Self::UpstreamTimeout | Self::FacilitatorTimeout => 504,
            Self::BodyTooLarge => 413,
            Self::UriTooLong => 414,
            Self::HeadersTooLarge => 431,
            Self::BadRequest | Self::InvalidPayment => 400,
            Self::Conflict => 409,
            Self::InvalidRequest => 422,
            Self::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidCredentials => "invalid_credentials",
            Self::RouteNotInPlan => "route_not_in_plan",
            Self::RateLimited => "rate_limited",
            Self::TooManyWebsockets => "too_many_websockets",
            Self::QuotaExhausted => "quota_exhausted",
            Self::InsufficientCredits => "insufficient_credits",
            Self::PaymentRequired => "payment_required",
            Self::PaymentInvalid => "payment_invalid",
            Self::PaymentFailed => "payment_failed",
            Self::InvalidPayment => "invalid_payment",
            Self::FacilitatorTimeout => "facilitator_timeout",
            Self::LimiterUnavailable => "limiter_unavailable",
            Self::IssuerUnavailable => "issuer_unavailable",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::InvalidRequest => "invalid_request",
            Self::Internal => "internal_error",
        }
    }

    /// The JSON error body of SPEC §3: `{"error":{"code","message","request_id"}}`.
    pub fn body(self, message: &str, request_id: &str) -> String {
        serde_json::json!({
            "error": {"code": self.as_str(), "message": message, "request_id": request_id}
        })
        .to_string()
    }

    /// The error body with a machine-readable `reason` beside the message
    /// (x402 refusals: `replayed`, the facilitator's `invalidReason` or
    /// `errorReason`).
    pub fn body_with_reason(self, message: &str, request_id: &str, reason: &str) -> String {
        serde_json::json!({
            "error": {"code": self.as_str(), "message": message, "request_id": request_id,
                      "reason": reason}
        })
        .to_string()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
