//! A call paygate answers itself: the error code, a human message and, for
//! 429/503, when to come back.

use std::borrow::Cow;

use paygate_core::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// Whole seconds for `Retry-After` (≥ 1).
    pub retry_after_secs: Option<u64>,
    /// `WWW-Authenticate` of a 401, when more than the plain `Bearer`.
    pub challenge: Option<&'static str>,
    /// A machine-readable `reason` in the error body (x402 refusals).
    pub reason: Option<Cow<'static, str>>,
    /// On an x402 route: the offer the caller may pay.
    pub offer: Option<Box<OfferAnswer>>,
}

/// The x402 offer on a 402: the `PAYMENT-REQUIRED` header (version 2) and,
/// to a caller without credentials, the version-1 body that replaces the
/// error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferAnswer {
    pub header: String,
    pub body: Option<String>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
            challenge: None,
            reason: None,
            offer: None,
        }
    }

    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The answer's body: the x402 offer's own, or the error body.
    pub fn body(&self, request_id: &str) -> String {
        if let Some(body) = self.offer.as_ref().and_then(|o| o.body.clone()) {
            return body;
        }
        match &self.reason {
            Some(r) => self.code.body_with_reason(&self.message, request_id, r),
            None => self.code.body(&self.message, request_id),
        }
    }

    /// 401 for a bearer token that is not valid (RFC 6750 `invalid_token`).
    pub fn invalid_token(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            challenge: Some(r#"Bearer error="invalid_token""#),
            ..Self::new(ErrorCode::InvalidCredentials, message)
        }
    }

    /// 503 `limiter_unavailable` for a store that failed; come back in a second.
    pub fn store_unavailable(e: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::LimiterUnavailable,
            format!("the store is unavailable: {e}"),
        )
        .retry_after_ms(1000)
    }

    pub fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_secs = Some(ms.div_ceil(1000).max(1));
        self
    }

    /// Headers this refusal adds to the error body: `WWW-Authenticate` on
    /// a 401, `Retry-After` when the caller may come back.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if matches!(
            self.code,
            ErrorCode::MissingCredentials | ErrorCode::InvalidCredentials
        ) {
            h.push((
                "www-authenticate",
                self.challenge.unwrap_or("Bearer").to_owned(),
            ));
        }
        if let Some(secs) = self.retry_after_secs {
            h.push(("retry-after", secs.to_string()));
        }
        if let Some(o) = &self.offer {
            h.push((paygate_x402::header::PAYMENT_REQUIRED, o.header.clone()));
        }
        h
    }

    /// The `paygate_decisions_total` label for this refusal.
    pub fn decision(&self) -> &'static str {
        self.code.as_str()
    }
}
