//! API keys: `pg_live_` + 32 base62 characters (≈190 random bits), stored only
//! as HMAC-SHA-256 under a server secret. The first 12 characters are the
//! display prefix, the only part that may appear in logs.

use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, Rng};
use sha2::Sha256;

pub const KEY_PREFIX: &str = "pg_live_";
const RANDOM_LEN: usize = 32;
pub const KEY_LEN: usize = KEY_PREFIX.len() + RANDOM_LEN;
pub const DISPLAY_PREFIX_LEN: usize = 12;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub type KeyHash = [u8; 32];

/// A freshly minted key. `secret` is shown to the caller once and then dropped.
pub struct NewKey {
    pub secret: String,
    pub prefix: String,
}

pub fn generate() -> NewKey {
    let mut rng = OsRng;
    let mut secret = String::with_capacity(KEY_LEN);
    secret.push_str(KEY_PREFIX);
    for _ in 0..RANDOM_LEN {
        secret.push(char::from(BASE62[rng.gen_range(0..BASE62.len())]));
    }
    let prefix = display_prefix(&secret).to_string();
    NewKey { secret, prefix }
}

/// True when `s` has the shape of a paygate key; anything else is not worth a hash.
pub fn is_well_formed(s: &str) -> bool {
    s.len() == KEY_LEN
        && s.starts_with(KEY_PREFIX)
        && s.as_bytes()[KEY_PREFIX.len()..]
            .iter()
            .all(u8::is_ascii_alphanumeric)
}

/// The first 12 characters, kept in clear for display and lookup.
pub fn display_prefix(key: &str) -> &str {
    key.get(..DISPLAY_PREFIX_LEN).unwrap_or(key)
}

/// HMAC-SHA-256 under one server secret, with the secret's key schedule
/// (the inner and outer pads, two of the four SHA-256 blocks of a key's
/// hash) computed once instead of on every call.
#[derive(Clone)]
pub struct KeyHasher(Hmac<Sha256>);

impl KeyHasher {
    pub fn new(server_secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        match Hmac::<Sha256>::new_from_slice(server_secret) {
            Ok(m) => Self(m),
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }

    fn mac(&self, key: &str) -> Hmac<Sha256> {
        let mut m = self.0.clone();
        m.update(key.as_bytes());
        m
    }

    pub fn hash(&self, key: &str) -> KeyHash {
        self.mac(key).finalize().into_bytes().into()
    }

    /// Constant-time comparison of `key`'s keyed hash with a stored one.
    pub fn verify(&self, key: &str, stored: &KeyHash) -> bool {
        self.mac(key).verify_slice(stored).is_ok()
    }
}

pub fn hash(server_secret: &[u8], key: &str) -> KeyHash {
    KeyHasher::new(server_secret).hash(key)
}

/// Constant-time comparison of `key`'s keyed hash with a stored one.
pub fn verify(server_secret: &[u8], key: &str, stored: &KeyHash) -> bool {
    KeyHasher::new(server_secret).verify(key, stored)
}

/// A random server secret for keys, used when none is configured.
pub fn generate_server_secret() -> String {
    let mut rng = OsRng;
    (0..48)
        .map(|_| char::from(BASE62[rng.gen_range(0..BASE62.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert!(is_well_formed(&a.secret));
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.prefix.len(), 12);
        assert!(a.secret.starts_with(&a.prefix));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "pg_live_short",
            "pg_test_0123456789012345678901234567890a",
            &format!("pg_live_{}", "!".repeat(32)),
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn verify_depends_on_secret_and_key() {
        let k = generate();
        let h = hash(b"s1", &k.secret);
        assert!(verify(b"s1", &k.secret, &h));
        assert!(!verify(b"s2", &k.secret, &h));
        assert!(!verify(b"s1", &generate().secret, &h));
    }

    /// The precomputed pads are HMAC-SHA-256 all the same (RFC 4231 test
    /// case 2), and one hasher used for many keys carries nothing from one
    /// key to the next.
    #[test]
    fn a_reused_hasher_is_plain_hmac_sha256() {
        let h = KeyHasher::new(b"Jefe");
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        for _ in 0..3 {
            let got: String = h
                .hash("what do ya want for nothing?")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, expected);
        }
        let keys: Vec<NewKey> = (0..5).map(|_| generate()).collect();
        for k in &keys {
            assert!(h.verify(&k.secret, &hash(b"Jefe", &k.secret)));
        }
    }
}
