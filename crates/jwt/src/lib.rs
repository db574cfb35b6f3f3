//! JWT issuers (`[[auth.jwt]]`): which issuer a token belongs to (its `iss`),
//! which key checks it (its `kid`), and every check a valid token passes.
//!
//! Keys come from a JWKS URL (fetched in the background by [`refresh::run`],
//! refetched early, at most once per 10 s, when a token names a key the
//! cached set lacks), a PEM public key or an HMAC secret. The algorithm
//! allowlist is the issuer's, never the token's, and a key only checks tokens
//! of its own family.

mod cache;
mod error;
mod issuer;
mod keys;
pub mod refresh;
mod verify;

use std::collections::HashMap;
use std::sync::Arc;

use paygate_config::JwtIssuerConfig;

pub use error::{BuildError, JwtError};
pub use issuer::{Issuer, Source, REFETCH_MIN_INTERVAL};
pub use keys::KeySet;
pub use verify::{Claims, MAX_TOKEN_BYTES, REFETCH_WAIT};

/// A token that passed every check, and the issuer that vouched for it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer: Arc<Issuer>,
    pub claims: Arc<Claims>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Every configured issuer, by `iss`.
#[derive(Default)]
pub struct Issuers {
    by_iss: HashMap<String, Arc<Issuer>>,
    verified: cache::VerifiedCache,
}

impl Issuers {
    pub fn from_config(list: &[JwtIssuerConfig]) -> Result<Self, BuildError> {
        let mut by_iss = HashMap::new();
        for (i, c) in list.iter().enumerate() {
            by_iss.insert(c.issuer.clone(), Arc::new(Issuer::from_config(i, c)?));
        }
        Ok(Self {
            by_iss,
            verified: cache::VerifiedCache::default(),
        })
    }

    /// The issuers of a reloaded configuration. One whose JWKS URL is the
    /// one an issuer of `old` of the same `iss` fetched from starts with the
    /// keys fetched so far, so tokens keep verifying while its own refresh
    /// begins.
    pub fn reloaded(list: &[JwtIssuerConfig], old: &Issuers) -> Result<Self, BuildError> {
        let new = Self::from_config(list)?;
        for issuer in new.by_iss.values() {
            let Source::Jwks { url, .. } = &issuer.source else {
                continue;
            };
            let kept = old
                .by_iss
                .get(&issuer.issuer)
                .filter(|o| matches!(&o.source, Source::Jwks { url: u, .. } if u == url))
                .and_then(|o| o.keys());
            if let Some(keys) = kept {
                issuer.keep_keys(keys);
            }
        }
        Ok(new)
    }

    pub fn is_empty(&self) -> bool {
        self.by_iss.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.by_iss.values()
    }

    /// Runs every check on `token`, or finds it verified before with the
    /// issuer's current keys and not expired since.
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((issuer, claims)) = self.verified.get(token, now) {
            return Ok(Verified { issuer, claims });
        }
        let u = verify::parse(token)?;
        let issuer = self
            .by_iss
            .get(verify::issuer_of(&u)?)
            .ok_or(JwtError::UnknownIssuer)?;
        let keys = verify::check(issuer, &u).await?;
        let claims = Arc::new(verify::claims(issuer, &u)?);
        if let Some(exp) = u.claims.get("exp").and_then(serde_json::Value::as_u64) {
            let entry = cache::Entry {
                issuer: Arc::clone(issuer),
                claims: Arc::clone(&claims),
                exp,
                keys,
            };
            self.verified.put(token, entry);
        }
        Ok(Verified {
            issuer: Arc::clone(issuer),
            claims,
        })
    }
}
