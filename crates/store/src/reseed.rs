//! Self-healing counters: a store that answers "not seeded" for a customer
//! (a new Redis, or one restarted without persistence) asks, through a
//! channel, for that customer's counters to be rebuilt from the ledger. The
//! call itself is decided by `on_unavailable` meanwhile; the gateway never
//! waits for the database.

use async_trait::async_trait;
use paygate_core::Micros;
use tokio::sync::mpsc;

use crate::{
    Admission, Counters, Limits, PaymentClaim, Reservation, SeedMode, Snapshot, Store, StoreError,
    WebsocketSlot,
};

pub struct ReseedOnMiss<S> {
    inner: S,
    requests: mpsc::Sender<String>,
}

impl<S: Store> ReseedOnMiss<S> {
    /// `requests` receives customer ids whose counters must be seeded.
    pub fn new(inner: S, requests: mpsc::Sender<String>) -> Self {
        Self { inner, requests }
    }

    fn note<T>(&self, customer: &str, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::NotSeeded) = &r {
            // A full channel means a rebuild is already busy; the next call asks again.
            let _ = self.requests.try_send(customer.to_string());
        }
        r
    }
}

#[async_trait]
impl<S: Store> Store for ReseedOnMiss<S> {
    async fn admit(&self, customer: &str, limits: &Limits) -> Result<Admission, StoreError> {
        let r = self.inner.admit(customer, limits).await;
        self.note(customer, r)
    }

    async fn give_back(&self, customer: &str, r: &Reservation) -> Result<(), StoreError> {
        self.inner.give_back(customer, r).await
    }

    async fn peek(&self, customer: &str, limits: &Limits) -> Result<Snapshot, StoreError> {
        let r = self.inner.peek(customer, limits).await;
        self.note(customer, r)
    }

    async fn add_credits(&self, customer: &str, micros: Micros) -> Result<Micros, StoreError> {
        self.inner.add_credits(customer, micros).await
    }

    async fn seed(&self, customer: &str, c: Counters, mode: SeedMode) -> Result<bool, StoreError> {
        self.inner.seed(customer, c, mode).await
    }

    async fn open_websocket(
        &self,
        customer: &str,
        lease: &str,
        max: u32,
        ttl_ms: u64,
    ) -> Result<WebsocketSlot, StoreError> {
        self.inner
            .open_websocket(customer, lease, max, ttl_ms)
            .await
    }

    async fn renew_websocket(
        &self,
        customer: &str,
        lease: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        self.inner.renew_websocket(customer, lease, ttl_ms).await
    }

    async fn close_websocket(&self, customer: &str, lease: &str) -> Result<(), StoreError> {
        self.inner.close_websocket(customer, lease).await
    }

    async fn websockets_open(&self, customer: &str) -> Result<u32, StoreError> {
        self.inner.websockets_open(customer).await
    }

    async fn claim_payment(&self, identity: &str, ttl_ms: u64) -> Result<PaymentClaim, StoreError> {
        self.inner.claim_payment(identity, ttl_ms).await
    }

    async fn release_payment(&self, identity: &str) -> Result<(), StoreError> {
        self.inner.release_payment(identity).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
