//! deploy/ holds what the commands, config keys and ports of paygate say:
//! every file is parsed, every `paygate` command line is one the binary
//! takes, every `PAYGATE_*` variable names a config key, ports and probes
//! match the listeners, and grace periods cover the shutdown grace.
//! (`docker compose config` needs Docker; these checks stand in for it.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = Value::deserialize(d).unwrap_or_else(|e| panic!("deploy/{path}: {e}"));
            v.apply_merge().unwrap();
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The deployment config, parsed the way paygate parses it, with `env`
/// applied (an unknown key, also one a variable names, is an error).
fn config_with(text: &str, env: &BTreeMap<String, String>) -> paygate_config::Config {
    paygate_config::parse(text, env.clone())
        .unwrap_or_else(|errs| panic!("the deploy config with {env:?} is refused: {errs:?}"))
}

fn port_of(addr: std::net::SocketAddr) -> u16 {
    addr.port()
}

/// `paygate <args> --help` exits 0: the subcommand exists, and `--config`
/// is one of its options.
fn assert_paygate_command(args: &[&str], whence: &str) {
    assert!(
        !args.is_empty() && args.contains(&"--config"),
        "{whence}: {args:?}"
    );
    let subcommand: Vec<&str> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .copied()
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(&subcommand)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && help.contains("--config"),
        "{whence}: `paygate {}` is not a command taking --config:\n{help}{}",
        subcommand.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_config_file(text: &str, env: &BTreeMap<String, String>, whence: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paygate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{whence}: check-config refused it:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// `${NAME:-default}` as compose expands it with NAME unset.
fn compose_default(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, d)| d));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_deploy_config_passes_check_config() {
    let text = read("paygate.toml");
    let env = BTreeMap::from([
        ("PAYGATE_ADMIN_TOKEN".to_string(), "t".to_string()),
        ("PAYGATE_KEY_SECRET".to_string(), "s".to_string()),
    ]);
    check_config_file(&text, &env, "deploy/paygate.toml");
    let c = config_with(&text, &env);
    assert_eq!(c.store.backend, paygate_config::StoreBackend::Redis);
    assert!(c.database.url.starts_with("postgres://"));
    assert_eq!(c.log.format, paygate_config::LogFormat::Json);
}

#[test]
fn compose_runs_every_role_on_the_real_commands_keys_and_ports() {
    let doc = yaml_docs("docker-compose.yml").remove(0);
    let services = doc["services"].as_mapping().unwrap();
    let config_text = read("paygate.toml");
    let mut roles = BTreeMap::<String, usize>::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        for dep in svc["depends_on"].as_mapping().into_iter().flatten() {
            let dep = dep.0.as_str().unwrap();
            assert!(
                services.contains_key(dep),
                "{name} depends on unknown {dep}"
            );
        }
        if svc["image"].as_str() != Some("paygate:latest") {
            continue;
        }
        let command = strs(&svc["command"]);
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        assert_paygate_command(&args, &format!("compose service {name}"));
        let role = args[0].to_string();
        *roles.entry(role.clone()).or_default() += 1;
        // The config path is the file mounted from deploy/paygate.toml.
        let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
        let mounted = strs(&svc["volumes"])
            .iter()
            .any(|v| v.split(':').nth(1) == Some(config_arg) && v.starts_with("./paygate.toml"));
        assert!(
            mounted,
            "{name}: {config_arg} is not the mounted paygate.toml"
        );
        // Every variable is a config key (or a secret the config names).
        let env: BTreeMap<String, String> = svc["environment"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_string(),
                    compose_default(v.as_str().unwrap()),
                )
            })
            .collect();
        let config = config_with(&config_text, &env);
        for var in env.keys() {
            let named_secret = *var == config.admin.token_env || *var == config.auth.key_secret_env;
            assert!(
                named_secret || var.contains("__"),
                "{name}: {var} is neither a config override nor a secret the config names"
            );
        }
        assert!(config.store.redis_url.starts_with("redis://redis:"));
        assert!(config.database.url.contains("@postgres:5432/"));
        // Published ports are the listeners' ports.
        for published in strs(&svc["ports"]) {
            let container: u16 = published.rsplit(':').next().unwrap().parse().unwrap();
            let expected = match role.as_str() {
                "gateway" | "serve" => port_of(config.gateway.plain_listen().unwrap()),
                _ => port_of(config.admin.listen),
            };
            assert_eq!(container, expected, "{name}: port {published}");
        }
        if role == "gateway" {
            let grace = svc["stop_grace_period"].as_str().unwrap();
            let secs: u64 = grace.trim_end_matches('s').parse().unwrap();
            assert!(
                secs > config.gateway.shutdown_grace_seconds,
                "{name}: {grace}"
            );
        }
    }
    assert_eq!(roles.get("gateway"), Some(&2), "{roles:?}");
    assert_eq!(roles.get("admin"), Some(&1), "{roles:?}");
    assert_eq!(roles.get("billing"), Some(&1), "{roles:?}");
    assert_eq!(roles.get("migrate"), Some(&1), "{roles:?}");
    let redis = strs(&services["redis"]["command"]).join(" ");
    assert!(redis.contains("--appendonly yes"), "{redis}");
    assert!(services.contains_key("postgres"));
}

/// Every Kubernetes object of deploy/k8s, by kind and name.
fn k8s_objects() -> BTreeMap<(String, String), Value> {
    let kustomization = yaml_docs("k8s/kustomization.yaml").remove(0);
    let mut out = BTreeMap::new();
    for file in strs(&kustomization["resources"]) {
        for doc in yaml_docs(&format!("k8s/{file}")) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            out.insert((kind, name), doc);
        }
    }
    // Nothing in the folder is left out of the kustomization.
    let listed: BTreeSet<String> = strs(&kustomization["resources"]).into_iter().collect();
    for entry in std::fs::read_dir(deploy("k8s")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "kustomization.yaml" {
            assert!(
                listed.contains(&name),
                "k8s/{name} is not in kustomization.yaml"
            );
        }
    }
    out
}

#[test]
fn kubernetes_manifests_agree_with_the_config_and_each_other() {
    let objects = k8s_objects();
    let get = |kind: &str, name: &str| {
        objects
            .get(&(kind.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config_map = get("ConfigMap", "paygate-config");
    let config_text = config_map["data"]["paygate.toml"].as_str().unwrap();
    let secrets = BTreeMap::from([
        ("PAYGATE_ADMIN_TOKEN".to_string(), "t".to_string()),
        ("PAYGATE_KEY_SECRET".to_string(), "s".to_string()),
    ]);
    check_config_file(config_text, &secrets, "the ConfigMap's paygate.toml");
    let base = config_with(config_text, &secrets);

    let mut deployments = BTreeSet::new();
    for ((kind, name), obj) in &objects {
        if kind != "Deployment" {
            continue;
        }
        deployments.insert(name.clone());
        let pod = &obj["spec"]["template"]["spec"];
        let labels = &obj["spec"]["template"]["metadata"]["labels"];
        assert_eq!(&obj["spec"]["selector"]["matchLabels"], labels, "{name}");
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            Value::Bool(true),
            "{name}"
        );
        let volumes: BTreeMap<String, &Value> = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v))
            .collect();
        let containers = pod["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .chain(pod["initContainers"].as_sequence().into_iter().flatten());
        for c in containers {
            let args = strs(&c["args"]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_paygate_command(&args, &format!("Deployment {name}"));
            // --config is the ConfigMap, mounted.
            let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
            let mount = c["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|m| config_arg.starts_with(m["mountPath"].as_str().unwrap()))
                .unwrap_or_else(|| panic!("{name}: {config_arg} is not mounted"));
            let volume = volumes[mount["name"].as_str().unwrap()];
            assert_eq!(volume["configMap"]["name"].as_str(), Some("paygate-config"));
            // Variables: config overrides or named secrets, from the one Secret.
            let mut env = secrets.clone();
            for e in c["env"].as_sequence().into_iter().flatten() {
                let var = e["name"].as_str().unwrap().to_string();
                let secret = &e["valueFrom"]["secretKeyRef"];
                assert_eq!(
                    secret["name"].as_str(),
                    Some("paygate-secrets"),
                    "{name}: {var}"
                );
                assert!(secret["key"].as_str().is_some());
                let value = if var == "PAYGATE_DATABASE__URL" {
                    "postgres://paygate:pw@paygate-postgres:5432/paygate".to_string()
                } else {
                    "x".to_string()
                };
                assert!(
                    var == base.admin.token_env
                        || var == base.auth.key_secret_env
                        || var.contains("__"),
                    "{name}: {var}"
                );
                env.insert(var, value);
            }
            config_with(config_text, &env);
            // Named ports are the listeners'; probes hit the admin listener.
            let ports: BTreeMap<String, u64> = c["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_string(),
                        p["containerPort"].as_u64().unwrap(),
                    )
                })
                .collect();
            if let Some(p) = ports.get("http") {
                assert_eq!(*p, u64::from(base.gateway.plain_listen().unwrap().port()));
            }
            if let Some(p) = ports.get("admin") {
                assert_eq!(*p, u64::from(base.admin.listen.port()));
            }
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                if c[probe].is_null() {
                    continue;
                }
                assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path), "{name}");
                assert_eq!(
                    c[probe]["httpGet"]["port"].as_str(),
                    Some("admin"),
                    "{name}"
                );
                assert!(
                    ports.contains_key("admin"),
                    "{name}: probe on a port it lacks"
                );
            }
            if args[0] == "gateway" || args[0] == "admin" {
                assert!(!c["livenessProbe"].is_null(), "{name}: no liveness probe");
                assert!(!c["readinessProbe"].is_null(), "{name}: no readiness probe");
            }
            if args[0] == "gateway" {
                let pre_stop = strs(&c["lifecycle"]["preStop"]["exec"]["command"]);
                assert_eq!(pre_stop[0], "sleep", "{name}");
                let pause: u64 = pre_stop[1].parse().unwrap();
                let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
                assert!(
                    grace > pause + base.gateway.shutdown_grace_seconds,
                    "{name}: {grace} s does not cover preStop {pause} s + shutdown grace {} s",
                    base.gateway.shutdown_grace_seconds
                );
            }
        }
    }
    for role in ["gateway", "admin", "billing"] {
        assert!(
            deployments.contains(&format!("paygate-{role}")),
            "{deployments:?}"
        );
    }

    // Services select a Deployment's pods and target a port they name.
    for ((kind, name), svc) in &objects {
        if kind != "Service" {
            continue;
        }
        let selector = &svc["spec"]["selector"];
        let target = objects
            .iter()
            .find(|((k, _), d)| {
                k == "Deployment" && &d["spec"]["template"]["metadata"]["labels"] == selector
            })
            .unwrap_or_else(|| panic!("Service {name} selects no Deployment"));
        let container = &target.1["spec"]["template"]["spec"]["containers"][0];
        for p in svc["spec"]["ports"].as_sequence().unwrap() {
            let port = p["targetPort"].as_str().unwrap();
            assert!(
                container["ports"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|cp| cp["name"].as_str() == Some(port)),
                "Service {name}: targetPort {port}"
            );
        }
    }
    let hpa = get("HorizontalPodAutoscaler", "paygate-gateway");
    let target = hpa["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
    assert!(deployments.contains(target), "HPA scales {target}");
}

/// `[Section]` → key → values, as systemd reads a unit file.
fn unit(path: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(path).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{path}: not key=value: {line}"));
        out.entry(section.clone())
            .or_default()
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    out
}

#[test]
fn systemd_units_run_real_commands_and_outlast_the_shutdown_grace() {
    let config = config_with(
        &read("paygate.toml"),
        &BTreeMap::from([("PAYGATE_ADMIN_TOKEN".into(), "t".into())]),
    );
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(deploy("systemd")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let u = unit(&format!("systemd/{file}"));
        let service = &u["Service"];
        for key in ["ExecStart", "ExecStartPre"] {
            for line in service.get(key).into_iter().flatten() {
                let words: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(words[0], "/usr/local/bin/paygate", "{file}: {line}");
                assert_paygate_command(&words[1..], &format!("{file} {key}"));
                let config = words[words.iter().position(|w| *w == "--config").unwrap() + 1];
                assert_eq!(config, "/etc/paygate/paygate.toml", "{file}");
                seen.insert(words[1].to_string());
            }
        }
        assert_eq!(service["User"], ["paygate"], "{file}");
        assert_eq!(service["KillSignal"], ["SIGTERM"], "{file}");
        let stop: u64 = service["TimeoutStopSec"][0].parse().unwrap();
        assert!(
            stop > config.gateway.shutdown_grace_seconds,
            "{file}: {stop}"
        );
        let runs = service["ExecStart"][0].clone();
        if runs.contains(" gateway ") || runs.contains(" serve ") {
            assert_eq!(service["ExecReload"], ["/bin/kill -HUP $MAINPID"], "{file}");
        }
        assert!(u.contains_key("Install"), "{file}");
    }
    for role in ["serve", "gateway", "admin", "billing", "migrate"] {
        assert!(seen.contains(role), "no unit runs paygate {role}: {seen:?}");
    }
}

#[test]
fn the_dockerfile_builds_small_and_runs_unprivileged() {
    let text = read("Dockerfile");
    let config = config_with(
        &read("paygate.toml"),
        &BTreeMap::from([("PAYGATE_ADMIN_TOKEN".into(), "t".into())]),
    );
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    assert!(froms[1].contains("-slim"), "small runtime image: {froms:?}");
    assert!(text.contains("cmake"), "the build stage installs cmake");
    assert!(text.contains("--locked"), "the build uses Cargo.lock");
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
    let health = text
        .split("HEALTHCHECK")
        .nth(1)
        .expect("a HEALTHCHECK")
        .lines()
        .take(2)
        .collect::<String>();
    let admin_port = config.admin.listen.port();
    assert!(
        health.contains(&format!("127.0.0.1:{admin_port}/healthz")),
        "{health}"
    );
    let expose: Vec<u16> = text
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse().unwrap()))
        .collect();
    assert!(expose.contains(&config.gateway.plain_listen().unwrap().port()));
    assert!(expose.contains(&admin_port));
    // What it copies exists, and its default command is a real one.
    for line in text.lines().filter(|l| l.starts_with("COPY deploy/")) {
        let src = line.split_whitespace().nth(1).unwrap();
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(src).exists(),
            "{line}"
        );
    }
    let cmd = text
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert_paygate_command(&cmd, "Dockerfile CMD");
}
