//! The configuration tree. Defaults are those of SPEC §2.

use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub database: DatabaseConfig,
    pub usage: UsageConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// x402 pay-per-call; routes with `x402_price_micros` take payments.
    pub x402: Option<X402Config>,
    /// `[log]`: process log and the access log.
    pub log: LogConfig,
    /// `[tracing]`: OpenTelemetry spans over OTLP.
    pub tracing: Option<TracingConfig>,
}

/// `[tracing]`: spans of sampled calls, exported over OTLP/HTTP.
#[derive(Debug, Clone, Deserialize)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`
    /// (spans go to `/v1/traces` under it).
    pub otlp_endpoint: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of calls traced (0 to 1), unless the caller's
    /// `traceparent` already decided.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

fn default_service_name() -> String {
    "paygate".into()
}

fn default_sample_ratio() -> f64 {
    0.01
}

/// `[log]`: where log lines go (standard output) and what they look like.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// One line per call through the gateway.
    pub access: bool,
    /// A tracing filter: a level (`info`) or directives (`info,pingora=warn`).
    /// `PAYGATE_LOG` in the environment wins over it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            access: true,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// Address of the plain-HTTP listener. Absent: 127.0.0.1:8080, unless
    /// `[gateway.tls]` is configured, which then is the only listener.
    pub listen: Option<SocketAddr>,
    /// Pingora worker threads.
    pub threads: usize,
    /// CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Request bodies above this size are refused with 413.
    pub max_body_bytes: u64,
    /// Request targets (path and query) above this size are refused with 414.
    pub max_uri_bytes: usize,
    /// Request headers above this total size are refused with 431.
    pub max_header_bytes: usize,
    /// Seconds in-flight calls get to finish after SIGTERM.
    pub shutdown_grace_seconds: u64,
    /// HTTPS for callers.
    pub tls: Option<GatewayTlsConfig>,
}

impl GatewayConfig {
    /// The plain-HTTP listener, if there is one.
    pub fn plain_listen(&self) -> Option<SocketAddr> {
        match (self.listen, &self.tls) {
            (Some(addr), _) => Some(addr),
            (None, None) => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            (None, Some(_)) => None,
        }
    }
}

/// `[gateway.tls]`: the HTTPS listener and its certificates.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayTlsConfig {
    pub listen: SocketAddr,
    /// Certificate chain (leaf first), PEM; served when no SNI entry matches.
    pub cert_path: String,
    /// Private key of the leaf, PEM.
    pub key_path: String,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Offer HTTP/2 through ALPN (HTTP/1.1 is always offered).
    #[serde(default = "yes")]
    pub http2: bool,
    /// More certificates, chosen by the client's SNI.
    #[serde(default)]
    pub certs: Vec<SniCertConfig>,
}

/// One `[[gateway.tls.certs]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct SniCertConfig {
    /// `api.example.com`, or `*.example.com` for any one first label.
    pub server_name: String,
    pub cert_path: String,
    pub key_path: String,
}

/// `[admin.tls]`: the admin listener over HTTPS.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminTlsConfig {
    pub cert_path: String,
    pub key_path: String,
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

fn yes() -> bool {
    true
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tls: None,
            threads: 2,
            trusted_proxies: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            shutdown_grace_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Admin API, /metrics, /healthz, /readyz. Never the gateway listener.
    pub listen: SocketAddr,
    /// Inline bearer token; prefer `token_env`.
    pub token: Option<String>,
    /// Environment variable that holds the bearer token for /admin/v1/*.
    pub token_env: String,
    /// Serve the admin listener over HTTPS.
    pub tls: Option<AdminTlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
            token_env: "PAYGATE_ADMIN_TOKEN".into(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Inline HMAC secret for API keys; prefer `key_secret_env`.
    pub key_secret: Option<String>,
    /// Environment variable with the HMAC secret; unset -> generated on first
    /// start and kept in the database.
    pub key_secret_env: String,
    /// JWT issuers whose tokens are accepted (`[[auth.jwt]]`).
    pub jwt: Vec<JwtIssuerConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            key_secret: None,
            key_secret_env: "PAYGATE_KEY_SECRET".into(),
            jwt: Vec::new(),
        }
    }
}

/// A JWT signing algorithm an issuer may use. `none` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// HMAC with a shared secret (as opposed to a public key).
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

/// One `[[auth.jwt]]` issuer.
#[derive(Debug, Clone, Deserialize)]
pub struct JwtIssuerConfig {
    /// The token's `iss` must equal this; it also picks the issuer.
    pub issuer: String,
    /// The token's `aud` must hold one of these (left empty: not checked).
    /// A single string is taken as a list of one.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Allowlist; the token's `alg` header is never trusted beyond it.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Where the issuer publishes its keys (JWKS, RFC 7517).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// One public key (RSA, EC or Ed25519), PEM.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Environment variable holding the HMAC secret (HS* algorithms).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// How long a fetched key set is used before it is fetched again.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (at most 60).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// The claim whose value is the customer id.
    #[serde(default = "default_customer_claim")]
    pub customer_claim: String,
    /// A valid token for a customer that does not exist creates it on this
    /// plan (empty: refused).
    #[serde(default)]
    pub default_plan: String,
    /// A claim naming the customer's plan; taken only when listed in
    /// `allowed_plans` (empty: plans are not taken from tokens).
    #[serde(default)]
    pub plan_claim: String,
    #[serde(default)]
    pub allowed_plans: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_leeway() -> u64 {
    30
}

fn default_customer_claim() -> String {
    "sub".into()
}

impl JwtIssuerConfig {
    /// The HMAC secret from `secret_env`, when set and non-empty.
    pub fn secret(&self) -> Option<String> {
        secret(&None, self.secret_env.as_deref()?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// 503 `limiter_unavailable`.
    #[default]
    Deny,
    /// Forward; usage kept and sent when the store returns.
    Allow,
    /// Per-node fallback limiter.
    Local,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// `redis://host:port/db` or `redis+cluster://host:port,host:port`.
    pub redis_url: String,
    pub key_prefix: String,
    /// Deadline for one store operation on the request path.
    pub timeout_ms: u64,
    pub on_unavailable: OnUnavailable,
    /// CA certificates (PEM) that sign a `rediss://` server's certificate,
    /// instead of the system roots. Empty: the system roots.
    pub tls_ca_path: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: "paygate".into(),
            timeout_ms: 25,
            on_unavailable: OnUnavailable::Deny,
            tls_ca_path: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (embedded) or `postgres://user@host/db`.
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://paygate.db".into(),
        }
    }
}

/// How usage events travel from the gateway to the ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UsageConfig {
    /// Events written to the ledger in one transaction at most.
    pub batch_size: usize,
    /// A partial batch is written after this many milliseconds.
    pub flush_interval_ms: u64,
    /// Events buffered in memory between gateway and ledger writer.
    pub buffer: usize,
    /// Redis mode: usage-stream entries a consumer has held unacknowledged
    /// this long are taken over by another consumer (the first one died).
    pub claim_idle_ms: u64,
    /// How often `serve` compares the store's counters with the ledger for
    /// the `paygate_usage_drift` gauge.
    pub drift_interval_ms: u64,
    /// Append-only file for events that cannot be delivered (Redis or the
    /// database down); delivered when the target is back, also after a
    /// restart. One file per process. Unset: the gateway waits once `buffer`
    /// events are queued.
    pub spill_path: Option<std::path::PathBuf>,
    /// Where events that the ledger or the usage stream refuses for good
    /// are kept (JSON lines with the reason), so that they neither block the
    /// pipeline nor get lost; `paygate billing replay-dead-letters` sends
    /// them again once the cause is fixed. A relative path is taken from the
    /// working directory.
    pub dead_letter_path: std::path::PathBuf,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            batch_size: 512,
            flush_interval_ms: 20,
            buffer: 65_536,
            claim_idle_ms: 30_000,
            drift_interval_ms: 60_000,
            spill_path: None,
            dead_letter_path: std::path::PathBuf::from("paygate-dead-letter.jsonl"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HealthCheckConfig {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
}

fn default_health_path() -> String {
    "/health".into()
}

fn default_health_interval() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamConfig {
    pub name: String,
    /// `host:port`, round robin over the healthy ones.
    pub targets: Vec<String>,
    /// Used only when every target is unhealthy.
    #[serde(default)]
    pub backup: Vec<String>,
    /// Absent: every target is considered healthy.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    /// HTTPS to the targets (and to their health checks).
    #[serde(default)]
    pub tls: bool,
    /// Server name sent and verified. Empty: the host of each target.
    #[serde(default)]
    pub sni: String,
    /// Verify the targets' certificates and host names.
    #[serde(default = "yes")]
    pub verify: bool,
    /// CA certificates (PEM) to verify against. Empty: the system roots.
    #[serde(default)]
    pub ca_path: String,
    /// Client certificate (PEM chain) for mutual TLS to the targets.
    #[serde(default)]
    pub client_cert_path: String,
    #[serde(default)]
    pub client_key_path: String,
}

fn default_connect_timeout() -> u64 {
    1000
}

fn default_read_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    pub id: String,
    /// Longest matching prefix wins.
    pub path_prefix: String,
    pub upstream: String,
    /// Quota units and credit multiplier per call.
    #[serde(default = "default_cost")]
    pub cost: u32,
    /// Absent: every method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// WebSocket: units charged for each started minute a connection stays
    /// open, after the first.
    #[serde(default)]
    pub ws_minute_cost: u32,
    /// WebSocket: units per data message the upstream sends to the client.
    #[serde(default)]
    pub ws_message_cost: u32,
    /// x402: the price of one call paid in the request itself; enables
    /// x402 on this route (needs `[x402]`).
    #[serde(default)]
    pub x402_price_micros: Option<i64>,
    /// x402: the rate limit anonymous payers share, per payer address
    /// (default `[x402] x402_rate_limit`: 50/s, burst 100).
    #[serde(default)]
    pub x402_rate_limit: Option<paygate_core::RateLimit>,
    /// Cross-origin calls from browsers: preflights answered here.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// GET answers kept for `ttl_ms` and served again (still metered).
    #[serde(default)]
    pub cache: Option<CacheConfig>,
}

/// A route's `cors = {...}`.
#[derive(Debug, Clone, Deserialize)]
pub struct CorsConfig {
    /// Origins allowed, exactly as browsers send them
    /// (`https://app.example.com`); `"*"` allows any.
    pub allow_origins: Vec<String>,
    /// Request headers a preflight may ask for.
    #[serde(default = "default_cors_headers")]
    pub allow_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    #[serde(default = "default_cors_max_age")]
    pub max_age_seconds: u64,
}

fn default_cors_headers() -> Vec<String> {
    vec![
        "authorization".into(),
        "x-api-key".into(),
        "content-type".into(),
    ]
}

fn default_cors_max_age() -> u64 {
    600
}

/// A route's `cache = {...}`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct CacheConfig {
    pub ttl_ms: u64,
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
}

fn default_cache_entries() -> usize {
    10_000
}

/// `[x402]`: where payments go, in what, and who checks them.
#[derive(Debug, Clone, Deserialize)]
pub struct X402Config {
    /// The facilitator's base URL (`POST /verify`, `POST /settle`).
    pub facilitator_url: String,
    /// The receiving address.
    pub pay_to: String,
    /// Network name of protocol version 1, e.g. `base-sepolia`.
    #[serde(default = "default_x402_network")]
    pub network: String,
    /// The same network's CAIP-2 id, for version 2, e.g. `eip155:84532`.
    #[serde(default = "default_x402_network_id")]
    pub network_id: String,
    /// The token contract.
    #[serde(default = "default_x402_asset")]
    pub asset: String,
    #[serde(default = "default_x402_decimals")]
    pub asset_decimals: u32,
    /// The token's EIP-712 domain, sent in the offer's `extra`.
    #[serde(default = "default_x402_asset_name")]
    pub asset_name: String,
    #[serde(default = "default_x402_asset_version")]
    pub asset_version: String,
    /// How long a payment may take, settlement retries included.
    #[serde(default = "default_x402_max_timeout")]
    pub max_timeout_seconds: u64,
    /// One facilitator request's deadline.
    #[serde(default = "default_x402_facilitator_timeout")]
    pub facilitator_timeout_ms: u64,
    /// The rate limit of anonymous payers on routes that set none.
    #[serde(default = "default_x402_rate_limit")]
    pub x402_rate_limit: paygate_core::RateLimit,
    /// Demo only: the facilitator is paygate's own simulation (no money
    /// moves). Set by `serve --demo`, never read from a file.
    #[serde(skip)]
    pub simulated: bool,
}

fn default_x402_network() -> String {
    "base-sepolia".into()
}

fn default_x402_network_id() -> String {
    "eip155:84532".into()
}

fn default_x402_asset() -> String {
    // USDC on Base Sepolia.
    "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into()
}

fn default_x402_decimals() -> u32 {
    6
}

fn default_x402_asset_name() -> String {
    "USDC".into()
}

fn default_x402_asset_version() -> String {
    "2".into()
}

fn default_x402_max_timeout() -> u64 {
    60
}

fn default_x402_facilitator_timeout() -> u64 {
    5000
}

fn default_x402_rate_limit() -> paygate_core::RateLimit {
    paygate_core::RateLimit {
        requests: 50,
        per: paygate_core::Per::Second,
        burst: 100,
    }
}

impl RouteConfig {
    /// The anonymous payers' rate limit on this route.
    pub fn x402_rate_limit(&self, x402: &X402Config) -> paygate_core::RateLimit {
        self.x402_rate_limit.unwrap_or(x402.x402_rate_limit)
    }
}

fn default_cost() -> u32 {
    1
}

impl Config {
    /// The admin token: inline, or from the environment variable `token_env` names.
    pub fn admin_token(&self) -> Option<String> {
        secret(&self.admin.token, &self.admin.token_env)
    }

    /// The API-key HMAC secret if configured (inline or from its variable).
    pub fn key_secret(&self) -> Option<String> {
        secret(&self.auth.key_secret, &self.auth.key_secret_env)
    }
}

fn secret(inline: &Option<String>, env: &str) -> Option<String> {
    inline
        .clone()
        .or_else(|| std::env::var(env).ok())
        .filter(|s| !s.is_empty())
}
