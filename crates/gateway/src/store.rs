//! The store as the request path uses it: every failed call is counted in
//! `paygate_store_errors_total` here, in one place, whatever step made it.

use std::sync::Arc;

use paygate_store::{
    Admission, Counters, Limits, PaymentClaim, Reservation, Snapshot, Store, StoreError,
    WebsocketSlot, WEBSOCKET_LEASE_MS,
};

#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<dyn Store>,
    errors: prometheus::IntCounter,
}

impl StoreHandle {
    pub fn new(store: Arc<dyn Store>, errors: prometheus::IntCounter) -> Self {
        Self { store, errors }
    }

    fn counted<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.errors.inc();
        }
        r
    }

    pub async fn admit(&self, customer: &str, limits: &Limits) -> Result<Admission, StoreError> {
        self.counted(self.store.admit(customer, limits).await)
    }

    pub async fn give_back(&self, customer: &str, r: &Reservation) -> Result<(), StoreError> {
        self.counted(self.store.give_back(customer, r).await)
    }

    pub async fn peek(&self, customer: &str, limits: &Limits) -> Result<Snapshot, StoreError> {
        self.counted(self.store.peek(customer, limits).await)
    }

    pub async fn open_websocket(
        &self,
        customer: &str,
        lease: &str,
        max: u32,
    ) -> Result<WebsocketSlot, StoreError> {
        self.counted(
            self.store
                .open_websocket(customer, lease, max, WEBSOCKET_LEASE_MS)
                .await,
        )
    }

    pub async fn close_websocket(&self, customer: &str, lease: &str) -> Result<(), StoreError> {
        self.counted(self.store.close_websocket(customer, lease).await)
    }

    pub async fn websockets_open(&self, customer: &str) -> Result<u32, StoreError> {
        self.counted(self.store.websockets_open(customer).await)
    }

    /// Extends an open WebSocket's lease by [`WEBSOCKET_LEASE_MS`].
    pub async fn renew_websocket(&self, customer: &str, lease: &str) -> Result<(), StoreError> {
        self.counted(
            self.store
                .renew_websocket(customer, lease, WEBSOCKET_LEASE_MS)
                .await,
        )
    }

    pub async fn claim_payment(
        &self,
        identity: &str,
        ttl_ms: u64,
    ) -> Result<PaymentClaim, StoreError> {
        self.counted(self.store.claim_payment(identity, ttl_ms).await)
    }

    /// Creates empty counters for `key` unless it has some: an anonymous
    /// x402 payer has only a rate, nothing to load from the ledger.
    pub async fn ensure_counters(&self, key: &str) -> Result<(), StoreError> {
        let empty = Counters {
            credits_micros: 0,
            quota_used: 0,
            period_start: 0,
        };
        self.counted(
            self.store
                .seed(key, empty, paygate_store::SeedMode::IfAbsent)
                .await,
        )
        .map(|_| ())
    }

    pub async fn release_payment(&self, identity: &str) -> Result<(), StoreError> {
        self.counted(self.store.release_payment(identity).await)
    }
}
