//! Resume with offsets (spec §6): a client that reconnects with `auth.offset` gets exactly what
//! it missed, permission-checked and in order, also across a `kill -9` of walcast; beyond the
//! replay window it gets `walcast:gap`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{JsClient, TestDatabase, Walcast, http_get, wait_for};

/// Generous bound so a stuck test fails instead of hanging; nothing asserts how fast it goes.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Inserts published tags named `<prefix>-<n>` for n in `from..=to`, `per_transaction` rows per
/// transaction (one statement each, so one commit each), in name order.
pub(crate) async fn insert_tags(
    client: &tokio_postgres::Client,
    prefix: &str,
    from: i32,
    to: i32,
    per_transaction: i32,
) {
    let mut start = from;
    while start <= to {
        let end = (start + per_transaction - 1).min(to);
        client
            .execute(
                "INSERT INTO tags (document_id, name, created_at, updated_at, published_at)
                 SELECT $1 || '-' || g, $1 || '-' || g, now(), now(), now()
                   FROM generate_series($2::int, $3::int) g ORDER BY g",
                &[&prefix, &start, &end],
            )
            .await
            .unwrap_or_else(|e| panic!("inserting tags {prefix}-{start}..{end}: {e}"));
        start = end + 1;
    }
}

/// `tag:create` events as (name, offset), in the order the client received them.
pub(crate) fn tag_creates(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|l| l["type"] == "event" && l["name"] == "tag:create")
        .map(|l| {
            (
                l["args"][0]["name"].as_str().unwrap_or_default().to_owned(),
                l["args"][1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn names(prefix: &str, from: i32, to: i32) -> Vec<String> {
    (from..=to).map(|n| format!("{prefix}-{n}")).collect()
}

async fn wait_for_tag(client: &mut JsClient, name: &str) -> Vec<Value> {
    let line = client
        .next_matching(&format!("tag:create {name}"), EVENT_TIMEOUT, |l| {
            l["type"] == "event" && l["name"] == "tag:create" && l["args"][0]["name"] == name
        })
        .await;
    line["args"].as_array().cloned().unwrap_or_default()
}

async fn wait_for_line(client: &mut JsClient, kind: &str) -> Value {
    client
        .next_matching(kind, EVENT_TIMEOUT, |l| {
            l["type"] == kind || (kind == "connected" && l["type"] == "connect_error")
        })
        .await
}

/// A walcast with two Public clients: `a`, which resumes with its last offset when told to
/// reconnect, and `witness`, always live, which shows what walcast has emitted.
struct Scene {
    db: TestDatabase,
    walcast: Walcast,
    a: JsClient,
    witness: JsClient,
}

impl Scene {
    async fn start(replay_max_events: Option<usize>) -> Self {
        let db = TestDatabase::new().await;
        db.replay_range(1, 8).await;
        db.grant("public", "api::tag.tag.find").await;
        let mut config = db.config();
        if let Some(max) = replay_max_events {
            config.delivery.replay_max_events = max;
        }
        let walcast = Walcast::start(config).await;
        let mut a =
            JsClient::spawn(&walcast.url(), json!({}), &["--resume", "--no-reconnect"]).await;
        assert_eq!(
            wait_for_line(&mut a, "connected").await["type"],
            "connected"
        );
        let witness = JsClient::connect(&walcast.url(), json!({})).await;
        Scene {
            db,
            walcast,
            a,
            witness,
        }
    }

    /// Writes `a-1..=a-<count>`, waits for A to see them, disconnects A; returns the offset A
    /// saw last and how many lines it had printed by then.
    async fn a_sees_then_leaves(&mut self, count: i32) -> (Value, usize) {
        insert_tags(&self.db.client, "a", 1, count, 1).await;
        let last_seen = wait_for_tag(&mut self.a, &format!("a-{count}")).await[1].clone();
        self.a.command(json!({"cmd": "disconnect"})).await;
        wait_for_line(&mut self.a, "disconnect").await;
        (last_seen, self.a.seen.len())
    }

    async fn stop(self, others: Vec<JsClient>) {
        for c in others.into_iter().chain([self.a, self.witness]) {
            c.close().await;
        }
        self.walcast.stop().await;
        self.db.drop_all().await;
    }
}

/// Issue 9 (1): a client offline for 200 events resumes with its last offset and receives
/// exactly those 200, in commit order, none twice, none it may not read; events written while
/// it replays follow live with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_exactly_what_it_missed_then_live() {
    let mut scene = Scene::start(None).await;
    let (last_seen, before) = scene.a_sees_then_leaves(5).await;
    let Scene {
        db,
        walcast,
        a,
        witness,
    } = &mut scene;

    // 200 events while A is away: 100 one-row transactions, 10 ten-row ones; and categories,
    // which the Public role may not read.
    insert_tags(&db.client, "b", 1, 100, 1).await;
    insert_tags(&db.client, "b", 101, 200, 10).await;
    db.client
        .batch_execute(
            "INSERT INTO categories (document_id, name, created_at, updated_at, published_at)
             SELECT 'cat-' || g, 'cat-' || g, now(), now(), now() FROM generate_series(1, 3) g",
        )
        .await
        .unwrap();
    wait_for_tag(witness, "b-200").await;

    // A comes back while more is written.
    a.command(json!({"cmd": "connect"})).await;
    let writer = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            insert_tags(&client, "c", 1, 100, 1).await;
        })
    };
    let connected = wait_for_line(a, "connected").await;
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(
        connected["offset"], last_seen,
        "the client resumed with its last offset"
    );
    wait_for_tag(a, "c-100").await;
    writer.await.unwrap();

    let after = tag_creates(&a.seen[before..]);
    let got: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
    let mut want = names("b", 1, 200);
    want.extend(names("c", 1, 100));
    assert_eq!(got, want, "exactly the missed events, then live, in order");
    let mut offsets: Vec<&str> = vec![last_seen.as_str().unwrap()];
    offsets.extend(after.iter().map(|(_, o)| o.as_str()));
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets strictly increase: {offsets:?}"
    );
    assert!(
        a.events_named("category:create").is_empty(),
        "no event the principal may not read is replayed"
    );
    assert!(a.events_named("walcast:gap").is_empty());
    let (_, metrics) = walcast.http_get("/metrics").await.unwrap();
    assert!(
        metrics.contains("walcast_replayed_events_total"),
        "{metrics}"
    );
    assert!(metrics.contains("walcast_replay_log_events"), "{metrics}");

    scene.stop(Vec::new()).await;
}

/// Issue 9 (2): an offset older than the retained window gets `walcast:gap` with the requested
/// and the oldest available offset, then live events; a malformed offset is refused; one newer
/// than anything walcast knows just goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_beyond_the_window_gets_walcast_gap_then_live() {
    let mut scene = Scene::start(Some(5)).await;
    let (last_seen, before) = scene.a_sees_then_leaves(1).await;
    let Scene {
        db,
        walcast,
        a,
        witness,
    } = &mut scene;
    insert_tags(&db.client, "b", 1, 10, 1).await;
    wait_for_tag(witness, "b-10").await;
    let oldest = witness
        .seen
        .iter()
        .find(|l| l["type"] == "event" && l["args"][0]["name"] == "b-6")
        .map(|l| l["args"][1].clone())
        .expect("the witness saw b-6");

    a.command(json!({"cmd": "connect"})).await;
    let gap = a.event("walcast:gap", EVENT_TIMEOUT).await;
    assert_eq!(gap[0], json!({"offset": last_seen, "oldest": oldest}));
    insert_tags(&db.client, "c", 1, 1, 1).await;
    wait_for_tag(a, "c-1").await;
    let after: Vec<String> = tag_creates(&a.seen[before..])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(after, vec!["c-1"], "after a gap: live only");

    for bad in [json!("nope"), json!(42), json!("0000000000000001")] {
        let mut c =
            JsClient::spawn(&walcast.url(), json!({"offset": bad}), &["--no-reconnect"]).await;
        let line = wait_for_line(&mut c, "connected").await;
        assert_eq!(line["type"], "connect_error", "offset {bad}: {line}");
        assert_eq!(line["message"], "Invalid offset");
        c.close().await;
    }

    let mut ahead =
        JsClient::connect(&walcast.url(), json!({"offset": "7FFFFFFFFFFFFFFF-00000"})).await;
    insert_tags(&db.client, "d", 1, 1, 1).await;
    wait_for_tag(&mut ahead, "d-1").await;
    assert!(ahead.events_named("walcast:gap").is_empty());

    scene.stop(vec![ahead]).await;
}

/// The `walcast` binary as a child process with its own config file, port and replay log.
struct WalcastProcess {
    child: tokio::process::Child,
}

impl WalcastProcess {
    async fn start(config: &Path, addr: SocketAddr, log: &Path) -> Self {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_walcast"));
        for key in walcast::config::ENVIRONMENT_KEYS {
            command.env_remove(key);
        }
        let child = command
            .env_remove("WALCAST_CONFIG")
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning the walcast binary");
        let process = WalcastProcess { child };
        wait_for("walcast (process) /readyz", EVENT_TIMEOUT, || async {
            http_get(addr, "/readyz")
                .await
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        })
        .await;
        process
    }

    /// SIGKILL, as `kill -9`: no shutdown code runs.
    async fn kill_9(mut self) {
        self.child.start_kill().expect("sending SIGKILL");
        self.child.wait().await.expect("reaping walcast");
    }

    async fn stop(mut self) {
        let pid = self.child.id().expect("walcast is running") as i32;
        // SIGTERM: a clean shutdown.
        std::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap();
        let _ = tokio::time::timeout(EVENT_TIMEOUT, self.child.wait()).await;
    }
}

/// Issue 3's acceptance test: `kill -9` of walcast while 10,000 rows are written, then a
/// restart on the same port and replay directory. A client that reconnects with the last
/// offset it saw (socket.io-client's own reconnection, `auth.offset` updated) ends up with an
/// event for every row, none missing, in offset order; any duplicate carries the offset of the
/// first copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_10000_row_replay_loses_nothing() {
    const ROWS: i32 = 10_000;
    const ROWS_PER_TRANSACTION: i32 = 10;
    const KILL_AFTER_EVENTS: usize = 2_000;

    let db = TestDatabase::new().await;
    db.replay_range(1, 8).await;
    db.grant("public", "api::tag.tag.find").await;
    let work = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config_path = work.path().join("walcast.toml");
    let replay_dir = work.path().join("replay");
    std::fs::write(
        &config_path,
        format!(
            "[database]\nurl = {url:?}\n\
             [replication]\nslot = {slot:?}\npublication = {slot:?}\n\
             [server]\nlisten = \"{addr}\"\n\
             [strapi]\njwt_secret = \"test-users-permissions-jwt-secret-0123456789\"\n\
             api_token_salt = \"test-api-token-salt-0123456789\"\n\
             admin_jwt_secret = \"test-admin-jwt-secret-0123456789\"\n\
             [delivery]\nreplay_dir = {dir:?}\n",
            url = db.url,
            slot = db.name,
            dir = replay_dir.display().to_string(),
        ),
    )
    .unwrap();
    let log = work.path().join("walcast.log");

    let walcast = WalcastProcess::start(&config_path, addr, &log).await;
    let url = format!("http://{addr}");
    let mut client = JsClient::spawn(&url, json!({}), &["--resume"]).await;
    assert_eq!(
        wait_for_line(&mut client, "connected").await["type"],
        "connected"
    );

    let writer = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            insert_tags(&client, "k", 1, ROWS, ROWS_PER_TRANSACTION).await;
        })
    };

    // Until the client has seen some of the rows, but not all: then kill -9.
    let is_tag = |l: &Value| l["type"] == "event" && l["name"] == "tag:create";
    let mut seen_before_kill = 0;
    while seen_before_kill < KILL_AFTER_EVENTS {
        client
            .next_matching("tag:create before the kill", EVENT_TIMEOUT, is_tag)
            .await;
        seen_before_kill += 1;
    }
    walcast.kill_9().await;
    let killed_at = client.seen.len();

    // Postgres notices the dead walsender; then the same binary, port and replay directory.
    let admin = &db.client;
    wait_for("the slot to be released", EVENT_TIMEOUT, || async {
        admin
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
                &[&db.name],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let walcast = WalcastProcess::start(&config_path, addr, &log).await;

    let mut received: HashMap<String, Vec<String>> = HashMap::new();
    for (name, offset) in tag_creates(&client.seen) {
        received.entry(name).or_default().push(offset);
    }
    while received.len() < ROWS as usize {
        let line = client
            .next_matching(
                "tag:create after the restart",
                Duration::from_secs(120),
                is_tag,
            )
            .await;
        received
            .entry(
                line["args"][0]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default()
            .push(line["args"][1].as_str().unwrap_or_default().to_owned());
    }
    writer.await.unwrap();

    let want: BTreeSet<String> = names("k", 1, ROWS).into_iter().collect();
    let got: BTreeSet<String> = received.keys().cloned().collect();
    assert_eq!(got, want, "an event for every row, none missing");
    let mut duplicates = 0;
    for (name, offsets) in &received {
        duplicates += offsets.len() - 1;
        assert!(
            offsets.iter().all(|o| o == &offsets[0]),
            "{name} was delivered with different offsets: {offsets:?}"
        );
    }
    let stream = tag_creates(&client.seen);
    let mut distinct: Vec<&str> = stream.iter().map(|(_, o)| o.as_str()).collect();
    distinct.dedup();
    assert!(
        distinct.windows(2).all(|w| w[0] < w[1]),
        "events arrive in offset order across the restart"
    );
    let reconnects: Vec<&Value> = client.seen[killed_at..]
        .iter()
        .filter(|l| l["type"] == "connected")
        .collect();
    assert!(
        reconnects.iter().all(|l| l["offset"].is_string()),
        "the client reconnected with its last offset: {reconnects:?}"
    );
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or("")
            .to_owned()
    };
    eprintln!(
        "kill -9 test: {ROWS} rows, client saw {seen_before_kill} before the kill; \
         duplicates {duplicates}; after restart: {}, {}, {}",
        metric("walcast_replayed_events_total"),
        metric("walcast_replay_log_events"),
        metric("walcast_replay_log_bytes"),
    );
    let walcast_log = std::fs::read_to_string(&log).unwrap_or_default();
    for line in walcast_log.lines().filter(|l| l.contains("replay")) {
        eprintln!("  walcast: {line}");
    }
    assert!(client.events_named("walcast:gap").is_empty());

    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}

/// A replay log left by another cluster (its last offset far beyond this cluster's WAL) is
/// not taken for this one's: without the `IDENTITY` check every new event would look already
/// logged and be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_log_of_another_cluster_is_not_reused() {
    use std::sync::Arc;
    use walcast::assemble::{Action, EventOffset};
    use walcast::deliver::{ReplayLimits, ReplayLog};
    use walcast::replication::Lsn;
    use walcast::route::Delivery;

    let db = TestDatabase::new().await;
    db.grant("public", "api::tag.tag.find").await;
    let config = db.config();
    let dir = config.delivery.replay_dir.clone();
    {
        let foreign = ReplayLog::open(&dir, ReplayLimits::from_config(&config.delivery)).unwrap();
        let payload: walcast::route::SharedPayload =
            Arc::from(serde_json::value::RawValue::from_string("{}".into()).unwrap());
        foreign
            .append(vec![Delivery {
                event_name: "tag:create".into(),
                rooms: vec!["io-role-public".into()],
                payload,
                offset: EventOffset {
                    commit_lsn: Lsn(u64::MAX / 2),
                    sequence: 0,
                },
                uid: Arc::from("api::tag.tag"),
                action: Action::Create,
                entity_rooms: vec![],
            }])
            .unwrap();
    }
    std::fs::write(
        dir.join("IDENTITY"),
        "system 1 database elsewhere slot walcast\n",
    )
    .unwrap();

    let walcast = Walcast::start(config).await;
    let mut client = JsClient::connect(&walcast.url(), json!({})).await;
    db.replay("09").await;
    let args = client.event("tag:create", EVENT_TIMEOUT).await;
    assert_eq!(args[0]["name"], "rust", "this cluster's event got through");
    let identity = std::fs::read_to_string(dir.join("IDENTITY")).unwrap();
    assert!(
        identity.contains(&format!("slot {}", db.name)),
        "the folder now names this slot: {identity}"
    );
    client.close().await;
    walcast.stop().await;
    db.drop_all().await;
}
