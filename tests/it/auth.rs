//! Spec §5 conformance with the official socket.io-client: the handshake table with good and
//! bad credentials (the plugin's exact `connect_error` messages), the rooms each principal
//! joins, who hears which content type and view, and permission changes applied to live
//! sockets.
//!
//! Credentials are made the way Strapi makes them: JWTs signed with the test config's secrets,
//! API tokens stored as HMAC-SHA512(salt, token) hex, admin and refresh-mode sessions as
//! `strapi_sessions` rows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use walcast::config::{Config, ContentTypeConfig, PermissionMode, StatusViews};

use crate::support::{JsClient, TestDatabase, Walcast};

/// Generous: the machine is shared; nothing here is a timing assertion.
const TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) fn sign(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A legacy users-permissions JWT (`{id}`), as `jwt.sign({id}, JWT_SECRET, {expiresIn:'30d'})`.
pub(crate) fn user_jwt(config: &Config, id: i64) -> String {
    sign(
        config.strapi.jwt_secret.expose(),
        json!({"id": id, "iat": now_secs(), "exp": now_secs() + 30 * 86400}),
    )
}

/// A session access token (`{userId, sessionId, type:'access'}`), users-permissions refresh
/// mode or admin.
pub(crate) fn access_jwt(secret: &str, user_id: i64, session_id: &str) -> String {
    sign(
        secret,
        json!({"userId": user_id.to_string(), "sessionId": session_id, "type": "access",
               "iat": now_secs(), "exp": now_secs() + 600}),
    )
}

/// A users-permissions user with the role of type `role_type`.
async fn create_user(db: &TestDatabase, id: i32, role_type: &str, confirmed: bool, blocked: bool) {
    db.client
        .execute(
            "WITH u AS (
               INSERT INTO up_users (id, document_id, username, email, provider, confirmed, blocked,
                                     created_at, updated_at, published_at)
               VALUES ($1, md5(random()::text), 'user' || $1::int, 'user' || $1::int || '@example.com',
                       'local', $3, $4, now(), now(), now()) RETURNING id)
             INSERT INTO up_users_role_lnk (user_id, role_id, user_ord)
             SELECT u.id, r.id, 1 FROM u, up_roles r WHERE r.type = $2",
            &[&id, &role_type, &confirmed, &blocked],
        )
        .await
        .unwrap();
}

/// An API token to create: content-api, never expiring, no permission rows unless changed.
pub(crate) struct Token<'a> {
    id: i32,
    name: &'a str,
    token_type: &'a str,
    kind: &'a str,
    /// SQL interval from now (negative: already expired).
    expires: Option<&'a str>,
    actions: &'a [&'a str],
}

pub(crate) fn token<'a>(id: i32, name: &'a str, token_type: &'a str) -> Token<'a> {
    Token {
        id,
        name,
        token_type,
        kind: "content-api",
        expires: None,
        actions: &[],
    }
}

/// Stores `spec` as Strapi does (access_key = HMAC-SHA512(salt, token) hex); returns the
/// plaintext token.
pub(crate) async fn create_token(db: &TestDatabase, config: &Config, spec: Token<'_>) -> String {
    let Token {
        id,
        name,
        token_type,
        kind,
        expires,
        actions,
    } = spec;
    let plaintext = format!("{name}-{id}-plaintext-token-0123456789abcdef");
    let access_key = walcast::auth::credentials::api_token_hash(
        config.strapi.api_token_salt.expose(),
        &plaintext,
    );
    db.client
        .execute(
            "INSERT INTO strapi_api_tokens (id, document_id, name, description, kind, type, access_key,
                                            expires_at, created_at, updated_at, published_at)
             VALUES ($1, md5(random()::text), $2, 'test', $3, $4, $5,
                     (now() AT TIME ZONE 'utc') + $6::text::interval, now(), now(), now())",
            &[&id, &name, &kind, &token_type, &access_key, &expires],
        )
        .await
        .unwrap();
    for action in actions {
        db.client
            .execute(
                "WITH p AS (
                   INSERT INTO strapi_api_token_permissions (document_id, action, created_at, updated_at, published_at)
                   VALUES (md5(random()::text), $2, now(), now(), now()) RETURNING id)
                 INSERT INTO strapi_api_token_permissions_token_lnk (api_token_permission_id, api_token_id, api_token_permission_ord)
                 SELECT p.id, $1, 1 FROM p",
                &[&id, action],
            )
            .await
            .unwrap();
    }
    plaintext
}

/// A live `strapi_sessions` row.
pub(crate) async fn create_session(
    db: &TestDatabase,
    id: i32,
    session_id: &str,
    user_id: i64,
    origin: &str,
) {
    db.client
        .execute(
            "INSERT INTO strapi_sessions (id, document_id, user_id, session_id, origin, expires_at,
                                          absolute_expires_at, status, type, created_at, updated_at, published_at)
             VALUES ($1, md5(random()::text), $2, $3, $4, (now() AT TIME ZONE 'utc') + interval '1 hour',
                     (now() AT TIME ZONE 'utc') + interval '1 day', 'active', 'session', now(), now(), now())",
            &[&id, &user_id.to_string(), &session_id, &origin],
        )
        .await
        .unwrap();
}

/// Connects once without reconnecting: `Ok(client)` when connected, `Err(message)` on
/// `connect_error`.
pub(crate) async fn handshake(walcast: &Walcast, auth: Value) -> Result<JsClient, String> {
    handshake_at(&walcast.url(), auth, &[]).await
}

/// [`handshake`] to `url`, with extra client arguments (`--headers`, `--transports`).
pub(crate) async fn handshake_at(
    url: &str,
    auth: Value,
    extra: &[&str],
) -> Result<JsClient, String> {
    let mut args = vec!["--no-reconnect"];
    args.extend_from_slice(extra);
    let mut client = JsClient::spawn(url, auth, &args).await;
    let line = client
        .next_matching("connected or connect_error", TIMEOUT, |l| {
            matches!(l["type"].as_str(), Some("connected" | "connect_error"))
        })
        .await;
    if line["type"] == "connected" {
        Ok(client)
    } else {
        let message = line["message"].as_str().unwrap_or_default().to_owned();
        client.close().await;
        Err(message)
    }
}

pub(crate) async fn refused(walcast: &Walcast, auth: Value) -> String {
    match handshake(walcast, auth.clone()).await {
        Ok(c) => {
            c.close().await;
            panic!("{auth} connected; expected a connect_error")
        }
        Err(message) => message,
    }
}

pub(crate) async fn accepted(walcast: &Walcast, auth: Value) -> JsClient {
    handshake(walcast, auth.clone())
        .await
        .unwrap_or_else(|e| panic!("{auth} refused with {e:?}"))
}

/// Sends the custom event `name` (to `rooms`, or everyone) through the WAL: it reaches each
/// socket after every event of earlier transactions.
pub(crate) async fn custom_event(db: &TestDatabase, name: &str, rooms: &[&str]) {
    let body = json!({"event": name, "data": {}, "rooms": rooms}).to_string();
    db.client
        .execute(
            "SELECT pg_logical_emit_message(true, 'walcast', $1::text)",
            &[&body],
        )
        .await
        .unwrap();
}

/// Whether the custom event `name` sent to `room` reaches `client`: waits for a marker sent
/// to everyone afterwards, so a room the socket is not in is a definite no.
async fn in_room(db: &TestDatabase, client: &mut JsClient, room: &str, n: u32) -> bool {
    let probe = format!("probe-{n}");
    let done = format!("probe-done-{n}");
    custom_event(db, &probe, &[room]).await;
    custom_event(db, &done, &[]).await;
    client.event(&done, TIMEOUT).await;
    !client.events_named(&probe).is_empty()
}

async fn tag(db: &TestDatabase, sql: &str, id: i32) {
    let statement = match sql {
        "create" => {
            "INSERT INTO tags (id, document_id, name, created_at, updated_at, published_at)
             VALUES ($1, md5($1::int::text), 'tag ' || $1::int, now(), now(), now())"
        }
        "update" => "UPDATE tags SET name = name || ' (edited)', updated_at = now() WHERE id = $1",
        _ => "DELETE FROM tags WHERE id = $1",
    };
    db.client.execute(statement, &[&id]).await.unwrap();
}

/// The documentIds of the events `name` a client saw.
fn names_seen(client: &JsClient, name: &str) -> usize {
    client.events_named(name).len()
}

/// Every row of the §5 handshake table, with good and bad credentials and the plugin's exact
/// messages, and the room each principal lands in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_table_with_good_and_bad_credentials() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 6).await; // admin user 1, tokens, user 1 (Authenticated)
    let config = db.config();
    create_user(&db, 101, "authenticated", true, false).await;
    create_user(&db, 102, "authenticated", true, true).await; // blocked
    create_user(&db, 103, "authenticated", false, false).await; // unconfirmed
    create_session(&db, 201, "up-session-live", 101, "users-permissions").await;
    create_session(&db, 202, "admin-session-live", 1, "admin").await;
    create_session(&db, 203, "up-session-as-admin", 1, "users-permissions").await;
    let ro = create_token(&db, &config, token(101, "RO Test", "read-only")).await;
    let expired = create_token(
        &db,
        &config,
        Token {
            expires: Some("-1 hour"),
            ..token(102, "old", "full-access")
        },
    )
    .await;
    let admin_kind = create_token(
        &db,
        &config,
        Token {
            kind: "admin",
            ..token(103, "adm", "full-access")
        },
    )
    .await;
    db.client
        .batch_execute(
            "INSERT INTO admin_users (id, document_id, firstname, email, is_active, blocked, created_at, updated_at)
             VALUES (2, md5('2'), 'Off', 'off@example.com', false, false, now(), now())",
        )
        .await
        .unwrap();
    create_session(&db, 204, "admin-session-inactive", 2, "admin").await;
    let walcast = Walcast::start(config.clone()).await;
    let up = config.strapi.jwt_secret.expose().to_owned();
    let admin = config.strapi.admin_jwt_secret.expose().to_owned();

    // No token: the Public role.
    let mut public = accepted(&walcast, json!({})).await;
    assert!(in_room(&db, &mut public, "io-role-public", 1).await);

    // users-permissions JWT, legacy and refresh mode; strategy missing or 'jwt'.
    let mut user = accepted(&walcast, json!({"token": user_jwt(&config, 101)})).await;
    assert!(in_room(&db, &mut user, "io-role-authenticated", 2).await);
    assert!(!in_room(&db, &mut user, "io-role-public", 3).await);
    accepted(
        &walcast,
        json!({"token": user_jwt(&config, 1), "strategy": "jwt"}),
    )
    .await
    .close()
    .await;
    accepted(
        &walcast,
        json!({"token": access_jwt(&up, 101, "up-session-live")}),
    )
    .await
    .close()
    .await;
    // Unconfirmed users are fine while email confirmation is off.
    accepted(&walcast, json!({"token": user_jwt(&config, 103)}))
        .await
        .close()
        .await;
    for (auth, message) in [
        (json!({"token": "forged"}), "Invalid token."),
        (
            json!({"token": sign("another secret", json!({"id": 101}))}),
            "Invalid token.",
        ),
        (
            json!({"token": sign(&up, json!({"id": 101, "exp": now_secs() - 10}))}),
            "Invalid token.",
        ),
        (
            json!({"token": user_jwt(&config, 999)}),
            "Invalid credentials",
        ),
        (
            json!({"token": user_jwt(&config, 102)}),
            "Invalid credentials",
        ),
        (
            json!({"token": access_jwt(&up, 101, "no-such-session")}),
            "Invalid token.",
        ),
        // A session of another user, and an admin session presented as a user's.
        (
            json!({"token": access_jwt(&up, 101, "up-session-as-admin")}),
            "Invalid token.",
        ),
        (
            json!({"token": access_jwt(&up, 1, "admin-session-live")}),
            "Invalid token.",
        ),
        (
            json!({"token": sign(&up, json!({"userId": "101", "sessionId": "up-session-live", "type": "refresh"}))}),
            "Invalid token.",
        ),
        (json!({"token": 42}), "Invalid token."),
    ] {
        assert_eq!(refused(&walcast, auth.clone()).await, message, "{auth}");
    }

    // API tokens: 'api-token' or any other strategy.
    let mut token = accepted(&walcast, json!({"token": ro, "strategy": "api-token"})).await;
    assert!(in_room(&db, &mut token, "io-token-ro-test", 4).await);
    accepted(&walcast, json!({"token": ro, "strategy": "bearer"}))
        .await
        .close()
        .await;
    for (auth, message) in [
        (
            json!({"token": "unknown", "strategy": "api-token"}),
            "Invalid credentials",
        ),
        (
            json!({"token": expired, "strategy": "api-token"}),
            "Token expired",
        ),
        (
            json!({"token": admin_kind, "strategy": "api-token"}),
            "Invalid credentials",
        ),
    ] {
        assert_eq!(refused(&walcast, auth.clone()).await, message, "{auth}");
    }

    // Admin access JWTs with a live session of an active admin.
    let mut admin_socket = accepted(
        &walcast,
        json!({"token": access_jwt(&admin, 1, "admin-session-live"), "strategy": "admin-jwt"}),
    )
    .await;
    assert!(in_room(&db, &mut admin_socket, "io-admin-user-1", 5).await);
    for (auth, message) in [
        (
            json!({"token": access_jwt(&admin, 1, "no-such-session"), "strategy": "admin-jwt"}),
            "Invalid token.",
        ),
        (
            json!({"token": access_jwt(&up, 1, "admin-session-live"), "strategy": "admin-jwt"}),
            "Invalid token.",
        ),
        (
            json!({"token": sign(&admin, json!({"id": 1})), "strategy": "admin-jwt"}),
            "Invalid token.",
        ),
        (
            json!({"token": access_jwt(&admin, 2, "admin-session-inactive"), "strategy": "admin-jwt"}),
            "Invalid credentials",
        ),
    ] {
        assert_eq!(refused(&walcast, auth.clone()).await, message, "{auth}");
    }

    // The draft view: admin users and tokens that may read; not roles outside draft_roles.
    let mut admin_draft = accepted(
        &walcast,
        json!({"token": access_jwt(&admin, 1, "admin-session-live"), "strategy": "admin-jwt", "status": "draft"}),
    )
    .await;
    assert!(in_room(&db, &mut admin_draft, "io-admin-user-1:draft", 6).await);
    accepted(
        &walcast,
        json!({"token": ro, "strategy": "api-token", "status": "draft"}),
    )
    .await
    .close()
    .await;
    assert_eq!(
        refused(&walcast, json!({"status": "draft"})).await,
        "Draft access denied"
    );
    assert_eq!(
        refused(
            &walcast,
            json!({"token": user_jwt(&config, 101), "status": "draft"})
        )
        .await,
        "Draft access denied"
    );

    // Email confirmation switched on in Strapi's advanced settings: unconfirmed users are
    // refused once the change is read from the WAL.
    db.client
        .execute(
            "UPDATE strapi_core_store_settings
                SET value = jsonb_set(value::jsonb, '{email_confirmation}', 'true')::text
              WHERE key = 'plugin_users-permissions_advanced'",
            &[],
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match handshake(&walcast, json!({"token": user_jwt(&config, 103)})).await {
            Err(message) => {
                assert_eq!(message, "Invalid credentials");
                break;
            }
            Ok(c) => c.close().await,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "email confirmation never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for c in [public, user, token, admin_socket, admin_draft] {
        c.close().await;
    }
    walcast.stop().await;
    db.drop_all().await;
}

/// `security.require_authentication`: no token is refused with the plugin's message; a token
/// still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_authentication_refuses_anonymous_sockets() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    config.security.require_authentication = true;
    let token = create_token(&db, &config, token(101, "ro", "read-only")).await;
    let walcast = Walcast::start(config).await;
    assert_eq!(
        refused(&walcast, json!({})).await,
        "Authentication required"
    );
    assert_eq!(
        refused(&walcast, json!({"token": ""})).await,
        "Authentication required"
    );
    accepted(&walcast, json!({"token": token, "strategy": "api-token"}))
        .await
        .close()
        .await;
    walcast.stop().await;
    db.drop_all().await;
}

fn content_type(uid: &str, status: StatusViews) -> ContentTypeConfig {
    ContentTypeConfig {
        uid: uid.into(),
        actions: walcast::config::default_actions(),
        populate: None,
        status,
    }
}

/// Who hears what: Public without `find` nothing, with it create/update/delete; a read-only
/// token every readable type; a custom token only its types; a token that may only write
/// nothing; the draft view only for sockets that asked for and may have it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 6).await; // Authenticated may read articles and comments
    let mut config = db.config();
    config.content_types = vec![
        content_type("api::tag.tag", StatusViews::Published),
        content_type("api::category.category", StatusViews::Published),
        content_type("api::article.article", StatusViews::Both),
    ];
    let ro = create_token(&db, &config, token(101, "ro", "read-only")).await;
    let tags_only = create_token(
        &db,
        &config,
        Token {
            actions: &["api::tag.tag.findOne"],
            ..token(102, "tags only", "custom")
        },
    )
    .await;
    let writer = create_token(
        &db,
        &config,
        Token {
            actions: &["api::tag.tag.create", "api::tag.tag.update"],
            ..token(103, "writer", "custom")
        },
    )
    .await;
    create_session(&db, 201, "admin-session", 1, "admin").await;
    let walcast = Walcast::start(config.clone()).await;
    let admin = access_jwt(config.strapi.admin_jwt_secret.expose(), 1, "admin-session");

    let mut public = accepted(&walcast, json!({})).await;
    let mut user = accepted(&walcast, json!({"token": user_jwt(&config, 1)})).await;
    let mut ro_pub = accepted(&walcast, json!({"token": ro, "strategy": "api-token"})).await;
    let mut ro_draft = accepted(
        &walcast,
        json!({"token": ro, "strategy": "api-token", "status": "draft"}),
    )
    .await;
    let mut tags = accepted(
        &walcast,
        json!({"token": tags_only, "strategy": "api-token"}),
    )
    .await;
    let mut writes = accepted(&walcast, json!({"token": writer, "strategy": "api-token"})).await;
    let mut admin_draft = accepted(
        &walcast,
        json!({"token": admin, "strategy": "admin-jwt", "status": "draft"}),
    )
    .await;

    // 07-08 categories, 09-10 tags, 11 media, 12 article draft, 13 draft edited,
    // 14 published through REST.
    db.replay_range(7, 14).await;
    custom_event(&db, "done", &[]).await;
    let mut clients = [
        &mut public,
        &mut user,
        &mut ro_pub,
        &mut ro_draft,
        &mut tags,
        &mut writes,
        &mut admin_draft,
    ];
    for c in clients.iter_mut() {
        c.event("done", TIMEOUT).await;
    }
    let count = |c: &JsClient| {
        (
            names_seen(c, "tag:create"),
            names_seen(c, "category:create"),
            names_seen(c, "article:create"),
            names_seen(c, "article:update"),
        )
    };
    assert_eq!(count(&public), (0, 0, 0, 0), "{:#?}", public.seen);
    assert_eq!(count(&writes), (0, 0, 0, 0), "{:#?}", writes.seen);
    assert_eq!(count(&tags), (2, 0, 0, 0), "{:#?}", tags.seen);
    // Published view: the article appears when 14 publishes it.
    assert_eq!(count(&user), (0, 0, 1, 0), "{:#?}", user.seen);
    assert_eq!(count(&ro_pub), (2, 2, 1, 0), "{:#?}", ro_pub.seen);
    // Draft view: created by 12, edited by 13 (and 14 rewrites the draft); types without
    // D&P reach draft sockets too.
    for draft in [&ro_draft, &admin_draft] {
        let (t, c, created, updated) = count(draft);
        assert_eq!((t, c, created), (2, 2, 1), "{:#?}", draft.seen);
        assert!(updated >= 1, "{:#?}", draft.seen);
        let article = &draft.events_named("article:create")[0]["args"][0];
        assert!(article["publishedAt"].is_null(), "the draft row: {article}");
    }
    let published = &ro_pub.events_named("article:create")[0]["args"][0];
    assert!(!published["publishedAt"].is_null(), "{published}");

    // Public gains find on tags: it hears create, update and delete (once the reload is in).
    db.grant("public", "api::tag.tag.find").await;
    let mut id = 1000;
    loop {
        tag(&db, "create", id).await;
        custom_event(&db, &format!("created-{id}"), &[]).await;
        public.event(&format!("created-{id}"), TIMEOUT).await;
        if names_seen(&public, "tag:create") > 0 {
            break;
        }
        id += 1;
        assert!(id < 1100, "Public never heard a tag after the grant");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tag(&db, "update", id).await;
    let args = public.event("tag:update", TIMEOUT).await;
    assert_eq!(args[0]["id"], id);
    tag(&db, "delete", id).await;
    let args = public.event("tag:delete", TIMEOUT).await;
    assert_eq!(args[0]["id"], id);
    // Deletes are permission-checked too: the writer token never hears one.
    custom_event(&db, "end", &[]).await;
    writes.event("end", TIMEOUT).await;
    assert_eq!(names_seen(&writes, "tag:delete"), 0, "{:#?}", writes.seen);

    for c in [public, user, ro_pub, ro_draft, tags, writes, admin_draft] {
        c.close().await;
    }
    walcast.stop().await;
    db.drop_all().await;
}

/// Waits until `client` stops receiving `event` for what `trigger(n)` does: each round
/// triggers, sends a marker to everyone, and looks at what arrived before the marker.
/// Returns how long it took after `start`.
async fn until_not_heard<F, Fut>(
    db: &TestDatabase,
    client: &mut JsClient,
    event: &str,
    start: tokio::time::Instant,
    mut trigger: F,
) -> Duration
where
    F: FnMut(i32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for n in 0..200 {
        let before = names_seen(client, event);
        trigger(n).await;
        let marker = format!("round-{event}-{n}");
        custom_event(db, &marker, &[]).await;
        client.event(&marker, TIMEOUT).await;
        if names_seen(client, event) == before {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{event} was still delivered after 200 rounds");
}

/// Waits for the server to disconnect `client`; returns how long it took after `start`.
async fn disconnected(client: &mut JsClient, start: tokio::time::Instant) -> Duration {
    let line = client
        .next_matching("disconnect", TIMEOUT, |l| l["type"] == "disconnect")
        .await;
    assert_eq!(line["reason"], "io server disconnect", "{line}");
    start.elapsed()
}

/// Fixture action 49 (the Authenticated role loses `comment.delete`) in `action` mode, a role
/// losing `find` in `read` mode, a blocked user, a deleted token and a revoked admin session:
/// each takes effect on live sockets (generous timeouts; the measured delays are printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_live_sockets() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 6).await; // Authenticated: comment find/create/update/delete
    let mut config = db.config();
    config.events.permissions = PermissionMode::Action;
    create_user(&db, 101, "authenticated", true, false).await;
    let full = create_token(&db, &config, token(101, "control", "full-access")).await;
    let doomed = create_token(&db, &config, token(102, "doomed", "read-only")).await;
    create_session(&db, 201, "admin-session", 1, "admin").await;
    let walcast = Walcast::start(config.clone()).await;

    let mut user = accepted(&walcast, json!({"token": user_jwt(&config, 1)})).await;
    let mut blocked = accepted(&walcast, json!({"token": user_jwt(&config, 101)})).await;
    let mut control = accepted(&walcast, json!({"token": full, "strategy": "api-token"})).await;
    let mut token = accepted(&walcast, json!({"token": doomed, "strategy": "api-token"})).await;
    let mut admin = accepted(
        &walcast,
        json!({"token": access_jwt(config.strapi.admin_jwt_secret.expose(), 1, "admin-session"),
               "strategy": "admin-jwt"}),
    )
    .await;

    let comment = |id: i32, op: &'static str| {
        let db = &db;
        async move {
            let sql = match op {
                "create" => {
                    "INSERT INTO comments (id, document_id, text, created_at, updated_at, published_at)
                     VALUES ($1, md5($1::int::text), 'c', now(), now(), now())"
                }
                _ => "DELETE FROM comments WHERE id = $1",
            };
            db.client.execute(sql, &[&id]).await.unwrap();
        }
    };
    // Before: the Authenticated role may delete comments, so (action mode) hears deletes.
    comment(1000, "create").await;
    comment(1000, "delete").await;
    user.event("comment:delete", TIMEOUT).await;

    // Action 49: PUT /users-permissions/roles/1 revoking comment.delete.
    let start = tokio::time::Instant::now();
    db.replay("49").await;
    let took = until_not_heard(&db, &mut user, "comment:delete", start, |n| async move {
        comment(1001 + n, "create").await;
        comment(1001 + n, "delete").await;
    })
    .await;
    eprintln!("role permission revoked: deletes stopped after {took:?}");
    // Still a live socket of its role: creates (still granted) arrive.
    comment(2000, "create").await;
    user.event("comment:create", TIMEOUT).await;
    control.event("comment:create", TIMEOUT).await;

    // A blocked user is disconnected.
    let start = tokio::time::Instant::now();
    db.client
        .execute("UPDATE up_users SET blocked = true WHERE id = 101", &[])
        .await
        .unwrap();
    let took = disconnected(&mut blocked, start).await;
    eprintln!("blocked user disconnected after {took:?}");

    // A deleted token is disconnected.
    let start = tokio::time::Instant::now();
    db.client
        .execute("DELETE FROM strapi_api_tokens WHERE id = 102", &[])
        .await
        .unwrap();
    let took = disconnected(&mut token, start).await;
    eprintln!("deleted token disconnected after {took:?}");

    // A revoked admin session is disconnected.
    let start = tokio::time::Instant::now();
    db.client
        .execute(
            "DELETE FROM strapi_sessions WHERE session_id = 'admin-session'",
            &[],
        )
        .await
        .unwrap();
    let took = disconnected(&mut admin, start).await;
    eprintln!("revoked admin session disconnected after {took:?}");

    // The others stay connected.
    custom_event(&db, "still-here", &[]).await;
    user.event("still-here", TIMEOUT).await;
    control.event("still-here", TIMEOUT).await;

    for c in [user, blocked, control, token, admin] {
        c.close().await;
    }
    walcast.stop().await;
    db.drop_all().await;
}

/// `read` mode: when the Public role loses `find` on tags, its live sockets stop hearing tags;
/// when a user's role changes, the socket moves to the new role's room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_losing_read_and_a_user_changing_role() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 6).await;
    db.grant("public", "api::tag.tag.find").await;
    let config = db.config();
    create_user(&db, 101, "authenticated", true, false).await;
    let walcast = Walcast::start(config.clone()).await;
    let mut public = accepted(&walcast, json!({})).await;
    let mut user = accepted(&walcast, json!({"token": user_jwt(&config, 101)})).await;

    tag(&db, "create", 1000).await;
    public.event("tag:create", TIMEOUT).await;

    let start = tokio::time::Instant::now();
    db.client
        .execute(
            "DELETE FROM up_permissions WHERE action = 'api::tag.tag.find'",
            &[],
        )
        .await
        .unwrap();
    let db_ref = &db;
    let took = until_not_heard(&db, &mut public, "tag:update", start, |_| async move {
        tag(db_ref, "update", 1000).await;
    })
    .await;
    eprintln!("read permission revoked: tag events stopped after {took:?}");

    // User 101 becomes Public-role (a role change): it moves to io-role-public.
    assert!(in_room(&db, &mut user, "io-role-authenticated", 1).await);
    db.client
        .execute(
            "UPDATE up_users_role_lnk SET role_id = (SELECT id FROM up_roles WHERE type = 'public')
              WHERE user_id = 101",
            &[],
        )
        .await
        .unwrap();
    let mut n = 2;
    while !in_room(&db, &mut user, "io-role-public", n).await {
        n += 1;
        assert!(n < 200, "the socket never moved to io-role-public");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!in_room(&db, &mut user, "io-role-authenticated", n + 1).await);

    public.close().await;
    user.close().await;
    walcast.stop().await;
    db.drop_all().await;
}
