//! `paygate check-config` and start-up errors name the offending key;
//! `paygate migrate` on both databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use paygate_testkit::{DbKind, TestDb};

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn example_configs_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out) = check(&std::fs::read_to_string(&path).unwrap());
            assert_eq!(code, 0, "{}: {out}", path.display());
        }
    }
}

#[test]
fn every_problem_is_printed_with_its_key_and_exit_2() {
    let (code, out) = check(
        r#"
[gateway]
threads = 0
listn = "x"

[store]
on_unavailable = "maybe"
"#,
    );
    assert_eq!(code, 2);
    assert!(out.contains("gateway.listn: unknown key"), "{out}");
    assert!(out.contains("store.on_unavailable"), "{out}");

    let (code, out) = check(
        r#"
[[upstreams]]
name = "m"
targets = []

[[routes]]
id = "r"
path_prefix = "r"
upstream = "nope"
"#,
    );
    assert_eq!(code, 2);
    for key in [
        "upstreams[0].targets",
        "routes[0].path_prefix",
        "routes[0].upstream",
    ] {
        assert!(out.contains(key), "{key} not named in: {out}");
    }
}

#[test]
fn serve_without_admin_token_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"sqlite://{}/x.db\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("PAYGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.token_env"), "{err}");
}

/// `paygate migrate` on a fresh database of `kind`, twice (the second run
/// has nothing to do), then the billing tables answer.
async fn migrate_creates_the_ledger(kind: DbKind) {
    let db = TestDb::new(kind);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("[database]\nurl = \"{}\"\n", db.url)).unwrap();
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
            .args(["migrate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ledger = paygate_billing::Database::open(&db.url).await.unwrap();
    let report = ledger.usage_report(&Default::default(), &[]).await.unwrap();
    assert_eq!(report.totals.calls, 0);
    let audit = ledger
        .list_audit(&Default::default(), 10, None)
        .await
        .unwrap();
    assert!(audit.data.is_empty());
}

#[tokio::test]
async fn migrate_creates_the_ledger_on_sqlite() {
    migrate_creates_the_ledger(DbKind::Sqlite).await;
}

#[tokio::test]
async fn migrate_creates_the_ledger_on_postgres() {
    migrate_creates_the_ledger(DbKind::Postgres).await;
}
