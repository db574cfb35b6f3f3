//! The background side: each JWKS issuer's key set fetched at start, every
//! `jwks_refresh_seconds`, and early when a token names an unknown key. A
//! failed fetch keeps the last good set (stale-if-error).

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;

use crate::issuer::{Issuer, Source};
use crate::keys::KeySet;

/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Until the first success, and after a failure, try again sooner than the
/// refresh interval: calls are refused (503) or served with old keys meanwhile.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .build()
        .unwrap_or_default()
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<KeySet, String> {
    let mut resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::from_jwks(&body)
}

/// Keeps `issuer`'s key set fresh until the task is dropped. Does nothing
/// for an issuer whose key is fixed in the config.
pub async fn run(issuer: Arc<Issuer>, client: reqwest::Client, outcomes: IntCounterVec) {
    let (url, refresh) = match &issuer.source {
        Source::Jwks { url, refresh } => (url.clone(), *refresh),
        Source::Fixed => return,
    };
    let ok = outcomes.with_label_values(&[issuer.issuer.as_str(), "ok"]);
    let failed = outcomes.with_label_values(&[issuer.issuer.as_str(), "error"]);
    let mut retry = RETRY_MIN;
    loop {
        issuer.fetch_started();
        let next = match fetch(&client, &url).await {
            Ok(keys) => {
                tracing::debug!(issuer = %issuer.issuer, keys = keys.len(), "JWKS fetched");
                issuer.set_keys(keys);
                ok.inc();
                retry = RETRY_MIN;
                refresh
            }
            Err(e) => {
                tracing::warn!(issuer = %issuer.issuer, error = %e, "JWKS fetch failed; keeping the last good key set");
                failed.inc();
                let wait = retry.min(refresh);
                retry = (retry * 2).min(RETRY_MAX);
                wait
            }
        };
        issuer.fetch_finished();
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = issuer.wake.notified() => {}
        }
    }
}
