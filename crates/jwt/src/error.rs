//! Why a token was refused. Each message names the check that failed and
//! never echoes the token.

/// A refused token: 401 `invalid_credentials`, except
/// [`JwtError::IssuerUnavailable`] (503: the issuer's keys were never fetched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the token is not a well-formed JWT ({0})")]
    Malformed(&'static str),
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("algorithm not allowed for this key: {alg} cannot be verified with a {key} key")]
    KeyTypeMismatch { alg: String, key: &'static str },
    #[error("unknown signing key (kid {0:?}) at this issuer")]
    UnknownKey(String),
    #[error("the token names no signing key (kid) and the issuer has several")]
    AmbiguousKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf is in the future)")]
    NotYetValid,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing claim `{0}`")]
    MissingClaim(String),
    #[error("claim `{0}` is not valid")]
    InvalidClaim(String),
    #[error("the issuer's signing keys have not been fetched yet")]
    IssuerUnavailable,
}

impl JwtError {
    /// The key set is missing, not the token wrong: come back later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::IssuerUnavailable)
    }

    /// A stable name for the failed check (tests, logs).
    pub fn check(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Malformed(_) => "malformed",
            Self::AlgorithmNotAllowed(_) => "algorithm",
            Self::UnknownIssuer => "issuer",
            Self::KeyTypeMismatch { .. } => "key_type",
            Self::UnknownKey(_) => "unknown_key",
            Self::AmbiguousKey => "ambiguous_key",
            Self::BadSignature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::WrongAudience => "audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::IssuerUnavailable => "issuer_unavailable",
        }
    }
}

/// A `[[auth.jwt]]` entry that cannot be used, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BuildError {
    pub key: String,
    pub message: String,
}
