//! Several walcast nodes through the machine's Redis (spec §6, issue 9 (3)–(5)): a client on
//! a follower receives what the leader decoded; `kill -9` of the leader during a burst loses
//! nothing for a client that resumes by offset on the node that takes over; presence is seen
//! across nodes.
//!
//! Redis: `WALCAST_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/?protocol=resp3` (`make
//! test` starts a private one when none answers there). Each test uses its own key prefix.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use crate::leader::readyz;
use crate::support::{JsClient, TestDatabase, Walcast, WalcastProcess, wait_for};

const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn redis_url() -> String {
    std::env::var("WALCAST_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/?protocol=resp3".into())
}

/// Removes the test's keys (the adapter uses channels only).
async fn forget(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, format!("{prefix}:*"))
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::AsyncCommands::del(&mut conn, keys).await.unwrap();
    }
}

async fn stream_len(prefix: &str) -> usize {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::AsyncCommands::xlen(&mut conn, format!("{prefix}:deliveries"))
        .await
        .unwrap()
}

/// A node's config: the test database, its own replay directory, the cluster's Redis.
fn node_config(
    db: &TestDatabase,
    prefix: &str,
    dir: &tempfile::TempDir,
) -> walcast::config::Config {
    let mut config = db.config();
    config.delivery.replay_dir = dir.path().join("replay");
    config.delivery.state_dir = Some(dir.path().to_owned());
    config.redis.url = Some(redis_url());
    config.redis.prefix = Some(prefix.to_owned());
    config.admin.api_key = walcast::config::Secret::new(API_KEY);
    config
}

const API_KEY: &str = "cluster-test-admin-key";

/// Issue 9 (3): two walcast nodes and Redis; a client on the follower receives the events
/// the leader decoded (with their offsets, the same as the leader's client), custom events
/// from SQL too; the follower's own replay log lets a client resume there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_the_follower_gets_what_the_leader_decoded() {
    let db = TestDatabase::new().await;
    db.grant("public", "api::tag.tag.find").await;
    let prefix = format!("walcast-test:{}", db.name);
    forget(&prefix).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Walcast::start(node_config(&db, &prefix, &dir_a)).await;
    assert_eq!(readyz(&leader).await, "ready");
    let follower = Walcast::start(node_config(&db, &prefix, &dir_b)).await;
    assert_eq!(readyz(&follower).await, "following");

    let mut on_leader = JsClient::connect(&leader.url(), json!({})).await;
    let mut on_follower = JsClient::connect(&follower.url(), json!({})).await;
    db.replay("09").await; // creates and publishes a tag
    let at_leader = on_leader.event("tag:create", EVENT_TIMEOUT).await;
    let at_follower = on_follower.event("tag:create", EVENT_TIMEOUT).await;
    assert_eq!(
        at_follower, at_leader,
        "the follower's client gets the same event, payload and offset"
    );
    assert!(at_follower[1].is_string(), "with its offset");
    assert!(
        stream_len(&prefix).await >= 1,
        "the leader published to the stream"
    );
    assert!(
        follower
            .metric("walcast_cluster_followed_deliveries_total")
            .await
            >= 1.0
    );

    // A custom event from SQL: emitted by the leader through the Socket.IO Redis adapter.
    db.client
        .batch_execute(
            "SELECT pg_logical_emit_message(true, 'walcast', '{\"event\":\"cluster:hello\",\"data\":{\"n\":1}}')",
        )
        .await
        .unwrap();
    let hello = on_follower.event("cluster:hello", EVENT_TIMEOUT).await;
    assert_eq!(hello[0], json!({"n": 1}));

    // A server helper called on the follower reaches the leader's client, and the room
    // listing of either node shows both nodes' sockets.
    let (status, body) = crate::support::http_request(
        follower.addr,
        "POST",
        "/io/raw",
        Some(API_KEY),
        Some(r#"{"event":"cluster:raw","data":{"from":"follower"}}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let raw = on_leader.event("cluster:raw", EVENT_TIMEOUT).await;
    assert_eq!(raw[0], json!({"data": {"from": "follower"}}));
    let (status, body) = crate::support::http_request(
        leader.addr,
        "GET",
        "/io/rooms/io-role-public/sockets",
        Some(API_KEY),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let members: Value = serde_json::from_str(&body).unwrap();
    let ids: BTreeSet<&str> = members["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    let want: BTreeSet<String> = [on_leader.socket_id(), on_follower.socket_id()].into();
    assert_eq!(
        ids,
        want.iter().map(String::as_str).collect(),
        "both nodes' members"
    );

    // The follower logged what it followed: a client resuming there from before the tag gets
    // it again, and nothing it may not read.
    let mut resumed = JsClient::spawn(
        &follower.url(),
        json!({"offset": "0000000000000001-0000000000"}),
        &[],
    )
    .await;
    let first = resumed
        .next_matching("a replayed event or a gap", EVENT_TIMEOUT, |l| {
            l["type"] == "event"
        })
        .await;
    assert!(
        first["name"] == "tag:create" || first["name"] == "walcast:gap",
        "{first}"
    );
    if first["name"] == "walcast:gap" {
        // The follower's log starts with what it followed: the oldest offset it names is the tag.
        assert_eq!(first["args"][0]["oldest"], at_leader[1]);
    }

    for c in [on_leader, on_follower, resumed] {
        c.close().await;
    }
    follower.stop().await;
    leader.stop().await;
    forget(&prefix).await;
    db.drop_all().await;
}

/// Inserts published tags (see [`crate::resume::insert_tags`]) on a connection of its own.
async fn insert_tags(url: &str, prefix: &str, from: i32, to: i32, per_transaction: i32) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    crate::resume::insert_tags(&client, prefix, from, to, per_transaction).await;
}

fn is_tag(l: &Value) -> bool {
    l["type"] == "event" && l["name"] == "tag:create"
}

/// Names received as `tag:create`, each with every offset it came with.
fn received(lines: &[Value]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (name, offset) in crate::resume::tag_creates(lines) {
        out.entry(name).or_default().push(offset);
    }
    out
}

/// Waits for `tag:create` events on `client` until `done` holds for what it has received
/// (from its first line on); returns that.
async fn until(
    client: &mut JsClient,
    what: &str,
    done: impl Fn(&HashMap<String, Vec<String>>) -> bool,
) -> HashMap<String, Vec<String>> {
    let mut got = received(&client.seen);
    while !done(&got) {
        let line = client
            .next_matching(what, Duration::from_secs(120), is_tag)
            .await;
        record(&mut got, &line);
    }
    got
}

/// Adds one received `tag:create` line to a [`received`] map.
fn record(got: &mut HashMap<String, Vec<String>>, line: &Value) {
    for (name, offset) in crate::resume::tag_creates(std::slice::from_ref(line)) {
        got.entry(name).or_default().push(offset);
    }
}

/// Issue 9 (4): `kill -9` of the leader (a separate `walcast` process) while 5,000 changes go
/// through. The follower takes the slot over and resumes from it. A client that was on the
/// leader reconnects to the new leader with the last offset it saw and ends up with an event
/// for every change, none missing; a client that stayed on the follower too. Any duplicate
/// (at-least-once) carries the same offset as the first copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_during_5000_changes_loses_nothing() {
    const ROWS: i32 = 5_000;
    const KILL_AFTER_EVENTS: usize = 1_000;
    let db = TestDatabase::new().await;
    db.replay_range(1, 8).await;
    db.grant("public", "api::tag.tag.find").await;
    let prefix = format!("walcast-test:{}", db.name);
    forget(&prefix).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = |dir: &tempfile::TempDir| {
        format!(
            "[delivery]\nreplay_dir = {replay:?}\nstate_dir = {state:?}\n\
             [redis]\nurl = {url:?}\nprefix = {prefix:?}\n",
            replay = dir.path().join("replay").display().to_string(),
            state = dir.path().display().to_string(),
            url = redis_url(),
        )
    };
    let leader = WalcastProcess::start(&db, &toml(&dir_a)).await;
    let follower = WalcastProcess::start(&db, &toml(&dir_b)).await;
    let (_, follower_state) = crate::support::http_get(follower.addr, "/readyz")
        .await
        .unwrap();
    assert_eq!(follower_state, "following");

    let mut on_leader = JsClient::spawn(&leader.url(), json!({}), &["--no-reconnect"]).await;
    let mut on_follower = JsClient::spawn(&follower.url(), json!({}), &["--resume"]).await;
    for c in [&mut on_leader, &mut on_follower] {
        c.next_matching("connected", EVENT_TIMEOUT, |l| l["type"] == "connected")
            .await;
    }

    let writer = {
        let url = db.url.clone();
        tokio::spawn(async move { insert_tags(&url, "k", 1, ROWS, 10).await })
    };
    let mut seen_before_kill = 0;
    while seen_before_kill < KILL_AFTER_EVENTS {
        on_leader
            .next_matching("tag:create before the kill", EVENT_TIMEOUT, is_tag)
            .await;
        seen_before_kill += 1;
    }
    leader.kill_9().await;
    let killed = std::time::Instant::now();
    let last_offset = on_leader
        .seen
        .iter()
        .rev()
        .find(|l| is_tag(l))
        .map(|l| l["args"][1].clone())
        .unwrap();
    let before_kill = received(&on_leader.seen);
    on_leader.close().await;

    // The follower takes over within seconds (Postgres must first see the walsender gone).
    wait_for("the follower to lead", Duration::from_secs(60), || async {
        crate::support::http_get(follower.addr, "/readyz")
            .await
            .is_ok_and(|(_, body)| body == "ready")
    })
    .await;
    let takeover = killed.elapsed();
    // The leader's client comes back on the new leader, resuming from its last offset.
    let mut resumed = JsClient::spawn(
        &follower.url(),
        json!({"offset": last_offset}),
        &["--resume"],
    )
    .await;
    writer.await.unwrap();

    let want: BTreeSet<String> = (1..=ROWS).map(|n| format!("k-{n}")).collect();
    // Everything after the offset it resumed from, plus what it saw before the kill.
    let after = until(&mut resumed, "tag:create after the takeover", |after| {
        let have: BTreeSet<&String> = before_kill.keys().chain(after.keys()).collect();
        have.len() >= want.len()
    })
    .await;
    let mut union: HashMap<String, Vec<String>> = before_kill.clone();
    for (name, offsets) in after {
        union.entry(name).or_default().extend(offsets);
    }
    let got: BTreeSet<String> = union.keys().cloned().collect();
    assert_eq!(
        got, want,
        "the resumed client: an event for every change, none missing"
    );
    for (name, offsets) in &union {
        assert!(
            offsets.iter().all(|o| o == &offsets[0]),
            "{name} came with different offsets: {offsets:?}"
        );
    }
    assert!(resumed.events_named("walcast:gap").is_empty());

    // The client that stayed on the follower saw every change too.
    let stayed = until(&mut on_follower, "tag:create on the follower", |got| {
        got.len() >= ROWS as usize
    })
    .await;
    let stayed: BTreeSet<String> = stayed.into_keys().collect();
    assert_eq!(stayed, want, "the follower's own client: none missing");
    assert!(follower.metric("walcast_leader_takeovers_total", "").await >= 1.0);
    eprintln!(
        "cluster kill -9: {ROWS} rows, {seen_before_kill} seen on the leader before the kill; \
         the follower led {} ms after the kill; the resumed client got {} events after it",
        takeover.as_millis(),
        resumed.seen.iter().filter(|l| is_tag(l)).count()
    );

    for c in [resumed, on_follower] {
        c.close().await;
    }
    follower.stop().await;
    forget(&prefix).await;
    db.drop_all().await;
}

/// Issue 9 (5), and the state nodes share: two admins on two nodes, with session tokens both
/// issued by the first node (the second accepts them: tokens live in Redis). Each sees the
/// other in `presence:join`'s editors and `presence:update`, typing crosses nodes, a disconnect
/// on one node updates the other; invalidating an admin's tokens through one node
/// disconnects its socket on the other; failed handshakes count on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_tokens_and_lockouts_are_shared_across_nodes() {
    use crate::auth::{accepted, refused};
    use crate::presence::{ack, admin_auth, entity, get, post, token, two_admins, update_with};

    let db = TestDatabase::new().await;
    let config = db.config();
    let (jwt1, jwt2) = two_admins(&db, &config).await;
    let prefix = format!("walcast-test:{}", db.name);
    forget(&prefix).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = |dir| {
        let mut c = node_config(&db, &prefix, dir);
        c.security.lockout_max_failures = 3;
        c
    };
    let a_node = Walcast::start(node(&dir_a)).await;
    let b_node = Walcast::start(node(&dir_b)).await;
    assert_eq!(readyz(&b_node).await, "following");

    // Both tokens from node A; the second is used on node B.
    let (token1, token2) = (token(&a_node, &jwt1).await, token(&a_node, &jwt2).await);
    let (status, stats) = get(&b_node, "/io/security/sessions", &jwt1).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        stats["data"]["activeSessions"], 2,
        "node B counts node A's tokens"
    );
    let mut a = accepted(&a_node, admin_auth(&token1)).await;
    let mut b = accepted(&b_node, admin_auth(&token2)).await;

    let a0 = a.seen.len();
    let joined = ack(&mut a, "presence:join", entity()).await;
    assert_eq!(joined["success"], true, "{joined}");
    update_with(&mut a, a0, 1).await;
    let (a1, b0) = (a.seen.len(), b.seen.len());
    let joined = ack(&mut b, "presence:join", entity()).await;
    let editors = joined["editors"].as_array().unwrap();
    assert_eq!(editors.len(), 2, "node B lists node A's editor: {joined}");
    assert_eq!(editors[0]["user"]["id"], 1);
    assert_eq!(editors[0]["socketId"], a.socket_id());
    assert_eq!(editors[1]["user"]["id"], 2);
    let update = update_with(&mut a, a1, 2).await;
    assert_eq!(update["editors"][1]["socketId"], b.socket_id());
    update_with(&mut b, b0, 2).await;

    // Typing on node B reaches the editor on node A.
    let typing =
        json!({"uid": "api::article.article", "documentId": "doc-1", "fieldName": "title"});
    b.command(json!({"cmd": "emit", "event": "presence:typing", "args": [typing]}))
        .await;
    let seen = a.event("presence:typing", EVENT_TIMEOUT).await;
    assert_eq!(seen[0]["user"]["id"], 2);

    // A heartbeat on B keeps B listed; a check on A sees both.
    let beat = ack(&mut b, "presence:heartbeat", json!({})).await;
    assert_eq!(beat["success"], true, "{beat}");
    let check = ack(&mut a, "presence:check", entity()).await;
    assert_eq!(check["editors"].as_array().unwrap().len(), 2, "{check}");

    // B disconnects: A's room learns it, and A's check lists A alone.
    let a2 = a.seen.len();
    b.command(json!({"cmd": "disconnect"})).await;
    let update = update_with(&mut a, a2, 1).await;
    assert_eq!(update["editors"][0]["user"]["id"], 1);
    b.close().await;

    // Invalidating admin 1's tokens through node B disconnects admin 1's socket on node A.
    let (status, body) = post(&b_node, "/io/security/invalidate/1", &jwt2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["invalidatedSessions"], 1, "{body}");
    assert_eq!(body["data"]["disconnectedSockets"], 1, "{body}");
    a.next_matching("admin 1 disconnected", EVENT_TIMEOUT, |l| {
        l["type"] == "disconnect"
    })
    .await;
    a.close().await;

    // Failed handshakes: two on A and one on B lock the address out on both.
    let bad = json!({"token": "not-a-jwt"});
    refused(&a_node, bad.clone()).await;
    refused(&a_node, bad.clone()).await;
    refused(&b_node, bad).await;
    assert_eq!(
        refused(&b_node, json!({})).await,
        "Too many authentication attempts. Try again later."
    );
    assert_eq!(
        refused(&a_node, json!({})).await,
        "Too many authentication attempts. Try again later."
    );

    b_node.stop().await;
    a_node.stop().await;
    forget(&prefix).await;
    db.drop_all().await;
}
