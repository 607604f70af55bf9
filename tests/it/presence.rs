//! Live presence (plugin-io.md §6.1, V5b) with two admin panels connected through admin session
//! tokens (§6.4): join, typing seen only by the other editor, leave, disconnect clean-up, the
//! public socket's refusals; and the token rules: TTL, uses, cooldown (429), statistics,
//! invalidation of a user's tokens and sockets.

use std::time::Duration;

use serde_json::{Value, json};
use walcast::config::Config;

use crate::auth::{accepted, access_jwt, create_session, handshake, refused};
use crate::support::{JsClient, TestDatabase, Walcast, http_raw};

const TIMEOUT: Duration = Duration::from_secs(15);
const ARTICLE: &str = "api::article.article";

/// Admin users 1 (from the fixture) and 2, each with a live Strapi admin session; their
/// admin access JWTs.
pub(crate) async fn two_admins(db: &TestDatabase, config: &Config) -> (String, String) {
    db.replay_range(1, 2).await;
    db.client
        .batch_execute(
            "INSERT INTO admin_users (id, document_id, firstname, lastname, username, email, is_active, blocked, created_at, updated_at)
             VALUES (2, md5('2'), 'Second', 'Editor', 'second', 'second@example.com', true, false, now(), now())",
        )
        .await
        .unwrap();
    create_session(db, 301, "presence-admin-1", 1, "admin").await;
    create_session(db, 302, "presence-admin-2", 2, "admin").await;
    let secret = config.strapi.admin_jwt_secret.expose();
    (
        access_jwt(secret, 1, "presence-admin-1"),
        access_jwt(secret, 2, "presence-admin-2"),
    )
}

/// `POST /io/presence/session` with `bearer`: (status, JSON body).
async fn new_session(walcast: &Walcast, bearer: &str) -> (u16, Value) {
    post(walcast, "/io/presence/session", bearer).await
}

pub(crate) async fn post(walcast: &Walcast, path: &str, bearer: &str) -> (u16, Value) {
    request(walcast, "POST", path, bearer).await
}

pub(crate) async fn get(walcast: &Walcast, path: &str, bearer: &str) -> (u16, Value) {
    request(walcast, "GET", path, bearer).await
}

async fn request(walcast: &Walcast, method: &str, path: &str, bearer: &str) -> (u16, Value) {
    let auth = format!("Bearer {bearer}");
    let (status, body) = http_raw(walcast.addr, method, path, &[("Authorization", &auth)], b"")
        .await
        .unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A session token for the admin behind `jwt`.
pub(crate) async fn token(walcast: &Walcast, jwt: &str) -> String {
    let (status, body) = new_session(walcast, jwt).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

pub(crate) fn admin_auth(token: &str) -> Value {
    json!({"token": token, "strategy": "admin-jwt", "isAdmin": true})
}

pub(crate) async fn ack(client: &mut JsClient, event: &str, payload: Value) -> Value {
    client
        .emit_with_ack(event, json!([payload]))
        .await
        .remove(0)
}

pub(crate) fn entity() -> Value {
    json!({"uid": ARTICLE, "documentId": "doc-1", "contentTypeName": "Article", "entryTitle": "Hello"})
}

/// The first `presence:update` with `count` editors among the lines from `from` on (already
/// seen, as the broadcast may arrive before an ack, or still to come).
pub(crate) async fn update_with(client: &mut JsClient, from: usize, count: u64) -> Value {
    let is_update = move |l: &Value| {
        l["type"] == "event" && l["name"] == "presence:update" && l["args"][0]["count"] == count
    };
    if let Some(line) = client.seen[from..].iter().find(|l| is_update(l)) {
        return line["args"][0].clone();
    }
    let line = client
        .next_matching(&format!("presence:update with {count}"), TIMEOUT, is_update)
        .await;
    line["args"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_join_type_leave_and_disconnect() {
    let db = TestDatabase::new().await;
    let config = db.config();
    let (jwt1, jwt2) = two_admins(&db, &config).await;
    let walcast = Walcast::start(config).await;
    let mut a = accepted(&walcast, admin_auth(&token(&walcast, &jwt1).await)).await;
    let mut b = accepted(&walcast, admin_auth(&token(&walcast, &jwt2).await)).await;
    let mut public = accepted(&walcast, json!({})).await;

    // Join: the ack lists the editors; everyone in the room gets presence:update.
    let (a0, b0) = (a.seen.len(), b.seen.len());
    let joined = ack(&mut a, "presence:join", entity()).await;
    assert_eq!(joined["success"], true, "{joined}");
    assert_eq!(joined["entityKey"], format!("{ARTICLE}:doc-1"));
    assert_eq!(joined["editors"][0]["user"]["id"], 1);
    update_with(&mut a, a0, 1).await;
    let a1 = a.seen.len();
    let joined = ack(&mut b, "presence:join", entity()).await;
    assert_eq!(joined["editors"].as_array().unwrap().len(), 2);
    let update = update_with(&mut a, a1, 2).await;
    assert_eq!(update["uid"], ARTICLE);
    assert_eq!(update["documentId"], "doc-1");
    let second = &update["editors"][1];
    assert_eq!(second["socketId"], b.socket_id());
    assert_eq!(second["user"]["id"], 2);
    assert_eq!(second["user"]["email"], "second@example.com");
    assert_eq!(second["user"]["firstname"], "Second");
    assert!(second["joinedAt"].is_i64());
    update_with(&mut b, b0, 2).await;

    // Heartbeat.
    let beat = b
        .emit_with_ack("presence:heartbeat", json!([]))
        .await
        .remove(0);
    assert_eq!(beat["success"], true);
    assert!(beat["lastSeen"].is_i64());

    // Typing reaches the other editor only.
    let typing = json!({"uid": ARTICLE, "documentId": "doc-1", "fieldName": "title"});
    a.command(json!({"cmd": "emit", "event": "presence:typing", "args": [typing]}))
        .await;
    let seen = b.event("presence:typing", TIMEOUT).await;
    assert_eq!(seen[0]["fieldName"], "title");
    assert_eq!(seen[0]["user"]["id"], 1);
    assert_eq!(seen[0]["documentId"], "doc-1");
    // A round trip on each socket after the typing: nothing came back to the typist, nor to
    // a socket outside the room.
    ack(&mut a, "presence:check", entity()).await;
    assert!(a.events_named("presence:typing").is_empty());

    // Public sockets: refused presence, but may check; their typing is ignored.
    let refused_join = ack(&mut public, "presence:join", entity()).await;
    assert_eq!(
        refused_join,
        json!({"success": false, "error": "Authentication required for presence"})
    );
    let beat = public
        .emit_with_ack("presence:heartbeat", json!([]))
        .await
        .remove(0);
    assert_eq!(beat["error"], "Authentication required for presence");
    public
        .command(json!({"cmd": "emit", "event": "presence:typing", "args": [typing]}))
        .await;
    let check = ack(&mut public, "presence:check", entity()).await;
    assert_eq!(check["isBeingEdited"], true);
    assert_eq!(check["editors"].as_array().unwrap().len(), 2);
    assert!(public.events_named("presence:typing").is_empty());
    assert!(public.events_named("presence:update").is_empty());
    ack(&mut b, "presence:check", entity()).await;
    assert_eq!(b.events_named("presence:typing").len(), 1);

    // Bad payloads.
    for bad in [
        json!("x"),
        json!({"uid": ARTICLE}),
        json!({"uid": ARTICLE, "documentId": "a b"}),
    ] {
        let answer = ack(&mut a, "presence:join", bad).await;
        assert_eq!(answer["success"], false, "{answer}");
    }

    // Leave: acked, the other editor sees the room shrink.
    let a2 = a.seen.len();
    let left = ack(&mut b, "presence:leave", entity()).await;
    assert_eq!(
        left,
        json!({"success": true, "entityKey": format!("{ARTICLE}:doc-1")})
    );
    let update = update_with(&mut a, a2, 1).await;
    assert_eq!(update["editors"][0]["user"]["id"], 1);

    // Disconnect: B joins again, A goes away; B sees A removed.
    let b1 = b.seen.len();
    ack(&mut b, "presence:join", entity()).await;
    update_with(&mut b, b1, 2).await;
    let b2 = b.seen.len();
    a.command(json!({"cmd": "disconnect"})).await;
    let update = update_with(&mut b, b2, 1).await;
    assert_eq!(update["editors"][0]["user"]["id"], 2);
    let check = ack(&mut public, "presence:check", entity()).await;
    assert_eq!(check["editors"].as_array().unwrap().len(), 1);

    for c in [a, b, public] {
        c.close().await;
    }
    walcast.stop().await;
    db.drop_all().await;
}

/// A registration not seen for `presence_stale_secs` is swept: its editing entries go, with a
/// broadcast, and its heartbeat is answered `Socket not registered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_registrations_are_swept() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    let (jwt1, jwt2) = two_admins(&db, &config).await;
    config.security.presence_stale_secs = 2;
    let walcast = Walcast::start(config).await;
    let mut a = accepted(&walcast, admin_auth(&jwt1)).await;
    let mut b = accepted(&walcast, admin_auth(&jwt2)).await;
    ack(&mut a, "presence:join", entity()).await;
    ack(&mut b, "presence:join", entity()).await;
    // B keeps its registration alive; A says nothing for longer than the timeout.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let beat = b
            .emit_with_ack("presence:heartbeat", json!([]))
            .await
            .remove(0);
        assert_eq!(beat["success"], true, "{beat}");
    }
    let check = ack(&mut b, "presence:check", entity()).await;
    assert_eq!(check["editors"].as_array().unwrap().len(), 1, "{check}");
    assert_eq!(check["editors"][0]["user"]["id"], 2);
    let beat = a
        .emit_with_ack("presence:heartbeat", json!([]))
        .await
        .remove(0);
    assert_eq!(
        beat,
        json!({"success": false, "error": "Socket not registered"})
    );
    let join = ack(&mut a, "presence:join", entity()).await;
    assert_eq!(join["error"], "Socket not registered for presence");
    for c in [a, b] {
        c.close().await;
    }
    walcast.stop().await;
    db.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_ttl_uses_cooldown_and_invalidation() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    let (jwt1, jwt2) = two_admins(&db, &config).await;
    // Long enough for the handshakes below on a loaded 2-core machine, short enough to wait out.
    config.security.session_ttl_secs = 20;
    config.security.session_max_uses = 3;
    config.security.session_cooldown_ms = 1_500;
    config.admin.api_key = walcast::config::Secret::new("test-admin-api-key-0123456789");
    let walcast = Walcast::start(config).await;

    // Only admins get tokens.
    let (status, body) = new_session(&walcast, "not-a-jwt").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "Admin authentication required");
    assert_eq!(
        new_session(&walcast, "test-admin-api-key-0123456789")
            .await
            .0,
        401
    );

    // The response: a UUID, expiresAt = now + TTL, refreshAfter at 70 % of it.
    let (status, body) = new_session(&walcast, &jwt1).await;
    assert_eq!(status, 200, "{body}");
    let first = body["token"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 36);
    let expires = body["expiresAt"].as_i64().unwrap();
    let refresh = body["refreshAfter"].as_i64().unwrap();
    assert_eq!(
        expires - refresh,
        6_000,
        "refreshAfter at 70 % of 20 s: {body}"
    );
    assert_eq!(body["wsPath"], "/socket.io");

    // Cooldown: at once (under 1.5 s) 429 with the plugin's message; another admin is not
    // affected; after the cooldown, 200.
    let (status, body) = new_session(&walcast, &jwt1).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["error"]["message"],
        "Please wait 2 seconds before requesting a new session"
    );
    let other = token(&walcast, &jwt2).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let second = token(&walcast, &jwt1).await;
    let (status, stats) = get(
        &walcast,
        "/io/security/sessions",
        "test-admin-api-key-0123456789",
    )
    .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["data"]["activeSessions"], 3, "{stats}");
    assert_eq!(stats["data"]["sessionTTL"], 20_000);
    assert_eq!(stats["data"]["refreshCooldown"], 1500);
    assert!(!stats.to_string().contains(&second));

    // Uses: 2 (under) and 3 (at the limit) handshakes work; the 4th does not.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(accepted(&walcast, admin_auth(&first)).await);
    }
    assert_eq!(
        refused(&walcast, admin_auth(&first)).await,
        "Invalid token."
    );
    assert_eq!(
        refused(&walcast, admin_auth("00000000-0000-4000-8000-000000000000")).await,
        "Invalid token."
    );

    // Statistics with an admin JWT too; the used-up token is gone.
    let (_, stats) = get(&walcast, "/io/security/sessions", &jwt2).await;
    assert_eq!(stats["data"]["activeSessions"], 2, "{stats}");
    assert!(stats["data"]["activeSocketConnections"].as_u64().unwrap() >= 3);
    assert_eq!(get(&walcast, "/io/security/sessions", "wrong").await.0, 401);

    // Invalidation: user 1's tokens go and its sockets are disconnected; user 2's stay.
    let (status, body) = post(&walcast, "/io/security/invalidate/abc", &jwt2).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "Invalid user ID");
    let (status, body) = post(&walcast, "/io/security/invalidate/1", &jwt2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["invalidatedSessions"], 1, "{body}");
    assert_eq!(
        body["data"]["message"],
        "Successfully invalidated 1 session(s)"
    );
    for s in &mut sockets {
        s.next_matching("disconnect", TIMEOUT, |l| l["type"] == "disconnect")
            .await;
    }
    assert_eq!(
        refused(&walcast, admin_auth(&second)).await,
        "Invalid token."
    );

    // TTL: user 2's tokens work within their 20 s and not after them.
    let early = accepted(&walcast, admin_auth(&other)).await;
    let fresh = token(&walcast, &jwt2).await;
    let in_time = accepted(&walcast, admin_auth(&fresh)).await;
    tokio::time::sleep(Duration::from_millis(20_200)).await;
    assert_eq!(
        refused(&walcast, admin_auth(&fresh)).await,
        "Invalid token."
    );
    assert_eq!(
        refused(&walcast, admin_auth(&other)).await,
        "Invalid token."
    );
    // The Strapi admin JWT itself still works with strategy admin-jwt.
    let direct = handshake(&walcast, admin_auth(&jwt2))
        .await
        .expect("admin JWT");

    for c in sockets.into_iter().chain([early, in_time, direct]) {
        c.close().await;
    }
    walcast.stop().await;
    db.drop_all().await;
}
