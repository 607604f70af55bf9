//! Test support shared by every integration test: a private Postgres cluster, a fresh
//! Strapi database per test, replay of the captured Strapi actions, an in-process walcast,
//! and real `socket.io-client` processes (Node) driven over JSON lines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use walcast::config::Config;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A replay file of the Strapi 5.54 capture, by action prefix (`"09"`) or full name.
pub fn replay_file(action: &str) -> PathBuf {
    let dir = repo().join("fixtures/strapi-5.54/replay");
    let mut matches: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/strapi-5.54/replay")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{action}-")) || n == format!("{action}.sql")
            })
        })
        .collect();
    assert_eq!(matches.len(), 1, "exactly one replay file for {action}");
    matches.remove(0)
}

static CLUSTER: OnceCell<String> = OnceCell::const_new();

/// Starts (once per test process) the private cluster and returns its superuser URL base
/// (`postgres://postgres@127.0.0.1:PORT`).
pub async fn cluster() -> &'static str {
    CLUSTER
        .get_or_init(|| async {
            let base = pg_cluster("start", "test").await;
            prepare_template(&base).await;
            base
        })
        .await
}

/// Runs `scripts/pg-cluster.sh COMMAND NAME` and returns the URL base it printed last
/// (`postgres://postgres@127.0.0.1:PORT`).
async fn pg_cluster(command: &str, name: &str) -> String {
    let output = Command::new("bash")
        .arg(repo().join("scripts/pg-cluster.sh"))
        .args([command, name])
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("running scripts/pg-cluster.sh");
    assert!(
        output.status.success(),
        "scripts/pg-cluster.sh {command} {name} failed"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let url = stdout
        .lines()
        .last()
        .expect("the cluster URL")
        .trim()
        .to_owned();
    url.trim_end_matches("/postgres").to_owned()
}

/// A private cluster of one test's own (`scripts/pg-cluster.sh … NAME`), for tests that do
/// to Postgres what the shared test cluster must not see, like restarting it. Stopped on drop,
/// also when the test fails.
pub struct PrivateCluster {
    pub name: &'static str,
    pub base: String,
}

impl PrivateCluster {
    /// Starts the cluster and prepares its template database.
    pub async fn start(name: &'static str) -> Self {
        let base = pg_cluster("start", name).await;
        prepare_template(&base).await;
        PrivateCluster { name, base }
    }

    /// `pg_ctl restart -m fast`: every connection to it is cut.
    pub async fn restart(&self) {
        let base = pg_cluster("restart", self.name).await;
        assert_eq!(base, self.base, "the cluster came back on its port");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(repo().join("scripts/pg-cluster.sh"))
            .args(["stop", self.name])
            .stdout(Stdio::null())
            .status();
    }
}

const TEMPLATE: &str = "walcast_fixture_boot";

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Creates the template database (schema + Strapi's first boot) once, and removes what
/// earlier runs left behind (test databases and their slots).
async fn prepare_template(base: &str) {
    let admin = connect(&format!("{base}/postgres")).await;
    // Serialize template creation between concurrent test processes.
    admin
        .execute("SELECT pg_advisory_lock(727001)", &[])
        .await
        .unwrap();
    let stale = admin
        .query(
            "SELECT slot_name::text FROM pg_replication_slots WHERE NOT active AND slot_name LIKE 'wt\\_%'",
            &[],
        )
        .await
        .unwrap();
    for row in stale {
        let slot: String = row.get(0);
        let _ = admin
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await;
    }
    let dbs = admin
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'wt\\_%'",
            &[],
        )
        .await
        .unwrap();
    for row in dbs {
        let db: String = row.get(0);
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .await;
    }
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&TEMPLATE])
        .await
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{TEMPLATE}_building");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .unwrap();
        let db = connect(&format!("{base}/{building}")).await;
        let fixtures = repo().join("fixtures/strapi-5.54");
        for file in ["schema.sql", "replay/00-boot.sql"] {
            let sql = std::fs::read_to_string(fixtures.join(file)).unwrap();
            db.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("loading {file}: {e}"));
        }
        drop(db);
        retry_busy(
            &admin,
            &format!("ALTER DATABASE {building} RENAME TO {TEMPLATE}"),
        )
        .await;
    }
    admin
        .execute("SELECT pg_advisory_unlock(727001)", &[])
        .await
        .unwrap();
}

/// Runs a statement that fails while another session is still connected to the source
/// database (a just-closed connection can linger for a moment), retrying for a while.
async fn retry_busy(admin: &tokio_postgres::Client, sql: &str) {
    let mut attempts = 0;
    loop {
        match admin.batch_execute(sql).await {
            Ok(()) => return,
            Err(e)
                if attempts < 100
                    && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{sql}: {e:?}"),
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh Strapi database (schema + boot data) with its own slot and publication names, and
/// its own replay log directory (removed with it).
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub client: tokio_postgres::Client,
    pub replay_dir: tempfile::TempDir,
    base: String,
}

impl TestDatabase {
    pub async fn new() -> Self {
        Self::on(cluster().await).await
    }

    /// A fresh database on the cluster at `base` (whose template is prepared).
    pub async fn on(base: &str) -> Self {
        let base = base.to_owned();
        let name = format!(
            "wt_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&format!("{base}/postgres")).await;
        retry_busy(
            &admin,
            &format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"),
        )
        .await;
        let url = format!("{base}/{name}");
        let client = connect(&url).await;
        TestDatabase {
            name,
            url,
            client,
            replay_dir: tempfile::tempdir().expect("a temporary replay directory"),
            base,
        }
    }

    /// Connects again (after a server restart), retrying while the server starts up.
    pub async fn reconnect(&mut self) {
        let mut attempts = 0;
        self.client = loop {
            match tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    break client;
                }
                Err(_) if attempts < 300 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("reconnecting to {}: {e}", self.url),
            }
        };
    }

    /// Applies one captured Strapi action (`"09"` or `"09-create-tag-1"`).
    pub async fn replay(&self, action: &str) {
        let path = replay_file(action);
        let sql = std::fs::read_to_string(&path).unwrap();
        self.client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("replaying {}: {e}", path.display()));
    }

    /// Applies actions `from..=to` in order.
    pub async fn replay_range(&self, from: u32, to: u32) {
        for n in from..=to {
            self.replay(&format!("{n:02}")).await;
        }
    }

    /// Grants a users-permissions role (by type, e.g. `public`) a permission action.
    pub async fn grant(&self, role_type: &str, action: &str) {
        self.client
            .execute(
                "WITH p AS (
                   INSERT INTO up_permissions (document_id, action, created_at, updated_at, published_at)
                   VALUES (substr(md5(random()::text), 1, 24), $2, now(), now(), now()) RETURNING id)
                 INSERT INTO up_permissions_role_lnk (permission_id, role_id, permission_ord)
                 SELECT p.id, r.id, 1 FROM p, up_roles r WHERE r.type = $1",
                &[&role_type, &action],
            )
            .await
            .unwrap();
    }

    /// Makes sure the login role `user` exists (roles are cluster-wide) with `attributes`
    /// (`REPLICATION`, `NOREPLICATION`…) and, when given, `password` hashed with
    /// `encryption` (`scram-sha-256` or `md5`); grants it SELECT on this database's tables.
    pub async fn ensure_role(&self, user: &str, attributes: &str, password: Option<(&str, &str)>) {
        let mut sql = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{user}') THEN
               CREATE ROLE {user} LOGIN; END IF; END $$;
             ALTER ROLE {user} LOGIN {attributes};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user};"
        );
        if let Some((password, encryption)) = password {
            sql.push_str(&format!(
                "SET password_encryption = '{encryption}'; ALTER ROLE {user} PASSWORD '{password}';"
            ));
        }
        self.client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("creating role {user}: {e}"));
    }

    /// A walcast configuration for this database.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.database.url = walcast::config::Secret::new(self.url.clone());
        config.replication.slot = self.name.clone();
        config.replication.publication = self.name.clone();
        config.server.listen = "127.0.0.1:0".into();
        config.delivery.replay_dir = self.replay_dir.path().join("replay");
        config.delivery.state_dir = Some(self.replay_dir.path().to_owned());
        config.strapi.jwt_secret =
            walcast::config::Secret::new("test-users-permissions-jwt-secret-0123456789");
        config.strapi.api_token_salt =
            walcast::config::Secret::new("test-api-token-salt-0123456789");
        config.strapi.admin_jwt_secret =
            walcast::config::Secret::new("test-admin-jwt-secret-0123456789");
        // Tests send client events in bursts; tests/it/security.rs sets its own limits.
        config.security.rate_limit.max_events_per_second = 100_000;
        config
    }

    /// Drops the slot and the database.
    pub async fn drop_all(self) {
        let admin = connect(&format!("{}/postgres", self.base)).await;
        drop(self.client);
        for _ in 0..50 {
            let r = admin
                .query(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
                    &[&self.name],
                )
                .await;
            let still = admin
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.name],
                )
                .await
                .unwrap();
            if r.is_ok() && still.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// An in-process walcast serving on an ephemeral port.
pub struct Walcast {
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Walcast {
    /// Starts walcast and waits until replication is streaming.
    pub async fn start(config: Config) -> Self {
        Self::start_with_tap(config, None).await
    }

    /// [`Walcast::start`], with every folded transaction copied to `tap`.
    pub async fn start_with_tap(
        config: Config,
        tap: Option<walcast::service::TransactionTap>,
    ) -> Self {
        let taps = walcast::service::Taps {
            transactions: tap,
            payloads: None,
        };
        Self::start_with_taps(config, taps).await
    }

    /// [`Walcast::start`], with copies of the pipeline's work sent to `taps`.
    pub async fn start_with_taps(config: Config, taps: walcast::service::Taps) -> Self {
        Self::start_on(config, taps, "127.0.0.1:0").await
    }

    /// [`Walcast::start_with_taps`] listening on `bind` (`"[::]:0"` for dual stack).
    pub async fn start_on(config: Config, taps: walcast::service::Taps, bind: &str) -> Self {
        config.validate().expect("test config validates");
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(walcast::service::run_with_taps(
            config,
            listener,
            shutdown.clone(),
            taps,
        ));
        let walcast = Walcast {
            addr,
            shutdown,
            task,
        };
        wait_ready(addr, Duration::from_secs(20)).await;
        walcast
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A minimal HTTP GET (status, body).
    pub async fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.addr, path).await
    }

    /// The value of a metric on `/metrics`, summed over its label sets (0 when absent).
    /// In-process instances share one registry: the value counts every test's walcast.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(self.addr, name).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("walcast stops within 10 s")
            .expect("walcast task does not panic");
        result.expect("walcast stops cleanly");
    }
}

/// A minimal HTTP GET (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, None, None).await
}

/// One HTTP/1.1 request (`Connection: close`), with an optional bearer token and JSON body:
/// status and body.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let body = body.unwrap_or("");
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(value) = &authorization {
        headers.push(("Authorization", value));
    }
    if !body.is_empty() || method != "GET" {
        headers.push(("Content-Type", "application/json"));
    }
    http_raw(addr, method, path, &headers, body.as_bytes()).await
}

/// A minimal HTTP/1.1 request (status, body); `headers` as `("Name", "value")`.
pub async fn http_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Serialises edits of pg_hba.conf between the tests of this process (they run in parallel
/// and each rewrites the whole file).
static HBA_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Rewrites the cluster's pg_hba.conf with `edit` (in place, so the file keeps its owner, the
/// server's OS user) and reloads the server configuration.
pub async fn edit_hba(client: &tokio_postgres::Client, edit: impl FnOnce(&str) -> String) {
    let hba: String = client.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
    {
        let _guard = HBA_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let current = std::fs::read_to_string(&hba).unwrap();
        let next = edit(&current);
        if next != current {
            std::fs::write(&hba, next).unwrap();
        }
    }
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Puts `lines` at the top of pg_hba.conf (the first matching line wins) unless present.
pub async fn prepend_hba_lines(client: &tokio_postgres::Client, lines: &[String]) {
    edit_hba(client, |current| {
        let missing: String = lines
            .iter()
            .filter(|l| !current.lines().any(|c| c == l.as_str()))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{missing}{current}")
    })
    .await;
}

/// Takes `lines` out of pg_hba.conf again.
pub async fn remove_hba_lines(client: &tokio_postgres::Client, lines: &[String]) {
    edit_hba(client, |current| {
        current
            .lines()
            .filter(|c| !lines.iter().any(|l| l == c))
            .map(|c| format!("{c}\n"))
            .collect()
    })
    .await;
}

/// Waits until the walcast at `addr` answers `/readyz` with 200 (replication streaming).
async fn wait_ready(addr: std::net::SocketAddr, timeout: Duration) {
    wait_for("walcast /readyz", timeout, || async {
        http_get(addr, "/readyz")
            .await
            .map(|(s, _)| s == 200)
            .unwrap_or(false)
    })
    .await;
}

/// The value of a metric on the `/metrics` of the walcast at `addr`, summed over its label
/// sets whose text contains `labels` (0 when absent).
pub async fn metric_where(addr: std::net::SocketAddr, name: &str, labels: &str) -> f64 {
    let (_, text) = http_get(addr, "/metrics").await.expect("GET /metrics");
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    metric_where(addr, name, "").await
}

/// walcast as its own process (`walcast run`): its metrics count only its own work, where
/// in-process instances of parallel tests share one registry.
pub struct WalcastProcess {
    pub addr: std::net::SocketAddr,
    child: Child,
    log: PathBuf,
    _config: tempfile::NamedTempFile,
}

impl WalcastProcess {
    /// Runs `walcast run` on `config` (written out as TOML by the caller's `toml` text plus
    /// the database, slot, publication, listen address and secrets of `db`, set through the
    /// environment) and waits until replication is streaming.
    pub async fn start(db: &TestDatabase, toml: &str) -> Self {
        let mut config = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut config, toml.as_bytes()).unwrap();
        // A free port: bound, noted and released (walcast binds it again at once).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = db.config();
        // Its log, for when a test fails: target/walcast-<database>.log.
        let log_path = repo().join(format!("target/walcast-{}.log", db.name));
        let log = std::fs::File::create(&log_path).expect("creating the walcast log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_walcast"));
        for key in walcast::config::ENVIRONMENT_KEYS {
            cmd.env_remove(key);
        }
        let child = cmd
            .env("DATABASE_URL", &db.url)
            .env("WALCAST_SLOT", &c.replication.slot)
            .env("WALCAST_PUBLICATION", &c.replication.publication)
            .env("WALCAST_LISTEN", addr.to_string())
            .env("JWT_SECRET", c.strapi.jwt_secret.expose())
            .env("API_TOKEN_SALT", c.strapi.api_token_salt.expose())
            .env("ADMIN_JWT_SECRET", c.strapi.admin_jwt_secret.expose())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .arg("--config")
            .arg(config.path())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning walcast");
        let process = WalcastProcess {
            addr,
            child,
            log: log_path,
            _config: config,
        };
        wait_ready(addr, Duration::from_secs(30)).await;
        process
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// See [`metric_where`].
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        metric_where(self.addr, name, labels).await
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL, as `kill -9`: no shutdown code runs.
    pub async fn kill_9(mut self) {
        self.child.start_kill().expect("sending SIGKILL");
        self.child.wait().await.expect("reaping walcast");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("walcast is running");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("walcast stops within 20 s")
            .unwrap();
        assert!(status.success(), "walcast exited with {status}");
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `check` until it is true; fails the test with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One official `socket.io-client` in a Node process (`tests/js/client.mjs`).
pub struct JsClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line received so far.
    pub seen: Vec<Value>,
    next_id: u64,
}

/// Where the Node packages are.
fn js_dir() -> PathBuf {
    repo().join("tests/js")
}

impl JsClient {
    /// Spawns a client with the given handshake `auth` and extra arguments.
    pub async fn spawn(url: &str, auth: Value, extra: &[&str]) -> Self {
        assert!(
            Path::new(&js_dir().join("node_modules/socket.io-client")).exists(),
            "tests/js/node_modules is missing: run `npm ci --prefix tests/js` (make test does)"
        );
        let mut child = Command::new("node")
            .arg(js_dir().join("client.mjs"))
            .args(["--url", url, "--auth", &auth.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning node");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        JsClient {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            next_id: 1,
        }
    }

    /// Spawns a client and waits for it to connect.
    pub async fn connect(url: &str, auth: Value) -> Self {
        let mut client = Self::spawn(url, auth, &["--no-reconnect"]).await;
        let line = client
            .next_matching("connected", Duration::from_secs(10), |l| {
                matches!(l["type"].as_str(), Some("connected" | "connect_error"))
            })
            .await;
        assert_eq!(
            line["type"], "connected",
            "client failed to connect: {line}"
        );
        client
    }

    /// The next line satisfying `pred`, within `timeout`; earlier lines are kept in `seen`.
    pub async fn next_matching(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}; saw {:#?}",
                        self.seen
                    )
                })
                .expect("reading client output")
                .unwrap_or_else(|| {
                    panic!(
                        "client exited while waiting for {what}; saw {:#?}",
                        self.seen
                    )
                });
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("client printed non-JSON {line:?}: {e}"));
            self.seen.push(value.clone());
            if pred(&value) {
                return value;
            }
        }
    }

    /// Counts the events named `name` until one satisfies `last` (counted too), without
    /// keeping them in `seen`: for floods of hundreds of thousands of events. `Err` carries
    /// the count reached when `timeout` passed or the client exited first.
    pub async fn count_events_until(
        &mut self,
        name: &str,
        timeout: Duration,
        last: impl Fn(&[Value]) -> bool,
    ) -> Result<usize, usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut count = 0;
        loop {
            let Ok(Ok(Some(line))) =
                tokio::time::timeout_at(deadline, self.lines.next_line()).await
            else {
                return Err(count);
            };
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("client printed non-JSON {line:?}: {e}"));
            if value["type"] == "event" && value["name"] == name {
                count += 1;
                if last(value["args"].as_array().map_or(&[], Vec::as_slice)) {
                    return Ok(count);
                }
            } else {
                self.seen.push(value);
            }
        }
    }

    /// Waits for the named server event and returns its arguments.
    pub async fn event(&mut self, name: &str, timeout: Duration) -> Vec<Value> {
        let line = self
            .next_matching(name, timeout, |l| l["type"] == "event" && l["name"] == name)
            .await;
        line["args"].as_array().cloned().unwrap_or_default()
    }

    /// Events received so far with this name.
    pub fn events_named(&self, name: &str) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|l| l["type"] == "event" && l["name"] == name)
            .collect()
    }

    /// Emits an event with an ack and returns the ack's arguments.
    pub async fn emit_with_ack(&mut self, event: &str, args: Value) -> Vec<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let cmd =
            serde_json::json!({"cmd": "emit", "event": event, "args": args, "ack": true, "id": id});
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        let line = self
            .next_matching(&format!("ack {id}"), Duration::from_secs(10), |l| {
                matches!(l["type"].as_str(), Some("ack" | "ack_timeout")) && l["id"] == id
            })
            .await;
        assert_eq!(line["type"], "ack", "no ack for {event}");
        line["args"].as_array().cloned().unwrap_or_default()
    }

    /// The Node process's id (to pause it with SIGSTOP: a client that stops reading).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the client process is running")
    }

    /// The socket id of the client's latest connection.
    pub fn socket_id(&self) -> String {
        self.seen
            .iter()
            .rev()
            .find(|l| l["type"] == "connected")
            .and_then(|l| l["id"].as_str())
            .expect("the client connected")
            .to_owned()
    }

    /// Sends one command line to the client (`{"cmd":"disconnect"}`, `{"cmd":"connect"}`…).
    pub async fn command(&mut self, cmd: Value) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("writing to the client");
    }

    pub async fn close(mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\":\"exit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}
