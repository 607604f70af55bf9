//! Large transactions against a real Postgres: pgoutput protocol 2 streams them before their
//! commit (the test clusters set `logical_decoding_work_mem = 64kB`), walcast buffers them in
//! bounded memory (spilling to disk), drops aborted streams and subtransactions, and resumes
//! after Postgres restarts mid-stream.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    JsClient, PrivateCluster, TestDatabase, Walcast, WalcastProcess, metric_where, replay_file,
    wait_for,
};

/// In-memory window of these tests: well below their transactions, so they spill.
const WINDOW: usize = 5_000;
/// Generous bound for floods in a debug build on a shared 2-core machine (never a timing
/// assertion: only how long to wait before calling it a hang).
const FLOOD_TIMEOUT: Duration = Duration::from_secs(300);
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// One statement inserting published tags `ids` named `<prefix> <id>`, each its own document.
fn insert_tags(ids: std::ops::RangeInclusive<u32>, prefix: &str) -> String {
    format!(
        "INSERT INTO tags (id, document_id, name, created_at, updated_at, published_at)
         SELECT g, 'bulk' || lpad(g::text, 20, '0'), '{prefix} ' || g, now(), now(), now()
           FROM generate_series({}, {}) g;",
        ids.start(),
        ids.end()
    )
}

async fn start(db: &TestDatabase, window: usize) -> (Walcast, JsClient) {
    db.grant("public", "api::tag.tag.find").await;
    let mut config = db.config();
    config.replication.max_buffered_changes = window;
    let walcast = Walcast::start(config).await;
    let client = JsClient::connect(&walcast.url(), json!({})).await;
    (walcast, client)
}

fn name_of(args: &[Value]) -> &str {
    args.first()
        .and_then(|tag| tag["name"].as_str())
        .unwrap_or_default()
}

/// The names of the `tag:create` events up to and including the one named `marker`.
async fn tag_names_until(client: &mut JsClient, marker: &str) -> Vec<String> {
    let from = client.seen.len();
    client
        .next_matching(marker, FLOOD_TIMEOUT, |l| {
            l["type"] == "event" && l["name"] == "tag:create" && l["args"][0]["name"] == marker
        })
        .await;
    client.seen[from..]
        .iter()
        .filter(|l| l["type"] == "event" && l["name"] == "tag:create")
        .map(|l| l["args"][0]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A 200,000-row transaction is streamed by Postgres, spilled by walcast beyond its window,
/// and folded, routed and emitted whole, window by window: one create event per row. walcast
/// runs as its own process here so that its metrics count only this test's work.
///
/// socket.io drops what does not fit a socket's buffer (4096 packets; the emit is counted in
/// `walcast_emit_errors_total`): a burst of 200,000 events outruns one Node client, so the
/// client's count is checked against what walcast delivered, not against the row count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200k_row_transaction_is_streamed_spilled_and_delivered_whole() {
    const ROWS: u32 = 200_000;
    let db = TestDatabase::new().await;
    db.grant("public", "api::tag.tag.find").await;
    let walcast = WalcastProcess::start(
        &db,
        &format!("[replication]\nmax_buffered_changes = {WINDOW}\n"),
    )
    .await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;
    let started = std::time::Instant::now();
    db.client
        .batch_execute(&insert_tags(1001..=1000 + ROWS, "bulk"))
        .await
        .unwrap();
    let first = client.event("tag:create", EVENT_TIMEOUT).await;
    assert_eq!(
        name_of(&first),
        "bulk 1001",
        "the first row's event comes first"
    );

    // Once every row's emit was attempted, a marker transaction; the client reads on
    // meanwhile (a client that stops reading stops its socket too).
    let addr = walcast.addr;
    let url = db.url.clone();
    let marker = tokio::spawn(async move {
        wait_for("every row emitted", FLOOD_TIMEOUT, || async {
            metric_where(addr, "walcast_deliveries_total", "").await
                + metric_where(addr, "walcast_emit_errors_total", "").await
                >= f64::from(ROWS)
        })
        .await;
        let (sql, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        sql.batch_execute(&std::fs::read_to_string(replay_file("10")).unwrap())
            .await
            .unwrap();
    });
    let received = client
        .count_events_until("tag:create", FLOOD_TIMEOUT, |args| {
            name_of(args) == "postgres"
        })
        .await
        .map(|n| n + 1); // the first one, read above
    marker.await.unwrap();
    let elapsed = started.elapsed();

    let metric = async |name: &str| walcast.metric(name, "").await;
    let events = walcast
        .metric("walcast_events_total", "uid=\"api::tag.tag\"")
        .await;
    let delivered = metric("walcast_deliveries_total").await;
    let dropped = metric("walcast_emit_errors_total").await;
    let high_water = metric("walcast_transaction_buffer_high_water").await;
    let spilled = metric("walcast_spilled_changes_total").await;
    eprintln!(
        "200k streaming test: {events} events in {:.1} s; client received {received:?}, \
         socket.io dropped {dropped}; spilled {spilled} changes, {} bytes; high water {high_water}; \
         walcast peak RSS {:?} KiB",
        elapsed.as_secs_f64(),
        metric("walcast_spilled_bytes_total").await,
        walcast.peak_rss_kib(),
    );
    assert_eq!(
        events,
        f64::from(ROWS + 1),
        "one event per row, and the marker's"
    );
    assert_eq!(delivered + dropped, events, "every event was emitted once");
    assert_eq!(
        received,
        Ok(delivered as usize),
        "the client got all that walcast handed to socket.io, the marker last"
    );
    assert!(
        high_water > 0.0 && high_water <= WINDOW as f64,
        "{high_water}"
    );
    assert!(spilled >= f64::from(ROWS) - WINDOW as f64, "{spilled}");
    assert!(metric("walcast_streamed_transactions_total").await >= 1.0);
    assert_eq!(metric("walcast_transaction_buffer_changes").await, 0.0);
    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// A streamed transaction that rolls back never produces an event, spilled or not; the
/// transaction after it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_streamed_transaction_emits_nothing() {
    let db = TestDatabase::new().await;
    let (walcast, mut client) = start(&db, WINDOW).await;
    let aborted_before = walcast.metric("walcast_aborted_streams_total").await;
    db.client
        .batch_execute(&format!(
            "BEGIN; {} ROLLBACK;",
            insert_tags(1001..=21_000, "aborted")
        ))
        .await
        .unwrap();
    db.replay("09").await;
    let names = tag_names_until(&mut client, "rust").await;
    assert_eq!(names, vec!["rust"], "no event of the rolled-back rows");
    assert!(walcast.metric("walcast_aborted_streams_total").await > aborted_before);
    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// Inside a streamed transaction, `ROLLBACK TO SAVEPOINT` drops that subtransaction's rows
/// (some already spilled) and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_subtransaction_inside_a_streamed_one_emits_nothing() {
    let db = TestDatabase::new().await;
    // A small window, so that the rolled-back rows are partly spilled, partly in memory, and
    // few enough events that no socket.io buffer overflows.
    let (walcast, mut client) = start(&db, 500).await;
    let streamed_before = walcast.metric("walcast_streamed_transactions_total").await;
    let spilled_before = walcast.metric("walcast_spilled_changes_total").await;
    db.client
        .batch_execute(&format!(
            "BEGIN; {} SAVEPOINT s; {} ROLLBACK TO SAVEPOINT s; {} COMMIT;",
            insert_tags(1001..=2000, "kept"),
            insert_tags(3001..=4000, "rolled-back"),
            insert_tags(5001..=6000, "kept"),
        ))
        .await
        .unwrap();
    db.replay("09").await;
    let names = tag_names_until(&mut client, "rust").await;
    let expected: Vec<String> = (1001..=2000)
        .chain(5001..=6000)
        .map(|id| format!("kept {id}"))
        .chain(["rust".to_owned()])
        .collect();
    assert_eq!(names.len(), expected.len());
    assert!(names == expected, "the kept rows in order, then the marker");
    assert!(walcast.metric("walcast_streamed_transactions_total").await > streamed_before);
    assert!(walcast.metric("walcast_spilled_changes_total").await > spilled_before);
    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// Postgres restarts (`pg_ctl restart -m fast`) while a large transaction is being streamed
/// and right after another committed: walcast reconnects and resumes from its slot; what was
/// committed before the restart arrives (at least once), the transaction the restart killed
/// never does, and what is written after the restart arrives. Runs on a private cluster:
/// restarting the shared one would break every other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_resumes_after_postgres_restarts_mid_stream() {
    const ROWS: u32 = 3_000;
    let cluster = PrivateCluster::start("restart").await;
    let mut db = TestDatabase::on(&cluster.base).await;
    let (walcast, mut client) = start(&db, 1_000).await;
    db.replay("09").await;
    let args = client.event("tag:create", EVENT_TIMEOUT).await;
    assert_eq!(name_of(&args), "rust", "delivered before the restart");
    let reconnects_before = walcast.metric("walcast_replication_reconnects_total").await;

    db.client
        .batch_execute(&insert_tags(1001..=1000 + ROWS, "committed"))
        .await
        .unwrap();
    // Open (streamed, never committed) when Postgres goes down.
    let (open, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    open.batch_execute(&format!(
        "BEGIN; {}",
        insert_tags(10_001..=10_000 + ROWS, "killed")
    ))
    .await
    .unwrap();
    cluster.restart().await;
    drop(open);
    db.reconnect().await;
    db.replay("10").await;

    let names = tag_names_until(&mut client, "postgres").await;
    let unique: HashSet<&str> = names.iter().map(String::as_str).collect();
    let missing: Vec<u32> = (1001..=1000 + ROWS)
        .filter(|id| !unique.contains(format!("committed {id}").as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} rows committed before the restart never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        !names.iter().any(|n| n.starts_with("killed")),
        "no event of the transaction the restart aborted"
    );
    assert_eq!(
        unique.len(),
        ROWS as usize + 1,
        "the committed rows and the marker"
    );
    assert!(
        walcast.metric("walcast_replication_reconnects_total").await > reconnects_before,
        "the restart was noticed and survived"
    );
    // The pipeline's SQL connection died with the restart too: a permission granted now must
    // still be read (the pipeline reconnects it) for the category event to reach the client.
    db.grant("public", "api::category.category.find").await;
    db.client
        .batch_execute(
            "INSERT INTO categories (document_id, name, created_at, updated_at, published_at)
             VALUES ('after-restart', 'after the restart', now(), now(), now())",
        )
        .await
        .unwrap();
    let args = client.event("category:create", EVENT_TIMEOUT).await;
    assert_eq!(name_of(&args), "after the restart");
    eprintln!(
        "restart test: {} events for {} rows (duplicates are allowed: at-least-once)",
        names.len(),
        ROWS + 1
    );
    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
    drop(cluster);
}
