//! The invariants ARCHITECTURE.md lists, checked on every build (in the
//! style of rust-analyzer's `tidy` test): which crate may reach which
//! dependency, that the binary only parses arguments, and that no crate's
//! modules import each other in a circle.
//!
//! Dependencies are read from `cargo metadata` (the resolved graph, normal
//! and build edges; dev-dependencies are the tests' business). Each rule is
//! data in [`RULES`]; `a_broken_dependency_is_caught` proves the check can
//! fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A crate that must not reach (directly or through others) any package
/// whose name is one of `forbidden` or starts with `<forbidden>-`.
struct Rule {
    krate: &'static str,
    forbidden: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        krate: "paygate-core",
        forbidden: &[
            "tokio", "redis", "sqlx", "axum", "pingora", "hyper", "reqwest",
        ],
        why: "core does no I/O: domain types and pure functions only",
    },
    Rule {
        krate: "paygate-usage",
        forbidden: &[
            "redis",
            "sqlx",
            "pingora",
            "axum",
            "paygate-store",
            "paygate-billing",
        ],
        why: "the usage pipeline knows its targets only as BatchTarget",
    },
    Rule {
        krate: "paygate-gateway",
        forbidden: &[
            "sqlx",
            "axum",
            "paygate-billing",
            "paygate-admin",
            "paygate-app",
        ],
        why: "the gateway never awaits the database: catalog and one store call per call",
    },
    Rule {
        krate: "paygate-store",
        forbidden: &[
            "sqlx",
            "pingora",
            "axum",
            "paygate-billing",
            "paygate-gateway",
        ],
        why: "the store is the data plane: no database, no proxy",
    },
    Rule {
        krate: "paygate-billing",
        forbidden: &[
            "redis",
            "pingora",
            "axum",
            "paygate-store",
            "paygate-gateway",
        ],
        why: "the ledger talks to no store: the stream consumer feeds it",
    },
    Rule {
        krate: "paygate-admin",
        forbidden: &["pingora", "paygate-gateway", "paygate-app"],
        why: "the admin API runs without the proxy (`paygate admin`)",
    },
    Rule {
        krate: "paygate-jwt",
        forbidden: &[
            "redis",
            "sqlx",
            "pingora",
            "axum",
            "paygate-store",
            "paygate-billing",
        ],
        why: "token checks and key sets only: an HTTP client for the JWKS, no store, no database",
    },
    Rule {
        krate: "paygate-x402",
        forbidden: &[
            "redis",
            "sqlx",
            "pingora",
            "axum",
            "paygate-store",
            "paygate-billing",
        ],
        why: "the x402 protocol: wire types, codecs, checks and an HTTP client for the facilitator; no store, no database",
    },
    Rule {
        krate: "paygate-config",
        forbidden: &["tokio", "redis", "sqlx", "axum", "pingora", "openssl"],
        why: "config is parsing and validation only",
    },
    Rule {
        krate: "paygate-tls",
        forbidden: &[
            "tokio", "redis", "sqlx", "axum", "pingora", "hyper", "reqwest",
        ],
        why: "certificates and keys only, on OpenSSL: no runtime, no network stack",
    },
    Rule {
        // The whole binary: every TLS connection (listeners, upstreams,
        // Redis, Postgres, JWKS, facilitator) goes through the system's
        // OpenSSL. A second TLS library would mean a second set of roots,
        // a second set of security updates and minutes more build time.
        krate: "paygate",
        // (Named by what a second stack cannot do without: rustls's
        // certificate verifier and async adapters, its crypto providers,
        // BoringSSL. reqwest's public API pulls `rustls-pki-types`, a
        // crate of plain types, even when built on native-tls.)
        forbidden: &[
            "rustls-webpki",
            "tokio-rustls",
            "hyper-rustls",
            "ring",
            "aws-lc-rs",
            "aws-lc-sys",
            "boring",
        ],
        why: "one TLS stack: the system's OpenSSL (native-tls for redis-rs, sqlx and reqwest)",
    },
];

/// The only dependencies the binary may have: its work is in the app crate.
const BINARY_DEPS: &[&str] = &["paygate-app", "clap", "mimalloc"];

/// Crate name → names of every package it reaches through normal and
/// build dependencies (itself excluded).
struct Graph {
    reach: BTreeMap<String, BTreeSet<String>>,
    direct: BTreeMap<String, BTreeSet<String>>,
    members: BTreeSet<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn graph(meta: &Value) -> Graph {
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| name_of[id.as_str().unwrap()].to_owned())
        .collect();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let from = name_of[node["id"].as_str().unwrap()];
        let out = edges.entry(from).or_default();
        for dep in node["deps"].as_array().unwrap() {
            let kinds = dep["dep_kinds"].as_array().unwrap();
            if kinds.iter().any(|k| k["kind"].as_str() != Some("dev")) {
                out.insert(name_of[dep["pkg"].as_str().unwrap()]);
            }
        }
    }
    let mut reach = BTreeMap::new();
    let mut direct = BTreeMap::new();
    for m in &members {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = edges
            .get(m.as_str())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        while let Some(n) = todo.pop() {
            if seen.insert(n.to_owned()) {
                todo.extend(edges.get(n).into_iter().flatten().copied());
            }
        }
        reach.insert(m.clone(), seen);
        direct.insert(
            m.clone(),
            edges
                .get(m.as_str())
                .into_iter()
                .flatten()
                .map(|s| (*s).to_owned())
                .collect(),
        );
    }
    Graph {
        reach,
        direct,
        members,
    }
}

fn matches(package: &str, forbidden: &str) -> bool {
    package == forbidden || package.starts_with(&format!("{forbidden}-"))
}

/// Every rule broken, as a line that names the rule and the offender.
fn dependency_violations(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for rule in RULES {
        let Some(reached) = g.reach.get(rule.krate) else {
            out.push(format!("{}: not a workspace member", rule.krate));
            continue;
        };
        for package in reached {
            if let Some(f) = rule.forbidden.iter().find(|f| matches(package, f)) {
                out.push(format!(
                    "{} reaches {package} (forbidden: {f}): {}",
                    rule.krate, rule.why
                ));
            }
        }
    }
    for dep in &g.direct["paygate"] {
        if !BINARY_DEPS.contains(&dep.as_str()) {
            out.push(format!(
                "the paygate binary depends on {dep}: it may only parse arguments and call paygate-app"
            ));
        }
    }
    // The app crate is the top of the graph: only the binary builds on it.
    for m in &g.members {
        if m != "paygate" && g.direct[m].contains("paygate-app") {
            out.push(format!(
                "{m} depends on paygate-app, which only the binary may"
            ));
        }
    }
    out
}

#[test]
fn crates_reach_only_what_their_concern_needs() {
    let v = dependency_violations(&graph(&metadata()));
    assert!(
        v.is_empty(),
        "architecture invariants broken:\n  {}",
        v.join("\n  ")
    );
}

#[test]
fn a_broken_dependency_is_caught() {
    // The real graph, plus one edge nobody may add: the gateway reaching
    // the database driver (through billing, as it once did).
    let mut meta = metadata();
    let id_of = |meta: &Value, name: &str| {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["id"].clone())
            .unwrap()
    };
    let (gateway, billing) = (
        id_of(&meta, "paygate-gateway"),
        id_of(&meta, "paygate-billing"),
    );
    for node in meta["resolve"]["nodes"].as_array_mut().unwrap() {
        if node["id"] == gateway {
            node["deps"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"pkg": billing, "dep_kinds": [{"kind": null}]}));
        }
    }
    let v = dependency_violations(&graph(&meta));
    assert!(
        v.iter()
            .any(|l| l.starts_with("paygate-gateway reaches sqlx")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|l| l.starts_with("paygate-gateway reaches paygate-billing")),
        "{v:?}"
    );
}

#[test]
fn the_binary_holds_only_argument_parsing() {
    let src = root().join("src");
    let files: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        ["main.rs"],
        "src/ holds only main.rs; the rest belongs in a crate"
    );
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap();
    for line in main.lines().map(str::trim) {
        assert!(
            !line.starts_with("mod "),
            "main.rs declares a module: {line}"
        );
        if let Some(path) = line.strip_prefix("use ") {
            let krate = path.split("::").next().unwrap_or_default();
            assert!(
                ["std", "clap", "paygate_app"].contains(&krate),
                "main.rs uses {krate}: {line}"
            );
        }
        assert!(
            !line.starts_with("async fn"),
            "main.rs does async work: {line}"
        );
    }
    assert!(
        main.lines().count() < 150,
        "main.rs is {} lines: more than argument parsing",
        main.lines().count()
    );
}

// ------------------------------------------------------------ import circles

/// The top-level modules of a crate: `src/x.rs` or `src/x/…`.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let path = e.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            let mut todo = vec![path];
            while let Some(dir) = todo.pop() {
                for f in std::fs::read_dir(dir).unwrap() {
                    let p = f.unwrap().path();
                    if p.is_dir() {
                        todo.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        files.push(p);
                    }
                }
            }
            out.entry(stem).or_default().extend(files);
        } else if path.extension().is_some_and(|x| x == "rs")
            && !["lib", "main"].contains(&stem.as_str())
        {
            out.entry(stem).or_default().push(path);
        }
    }
    out
}

/// What follows each `crate::` in `text`: the first path segment of every
/// item, groups (`crate::{a, b::c}`) included.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        at_start = true;
                        continue;
                    }
                    _ => {}
                }
                if at_start && depth == 1 {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                    } else if !item.is_empty() {
                        out.push(std::mem::take(&mut item));
                        at_start = false;
                    }
                }
            }
            if !item.is_empty() {
                out.push(item);
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(ident);
        }
    }
    out
}

/// Names `lib.rs` re-exports, mapped to the module that defines them.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines().map(str::trim) {
        let Some(path) = line.strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap_or_default();
            let name = name.split(" as ").last().unwrap_or_default().trim();
            if !name.is_empty() {
                out.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    out
}

/// The module-level import graph of one crate, and its circles.
fn circles(crate_dir: &Path) -> Vec<String> {
    let src = crate_dir.join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let names = reexports(&lib);
    let mods = modules(&src);
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (m, files) in &mods {
        let out = edges.entry(m.as_str()).or_default();
        for f in files {
            for first in crate_paths(&std::fs::read_to_string(f).unwrap()) {
                let target = if mods.contains_key(&first) {
                    Some(first)
                } else {
                    names.get(&first).cloned()
                };
                if let Some(t) = target.filter(|t| t != m) {
                    out.insert(t);
                }
            }
        }
    }
    // A circle is an edge a → b with b reaching a.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(n) = todo.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n.clone()) {
                todo.extend(edges.get(n.as_str()).into_iter().flatten().cloned());
            }
        }
        false
    };
    let mut out = BTreeSet::new();
    for (a, targets) in &edges {
        for b in targets {
            if reaches(b, a) {
                let (x, y) = if *a < b.as_str() {
                    (*a, b.as_str())
                } else {
                    (b.as_str(), *a)
                };
                out.insert(format!("{}: {x} <-> {y}", crate_dir.display()));
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(root().join("crates")).unwrap() {
        found.extend(circles(&dir.unwrap().path()));
    }
    assert!(
        found.is_empty(),
        "modules importing each other (directly or through others):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn an_import_circle_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "mod a;\nmod b;\nmod c;\npub use c::{Thing, other::Other};\n",
    )
    .unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::f;\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{Thing, a};\n").unwrap();
    std::fs::write(src.join("c.rs"), "pub struct Thing;\nuse crate::a::x;\n").unwrap();
    let found = circles(dir.path());
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().any(|c| c.ends_with("a <-> b")), "{found:?}");
    std::fs::write(src.join("c.rs"), "pub struct Thing;\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::Thing;\n").unwrap();
    assert!(circles(dir.path()).is_empty());
}
