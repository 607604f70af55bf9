//! Spec §8 with the official socket.io-client: IP allow/deny lists (IPv4 and IPv6 CIDRs) with
//! and without `trust_proxy` (X-Forwarded-For sent as `extraHeaders` over polling), connections
//! per IP and `max_connections`, the lockout after failed handshakes, client events per second,
//! the payload size limit, each at, just under and just over its threshold; and a storm of
//! random and malformed Engine.IO / Socket.IO frames over raw websockets and polling that the
//! service survives while a well-behaved client keeps receiving events.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use walcast::config::{Config, TrustProxy};

use crate::auth::{accepted, custom_event, handshake_at, refused};
use crate::support::{JsClient, TestDatabase, Walcast, http_raw, metric_where};

const TIMEOUT: Duration = Duration::from_secs(15);
const LOCKED: &str = "Too many authentication attempts. Try again later.";

/// A handshake over polling whose X-Forwarded-For is `xff`: `Ok` or the `connect_error`.
async fn via(walcast: &Walcast, xff: &str, auth: Value) -> Result<JsClient, String> {
    let headers = json!({ "X-Forwarded-For": xff }).to_string();
    handshake_at(
        &walcast.url(),
        auth,
        &["--transports", "polling", "--headers", &headers],
    )
    .await
}

async fn via_ok(walcast: &Walcast, xff: &str) -> JsClient {
    via(walcast, xff, json!({}))
        .await
        .unwrap_or_else(|e| panic!("{xff} refused: {e}"))
}

async fn via_err(walcast: &Walcast, xff: &str, auth: Value) -> String {
    match via(walcast, xff, auth).await {
        Ok(c) => {
            c.close().await;
            panic!("{xff} connected; expected a connect_error")
        }
        Err(e) => e,
    }
}

/// Disconnects cleanly, then exits (a polling client that just exits is only noticed by the
/// server at its ping timeout).
async fn leave(mut client: JsClient) {
    client.command(json!({"cmd": "disconnect"})).await;
    client
        .next_matching("disconnect", TIMEOUT, |l| l["type"] == "disconnect")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.close().await;
}

fn lists(config: &mut Config) {
    config.security.ip_allow = vec![
        "127.0.0.1/32".into(),
        "10.0.0.0/8".into(),
        "2001:db8::/32".into(),
    ];
    config.security.ip_deny = vec!["10.66.0.0/16".into(), "2001:db8:dead::/48".into()];
}

/// With `trust_proxy` naming the local proxy: the forwarded address is checked against both
/// lists (v4 and v6), connections per IP and the lockout count per forwarded address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_lists_per_ip_limit_and_lockout_behind_a_trusted_proxy() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    lists(&mut config);
    config.security.trust_proxy = TrustProxy::Proxies(vec!["127.0.0.1".into()]);
    config.security.rate_limit.max_connections_per_ip = 2;
    config.security.lockout_max_failures = 3;
    let walcast = Walcast::start(config).await;

    // Lists: allowed v4 and v6, denied inside an allowed range, outside the allow list.
    via_ok(&walcast, "10.1.2.3").await.close().await;
    via_ok(&walcast, "2001:db8::5").await.close().await;
    assert_eq!(
        via_err(&walcast, "10.66.1.1", json!({})).await,
        "IP blacklisted"
    );
    assert_eq!(
        via_err(&walcast, "2001:db8:dead::1", json!({})).await,
        "IP blacklisted"
    );
    assert_eq!(
        via_err(&walcast, "192.0.2.1", json!({})).await,
        "IP not whitelisted"
    );
    assert_eq!(
        via_err(&walcast, "2001:db9::1", json!({})).await,
        "IP not whitelisted"
    );
    // The client's own forged first hop does not count: the trusted proxy appended the peer.
    assert_eq!(
        via_err(&walcast, "10.1.1.1, 192.0.2.7", json!({})).await,
        "IP not whitelisted"
    );
    // No header: the proxy itself.
    accepted(&walcast, json!({})).await.close().await;

    // Connections per IP: 1 (under), 2 (at), 3 (over); another IP is not affected; a slot
    // is given back on disconnect.
    let first = via_ok(&walcast, "10.0.0.1").await;
    let second = via_ok(&walcast, "10.0.0.1").await;
    assert_eq!(
        via_err(&walcast, "10.0.0.1", json!({})).await,
        "Too many connections from this IP"
    );
    let other = via_ok(&walcast, "10.0.0.2").await;
    leave(first).await;
    let third = via_ok(&walcast, "10.0.0.1").await;
    for c in [second, third, other] {
        leave(c).await;
    }

    // Lockout: 2 failures (under) still let a good handshake in; the 3rd (at) locks the
    // address; the next attempt, even a good one, is refused; another address is not.
    let bad = json!({"token": "not-a-jwt"});
    for _ in 0..2 {
        assert_eq!(
            via_err(&walcast, "10.0.0.9", bad.clone()).await,
            "Invalid token."
        );
    }
    via_ok(&walcast, "10.0.0.9").await.close().await;
    assert_eq!(
        via_err(&walcast, "10.0.0.9", bad.clone()).await,
        "Invalid token."
    );
    assert_eq!(via_err(&walcast, "10.0.0.9", json!({})).await, LOCKED);
    assert_eq!(via_err(&walcast, "10.0.0.9", bad).await, LOCKED);
    via_ok(&walcast, "10.0.0.10").await.close().await;
    assert!(
        metric_where(
            walcast.addr,
            "walcast_connections_refused_total",
            "locked_out"
        )
        .await
            >= 2.0
    );

    walcast.stop().await;
    db.drop_all().await;
}

/// `trust_proxy` off (the default): X-Forwarded-For is ignored, the TCP peer is checked.
/// Also `max_connections`, events per second and the payload limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_forwarded_for_max_connections_rate_and_size() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    lists(&mut config);
    config.security.max_connections = 3;
    config.security.rate_limit.max_events_per_second = 5;
    config.security.rate_limit.disconnect_after_refused = 3;
    config.security.max_payload_bytes = 2048;
    let walcast = Walcast::start(config).await;

    // A denied or unlisted forwarded address changes nothing: the peer 127.0.0.1 is allowed.
    let a = via_ok(&walcast, "10.66.1.1").await;
    let b = via_ok(&walcast, "192.0.2.1").await;
    // max_connections = 3: the 3rd is at the limit, the 4th over it.
    let c = accepted(&walcast, json!({})).await;
    assert_eq!(
        refused(&walcast, json!({})).await,
        "Max connections reached"
    );
    leave(a).await;
    leave(b).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut client = loop {
        match handshake_at(&walcast.url(), json!({}), &["--transports", "websocket"]).await {
            Ok(c) => break c,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no slot freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // 5 events in a second (at the limit) are answered; the 6th is refused with an ack error.
    let acks = burst(&mut client, 6, 1).await;
    assert_eq!(successes(&acks), 5, "{acks:?}");
    let limited = json!({"success": false, "error": "Rate limit exceeded"});
    assert_eq!(
        acks.iter().filter(|a| **a == limited).count(),
        1,
        "{acks:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Under the limit in a new second: all answered.
    assert_eq!(successes(&burst(&mut client, 4, 100).await), 4);

    // Payloads: just under the 2048-byte limit is answered (with the plugin's validation
    // error); just over it closes the connection.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let under = client
        .emit_with_ack(
            "presence:check",
            json!([{"uid": "x".repeat(1900), "documentId": "d"}]),
        )
        .await;
    assert_eq!(under[0]["error"], "uid and documentId are required");
    client
        .command(json!({"cmd": "emit", "event": "presence:check",
                        "args": [{"uid": "x".repeat(2100), "documentId": "d"}]}))
        .await;
    client
        .next_matching("disconnect after an oversized payload", TIMEOUT, |l| {
            l["type"] == "disconnect"
        })
        .await;
    client.close().await;

    // Repeated abuse: refused events add up until the socket is disconnected.
    let mut abuser = accepted(&walcast, json!({})).await;
    let acks = burst(&mut abuser, 8, 200).await;
    assert_eq!(successes(&acks), 5, "{acks:?}");
    abuser
        .next_matching("disconnect for abuse", TIMEOUT, |l| {
            l["type"] == "disconnect"
        })
        .await;
    assert!(metric_where(walcast.addr, "walcast_rate_limit_disconnects_total", "").await >= 1.0);
    abuser.close().await;
    c.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// Sends `n` `get-rooms` with acks without waiting in between; the acks (handlers run
/// concurrently, so in no particular order; one that never comes is `null`).
async fn burst(client: &mut JsClient, n: u64, first_id: u64) -> Vec<Value> {
    let ids = first_id..first_id + n;
    for id in ids.clone() {
        client
            .command(
                json!({"cmd": "emit", "event": "get-rooms", "args": [], "ack": true,
                            "id": id, "timeout_ms": 3000}),
            )
            .await;
    }
    let is_answer = |l: &Value, ids: &std::ops::Range<u64>| {
        matches!(l["type"].as_str(), Some("ack" | "ack_timeout"))
            && l["id"].as_u64().is_some_and(|id| ids.contains(&id))
    };
    let mut answers = 0;
    while answers < n {
        let range = ids.clone();
        client
            .next_matching("burst acks", TIMEOUT, move |l| is_answer(l, &range))
            .await;
        answers += 1;
    }
    client
        .seen
        .iter()
        .filter(|l| is_answer(l, &ids))
        .map(|l| l["args"][0].clone())
        .collect()
}

fn successes(acks: &[Value]) -> usize {
    acks.iter().filter(|a| a["success"] == true).count()
}

/// IPv6 end to end: a dual-stack listener, a client over `[::1]`; an allow list of `::1/128`
/// refuses the same client over IPv4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_peers_against_v6_cidrs() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    config.security.ip_allow = vec!["::1/128".into()];
    let taps = walcast::service::Taps {
        transactions: None,
        payloads: None,
    };
    let walcast = Walcast::start_on(config, taps, "[::]:0").await;
    let port = walcast.addr.port();
    let v6 = handshake_at(&format!("http://[::1]:{port}"), json!({}), &[])
        .await
        .expect("::1 is allowed");
    v6.close().await;
    let v4 = handshake_at(&format!("http://127.0.0.1:{port}"), json!({}), &[]).await;
    assert_eq!(v4.err().as_deref(), Some("IP not whitelisted"));
    walcast.stop().await;
    db.drop_all().await;
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Up to `max` random bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One random or malformed Engine.IO / Socket.IO text packet.
fn frame(rng: &mut Rng) -> String {
    const PREFIXES: &[&str] = &[
        "",
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "40",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "42/",
        "421",
        "4299999999999999999999",
        "451-",
        "42/admin,",
        "40/nope,",
        "2probe",
        "3probe",
    ];
    const BODIES: &[&str] = &[
        "",
        "[",
        "]",
        "[]",
        "{}",
        "null",
        "[\"subscribe-entity\"]",
        "[\"subscribe-entity\",{\"uid\":\"api::article.article\",\"id\":\"'; DROP TABLE x;--\"}]",
        "[\"subscribe-entity\",{\"uid\":{\"$ne\":1},\"id\":[1,2]}]",
        "[\"presence:join\",{\"uid\":\"api::a.a\",\"documentId\":\"d\"}]",
        "[\"presence:typing\",{\"uid\":\"api::a.a\",\"documentId\":\"d\",\"fieldName\":123}]",
        "[\"presence:check\",null]",
        "[\"join-room\",\"io-role-public\"]",
        "[\"private-message\",{\"to\":\"x\",\"message\":\"\"}]",
        "[\"get-rooms\"]",
        "[1,2,3]",
        "[\"\\ud800\"]",
        "{\"_placeholder\":true,\"num\":99999}",
        "[\"x\",{\"_placeholder\":true,\"num\":0}]",
        "\u{0}\u{1}\u{ffff}",
    ];
    match rng.below(4) {
        0 => String::from_utf8_lossy(&rng.bytes(300)).into_owned(),
        1 => format!("{}{}", rng.pick(PREFIXES), rng.pick(BODIES)),
        2 => {
            let depth = rng.below(200) as usize;
            format!(
                "42[\"get-rooms\",{}{}]",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        }
        _ => {
            let mut s = format!("{}{}", rng.pick(PREFIXES), rng.pick(BODIES));
            let cut = rng.below(s.len() as u64 + 1) as usize;
            while !s.is_char_boundary(cut.min(s.len())) {
                s.pop();
            }
            s.truncate(cut.min(s.len()));
            s
        }
    }
}

/// Opens a raw Engine.IO websocket and connects the default namespace.
async fn raw_ws(
    addr: std::net::SocketAddr,
) -> Option<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
    let _open = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .ok()??;
    ws.send(Message::text("40")).await.ok()?;
    Some(ws)
}

/// Thousands of random frames over raw websockets and raw polling POSTs: walcast stays up,
/// and a client connected throughout still receives events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_malformed_frames_do_not_hurt() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    config.security.rate_limit.max_events_per_second = 1_000;
    config.security.rate_limit.disconnect_after_refused = 1_000_000;
    let walcast = Walcast::start(config).await;
    let mut witness = JsClient::connect(&walcast.url(), json!({})).await;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let addr = walcast.addr;

    // Websockets: 3000 frames, text and binary, some over the payload limit; a connection the
    // server closes is replaced.
    let mut ws = raw_ws(addr).await.expect("raw websocket");
    let mut reopened = 0;
    for i in 0..3000 {
        let message = match rng.below(10) {
            0 => Message::binary(rng.bytes(512)),
            1 if i % 100 == 1 => Message::text("4".repeat(200_000)),
            _ => Message::text(frame(&mut rng)),
        };
        if ws.send(message).await.is_err() {
            reopened += 1;
            ws = raw_ws(addr).await.expect("walcast accepts a new websocket");
        }
        // Drain what the server says, without waiting.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::ZERO, ws.next()).await {}
    }
    drop(ws);

    // Polling: open sessions and POST random bodies to them (and to unknown sessions).
    let mut posts = 0;
    for _ in 0..50 {
        let (status, body) = http_raw(addr, "GET", "/socket.io/?EIO=4&transport=polling", &[], b"")
            .await
            .expect("polling handshake");
        assert_eq!(status, 200, "{body}");
        let sid = body
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("none")
            .to_owned();
        for j in 0..20 {
            let target = if j % 7 == 6 {
                "AAAAAAAAAAAAAAAAAAAA"
            } else {
                &sid
            };
            let mut body = frame(&mut rng).into_bytes();
            if j % 5 == 0 {
                body = format!("40\u{1e}{}", String::from_utf8_lossy(&body)).into_bytes();
            }
            if j == 19 {
                body = vec![b'4'; 150_000];
            }
            let path = format!("/socket.io/?EIO=4&transport=polling&sid={target}");
            let (status, _) = http_raw(
                addr,
                "POST",
                &path,
                &[("Content-Type", "text/plain;charset=UTF-8")],
                &body,
            )
            .await
            .expect("walcast answers every POST");
            assert!(status > 0);
            posts += 1;
        }
    }
    assert_eq!(posts, 1000);
    eprintln!("storm done: {reopened} websockets reopened");

    // Still up, and the witness still hears events.
    assert_eq!(walcast.http_get("/healthz").await.unwrap().0, 200);
    custom_event(&db, "after-storm", &[]).await;
    witness.event("after-storm", Duration::from_secs(30)).await;
    let fresh = JsClient::connect(&walcast.url(), json!({})).await;
    fresh.close().await;
    witness.close().await;
    walcast.stop().await;
    db.drop_all().await;
}
