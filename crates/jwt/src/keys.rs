//! An issuer's signing keys: a JWKS document, one PEM public key, or an HMAC
//! secret. Each key knows its type, so a token is never verified with a key of
//! another family (no HS256 token checked with an RSA public key as the
//! HMAC secret).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

pub struct Key {
    pub kid: Option<String>,
    pub decoding: DecodingKey,
    /// The one algorithm this key is for, when the JWK says (or the curve
    /// implies) it.
    pub alg: Option<Algorithm>,
}

impl Key {
    pub fn family(&self) -> AlgorithmFamily {
        self.decoding.family()
    }

    /// Whether a token signed with `alg` may be checked with this key.
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

pub fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "HMAC",
        AlgorithmFamily::Rsa => "RSA",
        AlgorithmFamily::Ec => "EC",
        AlgorithmFamily::Ed => "Ed25519",
    }
}

/// The keys an issuer signs with, as of the last successful fetch.
pub struct KeySet {
    keys: Vec<Key>,
    /// One key given in the config (PEM or secret): used whatever `kid` the
    /// token names.
    fixed: bool,
}

pub enum Lookup<'a> {
    Found(&'a Key),
    UnknownKid,
    Ambiguous,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document. Keys paygate cannot use (encryption keys,
    /// unknown types) are skipped; a document with none left is an error, so
    /// a broken publication never replaces a good key set.
    pub fn from_jwks(body: &[u8]) -> Result<Self, String> {
        let doc: JwksDoc =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for v in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(v) else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let alg = match jwk.common.key_algorithm {
                // An encryption algorithm (RSA-OAEP…) marks a key not for signatures.
                Some(a) => match a.to_string().parse::<Algorithm>() {
                    Ok(a) => Some(a),
                    Err(_) => continue,
                },
                None => match &jwk.algorithm {
                    AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                        EllipticCurve::P256 => Some(Algorithm::ES256),
                        EllipticCurve::P384 => Some(Algorithm::ES384),
                        _ => None,
                    },
                    _ => None,
                },
            };
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                decoding,
                alg,
            });
        }
        if keys.is_empty() {
            return Err("the JWKS document holds no usable signing key".into());
        }
        Ok(Self { keys, fixed: false })
    }

    /// One public key in PEM, of the family of `algorithms` (RSA, EC or
    /// Ed25519).
    pub fn from_pem(pem: &str, algorithms: &[Algorithm]) -> Result<Self, String> {
        let family = algorithms
            .first()
            .map(|a| a.family())
            .ok_or("no algorithms")?;
        if algorithms.iter().any(|a| a.family() != family) {
            return Err("a single public key serves one family: list only RS/PS, only ES or only EdDSA algorithms".into());
        }
        let pem = pem.as_bytes();
        let decoding = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => return Err("HS* algorithms take secret_env".into()),
        }
        .map_err(|e| format!("not a {} public key in PEM: {e}", family_name(family)))?;
        Ok(Self::fixed(decoding))
    }

    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        let decoding = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        Ok(Self::fixed(decoding))
    }

    /// The one key given in the config.
    fn fixed(decoding: DecodingKey) -> Self {
        Self {
            keys: vec![Key {
                kid: None,
                decoding,
                alg: None,
            }],
            fixed: true,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token names (`kid`), or the only key that fits `alg` when
    /// it names none.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        if self.fixed {
            return match self.keys.first() {
                Some(k) => Lookup::Found(k),
                None => Lookup::UnknownKid,
            };
        }
        if let Some(kid) = kid {
            return match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) => Lookup::Found(k),
                None => Lookup::UnknownKid,
            };
        }
        let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
        match (fitting.next(), fitting.next()) {
            (Some(k), None) => Lookup::Found(k),
            (None, _) => Lookup::UnknownKid,
            (Some(_), Some(_)) => Lookup::Ambiguous,
        }
    }
}
