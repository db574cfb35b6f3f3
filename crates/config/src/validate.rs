//! Checks across keys that serde cannot express.

use std::collections::HashSet;

use crate::{Config, ConfigError, StoreBackend};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

pub(crate) fn validate(c: &Config) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let mut err = |k: String, m: &str| errs.push(ConfigError::new(k, m));

    if c.gateway.threads == 0 {
        err("gateway.threads".into(), "must be at least 1");
    }
    if c.gateway.max_body_bytes == 0 {
        err("gateway.max_body_bytes".into(), "must be at least 1");
    }
    let plain = c.gateway.plain_listen();
    if plain == Some(c.admin.listen) && c.admin.listen.port() != 0 {
        err(
            "admin.listen".into(),
            "must differ from gateway.listen: the admin API never shares the gateway listener",
        );
    }
    validate_tls(c, plain, &mut err);
    if !is_log_filter(&c.log.level) {
        err(
            "log.level".into(),
            "must be a level (trace, debug, info, warn, error, off) or directives like info,pingora=warn",
        );
    }
    if let Some(t) = &c.tracing {
        if !t.otlp_endpoint.starts_with("http://") {
            err(
                "tracing.otlp_endpoint".into(),
                "must be an http:// URL (OTLP over HTTP, e.g. http://127.0.0.1:4318); \
                 this build exports without TLS: use a collector agent beside paygate",
            );
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            err("tracing.sample_ratio".into(), "must be between 0 and 1");
        }
        if t.service_name.is_empty() {
            err("tracing.service_name".into(), "must not be empty");
        }
    }
    if c.store.timeout_ms == 0 {
        err("store.timeout_ms".into(), "must be at least 1");
    }
    if c.store.key_prefix.is_empty() {
        err("store.key_prefix".into(), "must not be empty");
    }
    if c.store.backend == StoreBackend::Redis
        && ![
            "redis://",
            "rediss://",
            "redis+cluster://",
            "rediss+cluster://",
        ]
        .iter()
        .any(|s| c.store.redis_url.starts_with(s))
    {
        err(
            "store.redis_url".into(),
            "must start with redis://, rediss://, redis+cluster:// or rediss+cluster://",
        );
    }
    if !(c.database.url.starts_with("sqlite:")
        || c.database.url.starts_with("postgres://")
        || c.database.url.starts_with("postgresql://"))
    {
        err(
            "database.url".into(),
            "must be sqlite://PATH or postgres://USER@HOST/DB",
        );
    }
    if c.usage.batch_size == 0 {
        err("usage.batch_size".into(), "must be at least 1");
    }
    if c.usage.buffer < c.usage.batch_size {
        err("usage.buffer".into(), "must be at least usage.batch_size");
    }

    validate_jwt(c, &mut err);
    validate_x402(c, &mut err);

    let mut upstreams = HashSet::new();
    for (i, u) in c.upstreams.iter().enumerate() {
        let k = |f: &str| format!("upstreams[{i}].{f}");
        if u.name.is_empty() {
            err(k("name"), "must not be empty");
        } else if !upstreams.insert(u.name.as_str()) {
            err(k("name"), "duplicate upstream name");
        }
        if u.targets.is_empty() {
            err(k("targets"), "must list at least one host:port");
        }
        for (field, list) in [("targets", &u.targets), ("backup", &u.backup)] {
            for (j, t) in list.iter().enumerate() {
                if !is_host_port(t) {
                    err(format!("upstreams[{i}].{field}[{j}]"), "must be host:port");
                }
            }
        }
        if let Some(h) = &u.health_check {
            if !h.path.starts_with('/') {
                err(k("health_check.path"), "must start with /");
            }
            if h.interval_ms == 0 {
                err(k("health_check.interval_ms"), "must be at least 1");
            }
        }
        if u.connect_timeout_ms == 0 {
            err(k("connect_timeout_ms"), "must be at least 1");
        }
        if u.read_timeout_ms == 0 {
            err(k("read_timeout_ms"), "must be at least 1");
        }
    }

    let mut routes = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let k = |f: &str| format!("routes[{i}].{f}");
        if paygate_core::RouteId::new(r.id.as_str()).is_err() {
            err(k("id"), "must be 1-64 letters, digits, '_', '-' or '.'");
        } else if !routes.insert(r.id.as_str()) {
            err(k("id"), "duplicate route id");
        }
        if !r.path_prefix.starts_with('/') {
            err(k("path_prefix"), "must start with /");
        }
        if !upstreams.contains(r.upstream.as_str()) {
            err(k("upstream"), "names no [[upstreams]] entry");
        }
        if r.cost == 0 {
            err(k("cost"), "must be at least 1");
        }
        if let Some(cors) = &r.cors {
            validate_cors(cors, &k, &mut err);
        }
        if let Some(cache) = &r.cache {
            if cache.ttl_ms == 0 {
                err(k("cache.ttl_ms"), "must be at least 1");
            }
            if cache.max_entries == 0 {
                err(k("cache.max_entries"), "must be at least 1");
            }
        }
        if let Some(methods) = &r.methods {
            if methods.is_empty() {
                err(
                    k("methods"),
                    "must list at least one method, or be left out",
                );
            }
            for m in methods {
                if !METHODS.contains(&m.as_str()) {
                    err(
                        k("methods"),
                        "unknown HTTP method (use upper case, e.g. GET)",
                    );
                }
            }
        }
    }
    errs
}

/// A level, or comma-separated `target=level` directives (the subset of
/// tracing's filter syntax the docs promise).
fn is_log_filter(s: &str) -> bool {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !s.trim().is_empty()
        && s.split(',').all(|d| match d.split_once('=') {
            Some((target, l)) => {
                !target.trim().is_empty()
                    && target
                        .trim()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
                    && level(l)
            }
            None => level(d),
        })
}

fn validate_cors(
    cors: &crate::CorsConfig,
    k: &impl Fn(&str) -> String,
    err: &mut impl FnMut(String, &str),
) {
    if cors.allow_origins.is_empty() {
        err(k("cors.allow_origins"), "must list at least one origin");
    }
    for o in &cors.allow_origins {
        if o != "*" && !is_origin(o) {
            err(
                k("cors.allow_origins"),
                "each origin is \"*\" or scheme://host[:port], with no path or trailing slash",
            );
        }
    }
    for h in &cors.allow_headers {
        if http_header_name(h).is_none() {
            err(k("cors.allow_headers"), "each entry must be a header name");
        }
    }
}

/// `scheme://host[:port]`, as a browser's `Origin` header carries it.
fn is_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
}

fn http_header_name(h: &str) -> Option<&str> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!h.is_empty() && h.bytes().all(token)).then_some(h)
}

fn validate_jwt(c: &Config, err: &mut impl FnMut(String, &str)) {
    let mut issuers = HashSet::new();
    for (i, j) in c.auth.jwt.iter().enumerate() {
        let k = |f: &str| format!("auth.jwt[{i}].{f}");
        if j.issuer.is_empty() {
            err(k("issuer"), "must not be empty");
        } else if !issuers.insert(j.issuer.as_str()) {
            err(k("issuer"), "duplicate issuer: the token's `iss` picks one");
        }
        if j.algorithms.is_empty() {
            err(k("algorithms"), "must list at least one algorithm");
        }
        let sources = [
            j.jwks_url.is_some(),
            j.public_key_pem.is_some(),
            j.secret_env.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => err(
                k("jwks_url"),
                "one of jwks_url, public_key_pem or secret_env is required",
            ),
            1 => {}
            _ => err(
                k("jwks_url"),
                "give only one of jwks_url, public_key_pem or secret_env",
            ),
        }
        if let Some(url) = &j.jwks_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                err(k("jwks_url"), "must be an http:// or https:// URL");
            }
        }
        let hmac = j.algorithms.iter().filter(|a| a.is_hmac()).count();
        if j.secret_env.is_some() && hmac != j.algorithms.len() {
            err(
                k("algorithms"),
                "a secret_env issuer signs with HMAC: only HS256, HS384 or HS512",
            );
        }
        if j.public_key_pem.is_some() && hmac > 0 {
            err(
                k("algorithms"),
                "a public key never verifies HS* tokens (that would use the public key as the HMAC secret)",
            );
        }
        if let Some(var) = &j.secret_env {
            if j.secret().is_none() {
                err(
                    k("secret_env"),
                    &format!("environment variable {var} is not set"),
                );
            }
        }
        if j.leeway_seconds > 60 {
            err(k("leeway_seconds"), "must be at most 60");
        }
        if j.jwks_refresh_seconds < 10 {
            err(k("jwks_refresh_seconds"), "must be at least 10");
        }
        if j.customer_claim.is_empty() {
            err(k("customer_claim"), "must name a claim");
        }
        if !j.allowed_plans.is_empty() && j.plan_claim.is_empty() {
            err(k("plan_claim"), "allowed_plans needs plan_claim");
        }
    }
}

fn validate_x402(c: &Config, err: &mut impl FnMut(String, &str)) {
    if let Some(x) = &c.x402 {
        if !(x.facilitator_url.starts_with("http://") || x.facilitator_url.starts_with("https://"))
        {
            err(
                "x402.facilitator_url".into(),
                "must be an http:// or https:// URL",
            );
        }
        if !is_evm_address(&x.pay_to) {
            err(
                "x402.pay_to".into(),
                "must be a 0x-prefixed 20-byte hex address",
            );
        }
        if !is_evm_address(&x.asset) {
            err(
                "x402.asset".into(),
                "must be the token contract's 0x-prefixed 20-byte hex address",
            );
        }
        if x.network.is_empty() {
            err("x402.network".into(), "must not be empty");
        }
        if !x.network_id.contains(':') {
            err(
                "x402.network_id".into(),
                "must be a CAIP-2 id such as eip155:84532",
            );
        }
        if x.max_timeout_seconds == 0 {
            err("x402.max_timeout_seconds".into(), "must be at least 1");
        }
        if x.facilitator_timeout_ms == 0 {
            err("x402.facilitator_timeout_ms".into(), "must be at least 1");
        }
        if x.x402_rate_limit.requests == 0 {
            err("x402.x402_rate_limit.requests".into(), "must be at least 1");
        }
    }
    for (i, r) in c.routes.iter().enumerate() {
        let k = |f: &str| format!("routes[{i}].{f}");
        if r.x402_rate_limit.is_some_and(|l| l.requests == 0) {
            err(k("x402_rate_limit.requests"), "must be at least 1");
        }
        let Some(price) = r.x402_price_micros else {
            if r.x402_rate_limit.is_some() {
                err(
                    k("x402_rate_limit"),
                    "applies only to a route with x402_price_micros",
                );
            }
            continue;
        };
        let Some(x) = &c.x402 else {
            err(
                k("x402_price_micros"),
                "needs an [x402] section (facilitator_url, pay_to, ...)",
            );
            continue;
        };
        if let Err(e) = paygate_core::amount::atomic_units(price, x.asset_decimals) {
            err(k("x402_price_micros"), &e.to_string());
        }
    }
}

fn validate_tls(
    c: &Config,
    plain: Option<std::net::SocketAddr>,
    err: &mut impl FnMut(String, &str),
) {
    if let Some(t) = &c.gateway.tls {
        if t.listen == c.admin.listen && t.listen.port() != 0 {
            err(
                "gateway.tls.listen".into(),
                "must differ from admin.listen: the admin API never shares the gateway listener",
            );
        }
        if plain == Some(t.listen) && t.listen.port() != 0 {
            err(
                "gateway.tls.listen".into(),
                "must differ from gateway.listen (one port speaks either HTTP or HTTPS)",
            );
        }
        for (field, v) in [("cert_path", &t.cert_path), ("key_path", &t.key_path)] {
            if v.is_empty() {
                err(format!("gateway.tls.{field}"), "must name a PEM file");
            }
        }
        let mut names = HashSet::new();
        for (i, s) in t.certs.iter().enumerate() {
            let k = |f: &str| format!("gateway.tls.certs[{i}].{f}");
            let name = s.server_name.to_ascii_lowercase();
            let label = name.strip_prefix("*.").unwrap_or(&name);
            if label.is_empty() || label.contains('*') || label.contains(':') {
                err(
                    k("server_name"),
                    "must be a host name such as api.example.com or *.example.com",
                );
            } else if !names.insert(name.clone()) {
                err(k("server_name"), "is listed twice");
            }
            for (field, v) in [("cert_path", &s.cert_path), ("key_path", &s.key_path)] {
                if v.is_empty() {
                    err(k(field), "must name a PEM file");
                }
            }
        }
    }
    if let Some(t) = &c.admin.tls {
        for (field, v) in [("cert_path", &t.cert_path), ("key_path", &t.key_path)] {
            if v.is_empty() {
                err(format!("admin.tls.{field}"), "must name a PEM file");
            }
        }
    }
    if !c.store.tls_ca_path.is_empty() && !c.store.redis_url.starts_with("rediss://") {
        let why = if c.store.redis_url.starts_with("rediss+cluster://") {
            "is not supported with a cluster: a rediss+cluster:// store verifies against the \
             system roots (add the CA there, or point SSL_CERT_FILE at it)"
        } else {
            "applies only to a rediss:// store.redis_url"
        };
        err("store.tls_ca_path".into(), why);
    }
    for (i, u) in c.upstreams.iter().enumerate() {
        let k = |f: &str| format!("upstreams[{i}].{f}");
        if u.client_cert_path.is_empty() != u.client_key_path.is_empty() {
            let missing = if u.client_cert_path.is_empty() {
                "client_cert_path"
            } else {
                "client_key_path"
            };
            err(
                k(missing),
                "must be set together with the other half of the client certificate",
            );
        }
        let ip_target = u.targets.iter().chain(&u.backup).any(|t| {
            let host = t.rsplit_once(':').map_or(t.as_str(), |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok()
        });
        if u.tls && u.verify && u.sni.is_empty() && ip_target {
            err(
                k("sni"),
                "must name the host the targets' certificate is for when a target is an IP address \
                 (or set verify = false)",
            );
        }
        if !u.tls {
            for (field, set) in [
                ("sni", !u.sni.is_empty()),
                ("ca_path", !u.ca_path.is_empty()),
                ("client_cert_path", !u.client_cert_path.is_empty()),
                ("verify", !u.verify),
            ] {
                if set {
                    err(k(field), "applies only with tls = true");
                }
            }
        }
    }
}

/// `0x` and 40 hex digits, in any case (checksummed or not).
fn is_evm_address(s: &str) -> bool {
    s.len() == 42 && s.starts_with("0x") && s.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
