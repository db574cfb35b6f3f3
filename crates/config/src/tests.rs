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
    assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:8080");
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
    assert_eq!(c.gateway.listen.port(), 18080);
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
