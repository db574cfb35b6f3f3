//! Tokens already verified, so a caller that sends the same JWT on every
//! call pays for one signature check, not one per call (the RSA and ECDSA
//! checks cost more than the rest of a call). An entry is only as good as
//! what made it valid: it is used while the token has not expired and the
//! issuer's key set is the one that verified it (a refresh that drops the
//! key drops the entry's validity too).

use std::collections::HashMap;
use std::sync::Arc;

use crate::issuer::Issuer;
use crate::keys::KeySet;
use crate::verify::Claims;

/// Entries kept at most; past this the cache starts over (cheap, and a
/// flood of distinct tokens cannot grow it without bound).
const MAX_ENTRIES: usize = 4096;

pub struct Entry {
    pub issuer: Arc<Issuer>,
    /// Shared, so a hit copies two pointers and no strings.
    pub claims: Arc<Claims>,
    /// `exp`, Unix seconds.
    pub exp: u64,
    /// The key set that verified the token.
    pub keys: Arc<KeySet>,
}

#[derive(Default)]
pub struct VerifiedCache {
    map: parking_lot::RwLock<HashMap<Box<str>, Entry>>,
}

impl VerifiedCache {
    /// The issuer and claims of `token`, if it was verified before and is
    /// still valid at `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<(Arc<Issuer>, Arc<Claims>)> {
        let map = self.map.read();
        let e = map.get(token)?;
        let current = e.issuer.keys()?;
        let fresh = Arc::ptr_eq(&current, &e.keys) && now <= e.exp + e.issuer.leeway_seconds;
        fresh.then(|| (Arc::clone(&e.issuer), Arc::clone(&e.claims)))
    }

    pub fn put(&self, token: &str, entry: Entry) {
        let mut map = self.map.write();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(token.into(), entry);
    }
}
