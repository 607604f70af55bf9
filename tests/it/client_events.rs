//! The plugin's client → server events (spec §5, plugin-io.md §5 and its `test-all.js`
//! checklist), entity subscriptions delivered once per socket, `auth.broadcast = false`, and
//! slow consumers (spec §6) with the official socket.io-client.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{JsClient, TestDatabase, Walcast, wait_for};

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// documentId and id of the tag action 09 creates.
const RUST_TAG: &str = "i55o83u53liyyua3avl64zoj";

/// The ack of `event` with `args` (the socket.io arguments, an array).
async fn ack(client: &mut JsClient, event: &str, args: Value) -> Value {
    let mut acked = client.emit_with_ack(event, args).await;
    assert_eq!(acked.len(), 1, "one ack argument for {event}: {acked:?}");
    acked.remove(0)
}

/// The ack of `subscribe-entity` or `unsubscribe-entity` for `{uid, id}`.
async fn entity(client: &mut JsClient, event: &str, uid: &str, id: Value) -> Value {
    ack(client, event, json!([{ "uid": uid, "id": id }])).await
}

async fn subscribe(client: &mut JsClient, uid: &str, id: Value) -> Value {
    entity(client, "subscribe-entity", uid, id).await
}

/// The rooms `get-rooms` lists.
async fn rooms_of(client: &mut JsClient) -> BTreeSet<String> {
    let answer = ack(client, "get-rooms", json!([])).await;
    assert_eq!(answer["success"], true, "{answer}");
    answer["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

fn refused(error: &str) -> Value {
    json!({ "success": false, "error": error })
}

/// A custom event to every socket; a client that receives it has been sent everything emitted
/// before it (one pipeline, in WAL order).
async fn marker(db: &TestDatabase, name: &str) {
    db.client
        .execute(
            "SELECT pg_logical_emit_message(true, 'walcast', $1)",
            &[&json!({ "event": "marker", "data": { "name": name } }).to_string()],
        )
        .await
        .unwrap();
}

async fn wait_marker(client: &mut JsClient, name: &str) {
    client
        .next_matching(&format!("marker {name}"), EVENT_TIMEOUT, |l| {
            l["type"] == "event" && l["name"] == "marker" && l["args"][0]["name"] == name
        })
        .await;
}

/// `tag:update` events received so far, as (name, offset).
fn tag_updates(client: &JsClient) -> Vec<(String, String)> {
    client
        .events_named("tag:update")
        .iter()
        .map(|l| {
            (
                l["args"][0]["name"].as_str().unwrap_or_default().to_owned(),
                l["args"][1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn rename_tag(db: &TestDatabase, document_id: &str, name: &str) {
    db.client
        .execute(
            "UPDATE tags SET name = $2, updated_at = now() WHERE document_id = $1",
            &[&document_id, &name],
        )
        .await
        .unwrap();
}

async fn metric(walcast: &Walcast, name: &str) -> f64 {
    let (_, body) = walcast.http_get("/metrics").await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// test-all.js: null, string and array payloads for every handler, missing and oversize
/// fields, bad characters; handlers called without an ack callback; the exact ack strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_event_payload_is_validated() {
    let db = TestDatabase::new().await;
    let walcast = Walcast::start(db.config()).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;

    for event in ["subscribe-entity", "unsubscribe-entity"] {
        for bad in [
            json!([null]),
            json!(["api::tag.tag"]),
            json!([["api::tag.tag", 1]]),
            json!([42]),
            json!([]),
        ] {
            assert_eq!(
                ack(&mut client, event, bad.clone()).await,
                refused("Invalid payload"),
                "{event} {bad}"
            );
        }
        for (payload, error) in [
            (json!({}), "Invalid parameters: uid and id are required"),
            (
                json!({"uid": "api::tag.tag"}),
                "Invalid parameters: uid and id are required",
            ),
            (
                json!({"id": 1}),
                "Invalid parameters: uid and id are required",
            ),
            (
                json!({"uid": "", "id": ""}),
                "Invalid parameters: uid and id are required",
            ),
            (
                json!({"uid": 7, "id": 1}),
                "Invalid content type uid format",
            ),
            (
                json!({"uid": "tag", "id": 1}),
                "Invalid content type uid format",
            ),
            (
                json!({"uid": "api::tag.tag; DROP TABLE tags", "id": 1}),
                "Invalid content type uid format",
            ),
            (
                json!({"uid": format!("api::{}.x", "a".repeat(200)), "id": 1}),
                "Invalid content type uid format",
            ),
            (
                json!({"uid": "api::tag.tag", "id": "x' OR '1'='1"}),
                "Invalid entity id",
            ),
            (
                json!({"uid": "api::tag.tag", "id": "a".repeat(65)}),
                "Invalid entity id",
            ),
            (
                json!({"uid": "api::tag.tag", "id": -1}),
                "Invalid entity id",
            ),
            (
                json!({"uid": "api::tag.tag", "id": {"$ne": null}}),
                "Invalid entity id",
            ),
            (
                json!({"uid": "api::tag.tag", "id": [1]}),
                "Invalid entity id",
            ),
        ] {
            assert_eq!(
                ack(&mut client, event, json!([payload])).await,
                refused(error),
                "{event} {payload}"
            );
        }
    }
    for bad in [
        json!([null]),
        json!([["chat"]]),
        json!([{"room": "chat"}]),
        json!([""]),
        json!([]),
        json!(["r".repeat(10_000)]),
    ] {
        assert_eq!(
            ack(&mut client, "join-room", bad.clone()).await,
            refused("Invalid room name"),
            "{bad}"
        );
        assert_eq!(
            ack(&mut client, "leave-room", bad.clone()).await,
            refused("Invalid room name"),
            "{bad}"
        );
    }
    for bad in ["chat room", "chat\n", "<script>", "api::tag.tag:1"] {
        assert_eq!(
            ack(&mut client, "join-room", json!([bad])).await,
            refused("Room name contains invalid characters"),
            "{bad:?}"
        );
    }
    assert_eq!(
        ack(&mut client, "leave-room", json!(["a b"])).await,
        refused("Room name contains invalid characters")
    );
    assert_eq!(
        ack(&mut client, "join-room", json!(["chat"])).await,
        refused("Private rooms are disabled")
    );
    for payload in [
        json!([null]),
        json!(["hi"]),
        json!([["x"]]),
        json!([{"to": "x", "message": "hi"}]),
    ] {
        assert_eq!(
            ack(&mut client, "private-message", payload).await,
            refused("Private messages are disabled")
        );
    }
    // Handlers that take no payload ignore one.
    for junk in [json!([]), json!([null]), json!(["x"]), json!([[1, 2]])] {
        assert_eq!(
            ack(&mut client, "get-rooms", junk.clone()).await,
            json!({"success": true, "rooms": ["io-role-public"]})
        );
        assert_eq!(
            ack(&mut client, "get-entity-subscriptions", junk).await,
            json!({"success": true, "subscriptions": []})
        );
    }
    // Without an ack callback: no answer, no harm; the socket keeps working.
    for event in [
        "subscribe-entity",
        "unsubscribe-entity",
        "get-entity-subscriptions",
        "get-rooms",
        "join-room",
        "leave-room",
        "private-message",
    ] {
        for payload in [
            json!(null),
            json!("x"),
            json!([1]),
            json!({"uid": "api::tag.tag", "id": RUST_TAG}),
        ] {
            client
                .command(json!({"cmd": "emit", "event": event, "args": [payload]}))
                .await;
        }
    }
    assert_eq!(
        ack(&mut client, "get-rooms", json!([])).await,
        json!({"success": true, "rooms": ["io-role-public"]})
    );
    assert!(
        !client.seen.iter().any(|l| l["type"] == "disconnect"),
        "{:#?}",
        client.seen
    );

    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// subscribe-entity checks the content type, the principal's permission and the entity's
/// existence, by documentId or numeric id; the subscriptions and rooms are listed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_entity_checks_type_permission_and_existence() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 9).await;
    db.grant("public", "api::tag.tag.find").await;
    let walcast = Walcast::start(db.config()).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;
    for (uid, id, error) in [
        (
            "api::nothing.nothing",
            json!("abc"),
            "Content type not found",
        ),
        // Categories exist (action 07) but the Public role may not read them.
        (
            "api::category.category",
            json!(1),
            "Permission denied: no access to this content type",
        ),
        ("api::tag.tag", json!("nosuchdocument"), "Entity not found"),
        ("api::tag.tag", json!(999), "Entity not found"),
    ] {
        assert_eq!(
            subscribe(&mut client, uid, id.clone()).await,
            refused(error),
            "{uid} {id}"
        );
    }
    assert_eq!(
        subscribe(&mut client, "api::tag.tag", json!(RUST_TAG)).await,
        json!({"success": true, "room": format!("api::tag.tag:{RUST_TAG}"), "uid": "api::tag.tag", "id": RUST_TAG})
    );
    assert_eq!(
        subscribe(&mut client, "api::tag.tag", json!(1)).await,
        json!({"success": true, "room": "api::tag.tag:1", "uid": "api::tag.tag", "id": 1})
    );
    // Subscribing again is no error and no second subscription.
    assert_eq!(
        subscribe(&mut client, "api::tag.tag", json!("1")).await,
        json!({"success": true, "room": "api::tag.tag:1", "uid": "api::tag.tag", "id": "1"})
    );
    assert_eq!(
        ack(&mut client, "get-entity-subscriptions", json!([])).await,
        json!({"success": true, "subscriptions": [
            {"uid": "api::tag.tag", "id": RUST_TAG, "room": format!("api::tag.tag:{RUST_TAG}")},
            {"uid": "api::tag.tag", "id": "1", "room": "api::tag.tag:1"},
        ]})
    );
    let rooms = rooms_of(&mut client).await;
    let expected = format!("api::tag.tag:{RUST_TAG}");
    assert_eq!(
        rooms,
        BTreeSet::from([
            "io-role-public".to_owned(),
            "api::tag.tag:1".to_owned(),
            expected.clone()
        ])
    );
    assert_eq!(
        entity(&mut client, "unsubscribe-entity", "api::tag.tag", json!(1)).await,
        json!({"success": true, "room": "api::tag.tag:1", "uid": "api::tag.tag", "id": 1})
    );
    assert_eq!(
        ack(&mut client, "get-entity-subscriptions", json!([])).await,
        json!({"success": true, "subscriptions": [
            {"uid": "api::tag.tag", "id": RUST_TAG, "room": format!("api::tag.tag:{RUST_TAG}")},
        ]})
    );
    // Leaving the entity room ends the subscription too.
    assert_eq!(
        ack(&mut client, "leave-room", json!([expected])).await,
        json!({"success": true, "room": expected})
    );
    assert_eq!(
        ack(&mut client, "get-entity-subscriptions", json!([])).await,
        json!({"success": true, "subscriptions": []})
    );
    assert_eq!(
        ack(&mut client, "leave-room", json!(["io-role-public"])).await,
        refused("Room name is reserved")
    );

    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// At most `clients.max_subscriptions_per_socket`; with content types listed in config, only
/// those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_limited_per_socket_and_to_configured_types() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 10).await; // categories 1, 2; tags 1, 2
    db.grant("public", "api::tag.tag.find").await;
    db.grant("public", "api::category.category.find").await;
    let mut config = db.config();
    config.clients.max_subscriptions_per_socket = 2;
    config.content_types =
        walcast::config::Config::from_toml("[[content_types]]\nuid = \"api::tag.tag\"\n")
            .unwrap()
            .content_types;
    let walcast = Walcast::start(config).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;

    assert_eq!(
        subscribe(&mut client, "api::category.category", json!(1)).await,
        refused("Content type not allowed for entity subscriptions")
    );
    for id in [1, 2] {
        assert_eq!(
            subscribe(&mut client, "api::tag.tag", json!(id)).await["success"],
            true
        );
    }
    assert_eq!(
        subscribe(&mut client, "api::tag.tag", json!(RUST_TAG)).await,
        refused("Maximum subscriptions (2) reached")
    );
    // One already held is not one more.
    assert_eq!(
        subscribe(&mut client, "api::tag.tag", json!(2)).await["success"],
        true
    );
    assert_eq!(
        entity(&mut client, "unsubscribe-entity", "api::tag.tag", json!(2)).await["success"],
        true
    );
    assert_eq!(
        subscribe(&mut client, "api::tag.tag", json!(RUST_TAG)).await["success"],
        true
    );

    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// A socket in the role room and subscribed to the document (by documentId and by id) gets each
/// event once; `auth.broadcast = false` gets only what it subscribed to; a subscription does
/// not outlive the permission to read the type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_events_arrive_once_and_only_while_readable() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 10).await; // tags: 'rust' (id 1) and a second one
    db.grant("public", "api::tag.tag.find").await;
    let walcast = Walcast::start(db.config()).await;
    let url = walcast.url();
    let mut both = JsClient::connect(&url, json!({})).await;
    let mut only = JsClient::connect(&url, json!({"broadcast": false})).await;
    let mut none = JsClient::connect(&url, json!({"broadcast": false})).await;
    let rust = json!([{ "uid": "api::tag.tag", "id": RUST_TAG }]);
    let rust_by_id = json!([{ "uid": "api::tag.tag", "id": 1 }]);
    for args in [rust.clone(), rust_by_id.clone()] {
        assert_eq!(
            ack(&mut both, "subscribe-entity", args.clone()).await["success"],
            true
        );
        assert_eq!(
            ack(&mut only, "subscribe-entity", args).await["success"],
            true
        );
    }
    assert_eq!(
        ack(&mut only, "get-rooms", json!([])).await["rooms"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "a socket without broadcast is in its entity rooms only"
    );
    let other: String = db
        .client
        .query_one("SELECT document_id FROM tags WHERE id <> 1 LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);

    rename_tag(&db, RUST_TAG, "rust-2").await;
    rename_tag(&db, &other, "other-2").await;
    marker(&db, "one").await;
    for client in [&mut both, &mut only, &mut none] {
        wait_marker(client, "one").await;
    }
    let names = |c: &JsClient| {
        tag_updates(c)
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&both), ["rust-2", "other-2"], "{:#?}", both.seen);
    assert_eq!(names(&only), ["rust-2"], "{:#?}", only.seen);
    assert_eq!(names(&none), Vec::<String>::new(), "{:#?}", none.seen);

    // The Public role loses read access: the subscription stays, its events stop.
    db.client
        .execute(
            "DELETE FROM up_permissions WHERE action = 'api::tag.tag.find'",
            &[],
        )
        .await
        .unwrap();
    let other_sub = json!([{ "uid": "api::tag.tag", "id": other }]);
    let mut probe = JsClient::connect(&url, json!({})).await;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while ack(&mut probe, "subscribe-entity", other_sub.clone()).await["error"]
        != "Permission denied: no access to this content type"
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the permission reload took too long"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rename_tag(&db, RUST_TAG, "rust-3").await;
    marker(&db, "two").await;
    for client in [&mut both, &mut only] {
        wait_marker(client, "two").await;
    }
    assert_eq!(names(&both), ["rust-2", "other-2"], "{:#?}", both.seen);
    assert_eq!(names(&only), ["rust-2"], "{:#?}", only.seen);

    for client in [both, only, none, probe] {
        client.close().await;
    }
    walcast.stop().await;
    db.drop_all().await;
}

/// With private rooms and messages enabled: custom rooms can be joined and left (principal
/// rooms cannot), and a private message reaches its target with the plugin's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_and_messages_when_enabled() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    config.clients.private_rooms = true;
    config.clients.private_messages = true;
    let walcast = Walcast::start(config).await;
    let mut alice = JsClient::connect(&walcast.url(), json!({})).await;
    let mut bob = JsClient::connect(&walcast.url(), json!({})).await;

    assert_eq!(
        ack(&mut alice, "join-room", json!(["chat_1-a"])).await,
        json!({"success": true, "room": "chat_1-a"})
    );
    for reserved in ["io-role-authenticated", "IO-token-full"] {
        assert_eq!(
            ack(&mut alice, "join-room", json!([reserved])).await,
            refused("Room name is reserved")
        );
    }
    let rooms = rooms_of(&mut alice).await;
    assert_eq!(
        rooms,
        BTreeSet::from(["io-role-public".to_owned(), "chat_1-a".to_owned()])
    );
    assert_eq!(
        ack(&mut alice, "leave-room", json!(["chat_1-a"])).await,
        json!({"success": true, "room": "chat_1-a"})
    );

    let bob_id = bob.socket_id();
    for (payload, error) in [
        (json!(null), "Invalid payload"),
        (json!("hi"), "Invalid payload"),
        (json!(["hi"]), "Invalid payload"),
        (json!({"to": bob_id}), "Invalid parameters"),
        (json!({"message": "hi"}), "Invalid parameters"),
        (json!({"to": 5, "message": "hi"}), "Invalid parameters"),
        (
            json!({"to": bob_id, "message": ""}),
            "Invalid message length",
        ),
        (
            json!({"to": bob_id, "message": "x".repeat(10_001)}),
            "Invalid message length",
        ),
        (
            json!({"to": "not-a-socket", "message": "hi"}),
            "Target socket not found",
        ),
    ] {
        assert_eq!(
            ack(&mut alice, "private-message", json!([payload])).await,
            refused(error),
            "{payload}"
        );
    }
    assert_eq!(
        ack(
            &mut alice,
            "private-message",
            json!([{"to": bob_id, "message": "hello bob"}])
        )
        .await,
        json!({"success": true})
    );
    let args = bob.event("private-message", EVENT_TIMEOUT).await;
    assert_eq!(args[0]["from"], alice.socket_id());
    assert_eq!(args[0]["fromUser"], "anonymous");
    assert_eq!(args[0]["message"], "hello bob");
    assert!(args[0]["timestamp"].is_number(), "{args:?}");

    alice.close().await;
    bob.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// A client that stops reading (its process paused) fills its send queue: the events it could
/// not be given are counted, it is disconnected, and it gets them all by resuming with its
/// offset. No silent loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_resumes_without_loss() {
    let db = TestDatabase::new().await;
    db.grant("public", "api::tag.tag.find").await;
    let mut config = db.config();
    config.clients.socket_buffer_packets = 8;
    let walcast = Walcast::start(config).await;
    // Polling: with the client paused, nothing drains its queue (no TCP buffers in between).
    let mut slow = JsClient::spawn(
        &walcast.url(),
        json!({}),
        &["--no-reconnect", "--resume", "--transports", "polling"],
    )
    .await;
    slow.next_matching("connected", EVENT_TIMEOUT, |l| l["type"] == "connected")
        .await;
    let insert = |from: i32, to: i32| {
        let client = &db.client;
        async move {
            client
                .execute(
                    "INSERT INTO tags (document_id, name, created_at, updated_at, published_at)
                     SELECT 'slow-' || g, 'slow-' || g, now(), now(), now()
                       FROM generate_series($1::int, $2::int) g ORDER BY g",
                    &[&from, &to],
                )
                .await
                .unwrap();
        }
    };
    insert(0, 0).await;
    slow.next_matching("slow-0", EVENT_TIMEOUT, |l| l["name"] == "tag:create")
        .await;
    let dropped_before = metric(&walcast, "walcast_dropped_deliveries_total").await;

    let pid = slow.pid().to_string();
    let signal = |sig: &'static str| {
        let pid = pid.clone();
        async move {
            let status = tokio::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .await
                .unwrap();
            assert!(status.success(), "kill {sig} {pid}");
        }
    };
    signal("-STOP").await;
    insert(1, 40).await;
    wait_for("a dropped delivery", EVENT_TIMEOUT, || async {
        metric(&walcast, "walcast_dropped_deliveries_total").await > dropped_before
    })
    .await;
    assert!(metric(&walcast, "walcast_slow_consumer_disconnects_total").await >= 1.0);
    signal("-CONT").await;

    slow.next_matching("disconnect", EVENT_TIMEOUT, |l| l["type"] == "disconnect")
        .await;
    slow.command(json!({"cmd": "connect"})).await;
    let line = slow
        .next_matching("reconnected", EVENT_TIMEOUT, |l| l["type"] == "connected")
        .await;
    assert!(line["offset"].is_string(), "resumes with an offset: {line}");
    slow.next_matching("slow-40", EVENT_TIMEOUT, |l| {
        l["name"] == "tag:create" && l["args"][0]["name"] == "slow-40"
    })
    .await;
    let received: BTreeSet<String> = slow
        .events_named("tag:create")
        .iter()
        .filter_map(|l| l["args"][0]["name"].as_str().map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = (0..=40).map(|n| format!("slow-{n}")).collect();
    assert_eq!(received, expected);

    slow.close().await;
    walcast.stop().await;
    db.drop_all().await;
}
