//! One certificate chain and its private key, read from PEM files and
//! checked the way a start-up must check them: readable, a certificate
//! present, the key matching the leaf, not expired.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::TlsError;

/// Where a pair comes from, with the config keys to name in errors.
#[derive(Debug, Clone)]
pub struct PairSource {
    /// Name of this certificate in logs and metrics (`gateway`, a server
    /// name, `admin`, `upstream market`).
    pub label: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Config key of `cert_path`, e.g. `gateway.tls.cert_path`.
    pub cert_key: String,
    /// Config key of `key_path`.
    pub key_key: String,
}

/// A leaf certificate (first), its intermediates, and the leaf's key.
pub struct CertPair {
    pub label: String,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// The leaf's `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.to_string(),
        path: path.display().to_string(),
        source,
    })
}

/// Certificates of a PEM file, in file order.
pub fn read_certs(key: &str, path: &Path) -> Result<Vec<X509>, TlsError> {
    let pem = read(key, path)?;
    let certs = X509::stack_from_pem(&pem).unwrap_or_default();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key: key.to_string(),
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The CA certificates of a PEM file (a trust store for peers).
pub fn load_ca(key: &str, path: &Path) -> Result<Vec<X509>, TlsError> {
    read_certs(key, path)
}

/// Seconds since the Unix epoch of an ASN.1 time.
pub fn unix_seconds(t: &Asn1TimeRef) -> Result<i64, openssl::error::ErrorStack> {
    let epoch = Asn1Time::from_unix(0)?;
    let d = epoch.diff(t)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

impl CertPair {
    /// Reads and checks a pair; an expired leaf is an error, as is a key
    /// that does not belong to it.
    pub fn load(src: &PairSource) -> Result<Self, TlsError> {
        Self::load_at(src, crate::now_unix())
    }

    /// [`Self::load`] at a given time (tests).
    pub fn load_at(src: &PairSource, now: i64) -> Result<Self, TlsError> {
        let chain = read_certs(&src.cert_key, &src.cert_path)?;
        let key_pem = read(&src.key_key, &src.key_path)?;
        let key = PKey::private_key_from_pem(&key_pem).map_err(|e| TlsError::NoKey {
            key: src.key_key.clone(),
            path: src.key_path.display().to_string(),
            detail: e.to_string(),
        })?;
        let leaf = &chain[0];
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(TlsError::KeyMismatch {
                key: src.key_key.clone(),
                cert_path: src.cert_path.display().to_string(),
                key_path: src.key_path.display().to_string(),
            });
        }
        let not_after = unix_seconds(leaf.not_after()).map_err(|e| TlsError::Invalid {
            key: src.cert_key.clone(),
            detail: format!("unreadable notAfter: {e}"),
        })?;
        if not_after <= now {
            return Err(TlsError::Expired {
                key: src.cert_key.clone(),
                path: src.cert_path.display().to_string(),
                ago_seconds: now - not_after,
            });
        }
        Ok(Self {
            label: src.label.clone(),
            chain,
            key,
            not_after,
        })
    }

    pub fn leaf(&self) -> &X509 {
        &self.chain[0]
    }

    /// The certificates after the leaf.
    pub fn intermediates(&self) -> &[X509] {
        &self.chain[1..]
    }

    /// Seconds until the leaf expires (negative once it has).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after - now
    }

    /// DNS names of the leaf's subjectAltName.
    pub fn dns_names(&self) -> Vec<String> {
        self.leaf()
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                    .collect()
            })
            .unwrap_or_default()
    }
}
