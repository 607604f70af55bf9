//! The walking skeleton: a committed row in Strapi's Postgres reaches a real
//! socket.io-client.

use std::time::Duration;

use serde_json::json;

use crate::support::{JsClient, TestDatabase, Walcast};

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Action 09 (POST /api/tags) reaches a client that connected without a token, once the
/// Public role may read tags, with the row's name and documentId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_tag_creation_reaches_a_public_socket_io_client() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 8).await;
    db.grant("public", "api::tag.tag.find").await;
    let walcast = Walcast::start(db.config()).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;

    db.replay("09").await;
    let args = client.event("tag:create", EVENT_TIMEOUT).await;

    let row = db
        .client
        .query_one("SELECT id, document_id, name FROM tags WHERE id = 1", &[])
        .await
        .unwrap();
    let tag = &args[0];
    assert_eq!(tag["name"], row.get::<_, String>(2));
    assert_eq!(tag["documentId"], row.get::<_, String>(1));
    assert_eq!(tag["id"], row.get::<_, i32>(0));
    assert_eq!(
        tag["createdAt"], "2026-11-25T16:45:58.684Z",
        "timestamps as Strapi's REST shows them"
    );
    assert!(
        tag.get("locale").is_none(),
        "a non-localized type has no locale key"
    );
    assert!(
        args[1].is_string(),
        "the offset is the trailing argument: {args:?}"
    );

    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// Without `find` on tags, the Public role hears nothing about tags; it still hears
/// categories it may read, which proves the socket was live while the tag was created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_read_permission_hears_nothing() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 6).await;
    db.grant("public", "api::category.category.find").await;
    let walcast = Walcast::start(db.config()).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;

    db.replay("09").await; // a tag: not readable
    db.replay("07").await; // a category: readable
    let args = client.event("category:create", EVENT_TIMEOUT).await;
    assert_eq!(args[0]["name"], "News");
    assert!(
        client.events_named("tag:create").is_empty(),
        "{:#?}",
        client.seen
    );

    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// A token walcast cannot verify is refused, never downgraded to public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverifiable_token_is_refused_not_downgraded() {
    let db = TestDatabase::new().await;
    let walcast = Walcast::start(db.config()).await;
    let mut client = JsClient::spawn(
        &walcast.url(),
        json!({"token": "forged"}),
        &["--no-reconnect"],
    )
    .await;
    let line = client
        .next_matching("connect_error", EVENT_TIMEOUT, |l| {
            matches!(l["type"].as_str(), Some("connected" | "connect_error"))
        })
        .await;
    assert_eq!(line["type"], "connect_error");
    assert_eq!(line["message"], "Invalid token.");
    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// Health, readiness and metrics answer on the socket.io listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served() {
    let db = TestDatabase::new().await;
    let walcast = Walcast::start(db.config()).await;
    assert_eq!(walcast.http_get("/healthz").await.unwrap().0, 200);
    assert_eq!(walcast.http_get("/readyz").await.unwrap().0, 200);
    let (status, body) = walcast.http_get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("walcast_replication_streaming 1"), "{body}");
    walcast.stop().await;
    db.drop_all().await;
}
