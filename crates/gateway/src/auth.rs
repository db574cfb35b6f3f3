//! Credentials: `Authorization: Bearer <key or JWT>` or `X-API-Key: <key>`.

use std::sync::Arc;

use http::HeaderMap;
use paygate_core::{CustomerId, ErrorCode};
use paygate_jwt::{Issuers, Verified};
use paygate_store::{Catalog, Principal};

use crate::refusal::Refusal;

/// What the client presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Missing,
    ApiKey(&'a str),
    /// Three base64url segments.
    Jwt(&'a str),
    /// An `Authorization` header that is not a bearer token.
    Unusable,
}

pub fn credential(headers: &HeaderMap) -> Credential<'_> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else {
            return Credential::Unusable;
        };
        let Some((scheme, token)) = v.split_once(' ') else {
            return Credential::Unusable;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Credential::Unusable;
        }
        let token = token.trim();
        return if is_jwt(token) {
            Credential::Jwt(token)
        } else {
            Credential::ApiKey(token)
        };
    }
    match headers.get("x-api-key").map(|v| v.to_str()) {
        Some(Ok(k)) => Credential::ApiKey(k.trim()),
        Some(Err(_)) => Credential::Unusable,
        None => Credential::Missing,
    }
}

/// Three base64url segments; the signature may be empty (an unsigned
/// `alg: none` token is still a JWT, to be refused as one). API keys hold
/// no dots, so the two never mix.
fn is_jwt(token: &str) -> bool {
    let b64url = |seg: &str| {
        seg.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(sig), None) => {
            !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(sig)
        }
        _ => false,
    }
}

/// A customer a JWT names that paygate must create or move to another plan.
/// The application implements it over the database (audited, and published
/// to the other gateways); the gateway only calls it for a token whose
/// customer does not exist yet or whose plan claim changed, never per call.
#[async_trait::async_trait]
pub trait Provisioner: Send + Sync {
    /// Creates `customer` on `plan`; once this returns, the catalog has it.
    async fn create_customer(&self, new: NewCustomer<'_>) -> Result<(), ProvisionError>;
    /// Moves `customer` to `plan`; once this returns, the catalog has it.
    async fn change_plan(
        &self,
        customer: &CustomerId,
        plan: &str,
        actor: &str,
    ) -> Result<(), ProvisionError>;
}

/// A customer created on first sight of its token (`default_plan`).
pub struct NewCustomer<'a> {
    pub id: &'a CustomerId,
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub plan: &'a str,
    /// The audit log's actor: `jwt:<issuer>`.
    pub actor: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProvisionError(pub String);

/// Everything that turns credentials into a caller.
pub struct Authenticator {
    pub catalog: Arc<Catalog>,
    /// Swapped whole by a reload.
    pub issuers: Arc<arc_swap::ArcSwap<Issuers>>,
    pub provisioner: Arc<dyn Provisioner>,
}

impl Authenticator {
    /// Resolves the caller, or the refusal to answer with (401; 503 when a
    /// JWT issuer's keys were never fetched).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        match credential(headers) {
            Credential::Missing => Err(Refusal::new(
                ErrorCode::MissingCredentials,
                "send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            )),
            Credential::Unusable => Err(Refusal::new(
                ErrorCode::InvalidCredentials,
                "the Authorization header must be `Bearer <key>`",
            )),
            Credential::Jwt(token) => self.jwt(token).await,
            Credential::ApiKey(k) => self.catalog.authenticate(k).ok_or_else(|| {
                Refusal::new(
                    ErrorCode::InvalidCredentials,
                    "the API key is unknown, revoked or malformed",
                )
            }),
        }
    }

    async fn jwt(&self, token: &str) -> Result<Principal, Refusal> {
        let issuers = self.issuers.load_full();
        if issuers.is_empty() {
            // Not evaluated as a token at all: the plain challenge.
            return Err(Refusal::new(
                ErrorCode::InvalidCredentials,
                "JWTs are not accepted: no JWT issuer is configured",
            ));
        }
        let v = issuers.verify(token).await.map_err(|e| {
            if e.is_unavailable() {
                Refusal::new(ErrorCode::IssuerUnavailable, format!("JWT issuer: {e}"))
                    .retry_after_ms(1000)
            } else {
                Refusal::invalid_token(format!("invalid JWT: {e}"))
            }
        })?;
        let id = &v.claims.customer_id;
        let actor = v.issuer.key_label.as_ref();
        let credential = || paygate_store::Credential::Jwt(Arc::clone(&v.issuer.key_label));
        let claimed = self.claimed_plan(&v);
        match (self.catalog.principal(id.as_str(), credential()), claimed) {
            (Some(p), Some(plan)) if p.plan.id.as_str() != plan => {
                self.provisioner
                    .change_plan(id, plan, actor)
                    .await
                    .map_err(unprovisioned)?;
            }
            // The common case: a known customer, no plan change asked.
            (Some(p), _) => return Ok(p),
            (None, claimed) => {
                let Some(default_plan) = v.issuer.default_plan.as_deref() else {
                    return Err(Refusal::invalid_token(
                        "invalid JWT: the token's customer does not exist",
                    ));
                };
                let new = NewCustomer {
                    id,
                    name: v.claims.name.as_deref(),
                    email: v.claims.email.as_deref(),
                    plan: claimed.unwrap_or(default_plan),
                    actor,
                };
                self.provisioner
                    .create_customer(new)
                    .await
                    .map_err(unprovisioned)?;
            }
        }
        self.catalog
            .principal(id.as_str(), credential())
            .ok_or_else(|| {
                Refusal::invalid_token("invalid JWT: the token's customer does not exist")
            })
    }

    /// The plan a token names through `plan_claim`, if the issuer allows it
    /// and it exists; anything else is ignored.
    fn claimed_plan<'v>(&self, v: &'v Verified) -> Option<&'v str> {
        let plan = v.claims.plan.as_deref()?;
        (v.issuer.plan_allowed(plan) && self.catalog.plan(plan).is_some()).then_some(plan)
    }
}

fn unprovisioned(e: ProvisionError) -> Refusal {
    Refusal::new(
        ErrorCode::IssuerUnavailable,
        format!("the customer of this token cannot be set up now: {e}"),
    )
    .retry_after_ms(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn extraction() {
        let key = "pg_live_0123456789abcdefghijABCDEFGHIJ01";
        let auth = format!("Bearer {key}");
        let mut h = HeaderMap::new();
        h.insert("authorization", auth.parse().unwrap());
        assert_eq!(credential(&h), Credential::ApiKey(key));
        assert_eq!(
            credential(&headers(&[("x-api-key", "abc")])),
            Credential::ApiKey("abc")
        );
        assert_eq!(credential(&headers(&[])), Credential::Missing);
        assert_eq!(
            credential(&headers(&[("authorization", "Basic abc")])),
            Credential::Unusable
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer aGVh.cGF5.c2ln")])),
            Credential::Jwt("aGVh.cGF5.c2ln")
        );
        // Unsigned (alg: none) is still a JWT; two segments or a bad character are not.
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer aGVh.cGF5.")])),
            Credential::Jwt("aGVh.cGF5.")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer aGVh.cGF5")])),
            Credential::ApiKey("aGVh.cGF5")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer aGVh.c+F5.c2ln")])),
            Credential::ApiKey("aGVh.c+F5.c2ln")
        );
    }
}
