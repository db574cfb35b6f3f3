//! Tokens signed by another ecosystem's JWT library (PyJWT, with the
//! `cryptography` backend) verify here, for every algorithm family: our
//! reading of the JOSE formats is not only our own signer's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use paygate_jwt::Issuers;
use paygate_testkit::jwt;

const ISS: &str = "https://pyjwt.test/";

/// Signs `{iss, aud, sub, iat, exp}` with PyJWT; the private key is PEM.
fn pyjwt_sign(alg: &str, key_pem: &str) -> String {
    let script = r#"
import sys, time, jwt
alg, iss = sys.argv[1], sys.argv[2]
key = sys.stdin.read()
now = int(time.time())
claims = {"iss": iss, "aud": "market-api", "sub": "acme", "iat": now, "exp": now + 600}
print(jwt.encode(claims, key, algorithm=alg, headers={"kid": "py"}))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, alg, ISS])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key_pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyJWT failed (pip install 'pyjwt[crypto]'): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn issuer(alg: &str, key: &str) -> Issuers {
    let text =
        format!("issuer = \"{ISS}\"\naudience = [\"market-api\"]\nalgorithms = [\"{alg}\"]\n{key}");
    let c: paygate_config::JwtIssuerConfig = toml::from_str(&text).unwrap();
    Issuers::from_config(&[c]).unwrap()
}

#[tokio::test]
async fn pyjwt_tokens_of_every_family_verify() {
    let private = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/../testkit/keys/{name}.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    for (alg, key, public) in [
        ("RS256", "rsa1", jwt::RSA1_PUBLIC),
        ("PS512", "rsa1", jwt::RSA1_PUBLIC),
        ("ES256", "ec256", jwt::EC256_PUBLIC),
        ("EdDSA", "ed25519", jwt::ED25519_PUBLIC),
    ] {
        let token = pyjwt_sign(alg, &private(key));
        let issuers = issuer(alg, &format!("public_key_pem = '''{public}'''"));
        let v = issuers
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.claims.customer_id.as_str(), "acme");
    }
    std::env::set_var("PAYGATE_TEST_PYJWT_SECRET", jwt::HMAC_SECRET);
    let token = pyjwt_sign("HS256", jwt::HMAC_SECRET);
    issuer("HS256", "secret_env = \"PAYGATE_TEST_PYJWT_SECRET\"")
        .verify(&token)
        .await
        .unwrap();
    // And PyJWT's HS256 token is refused by an RS256 issuer, whatever its kid.
    let e = issuer(
        "RS256",
        &format!("public_key_pem = '''{}'''", jwt::RSA1_PUBLIC),
    )
    .verify(&token)
    .await
    .unwrap_err();
    assert!(e.to_string().contains("algorithm not allowed"), "{e}");
}
