use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const GOOD: &str = r#"
[gateway]
listen = "127.0.0.1:8080"

[[upstreams]]
name = "market"
targets = ["127.0.0.1:9000"]
health_check = { path = "/health", interval_ms = 500 }

[[routes]]
id = "prices"
path_prefix = "/v1/prices"
upstream = "market"
methods = ["GET"]
"#;

fn keys_of(errs: Vec<ConfigError>) -> Vec<String> {
    errs.into_iter().map(|e| e.key).collect()
}

#[test]
fn defaults_follow_the_spec() {
    let c = parse("", env(&[])).unwrap();
    assert_eq!(
        c.gateway.plain_listen().unwrap().to_string(),
        "127.0.0.1:8080"
    );
    assert_eq!(c.gateway.threads, 2);
    assert_eq!(c.gateway.max_body_bytes, 10_485_760);
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.store.backend, StoreBackend::Memory);
    assert_eq!(c.store.timeout_ms, 25);
    assert_eq!(c.store.on_unavailable, OnUnavailable::Deny);
    assert_eq!(c.database.url, "sqlite://paygate.db");
}

#[test]
fn good_file_parses_with_route_defaults() {
    let c = parse(GOOD, env(&[])).unwrap();
    assert_eq!(c.routes[0].cost, 1);
    assert_eq!(c.upstreams[0].connect_timeout_ms, 1000);
}

#[test]
fn env_overrides_file() {
    let c = parse(
        GOOD,
        env(&[
            ("PAYGATE_GATEWAY__THREADS", "4"),
            ("PAYGATE_GATEWAY__LISTEN", "127.0.0.1:18080"),
            ("PAYGATE_STORE__ON_UNAVAILABLE", "allow"),
            ("PAYGATE_ADMIN_TOKEN", "not a config key"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(c.gateway.threads, 4);
    assert_eq!(c.gateway.plain_listen().unwrap().port(), 18080);
    assert_eq!(c.store.on_unavailable, OnUnavailable::Allow);
}

#[test]
fn unknown_keys_are_named() {
    let errs = parse("[gateway]\nlisen = \"x\"\n[bogus]\na = 1\n", env(&[])).unwrap_err();
    let keys = keys_of(errs);
    assert!(keys.contains(&"gateway.lisen".to_string()), "{keys:?}");
    assert!(keys.contains(&"bogus".to_string()), "{keys:?}");
    let errs = parse("", env(&[("PAYGATE_STORE__TIMOUT_MS", "5")])).unwrap_err();
    assert_eq!(keys_of(errs), vec!["store.timout_ms".to_string()]);
}

#[test]
fn type_errors_are_named() {
    let errs = parse("[store]\ntimeout_ms = \"fast\"\n", env(&[])).unwrap_err();
    assert_eq!(keys_of(errs), vec!["store.timeout_ms".to_string()]);
    let errs = parse("[store]\nbackend = \"etcd\"\n", env(&[])).unwrap_err();
    assert_eq!(keys_of(errs), vec!["store.backend".to_string()]);
}

#[test]
fn cross_key_problems_are_all_named() {
    let text = r#"
[store]
timeout_ms = 0
[[upstreams]]
name = "a"
targets = ["nope"]
[[routes]]
id = "r"
path_prefix = "v1"
upstream = "b"
cost = 0
methods = ["FETCH"]
"#;
    let keys = keys_of(parse(text, env(&[])).unwrap_err());
    for k in [
        "store.timeout_ms",
        "upstreams[0].targets[0]",
        "routes[0].path_prefix",
        "routes[0].upstream",
        "routes[0].cost",
        "routes[0].methods",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
}

#[test]
fn bad_toml_is_reported() {
    let errs = parse("[gateway\n", env(&[])).unwrap_err();
    assert_eq!(errs[0].key, "<file>");
}

#[test]
fn jwt_issuers_parse_with_their_defaults() {
    let text = format!(
        "{GOOD}\n[[auth.jwt]]\nissuer = \"https://a/\"\naudience = \"api\"\nalgorithms = [\"RS256\", \"EdDSA\"]\njwks_url = \"http://127.0.0.1:1/jwks\"\n"
    );
    let c = parse(&text, env(&[])).unwrap();
    let j = &c.auth.jwt[0];
    assert_eq!(
        j.audience,
        vec!["api"],
        "a single audience string is a list of one"
    );
    assert_eq!(j.algorithms, vec![JwtAlgorithm::RS256, JwtAlgorithm::EdDSA]);
    assert_eq!(
        (
            j.jwks_refresh_seconds,
            j.leeway_seconds,
            j.customer_claim.as_str()
        ),
        (300, 30, "sub")
    );
    assert!(j.default_plan.is_empty() && j.plan_claim.is_empty());
    assert!(c.routes[0].ws_message_cost == 0 && c.routes[0].ws_minute_cost == 0);
}

#[test]
fn bad_jwt_issuers_name_their_keys() {
    let issuer = |body: &str| format!("{GOOD}\n[[auth.jwt]]\nissuer = \"https://a/\"\n{body}\n");
    let cases = [
        ("algorithms = [\"RS256\"]", "auth.jwt[0].jwks_url"),
        (
            "algorithms = [\"RS256\"]\njwks_url = \"http://x/\"\npublic_key_pem = \"x\"",
            "auth.jwt[0].jwks_url",
        ),
        (
            "algorithms = [\"RS256\"]\njwks_url = \"ftp://x/\"",
            "auth.jwt[0].jwks_url",
        ),
        (
            "algorithms = []\njwks_url = \"http://x/\"",
            "auth.jwt[0].algorithms",
        ),
        (
            "algorithms = [\"none\"]\njwks_url = \"http://x/\"",
            "auth.jwt[0].algorithms[0]",
        ),
        (
            "algorithms = [\"RS256\"]\nsecret_env = \"PAYGATE_TEST_UNSET_SECRET\"",
            "auth.jwt[0].algorithms",
        ),
        (
            "algorithms = [\"HS256\"]\npublic_key_pem = \"x\"",
            "auth.jwt[0].algorithms",
        ),
        (
            "algorithms = [\"HS256\"]\nsecret_env = \"PAYGATE_TEST_UNSET_SECRET\"",
            "auth.jwt[0].secret_env",
        ),
        (
            "algorithms = [\"RS256\"]\njwks_url = \"http://x/\"\nleeway_seconds = 61",
            "auth.jwt[0].leeway_seconds",
        ),
        (
            "algorithms = [\"RS256\"]\njwks_url = \"http://x/\"\nallowed_plans = [\"gold\"]",
            "auth.jwt[0].plan_claim",
        ),
        (
            "algorithms = [\"RS256\"]\njwks_url = \"http://x/\"\nsurprise = 1",
            "auth.jwt.0.surprise",
        ),
    ];
    for (body, key) in cases {
        let errs = keys_of(parse(&issuer(body), env(&[])).unwrap_err());
        assert!(errs.iter().any(|k| k == key), "{body}: {errs:?}");
    }
    // Two issuers with one `iss`: the token could not pick.
    let twice = format!(
        "{}\n[[auth.jwt]]\nissuer = \"https://a/\"\nalgorithms = [\"RS256\"]\njwks_url = \"http://x/\"\n",
        issuer("algorithms = [\"RS256\"]\njwks_url = \"http://x/\"")
    );
    let errs = keys_of(parse(&twice, env(&[])).unwrap_err());
    assert!(errs.contains(&"auth.jwt[1].issuer".to_string()), "{errs:?}");
}

const X402: &str = r#"
[x402]
facilitator_url = "http://127.0.0.1:8402"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

[[upstreams]]
name = "market"
targets = ["127.0.0.1:9000"]

[[routes]]
id = "signals"
path_prefix = "/v1/signals"
upstream = "market"
x402_price_micros = 17000
"#;

#[test]
fn x402_takes_the_spec_defaults() {
    let c = parse(X402, env(&[])).unwrap();
    let x = c.x402.as_ref().unwrap();
    assert_eq!(x.network, "base-sepolia");
    assert_eq!(x.network_id, "eip155:84532");
    assert_eq!(x.asset_decimals, 6);
    assert_eq!(
        (x.max_timeout_seconds, x.facilitator_timeout_ms),
        (60, 5000)
    );
    let limit = c.routes[0].x402_rate_limit(x);
    assert_eq!((limit.requests, limit.capacity()), (50, 100));
    assert_eq!(c.routes[0].x402_price_micros, Some(17_000));
}

#[test]
fn an_unrepresentable_or_orphan_price_is_refused() {
    // 2 decimals: one atomic unit is 10,000 micros; 17,001 is not a whole number of them.
    let text = X402.replace("x402_price_micros = 17000", "x402_price_micros = 17001") + "\n" + "";
    let text = text.replace("[x402]\n", "[x402]\nasset_decimals = 2\n");
    let errs = parse(&text, env(&[])).unwrap_err();
    assert_eq!(keys_of(errs.clone()), ["routes[0].x402_price_micros"]);
    assert!(errs[0].message.contains("not a whole number"), "{errs:?}");

    let zero = X402.replace("x402_price_micros = 17000", "x402_price_micros = 0");
    assert_eq!(
        keys_of(parse(&zero, env(&[])).unwrap_err()),
        ["routes[0].x402_price_micros"]
    );

    let no_section = X402
        .replace("[x402]\n", "")
        .replace("facilitator_url = \"http://127.0.0.1:8402\"\n", "")
        .replace(
            "pay_to = \"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\"\n",
            "",
        );
    assert_eq!(
        keys_of(parse(&no_section, env(&[])).unwrap_err()),
        ["routes[0].x402_price_micros"]
    );
}

#[test]
fn x402_addresses_and_urls_are_checked() {
    let bad = X402
        .replace("http://127.0.0.1:8402", "ftp://x")
        .replace("0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "alice");
    assert_eq!(
        keys_of(parse(&bad, env(&[])).unwrap_err()),
        ["x402.facilitator_url", "x402.pay_to"]
    );
    let unknown = X402.replace("[x402]\n", "[x402]\nprice = 1\n");
    assert_eq!(
        keys_of(parse(&unknown, env(&[])).unwrap_err()),
        ["x402.price"]
    );
}

#[test]
fn tls_sections_parse_with_their_defaults() {
    let text = r#"
[gateway.tls]
listen = "0.0.0.0:8443"
cert_path = "/etc/paygate/fullchain.pem"
key_path = "/etc/paygate/privkey.pem"

[[gateway.tls.certs]]
server_name = "*.example.com"
cert_path = "/w.pem"
key_path = "/w.key"

[admin.tls]
cert_path = "/a.pem"
key_path = "/a.key"
min_version = "1.3"

[store]
backend = "redis"
redis_url = "rediss://redis.internal:6380/0"
tls_ca_path = "/ca.pem"

[[upstreams]]
name = "market"
targets = ["api.example.com:443"]
tls = true
"#;
    let c = parse(text, env(&[])).unwrap();
    let t = c.gateway.tls.as_ref().unwrap();
    assert_eq!(t.min_version, TlsVersion::V1_2);
    assert!(t.http2);
    assert_eq!(t.certs[0].server_name, "*.example.com");
    // HTTPS only: no plain listener unless gateway.listen is set.
    assert_eq!(c.gateway.plain_listen(), None);
    assert_eq!(c.admin.tls.as_ref().unwrap().min_version, TlsVersion::V1_3);
    let u = &c.upstreams[0];
    assert!(u.tls && u.verify && u.sni.is_empty() && u.ca_path.is_empty());
    let both = parse(
        &format!("{text}\n[gateway]\nlisten = \"127.0.0.1:8080\"\n"),
        env(&[]),
    )
    .unwrap();
    assert_eq!(
        both.gateway.plain_listen().map(|a| a.port()),
        Some(8080),
        "plain HTTP kept beside HTTPS"
    );
}

#[test]
fn bad_tls_settings_name_their_keys() {
    let tls = |body: &str| format!("{GOOD}\n{body}\n");
    let cases = [
        (
            "[gateway.tls]\nlisten = \"127.0.0.1:8080\"\ncert_path = \"c\"\nkey_path = \"k\"",
            "gateway.tls.listen",
        ),
        (
            "[gateway.tls]\nlisten = \"127.0.0.1:8443\"\ncert_path = \"\"\nkey_path = \"k\"",
            "gateway.tls.cert_path",
        ),
        (
            "[gateway.tls]\nlisten = \"127.0.0.1:8443\"\ncert_path = \"c\"\nkey_path = \"k\"\nmin_version = \"1.1\"",
            "gateway.tls.min_version",
        ),
        (
            "[gateway.tls]\nlisten = \"127.0.0.1:8443\"\ncert_path = \"c\"\nkey_path = \"k\"\n\
             [[gateway.tls.certs]]\nserver_name = \"a.*.com\"\ncert_path = \"c\"\nkey_path = \"k\"",
            "gateway.tls.certs[0].server_name",
        ),
        // A missing field is named by serde with its section.
        ("[admin.tls]\ncert_path = \"c\"", "admin.tls"),
        (
            "[store]\nredis_url = \"redis://r:6379\"\ntls_ca_path = \"/ca.pem\"",
            "store.tls_ca_path",
        ),
        (
            "[store]\nredis_url = \"rediss+cluster://a:1,b:2\"\ntls_ca_path = \"/ca.pem\"",
            "store.tls_ca_path",
        ),
        (
            "[[upstreams]]\nname = \"s\"\ntargets = [\"10.0.0.5:443\"]\ntls = true",
            "upstreams[1].sni",
        ),
        (
            "[[upstreams]]\nname = \"s\"\ntargets = [\"a:443\"]\ntls = true\nclient_cert_path = \"c\"",
            "upstreams[1].client_key_path",
        ),
        (
            "[[upstreams]]\nname = \"s\"\ntargets = [\"a:443\"]\nca_path = \"/ca.pem\"",
            "upstreams[1].ca_path",
        ),
        (
            "[[upstreams]]\nname = \"s\"\ntargets = [\"a:443\"]\nverify = false",
            "upstreams[1].verify",
        ),
    ];
    for (body, key) in cases {
        let errs = keys_of(parse(&tls(body), env(&[])).unwrap_err());
        assert!(errs.iter().any(|k| k == key), "{body}: {errs:?}");
    }
    // An IP target verified against a named host, and verify off, are fine.
    for ok in [
        "[[upstreams]]\nname = \"s\"\ntargets = [\"10.0.0.5:443\"]\ntls = true\nsni = \"api.internal\"",
        "[[upstreams]]\nname = \"s\"\ntargets = [\"10.0.0.5:443\"]\ntls = true\nverify = false",
        "[store]\nbackend = \"redis\"\nredis_url = \"rediss+cluster://a:1,b:2\"",
    ] {
        assert!(parse(&tls(ok), env(&[])).is_ok(), "{ok}");
    }
}

#[test]
fn log_section_defaults_and_values() {
    let c = parse("", env(&[])).unwrap();
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(c.log.access);
    assert_eq!(c.log.level, "info");
    let c = parse(
        "[log]\nformat = \"json\"\naccess = false\nlevel = \"warn,paygate::access=info\"\n",
        env(&[]),
    )
    .unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(!c.log.access);
    let errs = parse("[log]\nlevel = \"loud\"\n", env(&[])).unwrap_err();
    assert_eq!(keys_of(errs), ["log.level"]);
    let errs = parse("[log]\nformat = \"xml\"\n", env(&[])).unwrap_err();
    assert_eq!(keys_of(errs), ["log.format"]);
}

#[test]
fn route_cors_and_cache_parse_and_are_checked() {
    let good = format!(
        "{GOOD}cors = {{ allow_origins = [\"https://app.example.com\"], allow_headers = [\"authorization\", \"x-api-key\"], max_age_seconds = 600 }}\ncache = {{ ttl_ms = 1000, max_entries = 10000 }}\n"
    );
    let c = parse(&good, env(&[])).unwrap();
    let cors = c.routes[0].cors.as_ref().unwrap();
    assert_eq!(cors.allow_origins, ["https://app.example.com"]);
    assert_eq!(cors.max_age_seconds, 600);
    let cache = c.routes[0].cache.unwrap();
    assert_eq!((cache.ttl_ms, cache.max_entries), (1000, 10_000));

    let defaults =
        format!("{GOOD}cors = {{ allow_origins = [\"*\"] }}\ncache = {{ ttl_ms = 50 }}\n");
    let c = parse(&defaults, env(&[])).unwrap();
    assert_eq!(
        c.routes[0].cors.as_ref().unwrap().allow_headers,
        ["authorization", "x-api-key", "content-type"]
    );
    assert_eq!(c.routes[0].cache.unwrap().max_entries, 10_000);

    let bad = format!(
        "{GOOD}cors = {{ allow_origins = [\"https://app.example.com/\"], allow_headers = [\"bad header\"] }}\ncache = {{ ttl_ms = 0, max_entries = 0 }}\n"
    );
    let mut keys = keys_of(parse(&bad, env(&[])).unwrap_err());
    keys.sort();
    assert_eq!(
        keys,
        [
            "routes[0].cache.max_entries",
            "routes[0].cache.ttl_ms",
            "routes[0].cors.allow_headers",
            "routes[0].cors.allow_origins",
        ]
    );
    let unknown = format!("{GOOD}cache = {{ ttl_ms = 5, stale_ms = 1 }}\n");
    assert_eq!(
        keys_of(parse(&unknown, env(&[])).unwrap_err()),
        ["routes.0.cache.stale_ms"]
    );
}

#[test]
fn tracing_section_defaults_and_checks() {
    let c = parse(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n",
        env(&[]),
    )
    .unwrap();
    let t = c.tracing.unwrap();
    assert_eq!(t.service_name, "paygate");
    assert!((t.sample_ratio - 0.01).abs() < f64::EPSILON);
    let errs = parse(
        "[tracing]\notlp_endpoint = \"127.0.0.1:4317\"\nsample_ratio = 2.0\nservice_name = \"\"\n",
        env(&[]),
    )
    .unwrap_err();
    let mut keys = keys_of(errs);
    keys.sort();
    assert_eq!(
        keys,
        [
            "tracing.otlp_endpoint",
            "tracing.sample_ratio",
            "tracing.service_name"
        ]
    );
}
