//! SPEC §9 end to end: WebSocket connections metered per message through a
//! real paygate process, read by a real WebSocket client (tokio-tungstenite).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use paygate_testkit::DbKind;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The mock's routes plus `stream` (its ticker), `message_cost` units per
/// message.
fn stream_routes(mock: &Mock, message_cost: u32) -> String {
    format!(
        "{}\n[[routes]]\nid = \"stream\"\npath_prefix = \"/v1/ticks\"\nupstream = \"mock\"\nws_message_cost = {message_cost}\n",
        routes_for(mock.addr)
    )
}

/// What a client read from one connection.
#[derive(Debug)]
struct Read {
    data_messages: usize,
    close: Option<(CloseCode, String)>,
}

async fn connect(
    pg: &Paygate,
    path: &str,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}{path}", pg.gw.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// Reads every message of `/v1/ticks/{n}` until the connection closes.
async fn read_ticks(pg: &Paygate, key: &str, n: u32) -> Read {
    let mut ws = connect(pg, &format!("/v1/ticks/{n}"), key).await;
    let mut read = Read {
        data_messages: 0,
        close: None,
    };
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the stream stalled")
    {
        match m {
            Ok(Message::Text(_) | Message::Binary(_)) => read.data_messages += 1,
            Ok(Message::Close(f)) => {
                read.close = f.map(|f| (f.code, f.reason.to_string()));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    read
}

async fn units_in_ledger(pg: &Paygate, customer: &str) -> Value {
    let (s, report) = pg
        .admin(
            "GET",
            &format!("/admin/v1/usage?customer_id={customer}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{report}");
    report["totals"].clone()
}

async fn expect_quota_used(pg: &Paygate, customer: &str, used: u64) {
    eventually("the quota to settle", Duration::from_secs(10), || async {
        let (_, b) = pg
            .admin(
                "GET",
                &format!("/admin/v1/customers/{customer}/balance"),
                None,
            )
            .await;
        (b["quota"]["used"] == used).then_some(())
    })
    .await;
}

async fn expect_ledger_units(pg: &Paygate, customer: &str, units: u64) {
    eventually(
        "the ledger to hold the units",
        Duration::from_secs(10),
        || async {
            let t = units_in_ledger(pg, customer).await;
            (t["units"] == units).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_bills_exactly_the_messages_the_client_received() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let pg = Paygate::start(dir.path(), &stream_routes(&mock, 2)).await;
    let key = pg
        .customer_with_plan(
            "c",
            json!({"quota": {"calls": 10_000, "period": "month"}, "max_websockets": 2}),
        )
        .await;
    // 50 messages (text, binary, fragments of axum's choosing, pings between).
    let read = read_ticks(&pg, &key, 50).await;
    assert_eq!(read.data_messages, 50, "{read:?}");
    // The upgrade (cost 1) and 50 messages of 2 units; no more reserved.
    expect_quota_used(&pg, "c", 101).await;
    expect_ledger_units(&pg, "c", 101).await;
    // A second connection adds exactly its own.
    let read = read_ticks(&pg, &key, 7).await;
    assert_eq!(read.data_messages, 7);
    expect_quota_used(&pg, "c", 101 + 15).await;
    expect_ledger_units(&pg, "c", 116).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_stops_at_the_quota_with_1008_after_the_last_paid_message() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let pg = Paygate::start(dir.path(), &stream_routes(&mock, 1)).await;
    let key = pg
        .customer_with_plan(
            "c",
            json!({"quota": {"calls": 21, "period": "month"}, "max_websockets": 2}),
        )
        .await;
    let read = read_ticks(&pg, &key, 100).await;
    // 1 unit for the upgrade, 20 for messages: the 21st message is refused.
    assert_eq!(read.data_messages, 20, "{read:?}");
    assert_eq!(
        read.close,
        Some((CloseCode::Policy, "quota_exhausted".to_owned()))
    );
    expect_quota_used(&pg, "c", 21).await;
    expect_ledger_units(&pg, "c", 21).await;
    // The slot was given back when the gateway closed the connection.
    eventually("the slot to be free", Duration::from_secs(5), || async {
        let me: Value = pg.get("/paygate/v1/me", &key).await.json().await.unwrap();
        (me["websockets_open"] == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepaid_credits_pay_for_messages_until_they_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let pg = Paygate::start(dir.path(), &stream_routes(&mock, 1)).await;
    let key = pg
        .customer_with_plan(
            "p",
            json!({"price_per_call_micros": 1000, "max_websockets": 1}),
        )
        .await;
    let (s, _) = pg
        .admin(
            "POST",
            "/admin/v1/customers/p/credits",
            Some(json!({"amount_micros": 10_500, "reference": "top-up"})),
        )
        .await;
    assert_eq!(s, 201);
    let read = read_ticks(&pg, &key, 100).await;
    // 1,000 for the upgrade, 1,000 per message: 9 messages, 500 left.
    assert_eq!(read.data_messages, 9, "{read:?}");
    assert_eq!(
        read.close,
        Some((CloseCode::Policy, "insufficient_credits".to_owned()))
    );
    eventually("the balance to settle", Duration::from_secs(10), || async {
        let (_, b) = pg.admin("GET", "/admin/v1/customers/p/balance", None).await;
        (b["credits_micros"] == 500).then_some(())
    })
    .await;
    eventually("the ledger", Duration::from_secs(10), || async {
        let t = units_in_ledger(&pg, "p").await;
        (t["amount_micros"] == 10_000).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_shows_the_websockets_open() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let pg = Paygate::start(dir.path(), &stream_routes(&mock, 1)).await;
    let key = pg
        .customer_with_plan("c", json!({"max_websockets": 3}))
        .await;
    let me = |key: String| {
        let pg = &pg;
        async move {
            let v: Value = pg.get("/paygate/v1/me", &key).await.json().await.unwrap();
            v["websockets_open"].as_u64().unwrap()
        }
    };
    assert_eq!(me(key.clone()).await, 0);
    let a = connect(&pg, "/v1/ws", &key).await;
    let b = connect(&pg, "/v1/ws", &key).await;
    assert_eq!(me(key.clone()).await, 2);
    drop(a);
    eventually(
        "a closed connection to be released",
        Duration::from_secs(5),
        || {
            let key = key.clone();
            let me = &me;
            async move { (me(key).await == 1).then_some(()) }
        },
    )
    .await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_redis_two_gateways_meter_exactly_and_a_killed_gateways_slot_comes_back() {
    let dir = Ledger::new(DbKind::Postgres);
    let mock = mock_upstream().await;
    let prefix = format!("ws{}", uuid::Uuid::now_v7().simple());
    let cfg = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 200\n{}",
        redis_url(),
        stream_routes(&mock, 1)
    );
    let mut a = Paygate::start_named(dir.path(), "a", &cfg, Wait::Ready).await;
    let key = a
        .customer_with_plan(
            "c",
            json!({"quota": {"calls": 41, "period": "month"}, "max_websockets": 1}),
        )
        .await;
    let b = Paygate::start_named(dir.path(), "b", &cfg, Wait::Ready).await;
    eventually(
        "gateway b to know the key",
        Duration::from_secs(5),
        || async { (b.get("/paygate/v1/me", &key).await.status() == 200).then_some(()) },
    )
    .await;
    // Two connections one after the other, one through each gateway, share
    // the quota exactly: 2 upgrades + 39 messages.
    let first = read_ticks(&a, &key, 25).await;
    assert_eq!(first.data_messages, 25, "{first:?}");
    let second = read_ticks(&b, &key, 100).await;
    assert_eq!(second.data_messages, 14, "{second:?}");
    assert_eq!(
        second.close,
        Some((CloseCode::Policy, "quota_exhausted".to_owned()))
    );
    expect_quota_used(&a, "c", 41).await;
    expect_ledger_units(&a, "c", 41).await;

    // A connection held open through `a`, then `a` dies without closing it.
    let other = a
        .customer_with_plan("w", json!({"max_websockets": 1}))
        .await;
    eventually(
        "gateway b to know the key",
        Duration::from_secs(5),
        || async { (b.get("/paygate/v1/me", &other).await.status() == 200).then_some(()) },
    )
    .await;
    let held = connect(&a, "/v1/ws", &other).await;
    let upgrade = |pg: &Paygate| {
        let req = pg
            .client
            .get(format!("{}/v1/ws", pg.gw))
            .header("x-api-key", other.clone())
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(upgrade(&b).await, 429, "the slot is held through a");
    a.kill();
    drop(held);
    let started = std::time::Instant::now();
    eventually(
        "the dead gateway's slot to expire",
        Duration::from_secs(40),
        || async { (upgrade(&b).await == 101).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() <= Duration::from_secs(31),
        "{:?}",
        started.elapsed()
    );
}

/// `ws_minute_cost`: each started minute after the first is charged; a
/// minute that cannot be paid closes the connection (1008) the next time
/// the upstream sends. The connections stay quiet for over a minute, longer
/// than the upstream's read timeout and Pingora's 60 s client read deadline.
/// Two connections side by side: the test lasts a little over a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minutes_are_charged_as_they_start_and_an_unpaid_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let routes = format!(
        "{}\n[[routes]]\nid = \"echo\"\npath_prefix = \"/v1/ws\"\nupstream = \"mock\"\nws_minute_cost = 2\n",
        routes_for(mock.addr)
    );
    let pg = Paygate::start(dir.path(), &routes).await;
    // `paid` can pay the upgrade and one minute; `broke` only the upgrade.
    let paid = pg
        .customer_with_plan(
            "paid",
            json!({"quota": {"calls": 3, "period": "month"}, "max_websockets": 1}),
        )
        .await;
    let broke = pg
        .customer_with_plan(
            "broke",
            json!({"quota": {"calls": 1, "period": "month"}, "max_websockets": 1}),
        )
        .await;
    let hold = |key: String| {
        let pg = &pg;
        async move {
            use futures::SinkExt;
            let mut ws = connect(pg, "/v1/ws", &key).await;
            // Into the second minute, then one message through the echo.
            tokio::time::sleep(Duration::from_secs(62)).await;
            ws.send(Message::Text("ping".into())).await.unwrap();
            let mut answer = None;
            while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("no answer")
            {
                match m {
                    Message::Text(t) => {
                        answer = Some(t.to_string());
                        break;
                    }
                    Message::Close(f) => {
                        answer = f.map(|f| format!("close {} {}", u16::from(f.code), f.reason));
                        break;
                    }
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
            answer
        }
    };
    let (paid_answer, broke_answer) = tokio::join!(hold(paid.clone()), hold(broke.clone()));
    assert_eq!(
        paid_answer.as_deref(),
        Some("ping"),
        "the paid minute goes on"
    );
    assert_eq!(broke_answer.as_deref(), Some("close 1008 quota_exhausted"));
    // 1 for the upgrade and 2 for the second minute; the broke customer
    // paid for the upgrade only.
    expect_quota_used(&pg, "paid", 3).await;
    expect_ledger_units(&pg, "paid", 3).await;
    expect_quota_used(&pg, "broke", 1).await;
    expect_ledger_units(&pg, "broke", 1).await;
}

/// Every upgraded connection carries messages both ways, forty at once.
/// (Pingora 0.9.1 tore a WebSocket down right after its 101 when the
/// upstream's answer was read before the end of the upgrade request's empty
/// body, cloudflare/pingora#946, patched in vendor/pingora-proxy. The race
/// needs a loaded machine: this suite failed about one run in three under
/// load without the patch, never here in a quiet run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_upgraded_connection_carries_messages_both_ways() {
    use futures::SinkExt;
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let pg = Paygate::start(dir.path(), &routes_for(mock.addr)).await;
    let key = pg
        .customer_with_plan("c", json!({"max_websockets": 100}))
        .await;
    let echo = |i: usize| {
        let (pg, key) = (&pg, key.clone());
        async move {
            let mut ws = connect(pg, "/v1/ws", &key).await;
            ws.send(Message::Text(format!("hello {i}").into()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .map_err(|_| "no answer".to_string())?;
            let _ = ws.close(None).await;
            match answer {
                Some(Ok(Message::Text(t))) if t.as_str() == format!("hello {i}") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    };
    let results = futures::future::join_all((0..40).map(echo)).await;
    let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        failed.is_empty(),
        "{} of 40 failed: {failed:?}",
        failed.len()
    );
}
