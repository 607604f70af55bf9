//! Leader election: two walcast nodes on one slot. One consumes it; the other follows
//! (serving its sockets, `/readyz` says `following`) and takes over, resuming from the slot,
//! when the leader stops.

use std::time::Duration;

use serde_json::json;

use crate::support::{JsClient, TestDatabase, Walcast, wait_for};

pub(crate) async fn readyz(walcast: &Walcast) -> String {
    walcast
        .http_get("/readyz")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_the_slot_when_the_leader_stops() {
    let db = TestDatabase::new().await;
    db.grant("public", "api::tag.tag.find").await;
    let leader = Walcast::start(db.config()).await;
    assert_eq!(readyz(&leader).await, "ready");

    let follower_dir = tempfile::tempdir().unwrap();
    let mut config = db.config();
    config.delivery.replay_dir = follower_dir.path().to_owned();
    let follower = Walcast::start(config).await;
    assert_eq!(
        readyz(&follower).await,
        "following",
        "the second node does not consume the slot"
    );
    let active: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(active, 1, "one consumer of the slot");

    let mut on_leader = JsClient::connect(&leader.url(), json!({})).await;
    let mut on_follower = JsClient::connect(&follower.url(), json!({})).await;
    db.replay("09").await;
    on_leader.event("tag:create", Duration::from_secs(20)).await;

    // The leader goes away; the follower takes the lock and resumes from the slot.
    on_leader.close().await;
    leader.stop().await;
    wait_for("the follower to lead", Duration::from_secs(30), || async {
        readyz(&follower).await == "ready"
    })
    .await;
    db.replay("10").await;
    // (An event the old leader handled may come again first: delivery is at-least-once.)
    let line = on_follower
        .next_matching(
            "the write after the takeover",
            Duration::from_secs(20),
            |l| {
                l["type"] == "event"
                    && l["name"] == "tag:create"
                    && l["args"][0]["name"] == "postgres"
            },
        )
        .await;
    assert!(line["args"][1].is_string(), "with its offset");

    on_follower.close().await;
    follower.stop().await;
    db.drop_all().await;
}
