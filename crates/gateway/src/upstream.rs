//! Upstream pools: round robin over healthy targets, `backup` targets only
//! when every primary is down, HTTP health checks run as Pingora background
//! services.

use std::sync::Arc;
use std::time::Duration;

use paygate_config::UpstreamConfig;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::services::background::{background_service, GenBackgroundService};
use pingora::upstreams::peer::HttpPeer;

type Balancer = LoadBalancer<RoundRobin>;

pub struct Pool {
    pub name: String,
    primary: Arc<Balancer>,
    backup: Option<Arc<Balancer>>,
    connect_timeout: Duration,
    read_timeout: Duration,
    size: usize,
}

/// Background services that must be added to the Pingora server.
pub type HealthServices = Vec<GenBackgroundService<Balancer>>;

#[derive(Debug, thiserror::Error)]
#[error("upstream {name}: {source}")]
pub struct UpstreamError {
    name: String,
    source: std::io::Error,
}

fn balancer(
    name: &str,
    targets: &[String],
    cfg: &UpstreamConfig,
    services: &mut HealthServices,
) -> Result<Arc<Balancer>, UpstreamError> {
    let mut lb = Balancer::try_from_iter(targets.iter().map(String::as_str)).map_err(|source| {
        UpstreamError {
            name: name.to_string(),
            source,
        }
    })?;
    let Some(hc_cfg) = &cfg.health_check else {
        return Ok(Arc::new(lb));
    };
    let mut hc = HttpHealthCheck::new("localhost", false);
    if let Ok(req) = pingora::http::RequestHeader::build("GET", hc_cfg.path.as_bytes(), None)
        .and_then(|mut r| {
            r.insert_header("Host", "localhost")?;
            Ok(r)
        })
    {
        hc.req = req;
    }
    hc.peer_template.options.connection_timeout =
        Some(Duration::from_millis(cfg.connect_timeout_ms));
    lb.set_health_check(Box::new(hc));
    lb.health_check_frequency = Some(Duration::from_millis(hc_cfg.interval_ms));
    lb.parallel_health_check = true;
    let service = background_service(&format!("health check {name}"), lb);
    let lb = service.task();
    services.push(service);
    Ok(lb)
}

impl Pool {
    pub fn new(cfg: &UpstreamConfig, services: &mut HealthServices) -> Result<Self, UpstreamError> {
        let primary = balancer(&cfg.name, &cfg.targets, cfg, services)?;
        let backup = if cfg.backup.is_empty() {
            None
        } else {
            Some(balancer(
                &format!("{} backup", cfg.name),
                &cfg.backup,
                cfg,
                services,
            )?)
        };
        Ok(Self {
            name: cfg.name.clone(),
            primary,
            backup,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            read_timeout: Duration::from_millis(cfg.read_timeout_ms),
            size: cfg.targets.len() + cfg.backup.len(),
        })
    }

    /// Targets a call may try in all, for connect retries.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Next healthy target not in `tried`; backups only when no primary is healthy.
    pub fn select(&self, tried: &[Backend]) -> Option<(Backend, HttpPeer)> {
        let accept = |b: &Backend, healthy: bool| healthy && !tried.contains(b);
        let backend = self
            .primary
            .select_with(b"", self.size.max(1) * 2, accept)
            .or_else(|| {
                self.backup
                    .as_ref()
                    .and_then(|lb| lb.select_with(b"", self.size.max(1) * 2, accept))
            })?;
        let mut peer = HttpPeer::new(backend.clone(), false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Some((backend, peer))
    }
}

/// Every configured pool, indexed as the route table refers to them.
pub struct Upstreams {
    pools: Vec<Pool>,
}

impl Upstreams {
    pub fn new(cfgs: &[UpstreamConfig]) -> Result<(Self, HealthServices), UpstreamError> {
        let mut services = Vec::new();
        let pools = cfgs
            .iter()
            .map(|c| Pool::new(c, &mut services))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((Self { pools }, services))
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    pub fn get(&self, i: usize) -> Option<&Pool> {
        self.pools.get(i)
    }
}
