//! One configured issuer: its rules, its current key set and the gate that
//! lets an unknown `kid` refetch the JWKS at most once per 10 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use paygate_config::{JwtAlgorithm, JwtIssuerConfig};
use tokio::sync::{watch, Notify};

use crate::error::BuildError;
use crate::keys::KeySet;

/// At most one refetch per issuer in this interval, however many tokens
/// with unknown `kid`s arrive.
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Where the keys come from.
pub enum Source {
    /// Fetched and refreshed in the background.
    Jwks { url: String, refresh: Duration },
    /// Given in the config; never changes.
    Fixed,
}

#[derive(Default)]
struct Gate {
    /// When the last refetch was asked for. Scheduled refreshes do not
    /// count: a key published just after one must still be found at once.
    last: Option<Instant>,
    /// A fetch was asked for and has not finished yet.
    pending: bool,
}

pub struct Issuer {
    pub issuer: String,
    /// The usage events' `key_id` of calls made with this issuer's tokens.
    pub key_label: Arc<str>,
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway_seconds: u64,
    pub customer_claim: String,
    pub default_plan: Option<String>,
    pub plan_claim: Option<String>,
    pub allowed_plans: Vec<String>,
    pub source: Source,
    keys: ArcSwapOption<KeySet>,
    gate: parking_lot::Mutex<Gate>,
    /// Wakes the refresher for an early fetch.
    pub(crate) wake: Notify,
    /// Counts finished fetches, so a refetch can wait for the next one.
    pub(crate) fetched: watch::Sender<u64>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl Issuer {
    /// `index` names the entry in errors (`auth.jwt[index]`).
    pub fn from_config(index: usize, c: &JwtIssuerConfig) -> Result<Self, BuildError> {
        let err = |field: &str, message: String| BuildError {
            key: format!("auth.jwt[{index}].{field}"),
            message,
        };
        let algorithms: Vec<Algorithm> = c.algorithms.iter().copied().map(algorithm).collect();
        let (source, keys) = if let Some(url) = &c.jwks_url {
            let refresh = Duration::from_secs(c.jwks_refresh_seconds.max(1));
            (
                Source::Jwks {
                    url: url.clone(),
                    refresh,
                },
                None,
            )
        } else if let Some(pem) = &c.public_key_pem {
            let set = KeySet::from_pem(pem, &algorithms).map_err(|m| err("public_key_pem", m))?;
            (Source::Fixed, Some(Arc::new(set)))
        } else {
            let secret = c.secret().ok_or_else(|| {
                err(
                    "secret_env",
                    "names no set environment variable holding the HMAC secret".into(),
                )
            })?;
            let set = KeySet::from_secret(secret.as_bytes()).map_err(|m| err("secret_env", m))?;
            (Source::Fixed, Some(Arc::new(set)))
        };
        Ok(Self {
            issuer: c.issuer.clone(),
            key_label: Arc::from(format!("jwt:{}", c.issuer)),
            audience: c.audience.clone(),
            algorithms,
            leeway_seconds: c.leeway_seconds.min(60),
            customer_claim: c.customer_claim.clone(),
            default_plan: non_empty(&c.default_plan),
            plan_claim: non_empty(&c.plan_claim),
            allowed_plans: c.allowed_plans.clone(),
            source,
            keys: ArcSwapOption::new(keys),
            gate: parking_lot::Mutex::new(Gate::default()),
            wake: Notify::new(),
            fetched: watch::channel(0).0,
        })
    }

    /// The current key set; `None` until the first successful fetch.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    pub(crate) fn set_keys(&self, keys: KeySet) {
        self.keys.store(Some(Arc::new(keys)));
    }

    pub(crate) fn keep_keys(&self, keys: Arc<KeySet>) {
        self.keys.store(Some(keys));
    }

    /// Whether `plan` may be taken from a token's `plan_claim`.
    pub fn plan_allowed(&self, plan: &str) -> bool {
        self.allowed_plans.iter().any(|p| p == plan)
    }

    /// Fetches the key set now rather than at the next scheduled refresh
    /// (a reload; tests).
    pub fn refresh_now(&self) {
        self.wake.notify_one();
    }

    /// Marks the start of a fetch (the refresher's own schedule).
    pub(crate) fn fetch_started(&self) {
        self.gate.lock().pending = true;
    }

    pub(crate) fn fetch_finished(&self) {
        self.gate.lock().pending = false;
        self.fetched.send_modify(|n| *n += 1);
    }

    /// Asks for the key set to be fetched again because a token named a key
    /// it lacks, and waits for that fetch. Returns whether a fetch finished
    /// (the caller looks again); `false` when one was done less than
    /// [`REFETCH_MIN_INTERVAL`] ago or the keys are fixed.
    pub async fn refetch(&self, wait: Duration) -> bool {
        if matches!(self.source, Source::Fixed) {
            return false;
        }
        let mut rx = self.fetched.subscribe();
        let seen = *rx.borrow_and_update();
        {
            let mut g = self.gate.lock();
            if !g.pending {
                if g.last.is_some_and(|t| t.elapsed() < REFETCH_MIN_INTERVAL) {
                    return false;
                }
                g.last = Some(Instant::now());
                g.pending = true;
                self.wake.notify_one();
            }
        }
        // Waits for the fetch in flight (ours or another caller's).
        tokio::time::timeout(wait, rx.wait_for(|n| *n > seen))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
