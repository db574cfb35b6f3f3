//! A hash map split into shards that are shared between copies.
//!
//! The catalog is replaced as a whole on every admin edit (readers load one
//! pointer and never wait). With a million keys in one `HashMap`, each edit
//! copied the million entries: tens of milliseconds and hundreds of MB of
//! garbage per revocation. Here a copy of the map copies [`SHARDS`]
//! pointers, and an edit then copies only the one shard it touches.

use std::borrow::Borrow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// With a million entries, an edit copies about 4,000 of them.
const SHARDS: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct Shards<K, V> {
    shards: Box<[Arc<HashMap<K, V>>]>,
}

impl<K, V> Default for Shards<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
        }
    }
}

/// The shard of a key. `K: Borrow<Q>` promises that a key and its borrowed
/// form hash alike, so a lookup by `&str` finds a `CustomerId` entry.
fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
    // Fixed keys: the shard only spreads the copying work, it is no
    // defence against chosen collisions (each shard's map has its own).
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % SHARDS as u64) as usize
}

impl<K: Hash + Eq + Clone, V: Clone> Shards<K, V> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[shard_of(key)].get(key)
    }

    /// The entry's shard, copied first if another snapshot shares it.
    fn shard_mut<Q>(&mut self, key: &Q) -> &mut HashMap<K, V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Arc::make_mut(&mut self.shards[shard_of(key)])
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.shard_mut(&key).insert(key, value);
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.get(key).is_some() {
            self.shard_mut(key).remove(key);
        }
    }

    /// Replaces the value at `key` with `f(old)`; `None` removes the entry.
    pub(crate) fn update(&mut self, key: K, f: impl FnOnce(Option<&V>) -> Option<V>) {
        match f(self.get(&key)) {
            Some(v) => self.insert(key, v),
            None => self.remove(&key),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Gives back the room growth left in each shard (a table doubles).
    pub(crate) fn shrink(&mut self) {
        for shard in self.shards.iter_mut() {
            Arc::make_mut(shard).shrink_to_fit();
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for Shards<K, V> {
    /// The last value of a repeated key wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut s = Self::default();
        for (k, v) in iter {
            s.insert(k, v);
        }
        s.shrink();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_shares_untouched_shards_and_keeps_its_own_view() {
        let a: Shards<String, u32> = (0..10_000).map(|i| (format!("k{i}"), i)).collect();
        let mut b = a.clone();
        b.insert("k1".into(), 100);
        b.remove("k2");
        assert_eq!(a.get("k1"), Some(&1));
        assert_eq!(a.get("k2"), Some(&2));
        assert_eq!(b.get("k1"), Some(&100));
        assert_eq!(b.get("k2"), None);
        assert_eq!((a.len(), b.len()), (10_000, 9_999));
        // At most two shards were copied; the rest are the same allocations.
        let shared = a
            .shards
            .iter()
            .zip(b.shards.iter())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= SHARDS - 2, "{shared} shards shared");
    }

    #[test]
    fn update_replaces_or_removes_and_leaves_absent_keys_absent() {
        let a: Shards<String, u32> = (0..1_000).map(|i| (format!("k{i}"), i)).collect();
        let mut c = a.clone();
        c.update(String::from("k9"), |old| old.map(|v| v + 1));
        c.update(String::from("new"), |old| old.map(|v| v + 1));
        assert_eq!((c.get("k9"), c.get("new")), (Some(&10), None));
        c.update(String::from("k8"), |_| None);
        assert_eq!((c.get("k8"), a.get("k8")), (None, Some(&8)));
    }
}
