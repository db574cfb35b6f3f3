//! The gateway's local cache of plans, customers and keys. Reads are one
//! atomic pointer load; writes (admin changes, rare) copy the affected shard
//! and swap a new snapshot in, so a revocation is in force for the very next
//! call.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use paygate_core::apikey;
pub use paygate_core::records::{CustomerRecord, KeyRecord};
use paygate_core::{CustomerId, Plan, PlanId};

use crate::shards::Shards;

/// Who is calling: the credential, its customer and the customer's plan, as
/// of now.
#[derive(Debug, Clone)]
pub struct Principal {
    pub credential: Credential,
    pub customer: Arc<CustomerRecord>,
    pub plan: Arc<Plan>,
}

/// What the caller proved its identity with.
#[derive(Debug, Clone)]
pub enum Credential {
    ApiKey(Arc<ApiKey>),
    /// A token of a JWT issuer; the value is the usage events' `key_id` for
    /// that issuer (`jwt:<issuer>`).
    Jwt(Arc<str>),
}

/// A live API key as the gateway keeps it: what a call needs and no more
/// (a million of them must fit in a gateway's memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Box<str>,
    /// Shared by the keys of one customer loaded together.
    pub customer_id: Arc<str>,
    hash: apikey::KeyHash,
}

impl ApiKey {
    fn new(k: KeyRecord, customer_id: Arc<str>) -> Self {
        Self {
            id: k.id.into_string().into_boxed_str(),
            customer_id,
            hash: k.hash,
        }
    }
}

impl From<KeyRecord> for ApiKey {
    fn from(k: KeyRecord) -> Self {
        let customer_id = Arc::from(k.customer_id.as_str());
        Self::new(k, customer_id)
    }
}

impl Principal {
    /// The usage events' `key_id`: the API key's id, or `jwt:<issuer>`.
    pub fn key_id(&self) -> &str {
        match &self.credential {
            Credential::ApiKey(k) => &k.id,
            Credential::Jwt(label) => label,
        }
    }
}

/// A key's display prefix, the index of the key map.
type Prefix = [u8; apikey::DISPLAY_PREFIX_LEN];

fn prefix_of(s: &str) -> Option<Prefix> {
    s.as_bytes().try_into().ok()
}

/// The key's prefix; `None` (and a warning) for a prefix paygate does not
/// make, which no presented key can match.
fn prefix_or_warn(k: &KeyRecord) -> Option<Prefix> {
    let prefix = prefix_of(&k.prefix);
    if prefix.is_none() {
        tracing::warn!(key = %k.id, "API key with a malformed prefix not loaded");
    }
    prefix
}

type KeyMap = Shards<Prefix, KeysOfPrefix>;

/// Adds `key` under `prefix`, in place of a key with the same id.
fn add_key(keys: &mut KeyMap, prefix: Prefix, key: &Arc<ApiKey>) {
    keys.update(prefix, |old| match old {
        Some(list) => list.edited(&key.id, Some(key)),
        None => Some(KeysOfPrefix::One(Arc::clone(key))),
    })
}

/// Removes the key `id` from under `prefix`.
fn remove_key(keys: &mut KeyMap, prefix: Prefix, id: &str) {
    keys.update(prefix, |old| old.and_then(|list| list.edited(id, None)))
}

/// The keys of one display prefix: nearly always one (a prefix holds about
/// 24 random bits), held without a list of its own. Two thin pointers, so an
/// entry of the key map takes 32 bytes.
#[derive(Debug, Clone)]
enum KeysOfPrefix {
    One(Arc<ApiKey>),
    Several(Arc<Vec<Arc<ApiKey>>>),
}

impl KeysOfPrefix {
    fn as_slice(&self) -> &[Arc<ApiKey>] {
        match self {
            Self::One(k) => std::slice::from_ref(k),
            Self::Several(list) => list,
        }
    }

    /// `None` for no keys.
    fn of(mut keys: Vec<Arc<ApiKey>>) -> Option<Self> {
        match keys.len() {
            0 => None,
            1 => keys.pop().map(Self::One),
            _ => Some(Self::Several(Arc::new(keys))),
        }
    }

    /// These keys without `id`, and `add` if given.
    fn edited(&self, id: &str, add: Option<&Arc<ApiKey>>) -> Option<Self> {
        let kept = self.as_slice().iter().filter(|k| &*k.id != id);
        Self::of(kept.chain(add).cloned().collect())
    }
}

#[derive(Debug, Default, Clone)]
struct Snapshot {
    plans: HashMap<PlanId, Arc<Plan>>,
    customers: Shards<CustomerId, Arc<CustomerRecord>>,
    keys: KeyMap,
}

/// API keys read for a catalog, indexed the way the catalog keeps them.
/// Filled a row at a time (`add`), so a million keys are never held twice
/// over while a catalog is loaded.
#[derive(Debug, Default)]
pub struct KeyIndex {
    keys: KeyMap,
    /// One copy of each customer id for all its keys (dropped once built).
    customer_ids: HashSet<Arc<str>>,
}

impl KeyIndex {
    pub fn add(&mut self, k: KeyRecord) {
        let Some(prefix) = prefix_or_warn(&k) else {
            return;
        };
        let customer_id = match self.customer_ids.get(k.customer_id.as_str()) {
            Some(id) => Arc::clone(id),
            None => {
                let id: Arc<str> = Arc::from(k.customer_id.as_str());
                self.customer_ids.insert(Arc::clone(&id));
                id
            }
        };
        add_key(
            &mut self.keys,
            prefix,
            &Arc::new(ApiKey::new(k, customer_id)),
        );
    }
}

impl FromIterator<KeyRecord> for KeyIndex {
    fn from_iter<I: IntoIterator<Item = KeyRecord>>(iter: I) -> Self {
        let mut index = Self::default();
        for k in iter {
            index.add(k);
        }
        index
    }
}

impl Snapshot {
    fn of(plans: Vec<Plan>, customers: Vec<CustomerRecord>, keys: KeyIndex) -> Self {
        let mut keys = keys.keys;
        keys.shrink();
        Snapshot {
            plans: plans
                .into_iter()
                .map(|p| (p.id.clone(), Arc::new(p)))
                .collect(),
            customers: customers
                .into_iter()
                .map(|c| (c.id.clone(), Arc::new(c)))
                .collect(),
            keys,
        }
    }
}

pub struct Catalog {
    hasher: apikey::KeyHasher,
    snap: ArcSwap<Snapshot>,
    /// Number of single-record edits so far. Held while any write replaces
    /// the snapshot, so a reload from the database can tell whether an edit
    /// landed while it was reading (and would otherwise be lost).
    edits: parking_lot::Mutex<u64>,
}

impl Catalog {
    /// `secret` is the server's HMAC secret for API keys.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            hasher: apikey::KeyHasher::new(&secret.into()),
            snap: ArcSwap::from_pointee(Snapshot::default()),
            edits: parking_lot::Mutex::new(0),
        }
    }

    /// The keyed hash a new key is stored under.
    pub fn hash_key(&self, key: &str) -> apikey::KeyHash {
        self.hasher.hash(key)
    }

    /// Finds the live key matching `presented`, comparing keyed hashes in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        if !apikey::is_well_formed(presented) {
            return None;
        }
        let snap = self.snap.load();
        let candidates = snap
            .keys
            .get(&prefix_of(apikey::display_prefix(presented))?)?;
        let key = candidates
            .as_slice()
            .iter()
            .find(|k| self.hasher.verify(presented, &k.hash))?;
        let customer = snap.customers.get(&*key.customer_id)?;
        let plan = snap.plans.get(&customer.plan_id)?;
        Some(Principal {
            credential: Credential::ApiKey(Arc::clone(key)),
            customer: Arc::clone(customer),
            plan: Arc::clone(plan),
        })
    }

    /// The caller `customer_id` with `credential` (a verified JWT), if the
    /// customer and its plan exist.
    pub fn principal(&self, customer_id: &str, credential: Credential) -> Option<Principal> {
        let snap = self.snap.load();
        let customer = snap.customers.get(customer_id)?;
        let plan = snap.plans.get(&customer.plan_id)?;
        Some(Principal {
            credential,
            customer: Arc::clone(customer),
            plan: Arc::clone(plan),
        })
    }

    pub fn plan(&self, id: &str) -> Option<Arc<Plan>> {
        self.snap.load().plans.get(id).cloned()
    }

    pub fn customer(&self, id: &str) -> Option<Arc<CustomerRecord>> {
        self.snap.load().customers.get(id).cloned()
    }

    pub fn customers(&self) -> Vec<Arc<CustomerRecord>> {
        self.snap.load().customers.values().cloned().collect()
    }

    /// How many live keys the catalog holds.
    pub fn key_count(&self) -> usize {
        self.snap
            .load()
            .keys
            .values()
            .map(|l| l.as_slice().len())
            .sum()
    }

    /// How many single-record edits have been applied so far.
    pub fn edits(&self) -> u64 {
        *self.edits.lock()
    }

    /// Replaces everything with records read from the database, unless a
    /// single-record edit was applied since `edits()` returned `since`: the
    /// read may predate that edit. Returns whether it replaced.
    pub fn replace_all_unless_edited(
        &self,
        since: u64,
        plans: Vec<Plan>,
        customers: Vec<CustomerRecord>,
        keys: KeyIndex,
    ) -> bool {
        let edits = self.edits.lock();
        if *edits != since {
            return false;
        }
        self.snap
            .store(Arc::new(Snapshot::of(plans, customers, keys)));
        drop(edits);
        true
    }

    fn edit(&self, f: impl Fn(&mut Snapshot)) {
        let mut edits = self.edits.lock();
        self.snap.rcu(|s| {
            let mut s = Snapshot::clone(s);
            f(&mut s);
            s
        });
        *edits += 1;
    }

    /// Replaces everything at once (start-up).
    pub fn replace_all(&self, plans: Vec<Plan>, customers: Vec<CustomerRecord>, keys: KeyIndex) {
        let _edits = self.edits.lock();
        self.snap
            .store(Arc::new(Snapshot::of(plans, customers, keys)));
    }

    pub fn put_plan(&self, plan: Plan) {
        let plan = Arc::new(plan);
        self.edit(|s| {
            s.plans.insert(plan.id.clone(), Arc::clone(&plan));
        });
    }

    pub fn remove_plan(&self, id: &str) {
        self.edit(|s| {
            s.plans.remove(id);
        });
    }

    pub fn put_customer(&self, c: CustomerRecord) {
        let c = Arc::new(c);
        self.edit(|s| s.customers.insert(c.id.clone(), Arc::clone(&c)));
    }

    /// Adds a key, or replaces the one with the same id.
    pub fn put_key(&self, k: KeyRecord) {
        let Some(prefix) = prefix_or_warn(&k) else {
            return;
        };
        let k = Arc::new(ApiKey::from(k));
        self.edit(|s| add_key(&mut s.keys, prefix, &k));
    }

    /// Removes the key `id` shown with `prefix`; the next call presenting it
    /// is refused.
    pub fn revoke_key(&self, id: &str, prefix: &str) {
        match prefix_of(prefix) {
            Some(prefix) => self.edit(|s| remove_key(&mut s.keys, prefix, id)),
            None => self.forget_key(id),
        }
    }

    /// Removes the key `id` whatever its prefix (a key the database no
    /// longer holds): a pass over every key.
    pub fn forget_key(&self, id: &str) {
        self.edit(|s| {
            let held = s
                .keys
                .iter()
                .find(|(_, list)| list.as_slice().iter().any(|k| &*k.id == id))
                .map(|(prefix, _)| *prefix);
            if let Some(prefix) = held {
                remove_key(&mut s.keys, prefix, id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use paygate_core::KeyId;

    fn plan() -> Plan {
        serde_json::from_value(
            serde_json::json!({"id":"p","name":"P","rate_limit":{"requests":1,"per":"second"}}),
        )
        .unwrap()
    }

    #[test]
    fn authenticate_then_revoke() {
        let cat = Catalog::new(b"secret".to_vec());
        customer_and_plan(&cat);
        let k = apikey::generate();
        let id = KeyId::generate();
        cat.put_key(KeyRecord {
            id: id.clone(),
            customer_id: CustomerId::new("c").unwrap(),
            prefix: k.prefix.clone(),
            hash: apikey::hash(b"secret", &k.secret),
            created_at: Utc::now(),
        });
        let p = cat.authenticate(&k.secret).unwrap();
        assert_eq!(p.customer.id.as_str(), "c");
        assert_eq!(p.plan.id.as_str(), "p");
        assert!(cat.authenticate(&apikey::generate().secret).is_none());
        cat.revoke_key(id.as_str(), &k.prefix);
        assert!(cat.authenticate(&k.secret).is_none());
        assert_eq!(cat.key_count(), 0);
    }

    fn customer_and_plan(cat: &Catalog) {
        cat.put_plan(plan());
        cat.put_customer(CustomerRecord {
            id: CustomerId::new("c").unwrap(),
            name: "C".into(),
            email: "c@example.com".into(),
            plan_id: PlanId::new("p").unwrap(),
            anchor_day: 1,
            created_at: Utc::now(),
        });
    }

    fn key_with_prefix(cat: &Catalog, secret: &str, id: &str) -> KeyRecord {
        let k = KeyRecord {
            id: KeyId::new(id).unwrap(),
            customer_id: CustomerId::new("c").unwrap(),
            prefix: apikey::display_prefix(secret).into(),
            hash: apikey::hash(b"secret", secret),
            created_at: Utc::now(),
        };
        cat.put_key(k.clone());
        k
    }

    /// Two keys whose display prefixes collide are told apart by their
    /// hashes; revoking one (by prefix, or without it) leaves the other.
    #[test]
    fn keys_sharing_a_prefix_are_kept_and_revoked_apart() {
        let cat = Catalog::new(b"secret".to_vec());
        customer_and_plan(&cat);
        let a = format!("pg_live_AAAA{}", "a".repeat(28));
        let b = format!("pg_live_AAAA{}", "b".repeat(28));
        let c = format!("pg_live_CCCC{}", "c".repeat(28));
        let ka = key_with_prefix(&cat, &a, "ka");
        key_with_prefix(&cat, &b, "kb");
        key_with_prefix(&cat, &c, "kc");
        // Putting a key again replaces it rather than adding a copy.
        cat.put_key(ka.clone());
        assert_eq!(cat.key_count(), 3);
        for k in [&a, &b, &c] {
            assert!(cat.authenticate(k).is_some());
        }
        assert_eq!(cat.authenticate(&a).unwrap().key_id(), "ka");
        cat.revoke_key("ka", &ka.prefix);
        assert!(cat.authenticate(&a).is_none());
        assert_eq!(cat.authenticate(&b).unwrap().key_id(), "kb");
        cat.forget_key("kb");
        assert!(cat.authenticate(&b).is_none());
        assert!(cat.authenticate(&c).is_some());
        assert_eq!(cat.key_count(), 1);
    }

    /// A well-formed key whose display prefix is its own.
    fn secret_of(i: usize) -> String {
        format!("pg_live_{i:04}{}", "x".repeat(28))
    }

    /// A snapshot read before an edit keeps its own view of the keys.
    #[test]
    fn an_edit_leaves_earlier_snapshots_alone() {
        let cat = Catalog::new(b"secret".to_vec());
        customer_and_plan(&cat);
        let keys: Vec<KeyRecord> = (0..2000)
            .map(|i| {
                let secret = secret_of(i);
                KeyRecord {
                    id: KeyId::new(format!("k{i}")).unwrap(),
                    customer_id: CustomerId::new("c").unwrap(),
                    prefix: apikey::display_prefix(&secret).into(),
                    hash: apikey::hash(b"secret", &secret),
                    created_at: Utc::now(),
                }
            })
            .collect();
        cat.replace_all(
            vec![plan()],
            cat.customers().iter().map(|c| (**c).clone()).collect(),
            keys.into_iter().collect(),
        );
        let before = cat.snap.load_full();
        cat.revoke_key("k7", apikey::display_prefix(&secret_of(7)));
        assert_eq!(
            before
                .keys
                .values()
                .map(|l| l.as_slice().len())
                .sum::<usize>(),
            2000
        );
        assert_eq!(cat.key_count(), 1999);
        assert!(cat.authenticate(&secret_of(8)).is_some());
        assert!(cat.authenticate(&secret_of(7)).is_none());
    }

    #[test]
    fn a_reload_read_before_an_edit_does_not_undo_it() {
        let cat = Catalog::new(b"secret".to_vec());
        let before = cat.edits();
        // An admin change lands while a reload is reading the database...
        cat.put_plan(plan());
        // ...whose result, read before the change, does not replace it.
        assert!(!cat.replace_all_unless_edited(before, vec![], vec![], KeyIndex::default()));
        assert!(cat.plan("p").is_some());
        // Read again after the change: it replaces.
        assert!(cat.replace_all_unless_edited(
            cat.edits(),
            vec![plan()],
            vec![],
            KeyIndex::default()
        ));
        assert!(cat.plan("p").is_some());
    }
}
