//! Every check a token passes, against real signatures of each algorithm
//! family and a real JWKS endpoint on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use paygate_jwt::{refresh, Issuers, JwtError};
use paygate_testkit::jwt::{self, claims, JwksServer, Pair, SigningKey};
use serde_json::{json, Value};

const ISS: &str = "https://auth.test/";
const AUD: &str = "market-api";

fn issuers(extra: &str) -> Issuers {
    let text = format!("issuer = \"{ISS}\"\naudience = [\"{AUD}\"]\n{extra}");
    let c: paygate_config::JwtIssuerConfig = toml::from_str(&text).unwrap();
    Issuers::from_config(&[c]).unwrap()
}

/// Starts the refreshers of `issuers` and waits for their first key sets;
/// returns the `paygate_jwks_refresh_total` they count in.
async fn refreshing(issuers: &Issuers) -> prometheus::IntCounterVec {
    let metric = prometheus::IntCounterVec::new(
        prometheus::Opts::new("jwks_refresh_total", "test"),
        &["issuer", "outcome"],
    )
    .unwrap();
    for i in issuers.iter() {
        tokio::spawn(refresh::run(
            Arc::clone(i),
            refresh::client(),
            metric.clone(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while issuers.iter().any(|i| i.keys().is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    metric
}

/// An issuer on `server`'s JWKS (`extra` TOML added), refreshing.
async fn on_jwks(
    server: &JwksServer,
    algs: &str,
    extra: &str,
) -> (Arc<Issuers>, prometheus::IntCounterVec) {
    let issuers = Arc::new(issuers(&format!(
        "algorithms = {algs}\njwks_url = \"{}\"\n{extra}",
        server.url()
    )));
    let metric = refreshing(&issuers).await;
    (issuers, metric)
}

async fn refused(issuers: &Issuers, token: &str) -> JwtError {
    issuers.verify(token).await.expect_err("refused")
}

#[tokio::test]
async fn every_algorithm_family_verifies_from_a_jwks() {
    use Algorithm::*;
    let algs = [
        RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ];
    let keys: Vec<SigningKey> = algs
        .iter()
        .map(|a| SigningKey::new(*a, &format!("k-{a:?}")))
        .collect();
    let server = JwksServer::start(keys.iter().map(SigningKey::jwk).collect()).await;
    let list = format!(
        "[{}]",
        algs.iter()
            .map(|a| format!("\"{a:?}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (issuers, _) = on_jwks(&server, &list, "").await;
    for k in &keys {
        let v = issuers
            .verify(&k.sign(&claims(ISS, AUD, "acme")))
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", k.alg));
        assert_eq!(v.claims.customer_id.as_str(), "acme");
        assert_eq!(v.issuer.key_label.as_ref(), "jwt:https://auth.test/");
    }
}

#[tokio::test]
async fn hmac_secret_and_pem_keys_verify() {
    std::env::set_var("PAYGATE_TEST_JWT_SECRET_A", jwt::HMAC_SECRET);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let i = issuers(&format!(
            "algorithms = [\"{alg:?}\"]\nsecret_env = \"PAYGATE_TEST_JWT_SECRET_A\""
        ));
        let token = SigningKey::new(alg, "any").sign(&claims(ISS, AUD, "acme"));
        i.verify(&token).await.unwrap();
    }
    for (alg, pem) in [
        (Algorithm::RS256, jwt::RSA1_PUBLIC),
        (Algorithm::PS256, jwt::RSA1_PUBLIC),
        (Algorithm::ES256, jwt::EC256_PUBLIC),
        (Algorithm::EdDSA, jwt::ED25519_PUBLIC),
    ] {
        let i = issuers(&format!(
            "algorithms = [\"{alg:?}\"]\npublic_key_pem = '''{pem}'''"
        ));
        let token = SigningKey::new(alg, "any").sign(&claims(ISS, AUD, "acme"));
        i.verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
    }
}

#[tokio::test]
async fn every_bad_token_is_refused_with_the_check_that_failed() {
    let rsa = SigningKey::new(Algorithm::RS256, "rsa");
    let server = JwksServer::start(vec![rsa.jwk()]).await;
    let (issuers, _) = on_jwks(&server, "[\"RS256\", \"HS256\"]", "").await;
    let good = claims(ISS, AUD, "acme");
    let now = jwt::now();
    let with = |k: &str, v: Value| jwt::with_claim(&good, k, v);
    let without = |k: &str| jwt::without_claim(&good, k);

    // alg: none, with or without a signature.
    let e = refused(&issuers, &jwt::unsigned(&good)).await;
    assert!(
        matches!(e, JwtError::Malformed(_) | JwtError::AlgorithmNotAllowed(_)),
        "{e}"
    );
    let none = format!("{}sig", jwt::unsigned(&good));
    assert_eq!(refused(&issuers, &none).await.check(), "algorithm");

    // HS256 signed with the RSA public key (PEM bytes) as the HMAC secret.
    let confused = jwt::hs256_with_rsa_public_key(&good, "rsa");
    let e = refused(&issuers, &confused).await;
    assert_eq!(e.check(), "key_type", "{e}");
    assert!(e.to_string().contains("algorithm not allowed"), "{e}");

    // An algorithm outside the allowlist.
    let es = SigningKey::new(Algorithm::ES256, "rsa").sign(&good);
    assert!(refused(&issuers, &es)
        .await
        .to_string()
        .contains("algorithm not allowed"));

    let token = rsa.sign(&good);
    // Tampered payload, tampered signature.
    let tampered = jwt::with_forged_payload(&token, &with("sub", json!("someone-else")));
    assert_eq!(
        refused(&issuers, &tampered).await.to_string(),
        "bad signature"
    );
    let mut sig = token.clone().into_bytes();
    let i = sig.len() - 10;
    sig[i] = if sig[i] == b'A' { b'B' } else { b'A' };
    let sig = String::from_utf8(sig).unwrap();
    assert_eq!(refused(&issuers, &sig).await.to_string(), "bad signature");

    let cases: Vec<(Value, &str)> = vec![
        (with("exp", json!(now - 120)), "token expired"),
        (
            with("nbf", json!(now + 120)),
            "token not yet valid (nbf is in the future)",
        ),
        (
            with("iat", json!(now + 120)),
            "token issued in the future (iat)",
        ),
        (with("iss", json!("https://evil.test/")), "unknown issuer"),
        (with("aud", json!("other-api")), "wrong audience"),
        (without("exp"), "missing claim `exp`"),
        (without("aud"), "missing claim `aud`"),
        (without("iss"), "missing claim `iss`"),
        (without("sub"), "missing claim `sub`"),
    ];
    for (c, message) in cases {
        assert_eq!(refused(&issuers, &rsa.sign(&c)).await.to_string(), message);
    }
    // Within the leeway (30 s) an expired or early token still passes.
    issuers
        .verify(&rsa.sign(&with("exp", json!(now - 10))))
        .await
        .unwrap();
    issuers
        .verify(&rsa.sign(&with("nbf", json!(now + 10))))
        .await
        .unwrap();
    // An audience list holding ours passes.
    issuers
        .verify(&rsa.sign(&with("aud", json!(["x", AUD]))))
        .await
        .unwrap();

    // 16 KB of junk in three segments, and junk that is not even base64.
    let junk = format!("{0}.{0}.{0}", "A".repeat(5500));
    assert_eq!(refused(&issuers, &junk).await.check(), "too_large");
    assert_eq!(refused(&issuers, "abc.def.ghi").await.check(), "malformed");

    // An unknown kid: refused after one refetch.
    let before = server.fetches();
    let stranger = SigningKey::with_pair(Algorithm::RS256, "nobody", Pair::Rsa2).sign(&good);
    let e = refused(&issuers, &stranger).await;
    assert_eq!(e.check(), "unknown_key", "{e}");
    assert_eq!(server.fetches(), before + 1);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_ten_seconds() {
    let rsa = SigningKey::new(Algorithm::RS256, "rsa");
    let server = JwksServer::start(vec![rsa.jwk()]).await;
    let (issuers, _) = on_jwks(&server, "[\"RS256\"]", "").await;
    let before = server.fetches();
    let good = claims(ISS, AUD, "acme");
    let calls = (0..500).map(|i| {
        let issuers = Arc::clone(&issuers);
        let token =
            SigningKey::with_pair(Algorithm::RS256, &format!("random-{i}"), Pair::Rsa2).sign(&good);
        async move { issuers.verify(&token).await }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_err_and(|e| e.check() == "unknown_key")));
    assert_eq!(
        server.fetches() - before,
        1,
        "one refetch for 500 unknown kids"
    );
    // Valid tokens kept working throughout.
    issuers.verify(&rsa.sign(&good)).await.unwrap();
}

#[tokio::test]
async fn rotation_needs_no_restart_and_a_removed_key_stops_verifying() {
    let old = SigningKey::with_pair(Algorithm::RS256, "old", Pair::Rsa1);
    let new = SigningKey::with_pair(Algorithm::RS256, "new", Pair::Rsa2);
    let server = JwksServer::start(vec![old.jwk()]).await;
    let (issuers, metric) = on_jwks(&server, "[\"RS256\"]", "jwks_refresh_seconds = 10").await;
    let issuer = Arc::clone(issuers.iter().next().unwrap());
    let good = claims(ISS, AUD, "acme");
    issuers.verify(&old.sign(&good)).await.unwrap();

    // The issuer publishes the new key next to the old one: the first token
    // naming it refetches, and both verify.
    server.set_keys(vec![old.jwk(), new.jwk()]);
    issuers.verify(&new.sign(&good)).await.unwrap();
    issuers.verify(&old.sign(&good)).await.unwrap();
    assert_eq!(metric.with_label_values(&[ISS, "ok"]).get(), 2);

    // A failed refresh keeps the last good set (stale-if-error).
    server.set_failing(true);
    issuer.refresh_now();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric.with_label_values(&[ISS, "error"]).get() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric.with_label_values(&[ISS, "error"]).get(), 1);
    issuers.verify(&new.sign(&good)).await.unwrap();

    // The old key removed: after the next refresh its tokens stop verifying.
    server.set_failing(false);
    server.set_keys(vec![new.jwk()]);
    issuer.refresh_now();
    let deadline = Instant::now() + Duration::from_secs(5);
    while issuer.keys().unwrap().len() != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        refused(&issuers, &old.sign(&good)).await.check(),
        "unknown_key"
    );
    issuers.verify(&new.sign(&good)).await.unwrap();
}

#[tokio::test]
async fn an_issuer_never_fetched_is_unavailable_not_invalid() {
    let server = JwksServer::start(vec![]).await;
    server.set_failing(true);
    let issuers = issuers(&format!(
        "algorithms = [\"RS256\"]\njwks_url = \"{}\"",
        server.url()
    ));
    let token = SigningKey::new(Algorithm::RS256, "rsa").sign(&claims(ISS, AUD, "acme"));
    let e = refused(&issuers, &token).await;
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test]
async fn a_token_verified_before_still_expires_on_time() {
    let rsa = SigningKey::new(Algorithm::RS256, "rsa");
    let server = JwksServer::start(vec![rsa.jwk()]).await;
    let (issuers, _) = on_jwks(&server, "[\"RS256\"]", "leeway_seconds = 0").await;
    let mut c = claims(ISS, AUD, "acme");
    c["exp"] = json!(jwt::now() + 1);
    let token = rsa.sign(&c);
    // Verified twice (the second from the cache of verified tokens)...
    issuers.verify(&token).await.unwrap();
    issuers.verify(&token).await.unwrap();
    // ...and refused once `exp` has passed.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(refused(&issuers, &token).await.to_string(), "token expired");
}
