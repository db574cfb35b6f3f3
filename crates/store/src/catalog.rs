//! The gateway's local cache of plans, customers and keys. Reads are one
//! atomic pointer load; writes (admin changes, rare) copy the affected map and
//! swap it in, so a revocation is in force for the very next call.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use paygate_core::apikey;
pub use paygate_core::records::{CustomerRecord, KeyRecord};
use paygate_core::{CustomerId, Plan, PlanId};

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
    ApiKey(Arc<KeyRecord>),
    /// A token of a JWT issuer; the value is the usage events' `key_id` for
    /// that issuer (`jwt:<issuer>`).
    Jwt(Arc<str>),
}

impl Principal {
    /// The usage events' `key_id`: the API key's id, or `jwt:<issuer>`.
    pub fn key_id(&self) -> &str {
        match &self.credential {
            Credential::ApiKey(k) => k.id.as_str(),
            Credential::Jwt(label) => label,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Snapshot {
    plans: HashMap<PlanId, Arc<Plan>>,
    customers: HashMap<CustomerId, Arc<CustomerRecord>>,
    /// Display prefix → keys with that prefix (collisions are possible but rare).
    keys: HashMap<String, Vec<Arc<KeyRecord>>>,
}

impl Snapshot {
    fn of(plans: Vec<Plan>, customers: Vec<CustomerRecord>, keys: Vec<KeyRecord>) -> Self {
        let mut s = Snapshot::default();
        for p in plans {
            s.plans.insert(p.id.clone(), Arc::new(p));
        }
        for c in customers {
            s.customers.insert(c.id.clone(), Arc::new(c));
        }
        for k in keys {
            s.keys
                .entry(k.prefix.clone())
                .or_default()
                .push(Arc::new(k));
        }
        s
    }
}

pub struct Catalog {
    secret: Vec<u8>,
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
            secret: secret.into(),
            snap: ArcSwap::from_pointee(Snapshot::default()),
            edits: parking_lot::Mutex::new(0),
        }
    }

    pub fn key_secret(&self) -> &[u8] {
        &self.secret
    }

    /// Finds the live key matching `presented`, comparing keyed hashes in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        if !apikey::is_well_formed(presented) {
            return None;
        }
        let snap = self.snap.load();
        let candidates = snap.keys.get(apikey::display_prefix(presented))?;
        let key = candidates
            .iter()
            .find(|k| apikey::verify(&self.secret, presented, &k.hash))?;
        let customer = snap.customers.get(&key.customer_id)?;
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
        keys: Vec<KeyRecord>,
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
    pub fn replace_all(
        &self,
        plans: Vec<Plan>,
        customers: Vec<CustomerRecord>,
        keys: Vec<KeyRecord>,
    ) {
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
        self.edit(|s| {
            s.customers.insert(c.id.clone(), Arc::clone(&c));
        });
    }

    pub fn put_key(&self, k: KeyRecord) {
        let k = Arc::new(k);
        self.edit(|s| {
            let list = s.keys.entry(k.prefix.clone()).or_default();
            list.retain(|old| old.id != k.id);
            list.push(Arc::clone(&k));
        });
    }

    /// Removes a key; the next call presenting it is refused.
    pub fn revoke_key(&self, id: &str) {
        self.edit(|s| {
            for list in s.keys.values_mut() {
                list.retain(|k| k.id.as_str() != id);
            }
            s.keys.retain(|_, list| !list.is_empty());
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
        cat.put_plan(plan());
        cat.put_customer(CustomerRecord {
            id: CustomerId::new("c").unwrap(),
            name: "C".into(),
            email: "c@example.com".into(),
            plan_id: PlanId::new("p").unwrap(),
            anchor_day: 1,
            created_at: Utc::now(),
        });
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
        cat.revoke_key(id.as_str());
        assert!(cat.authenticate(&k.secret).is_none());
    }

    #[test]
    fn a_reload_read_before_an_edit_does_not_undo_it() {
        let cat = Catalog::new(b"secret".to_vec());
        let before = cat.edits();
        // An admin change lands while a reload is reading the database...
        cat.put_plan(plan());
        // ...whose result, read before the change, does not replace it.
        assert!(!cat.replace_all_unless_edited(before, vec![], vec![], vec![]));
        assert!(cat.plan("p").is_some());
        // Read again after the change: it replaces.
        assert!(cat.replace_all_unless_edited(cat.edits(), vec![plan()], vec![], vec![]));
        assert!(cat.plan("p").is_some());
    }
}
