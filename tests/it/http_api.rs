//! Spec §7: the admin HTTP API under `/io` (auth, the plugin's response shapes, the server
//! helpers), `PUT /io/settings` (strict, live, persisted), `/metrics` parsed as Prometheus
//! text, and the OpenAPI document listing every route.

use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::{access_jwt, create_session};
use crate::support::{JsClient, TestDatabase, Walcast, http_request, repo};

const TIMEOUT: Duration = Duration::from_secs(15);
const API_KEY: &str = "test-admin-api-key-0123456789";

/// One request; panics if it cannot be made.
pub(crate) async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    http_request(addr, method, path, bearer, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn json_ok(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<&str>,
) -> Value {
    let (status, text) = request(addr, method, path, Some(bearer), body).await;
    assert_eq!(status, 200, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}

/// A database with the admin user 1 and a live admin session; the admin's access JWT.
async fn admin_setup() -> (TestDatabase, walcast::config::Config, String) {
    let db = TestDatabase::new().await;
    db.replay_range(1, 8).await;
    db.grant("public", "api::tag.tag.find").await;
    create_session(&db, 301, "http-admin-session", 1, "admin").await;
    let mut config = db.config();
    config.admin.api_key = walcast::config::Secret::new(API_KEY);
    let jwt = access_jwt(
        config.strapi.admin_jwt_secret.expose(),
        1,
        "http-admin-session",
    );
    (db, config, jwt)
}

/// Every admin route: 401 without credentials and with a bad key or token; 200 with the API
/// key and with an admin JWT; and the plugin's response shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_authenticate_and_answer_in_the_plugins_shapes() {
    let (db, config, jwt) = admin_setup().await;
    let walcast = Walcast::start(config.clone()).await;
    let addr = walcast.addr;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;
    let sid = client.socket_id();

    let routes: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "/io/settings".into(), None),
        ("PUT", "/io/settings".into(), Some("{}".into())),
        ("GET", "/io/content-types".into(), None),
        ("GET", "/io/stats".into(), None),
        ("GET", "/io/monitoring/stats".into(), None),
        ("GET", "/io/event-log?limit=5".into(), None),
        ("POST", "/io/test-event".into(), Some(r#"{"eventName":"probe"}"#.into())),
        ("POST", "/io/reset-stats".into(), None),
        ("GET", "/io/roles".into(), None),
        ("GET", "/io/online-users".into(), None),
        ("POST", "/io/emit".into(), Some(json!({"event":"update","schema":{"singularName":"tag","uid":"api::tag.tag"},"data":{"id":1}}).to_string())),
        ("POST", "/io/raw".into(), Some(r#"{"event":"raw-probe","data":1}"#.into())),
        ("POST", "/io/rooms/join".into(), Some(json!({"socketId": sid, "room": "vip"}).to_string())),
        ("POST", "/io/rooms/leave".into(), Some(json!({"socketId": sid, "room": "nothing"}).to_string())),
        ("GET", "/io/rooms/vip/sockets".into(), None),
        ("POST", "/io/private-message".into(), Some(json!({"socketId": sid, "event": "pm", "data": {"x": 1}}).to_string())),
        ("POST", "/io/broadcast".into(), Some(json!({"socketId": sid, "event": "bc", "data": {}}).to_string())),
        ("POST", "/io/namespace-emit".into(), Some(r#"{"namespace":"/","event":"ns","data":{}}"#.into())),
        ("POST", "/io/entities/subscribe".into(), Some(json!({"socketId": sid, "uid": "api::tag.tag", "id": 1}).to_string())),
        ("GET", format!("/io/sockets/{sid}/entity-subscriptions"), None),
        ("POST", "/io/entities/emit".into(), Some(r#"{"uid":"api::tag.tag","id":1,"event":"ent","data":{"y":2}}"#.into())),
        ("GET", "/io/entities/api::tag.tag/1/sockets".into(), None),
        ("POST", "/io/entities/unsubscribe".into(), Some(json!({"socketId": sid, "uid": "api::tag.tag", "id": 1}).to_string())),
        ("POST", "/io/disconnect".into(), Some(r#"{"socketId":"nosuchsocket"}"#.into())),
    ];
    let wrong_jwt = access_jwt(config.strapi.jwt_secret.expose(), 1, "http-admin-session");
    for (method, path, body) in &routes {
        let body = body.as_deref();
        for bad in [None, Some("wrong-key"), Some(wrong_jwt.as_str())] {
            let (status, text) = request(addr, method, path, bad, body).await;
            assert_eq!(status, 401, "{method} {path} with {bad:?}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["status"], 401);
        }
        json_ok(addr, method, path, &jwt, body).await;
        json_ok(addr, method, path, API_KEY, body).await;
    }

    // Shapes.
    let settings = json_ok(addr, "GET", "/io/settings", API_KEY, None).await["data"].clone();
    for key in [
        "cors",
        "connection",
        "security",
        "monitoring",
        "presence",
        "sensitiveFields",
    ] {
        assert!(settings.get(key).is_some(), "settings.{key}: {settings}");
    }
    assert!(
        !settings.to_string().contains(API_KEY),
        "no secret in settings"
    );
    assert!(!settings.to_string().contains("test-admin-jwt-secret"));

    let types = json_ok(addr, "GET", "/io/content-types", API_KEY, None).await["data"].clone();
    let tag = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["uid"] == "api::tag.tag")
        .unwrap_or_else(|| panic!("{types}"));
    assert_eq!(tag["singularName"], "tag");
    assert!(tag["displayName"].is_string() && tag["pluralName"].is_string());
    assert!(
        types
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["uid"].as_str().unwrap().starts_with("api::"))
    );

    let stats = json_ok(addr, "GET", "/io/stats", &jwt, None).await["data"].clone();
    assert_eq!(stats["connections"]["connected"], 1);
    let socket = &stats["connections"]["sockets"][0];
    assert_eq!(socket["id"], sid.as_str());
    assert!(
        socket["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "io-role-public")
    );
    assert!(socket["handshake"]["time"].is_string());
    assert!(
        stats["connections"]["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "vip" && r["members"] == 1 && r["isEntityRoom"] == false)
    );
    assert!(stats["connections"]["entitySubscriptions"]["total"].is_number());
    for key in [
        "totalEvents",
        "eventsByType",
        "lastReset",
        "eventsPerSecond",
    ] {
        assert!(stats["events"].get(key).is_some(), "events.{key}: {stats}");
    }
    assert!(stats["events"]["eventsPerSecond"].is_number());

    let m = json_ok(addr, "GET", "/io/monitoring/stats", &jwt, None).await["data"].clone();
    assert_eq!(m["connections"]["connected"], 1);
    assert!(m["connections"]["rooms"].is_array());
    assert!(m["events"]["totalEvents"].is_number() && m["timestamp"].is_string());

    let test = json_ok(
        addr,
        "POST",
        "/io/test-event",
        API_KEY,
        Some(r#"{"eventName":"hello","data":{"a":1}}"#),
    )
    .await["data"]
        .clone();
    assert_eq!(test["success"], true);
    assert_eq!(test["eventName"], "hello");
    assert_eq!(test["data"]["a"], 1);
    assert_eq!(test["data"]["test"], true);
    assert_eq!(test["recipients"], 1);
    let args = client.event("hello", TIMEOUT).await;
    assert_eq!(args[0]["a"], 1);
    assert_eq!(args[0]["test"], true);

    let log = json_ok(addr, "GET", "/io/event-log?limit=2", API_KEY, None).await["data"].clone();
    let log = log.as_array().unwrap();
    assert!(!log.is_empty() && log.len() <= 2);
    assert!(
        log.iter()
            .all(|e| e["timestamp"].is_string() && e["type"].is_string())
    );
    let (status, _) = request(addr, "GET", "/io/event-log?limit=lots", Some(API_KEY), None).await;
    assert_eq!(status, 400);

    let reset = json_ok(addr, "POST", "/io/reset-stats", API_KEY, None).await;
    assert_eq!(reset, json!({"data": {"success": true}}));

    let roles = json_ok(addr, "GET", "/io/roles", API_KEY, None).await["data"].clone();
    assert!(
        roles
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "public"
                && r["id"].is_number()
                && r.get("description").is_some()
                && r["name"].is_string())
    );

    let online = json_ok(addr, "GET", "/io/online-users", API_KEY, None).await["data"].clone();
    assert!(online["users"].is_array());
    for key in ["total", "admins", "users", "editing"] {
        assert!(online["counts"][key].is_number(), "{online}");
    }

    // Server helpers: their return shapes and their effects on the socket.
    let helper = |path: &'static str, body: Value| {
        let body = body.to_string();
        async move { json_ok(addr, "POST", path, API_KEY, Some(&body)).await["data"].clone() }
    };
    let emitted = helper(
        "/io/emit",
        json!({"event": "update", "schema": {"singularName": "tag", "uid": "api::tag.tag"},
               "data": {"id": 9, "name": "x", "password": "hidden"}}),
    )
    .await;
    assert_eq!(emitted, Value::Null);
    let args = client.event("tag:update", TIMEOUT).await;
    assert_eq!(
        args[0],
        json!({"id": 9, "name": "x"}),
        "sensitive fields removed"
    );
    assert_eq!(
        helper("/io/rooms/join", json!({"socketId": sid, "room": "vip"})).await,
        true
    );
    assert_eq!(
        helper("/io/rooms/join", json!({"socketId": "nope", "room": "vip"})).await,
        false
    );
    let members =
        json_ok(addr, "GET", "/io/rooms/vip/sockets", API_KEY, None).await["data"].clone();
    assert_eq!(members, json!([{"id": sid, "user": null}]));
    assert_eq!(
        helper(
            "/io/raw",
            json!({"event": "to-vip", "data": {"k": 1}, "rooms": ["vip"]})
        )
        .await,
        Value::Null
    );
    assert_eq!(
        client.event("to-vip", TIMEOUT).await[0],
        json!({"data": {"k": 1}})
    );
    helper(
        "/io/private-message",
        json!({"socketId": sid, "event": "pm2", "data": {"p": 1}}),
    )
    .await;
    assert_eq!(client.event("pm2", TIMEOUT).await[0], json!({"p": 1}));
    let (status, text) = request(
        addr,
        "POST",
        "/io/private-message",
        Some(API_KEY),
        Some(r#"{"socketId":"nope","event":"x"}"#),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(
        helper("/io/rooms/leave", json!({"socketId": sid, "room": "vip"})).await,
        true
    );
    let members =
        json_ok(addr, "GET", "/io/rooms/vip/sockets", API_KEY, None).await["data"].clone();
    assert_eq!(members, json!([]));

    let sub = helper(
        "/io/entities/subscribe",
        json!({"socketId": sid, "uid": "api::tag.tag", "id": 7}),
    )
    .await;
    assert_eq!(
        sub,
        json!({"success": true, "room": "api::tag.tag:7", "uid": "api::tag.tag", "id": 7})
    );
    let missing = helper(
        "/io/entities/subscribe",
        json!({"socketId": sid, "uid": "api::nope.nope", "id": 7}),
    )
    .await;
    assert_eq!(
        missing,
        json!({"success": false, "error": "Content type not found"})
    );
    let missing = helper(
        "/io/entities/subscribe",
        json!({"socketId": "nope", "uid": "api::tag.tag", "id": 7}),
    )
    .await;
    assert_eq!(
        missing,
        json!({"success": false, "error": "Socket not found"})
    );
    let subs = json_ok(
        addr,
        "GET",
        &format!("/io/sockets/{sid}/entity-subscriptions"),
        API_KEY,
        None,
    )
    .await["data"]
        .clone();
    assert_eq!(
        subs,
        json!({"success": true, "subscriptions": [{"uid": "api::tag.tag", "id": "7", "room": "api::tag.tag:7"}]})
    );
    let room = json_ok(
        addr,
        "GET",
        "/io/entities/api::tag.tag/7/sockets",
        API_KEY,
        None,
    )
    .await["data"]
        .clone();
    assert_eq!(room, json!([{"id": sid, "user": null}]));
    helper(
        "/io/entities/emit",
        json!({"uid": "api::tag.tag", "id": 7, "event": "tag:ping", "data": {"z": 3}}),
    )
    .await;
    assert_eq!(client.event("tag:ping", TIMEOUT).await[0], json!({"z": 3}));
    let unsub = helper(
        "/io/entities/unsubscribe",
        json!({"socketId": sid, "uid": "api::tag.tag", "id": 7}),
    )
    .await;
    assert_eq!(unsub["success"], true);

    // Clear 4xx errors for bodies that are not the helper's arguments.
    for (path, body) in [
        ("/io/raw", "{not json"),
        ("/io/raw", r#"{"event":42}"#),
        ("/io/raw", r#"{"event":"x","unknown":1}"#),
        ("/io/rooms/join", r#"{"socketId":"a"}"#),
        (
            "/io/emit",
            r#"{"event":"explode","schema":{"singularName":"tag","uid":"api::tag.tag"}}"#,
        ),
        ("/io/test-event", r#"{"eventName":"bad name"}"#),
    ] {
        let (status, text) = request(addr, "POST", path, Some(API_KEY), Some(body)).await;
        assert_eq!(status, 400, "{path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"]["message"].is_string(), "{text}");
    }
    // Body size limit.
    let big = format!(r#"{{"event":"x","data":"{}"}}"#, "a".repeat(100 * 1024));
    let (status, _) = request(addr, "POST", "/io/raw", Some(API_KEY), Some(&big)).await;
    assert_eq!(status, 413);

    assert_eq!(
        helper("/io/disconnect", json!({"socketId": sid})).await,
        true
    );
    client
        .next_matching("disconnect", TIMEOUT, |l| l["type"] == "disconnect")
        .await;

    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// PUT /io/settings: 400 on an unknown key or a wrong type; a valid change applies to the
/// next event (a sensitive field added is gone from the next payload) and is saved in
/// walcast's state folder, not in Strapi's tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_strict_live_and_persisted() {
    let (db, config, jwt) = admin_setup().await;
    let walcast = Walcast::start(config.clone()).await;
    let addr = walcast.addr;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;

    for body in [
        r#"{"unknown":true}"#,
        r#"{"monitoring":{"enableEventLogging":"yes"}}"#,
        r#"{"monitoring":{"nope":1}}"#,
        r#"{"sensitiveFields":"name"}"#,
        r#"{"cors":{"origins":["*"]}}"#,
        r#"{"contentTypes":{"api::tag.tag":{"create":1}}}"#,
        "not json",
    ] {
        let (status, text) = request(addr, "PUT", "/io/settings", Some(&jwt), Some(body)).await;
        assert_eq!(status, 400, "{body}: {text}");
    }

    db.replay("09").await;
    let before = client.event("tag:create", TIMEOUT).await;
    assert!(before[0].get("name").is_some(), "{before:?}");

    let updated = json_ok(
        addr,
        "PUT",
        "/io/settings",
        &jwt,
        Some(r#"{"sensitiveFields":["name"],"monitoring":{"maxEventLogSize":10}}"#),
    )
    .await;
    assert_eq!(updated["reloaded"], true);
    assert_eq!(updated["data"]["sensitiveFields"], json!(["name"]));
    assert_eq!(updated["data"]["monitoring"]["maxEventLogSize"], 10);
    assert_eq!(
        updated["data"]["monitoring"]["enableConnectionLogging"], true,
        "deep merge"
    );

    db.replay("10").await;
    let after = client.event("tag:create", TIMEOUT).await;
    assert!(after[0].get("name").is_none(), "sensitive now: {after:?}");
    assert!(after[0].get("documentId").is_some());

    let saved = config
        .delivery
        .state_dir
        .clone()
        .unwrap()
        .join("settings.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(saved["sensitiveFields"], json!(["name"]));
    let in_strapi: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM strapi_core_store_settings WHERE key LIKE '%io%settings%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_strapi, 0, "nothing written to Strapi's tables");

    // Per-type actions: turning `create` off for tags stops tag:create at once.
    json_ok(
        addr,
        "PUT",
        "/io/settings",
        &jwt,
        Some(r#"{"contentTypes":{"api::tag.tag":{"update":true}}}"#),
    )
    .await;
    let got = json_ok(addr, "GET", "/io/settings", API_KEY, None).await;
    assert_eq!(got["data"]["contentTypes"]["api::tag.tag"]["create"], false);
    db.client
        .batch_execute(
            "INSERT INTO tags (id, document_id, name, created_at, updated_at, published_at)
             VALUES (3, 'walcasthttptesttag0000003', 'c', now(), now(), now())",
        )
        .await
        .unwrap();
    db.client
        .batch_execute("UPDATE tags SET name = 'd', updated_at = now() WHERE id = 3")
        .await
        .unwrap();
    let updated = client.event("tag:update", TIMEOUT).await;
    assert_eq!(updated[0]["id"], 3);
    assert!(
        client.events_named("tag:create").len() == 2,
        "no tag:create once create is off: {:#?}",
        client.seen
    );

    client.close().await;
    walcast.stop().await;

    // Saved settings are in force after a restart.
    let walcast = Walcast::start(config.clone()).await;
    let got = json_ok(walcast.addr, "GET", "/io/settings", API_KEY, None).await;
    assert_eq!(got["data"]["sensitiveFields"], json!(["name"]));
    walcast.stop().await;
    db.drop_all().await;
}

/// `/metrics` is valid Prometheus text with every metric the spec names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let (db, config, _) = admin_setup().await;
    let walcast = Walcast::start(config).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;
    db.replay("09").await;
    client.event("tag:create", TIMEOUT).await;
    let (status, text) = request(walcast.addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "walcast_connections",
        "walcast_rooms",
        "walcast_events_total",
        "walcast_deliveries_total",
        "walcast_dropped_deliveries_total",
        "walcast_slot_lag_bytes",
        "walcast_slot_lag_seconds",
        "walcast_wal_messages_total",
        "walcast_permission_cache_total",
        "walcast_replication_reconnects_total",
        "walcast_custom_events_total",
        "walcast_custom_events_invalid_total",
    ] {
        assert!(names.contains(name), "{name} missing from /metrics");
    }
    assert!(names.iter().all(|n| n.starts_with("walcast_")));
    let results: Vec<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "walcast_permission_cache_total")
        .filter_map(|s| s.labels.get("result"))
        .collect();
    assert!(results.contains(&"hit") && results.contains(&"miss"));

    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// Every route the code registers (each `.route("…", method(…))` under `src/`) is in
/// `/io/openapi.json`, and every documented path is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let mut registered = std::collections::BTreeSet::new();
    let mut files = vec![repo().join("src")];
    let mut sources = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            sources.push(path);
        }
    }
    for file in sources {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let rest_trimmed = rest.trim_start();
            let path = rest_trimmed
                .trim_start_matches('"')
                .split('"')
                .next()
                .unwrap();
            let call = &rest_trimmed[..rest_trimmed.find(")\n").unwrap_or(rest_trimmed.len())];
            for method in ["get", "post", "put", "delete"] {
                if call.contains(&format!("{method}(")) || call.contains(&format!(".{method}(")) {
                    registered.insert((path.to_owned(), method.to_owned()));
                }
            }
        }
    }
    assert!(registered.len() > 25, "{registered:?}");
    let doc: Value = serde_json::from_str(walcast::http::OPENAPI_JSON).unwrap();
    assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    assert_eq!(registered, documented, "router and openapi.json differ");
}
