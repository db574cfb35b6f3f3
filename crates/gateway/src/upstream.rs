//! Upstream pools: round robin over healthy targets, `backup` targets only
//! when every primary is down, HTTP health checks run as Pingora background
//! tasks on the control runtime (stopped when their pools are dropped, so a
//! reload's old pools stop checking); plain HTTP or HTTPS (`tls = true`) to
//! the targets.

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use paygate_config::UpstreamConfig;
use paygate_tls::{CertPair, PairSource, TlsError};
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::services::background::BackgroundService;
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;

type Balancer = LoadBalancer<RoundRobin>;

pub struct Pool {
    pub name: String,
    primary: Arc<Balancer>,
    backup: Option<Arc<Balancer>>,
    connect_timeout: Duration,
    read_timeout: Duration,
    size: usize,
    tls: Option<PeerTls>,
    /// Pingora pools connections by peer; this keeps each upstream's apart,
    /// so a connection verified under one upstream's trust settings is
    /// never reused for another's calls to the same address.
    group: u64,
}

/// How a pool speaks TLS to its targets. The CA list and client
/// certificate are loaded once and shared by every peer, so pooled
/// connections are reused (Pingora keys its pool on them).
#[derive(Clone)]
struct PeerTls {
    /// `sni` of the config; empty: the host of each target.
    sni: String,
    /// Resolved address of each target -> the host it was named by.
    hosts: HashMap<std::net::SocketAddr, String>,
    verify: bool,
    ca: Option<Arc<Box<[X509]>>>,
    client: Option<Arc<CertKey>>,
}

/// The host name of a `host:port` target; `None` for an IP address (which
/// sends no SNI).
fn host_name(target: &str) -> Option<&str> {
    let host = target
        .rsplit_once(':')
        .map_or(target, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.parse::<std::net::IpAddr>().is_err().then_some(host)
}

impl PeerTls {
    fn load(index: usize, cfg: &UpstreamConfig) -> Result<Option<Self>, UpstreamError> {
        if !cfg.tls {
            return Ok(None);
        }
        let key = |f: &str| format!("upstreams[{index}].{f}");
        let ca = if cfg.ca_path.is_empty() {
            None
        } else {
            let certs = paygate_tls::load_ca(&key("ca_path"), Path::new(&cfg.ca_path))?;
            Some(Arc::new(certs.into_boxed_slice()))
        };
        let client = if cfg.client_cert_path.is_empty() {
            None
        } else {
            let pair = CertPair::load(&PairSource {
                label: format!("upstream {}", cfg.name),
                cert_path: cfg.client_cert_path.clone().into(),
                key_path: cfg.client_key_path.clone().into(),
                cert_key: key("client_cert_path"),
                key_key: key("client_key_path"),
            })?;
            Some(Arc::new(CertKey::new(pair.chain, pair.key)))
        };
        let mut hosts = HashMap::new();
        for target in cfg.targets.iter().chain(&cfg.backup) {
            let Some(name) = host_name(target) else {
                continue;
            };
            // Unresolvable targets fail in the balancer below with their name.
            for addr in target.to_socket_addrs().into_iter().flatten() {
                hosts.insert(addr, name.to_string());
            }
        }
        Ok(Some(Self {
            sni: cfg.sni.clone(),
            hosts,
            verify: cfg.verify,
            ca,
            client,
        }))
    }

    /// The server name for a target: `sni`, else the host the target was
    /// configured by. An IP address gives none: Pingora then sends no SNI
    /// and verifies nothing, which is why the config refuses an IP target
    /// with `verify = true` and no `sni`.
    fn sni_for(&self, addr: Option<&std::net::SocketAddr>) -> String {
        if !self.sni.is_empty() {
            return self.sni.clone();
        }
        addr.and_then(|a| self.hosts.get(a))
            .cloned()
            .unwrap_or_default()
    }

    /// [`Self::sni_for`] by the target as configured (no resolution).
    fn sni_for_target(&self, target: &str) -> String {
        if !self.sni.is_empty() {
            return self.sni.clone();
        }
        host_name(target).unwrap_or_default().to_string()
    }

    fn apply(&self, peer: &mut HttpPeer) {
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client.clone();
    }
}

/// Balancers whose health checks must run (`Upstreams::start_health_checks`).
type HealthServices = Vec<Arc<Balancer>>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {name}: {source}")]
    Targets {
        name: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("upstreams[{index}].tls: target {target} answers plain HTTP, not TLS (set tls = false, or use its HTTPS port)")]
    PlainHttp { index: usize, target: String },
}

/// Reads the CA files and client certificates of every `tls = true`
/// upstream, as the start does (for `check-config`).
pub fn check_tls_files(cfgs: &[UpstreamConfig]) -> Result<(), UpstreamError> {
    for (i, cfg) in cfgs.iter().enumerate() {
        PeerTls::load(i, cfg)?;
    }
    Ok(())
}

/// Sends a TLS ClientHello to every target of every `tls = true` upstream:
/// one that answers in plain HTTP stops the start, naming the key. A target
/// that does not answer is only logged: it may come up later, and health
/// checks will tell.
pub fn check_tls_targets(cfgs: &[UpstreamConfig]) -> Result<(), UpstreamError> {
    for (index, cfg) in cfgs.iter().enumerate().filter(|(_, c)| c.tls) {
        let timeout = Duration::from_millis(cfg.connect_timeout_ms.clamp(100, 2000));
        for target in cfg.targets.iter().chain(&cfg.backup) {
            for addr in target.to_socket_addrs().into_iter().flatten() {
                match paygate_tls::probe::probe(addr, timeout) {
                    paygate_tls::probe::Probe::Tls => {}
                    paygate_tls::probe::Probe::PlainHttp => {
                        return Err(UpstreamError::PlainHttp {
                            index,
                            target: target.clone(),
                        })
                    }
                    paygate_tls::probe::Probe::Unknown(why) => tracing::warn!(
                        upstream = %cfg.name, %target, %why,
                        "TLS target not checked at start"
                    ),
                }
            }
        }
    }
    Ok(())
}

fn balancer(
    name: &str,
    targets: &[String],
    cfg: &UpstreamConfig,
    tls: Option<&PeerTls>,
    services: &mut HealthServices,
) -> Result<Arc<Balancer>, UpstreamError> {
    let mut lb = Balancer::try_from_iter(targets.iter().map(String::as_str)).map_err(|source| {
        UpstreamError::Targets {
            name: name.to_string(),
            source,
        }
    })?;
    let Some(hc_cfg) = &cfg.health_check else {
        return Ok(Arc::new(lb));
    };
    // Over TLS the check sends the name the calls send, so the target's
    // certificate is verified the same way.
    let host = tls
        .zip(targets.first())
        .map(|(t, target)| t.sni_for_target(target))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let mut hc = HttpHealthCheck::new(&host, tls.is_some());
    if let Ok(req) = pingora::http::RequestHeader::build("GET", hc_cfg.path.as_bytes(), None)
        .and_then(|mut r| {
            r.insert_header("Host", host.as_str())?;
            Ok(r)
        })
    {
        hc.req = req;
    }
    if let Some(t) = tls {
        t.apply(&mut hc.peer_template);
    }
    hc.peer_template.options.connection_timeout =
        Some(Duration::from_millis(cfg.connect_timeout_ms));
    lb.set_health_check(Box::new(hc));
    lb.health_check_frequency = Some(Duration::from_millis(hc_cfg.interval_ms));
    lb.parallel_health_check = true;
    let lb = Arc::new(lb);
    services.push(Arc::clone(&lb));
    Ok(lb)
}

impl Pool {
    pub fn new(
        index: usize,
        cfg: &UpstreamConfig,
        services: &mut HealthServices,
    ) -> Result<Self, UpstreamError> {
        let tls = PeerTls::load(index, cfg)?;
        let primary = balancer(&cfg.name, &cfg.targets, cfg, tls.as_ref(), services)?;
        let backup = if cfg.backup.is_empty() {
            None
        } else {
            Some(balancer(
                &format!("{} backup", cfg.name),
                &cfg.backup,
                cfg,
                tls.as_ref(),
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
            tls,
            group: index as u64,
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
        let mut peer = match &self.tls {
            None => HttpPeer::new(backend.clone(), false, String::new()),
            Some(t) => {
                let sni = t.sni_for(backend.addr.as_inet());
                let mut peer = HttpPeer::new(backend.clone(), true, sni);
                t.apply(&mut peer);
                peer
            }
        };
        peer.group_key = self.group;
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Some((backend, peer))
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Every configured pool, and the health checks of their targets, which
/// run from `start_health_checks` until this is dropped.
pub struct Upstreams {
    pools: Vec<Arc<Pool>>,
    checked: HealthServices,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Upstreams {
    /// `generation` keeps the connection pools of one configuration apart
    /// from those of the one before (a reload may change an upstream's
    /// trust settings under the same name).
    pub fn new(cfgs: &[UpstreamConfig], generation: u64) -> Result<Self, UpstreamError> {
        let mut checked = Vec::new();
        let pools = cfgs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut pool = Pool::new(i, c, &mut checked)?;
                pool.group = (generation << 32) | i as u64;
                Ok(Arc::new(pool))
            })
            .collect::<Result<Vec<_>, UpstreamError>>()?;
        Ok(Self {
            pools,
            checked,
            stop: tokio::sync::watch::channel(false).0,
        })
    }

    /// Runs each pool's health checks on `runtime` (Pingora's own loop of
    /// a `LoadBalancer` background service) until `self` is dropped.
    pub fn start_health_checks(&self, runtime: &tokio::runtime::Handle) {
        for lb in &self.checked {
            let lb = Arc::clone(lb);
            let stop = self.stop.subscribe();
            runtime.spawn(async move { lb.start(stop).await });
        }
    }

    /// One round of health checks now, so a reload does not send calls to
    /// targets its first round would have found down (new pools start with
    /// every target healthy).
    pub async fn check_health_now(&self) {
        for lb in &self.checked {
            lb.backends().run_health_check(true).await;
        }
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name).cloned()
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
