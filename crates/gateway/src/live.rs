//! What a reload (SIGHUP) may change while the gateway serves: routes,
//! upstreams, x402 settings and JWT issuers. Each call takes the
//! configuration current when it arrives and keeps it to the end, so a
//! reload changes no call under way; the swap itself is one atomic store.

use std::sync::Arc;

use arc_swap::ArcSwap;
use paygate_config::Config;
use paygate_jwt::Issuers;

use crate::payment::Payments;
use crate::routing::RouteTable;
use crate::upstream::{UpstreamError, Upstreams};

/// Routes and what they lead to, as one configuration built them.
pub struct Live {
    pub routes: RouteTable,
    /// `[x402]`: routes with a price take payments.
    pub payments: Option<Arc<Payments>>,
    /// Keeps the pools' health checks running while this configuration is
    /// the current one or a call still uses it.
    upstreams: Upstreams,
}

impl Live {
    /// Builds the routes and pools of `config` and starts the pools' health
    /// checks on `runtime`. `generation` keeps pooled upstream connections
    /// of different configurations apart.
    pub fn build(
        config: &Config,
        generation: u64,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, UpstreamError> {
        let upstreams = Upstreams::new(&config.upstreams, generation)?;
        let routes = RouteTable::new(&config.routes, config.x402.as_ref(), |name| {
            upstreams.by_name(name)
        });
        upstreams.start_health_checks(runtime);
        Ok(Self {
            routes,
            payments: config.x402.as_ref().map(|x| Arc::new(Payments::new(x))),
            upstreams,
        })
    }
}

impl Live {
    /// One round of its pools' health checks, before it takes calls.
    pub async fn check_health_now(&self) {
        self.upstreams.check_health_now().await;
    }
}

/// The gateway's reloadable parts, shared with whoever reloads them.
#[derive(Clone)]
pub struct Reloadable {
    pub live: Arc<ArcSwap<Live>>,
    pub issuers: Arc<ArcSwap<Issuers>>,
}

impl Reloadable {
    pub fn new(live: Live, issuers: Arc<Issuers>) -> Self {
        Self {
            live: Arc::new(ArcSwap::from_pointee(live)),
            issuers: Arc::new(ArcSwap::new(issuers)),
        }
    }

    /// Puts a new configuration in place; calls already admitted finish
    /// with the one they started with.
    pub fn swap(&self, live: Live, issuers: Arc<Issuers>) {
        self.issuers.store(issuers);
        self.live.store(Arc::new(live));
    }

    pub fn issuers(&self) -> Arc<Issuers> {
        self.issuers.load_full()
    }
}
