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

fn mac(server_secret: &[u8], key: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match Hmac::<Sha256>::new_from_slice(server_secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(key.as_bytes());
    m
}

pub fn hash(server_secret: &[u8], key: &str) -> KeyHash {
    mac(server_secret, key).finalize().into_bytes().into()
}

/// Constant-time comparison of `key`'s keyed hash with a stored one.
pub fn verify(server_secret: &[u8], key: &str, stored: &KeyHash) -> bool {
    mac(server_secret, key).verify_slice(stored).is_ok()
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
}
