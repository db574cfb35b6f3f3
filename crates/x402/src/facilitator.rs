//! The facilitator: the service that checks a payment's signature and funds
//! (`POST /verify`) and moves the money on chain (`POST /settle`). Both take
//! `{x402Version, paymentPayload, paymentRequirements}`. Its answer is read
//! from the body whatever the HTTP status: a 200 can still say
//! `success: false`, and a 4xx can carry `isValid: false` with a reason.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::wire::{SettleResponse, VerifyResponse};

/// Why the facilitator gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FacilitatorError {
    #[error("the facilitator did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the facilitator is unreachable: {0}")]
    Unreachable(String),
    #[error("the facilitator answered HTTP {status} without a readable body: {body}")]
    BadAnswer { status: u16, body: String },
}

impl FacilitatorError {
    /// Sending the same request again may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::BadAnswer { .. })
    }
}

/// What both endpoints take.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    pub x402_version: u8,
    /// The payment as the client sent it (decoded from its header).
    pub payment_payload: &'a Value,
    /// The requirements it is checked against, in the client's version.
    pub payment_requirements: &'a Value,
}

#[derive(Clone)]
pub struct Facilitator {
    base: String,
    client: reqwest::Client,
    timeout: Duration,
}

impl Facilitator {
    /// `base_url` without the endpoint (`http://host:port`); `timeout`
    /// bounds each request (`facilitator_timeout_ms`).
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            timeout,
        }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        req: &Request<'_>,
    ) -> Result<T, FacilitatorError> {
        let url = format!("{}{path}", self.base);
        let send = self.client.post(url).json(req).send();
        let resp = match tokio::time::timeout(self.timeout, send).await {
            Err(_) => return Err(FacilitatorError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_timeout() => return Err(FacilitatorError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(FacilitatorError::Unreachable(e.to_string())),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let body = match tokio::time::timeout(self.timeout, resp.bytes()).await {
            Err(_) => return Err(FacilitatorError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(FacilitatorError::Unreachable(e.to_string())),
            Ok(Ok(b)) => b,
        };
        serde_json::from_slice(&body).map_err(|_| FacilitatorError::BadAnswer {
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        })
    }

    pub async fn verify(&self, req: &Request<'_>) -> Result<VerifyResponse, FacilitatorError> {
        self.post("/verify", req).await
    }

    /// One settle attempt.
    pub async fn settle(&self, req: &Request<'_>) -> Result<SettleResponse, FacilitatorError> {
        self.post("/settle", req).await
    }

    /// Settles, sending the same request again after a timeout or a lost
    /// connection until `deadline` (the payment's own validity): a settle
    /// whose answer was lost may have gone through, and the facilitator
    /// answers a repeat of the same authorization with its outcome rather
    /// than paying twice. The last error when the deadline passes: the
    /// caller records the payment as `settlement_unknown`.
    pub async fn settle_until(
        &self,
        req: &Request<'_>,
        deadline: Instant,
    ) -> Result<SettleResponse, FacilitatorError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.settle(req).await {
                Err(e) if e.is_transient() && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }
}
