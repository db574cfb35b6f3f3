//! Self-healing counters: a store that answers "not seeded" for a customer
//! (a new Redis, or one restarted without persistence) asks, through a
//! channel, for that customer's counters to be rebuilt from the ledger, and
//! the call waits for that rebuild up to a deadline (`store.timeout_ms`),
//! then is tried again. Only when the rebuild takes longer is the call
//! decided by `on_unavailable`. The gateway never touches the database
//! itself: a worker of the application does the rebuilding, and tells the
//! waiting calls each time it finished a round.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use paygate_core::Micros;
use tokio::sync::{mpsc, watch};

use crate::{
    Admission, Counters, Limits, PaymentClaim, Reservation, SeedMode, Snapshot, Store, StoreError,
    WebsocketSlot,
};

pub struct ReseedOnMiss<S> {
    inner: S,
    requests: mpsc::Sender<String>,
    /// Counts the worker's finished rounds of seeds.
    rounds: watch::Receiver<u64>,
    /// How long a call waits for its customer's counters.
    wait: Duration,
}

impl<S: Store> ReseedOnMiss<S> {
    /// `requests` receives customer ids whose counters must be seeded; the
    /// worker bumps `rounds` after each round it finished.
    pub fn new(
        inner: S,
        requests: mpsc::Sender<String>,
        rounds: watch::Receiver<u64>,
        wait: Duration,
    ) -> Self {
        Self {
            inner,
            requests,
            rounds,
            wait,
        }
    }

    /// Runs `op`; when the customer is not seeded, asks for it and runs
    /// `op` again after each finished round, until `wait` is over.
    async fn seeded<T, F, Fut>(&self, customer: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let first = op().await;
        if !matches!(first, Err(StoreError::NotSeeded)) {
            return first;
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut rounds = self.rounds.clone();
        rounds.borrow_and_update();
        // A full channel means the worker is busy with many; the customer
        // is asked for again by its next call.
        let _ = self.requests.try_send(customer.to_string());
        loop {
            match tokio::time::timeout_at(deadline, rounds.changed()).await {
                Ok(Ok(())) => {}
                // Deadline, or no worker: decided as unavailable.
                _ => return Err(StoreError::NotSeeded),
            }
            match tokio::time::timeout_at(deadline, op()).await {
                Ok(Err(StoreError::NotSeeded)) => continue,
                Ok(done) => return done,
                Err(_) => return Err(StoreError::NotSeeded),
            }
        }
    }
}

#[async_trait]
impl<S: Store> Store for ReseedOnMiss<S> {
    async fn admit(&self, customer: &str, limits: &Limits) -> Result<Admission, StoreError> {
        self.seeded(customer, || self.inner.admit(customer, limits))
            .await
    }

    async fn give_back(&self, customer: &str, r: &Reservation) -> Result<(), StoreError> {
        self.inner.give_back(customer, r).await
    }

    async fn peek(&self, customer: &str, limits: &Limits) -> Result<Snapshot, StoreError> {
        self.seeded(customer, || self.inner.peek(customer, limits))
            .await
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

    async fn epoch(&self) -> Result<Option<String>, StoreError> {
        self.inner.epoch().await
    }

    async fn mark_epoch(&self, candidate: &str) -> Result<(), StoreError> {
        self.inner.mark_epoch(candidate).await
    }
}
