#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::Arc;
use axum::body::Body;
use axum::http::{Request};
use http_body_util::BodyExt;
use tower::ServiceExt;
#[tokio::test]
async fn probe() {
    let dir = tempfile::tempdir().unwrap();
    let db = paygate_billing::Database::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let st = Arc::new(paygate_admin::AdminState{db, catalog: Arc::new(paygate_store::Catalog::new(b"s".to_vec())), store: Arc::new(paygate_store::MemoryStore::new()), metrics: paygate_metrics::Metrics::new().unwrap(), token: "t0k".into()});
    let r = paygate_admin::router(st);
    for (m, p, auth, body) in [("GET","/admin/v1/nope",false,""),("DELETE","/admin/v1/plans",false,""),("DELETE","/admin/v1/plans",true,""),("POST","/admin/v1/plans",true,&"x".repeat(3_000_000)[..]),("GET","/admin/v1/plans/",true,""),("GET","/admin/v1/plans?limit=5&limit=6",true,""), ("GET","/admin/v1/plans?starting_after=%ZZ",true,"")] {
        let mut b = Request::builder().method(m).uri(p);
        if auth { b = b.header("authorization","Bearer t0k"); }
        let resp = r.clone().oneshot(b.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let h = resp.headers().clone();
        let s = resp.status();
        let by = resp.into_body().collect().await.unwrap().to_bytes();
        println!("{m} {p} auth={auth}: {s} {:?} allow={:?} {}", h.get("www-authenticate"), h.get("allow"), String::from_utf8_lossy(&by[..by.len().min(200)]));
    }
}
