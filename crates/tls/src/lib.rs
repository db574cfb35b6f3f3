//! Certificates for paygate's TLS listeners and clients.
//!
//! paygate carries one TLS stack, the system's OpenSSL, shared by Pingora
//! (listeners and upstream peers), redis-rs and sqlx (native-tls) and reqwest.
//! This crate holds what is ours on top of it: reading a certificate and its
//! key from PEM files with errors that name the config key, choosing a
//! certificate by SNI, swapping the whole set on a reload without touching
//! open connections, expiry, and generating certificates for the demo and
//! the tests.

pub mod cert;
pub mod generate;
pub mod probe;
pub mod server;

pub use cert::{load_ca, CertPair, PairSource};
pub use generate::{self_signed, Ca, Issued, Validity};
pub use openssl::ssl::SslVersion;
pub use server::{CertStore, ServerCerts};

/// Why a certificate, key or CA file cannot be used. Each names the config
/// key it came from, so a start-up error points at the line to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{key}: {path} holds no PEM certificate")]
    NoCertificate { key: String, path: String },
    #[error("{key}: {path} holds no PEM private key ({detail})")]
    NoKey {
        key: String,
        path: String,
        detail: String,
    },
    #[error("{key}: the private key in {key_path} does not match the certificate in {cert_path}")]
    KeyMismatch {
        key: String,
        cert_path: String,
        key_path: String,
    },
    #[error("{key}: the certificate in {path} expired {ago_seconds} s ago")]
    Expired {
        key: String,
        path: String,
        ago_seconds: i64,
    },
    #[error("{key}: {detail}")]
    Invalid { key: String, detail: String },
}

/// Seconds since the Unix epoch, by the system clock.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
