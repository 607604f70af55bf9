//! Replication against a real Postgres: auth methods, resume, idle confirmation, messages.

use std::time::Duration;

use serde_json::json;

use crate::support::{JsClient, TestDatabase, Walcast, prepend_hba_lines, wait_for};

const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

async fn confirmed_flush(db: &TestDatabase) -> i64 {
    db.client
        .query_one(
            "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0)
}

/// While walcast's own database is idle, writes to another database only produce
/// keepalives on its slot; walcast must confirm them so its slot does not pin that WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_confirms_wal_written_elsewhere() {
    let db = TestDatabase::new().await;
    let other = TestDatabase::new().await;
    let walcast = Walcast::start(db.config()).await;
    let before = confirmed_flush(&db).await;
    other
        .client
        .batch_execute(
            "CREATE TABLE noise(x int); INSERT INTO noise SELECT generate_series(1, 20000)",
        )
        .await
        .unwrap();
    // The insert position: with synchronous_commit = off the write position may not have
    // moved yet, and could equal what walcast already confirmed.
    let target: i64 = other
        .client
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &[])
        .await
        .unwrap()
        .get(0);
    assert!(target > before);
    wait_for(
        "confirmed_flush_lsn to pass the other database's writes",
        Duration::from_secs(30),
        || async { confirmed_flush(&db).await >= target },
    )
    .await;
    walcast.stop().await;
    other.drop_all().await;
    db.drop_all().await;
}

/// A broken replication connection (the walsender terminated, as on a network loss or a
/// failover) is re-established with backoff and streaming resumes from the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_resumes_after_the_walsender_is_terminated() {
    let db = TestDatabase::new().await;
    db.grant("public", "api::tag.tag.find").await;
    let walcast = Walcast::start(db.config()).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;
    let terminated: i64 = db
        .client
        .query_one(
            "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = $1 AND active",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(terminated, 1, "walcast's walsender was running");
    // Committed while walcast is reconnecting: it must still arrive.
    db.replay("09").await;
    let args = client.event("tag:create", EVENT_TIMEOUT).await;
    assert_eq!(args[0]["name"], "rust");
    let (_, metrics) = walcast.http_get("/metrics").await.unwrap();
    let reconnects = metrics
        .lines()
        .find(|l| l.starts_with("walcast_replication_reconnects_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(reconnects >= 1.0, "{metrics}");
    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// A transactional `pg_logical_emit_message` is delivered when its transaction commits and
/// never when it rolls back; a non-transactional one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_messages_follow_their_transaction() {
    let db = TestDatabase::new().await;
    let walcast = Walcast::start(db.config()).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;
    db.client
        .batch_execute(
            "BEGIN; SELECT pg_logical_emit_message(true, 'walcast', '{\"event\":\"rolled-back\",\"data\":1}'); ROLLBACK;",
        )
        .await
        .unwrap();
    db.client
        .batch_execute(
            "SELECT pg_logical_emit_message(true, 'walcast', 'not json');
             SELECT pg_logical_emit_message(true, 'other-prefix', '{\"event\":\"foreign\"}');
             BEGIN; SELECT pg_logical_emit_message(true, 'walcast', '{\"event\":\"committed\",\"data\":{\"n\":2}}'); COMMIT;",
        )
        .await
        .unwrap();
    let args = client.event("committed", EVENT_TIMEOUT).await;
    assert_eq!(args[0], json!({"n": 2}));
    db.client
        .batch_execute("SELECT pg_logical_emit_message(false, 'walcast', '{\"event\":\"at-once\",\"data\":3}')")
        .await
        .unwrap();
    let args = client.event("at-once", EVENT_TIMEOUT).await;
    assert_eq!(args[0], json!(3));
    assert!(
        client.events_named("rolled-back").is_empty(),
        "{:#?}",
        client.seen
    );
    assert!(client.events_named("foreign").is_empty());
    let (_, metrics) = walcast.http_get("/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("walcast_custom_events_invalid_total") && !l.ends_with(" 0")),
        "bad JSON is counted: {metrics}"
    );
    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// Adds a pg_hba rule requiring `method` for `user` (kept at the top of the file) and
/// reloads the server configuration.
async fn require_auth_method(db: &TestDatabase, user: &str, method: &str) {
    prepend_hba_lines(
        &db.client,
        &[format!("host all {user} 127.0.0.1/32 {method}")],
    )
    .await;
}

/// walcast streams as a role that must authenticate with SCRAM-SHA-256 or md5, and a wrong
/// password is a clear, non-retried error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_authentication_scram_and_md5() {
    for (user, method) in [("wt_scram_user", "scram-sha-256"), ("wt_md5_user", "md5")] {
        let db = TestDatabase::new().await;
        let encryption = if method == "md5" {
            "md5"
        } else {
            "scram-sha-256"
        };
        db.ensure_role(user, "REPLICATION", Some(("s3cret pw", encryption)))
            .await;
        require_auth_method(&db, user, method).await;
        // Setup (publication, slot) as the table owner; streaming as the limited role.
        let owner_config = db.config();
        let client = walcast::service::connect_sql(&owner_config).await.unwrap();
        walcast::service::setup(&owner_config, &client)
            .await
            .unwrap();
        db.grant("public", "api::tag.tag.find").await;

        let mut config = db.config();
        let url = db
            .url
            .replacen("postgres@", &format!("{user}:s3cret%20pw@"), 1);
        config.database.url = walcast::config::Secret::new(url.clone());
        let walcast = Walcast::start(config.clone()).await;
        let mut socket = JsClient::connect(&walcast.url(), json!({})).await;
        db.replay("09").await;
        let args = socket.event("tag:create", EVENT_TIMEOUT).await;
        assert_eq!(args[0]["name"], "rust", "{method}");
        socket.close().await;
        walcast.stop().await;

        let params = walcast::replication::ConnectParams::from_config(
            &url.replace("s3cret%20pw", "wrong").parse().unwrap(),
        );
        let err = match walcast::replication::connect_for_test(&params).await {
            Ok(()) => panic!("{method}: a wrong password must be refused"),
            Err(e) => e,
        };
        assert_eq!(err.sqlstate(), Some("28P01"), "{method}: {err}");
        assert!(!err.is_transient());
        db.drop_all().await;
    }
}
