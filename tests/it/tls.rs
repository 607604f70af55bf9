//! TLS on both Postgres connections (the walsender and the SQL one) with every `sslmode`,
//! against the private cluster with `ssl` switched on for the length of the test and off
//! again afterwards.
//!
//! Other tests run at the same time: turning `ssl` on changes nothing for them (their URLs
//! say no sslmode, so `prefer` just encrypts), and TLS is forced only for a dedicated role
//! through its own `hostssl`/`hostnossl` lines in pg_hba.conf.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::json;
use walcast::config::{Config, Secret};
use walcast::replication::{ConnectError, ConnectParams, probe_connection};
use walcast::tls::TlsError;

use crate::support::{JsClient, TestDatabase, Walcast, prepend_hba_lines, remove_hba_lines};

const TLS_USER: &str = "wt_tls_user";
const TLS_PASSWORD: &str = "tls%20pw";

/// A test CA, a server certificate it signed (for `localhost` only, so that
/// verify-full to 127.0.0.1 is a name mismatch), and an unrelated CA.
struct Certificates {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    wrong_ca: PathBuf,
    server_cert: String,
    server_key: String,
}

fn make_certificates() -> Certificates {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let issuer = ca("walcast test CA");
    let wrong = ca("some other CA");
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params.signed_by(&server_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let wrong_path = dir.path().join("wrong-ca.pem");
    std::fs::write(&ca_path, issuer.pem()).unwrap();
    std::fs::write(&wrong_path, wrong.pem()).unwrap();
    Certificates {
        ca: ca_path,
        wrong_ca: wrong_path,
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        _dir: dir,
    }
}

/// Writes `text` to `path`, owned by the data directory's owner (the server's OS user; the
/// tests may run as root), with `mode`.
fn write_for_server(path: &Path, text: &str, owner_of: &Path, mode: u32) {
    let meta = std::fs::metadata(owner_of).unwrap();
    std::fs::write(path, text).unwrap();
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// ALTER SYSTEM cannot run in a multi-statement query: one statement at a time.
async fn alter_system(admin: &tokio_postgres::Client, statements: &[String]) {
    for sql in statements {
        admin
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

/// The test database's URL as another user, host and query.
fn url(db: &TestDatabase, user: &str, host: &str, query: &str) -> String {
    let url = db
        .url
        .replacen("postgres@127.0.0.1", &format!("{user}@{host}"), 1);
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

fn config(db: &TestDatabase, url: &str) -> Config {
    let mut config = db.config();
    config.database.url = Secret::new(url);
    config.validate().expect("test URL validates");
    config
}

/// Whether the SQL connection of `url` is encrypted, as the server sees it.
async fn sql_tls(db: &TestDatabase, url: &str) -> Result<bool, String> {
    let client = walcast::service::connect_sql(&config(db, url))
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0))
}

/// Whether a walsender connection of `url` is encrypted.
async fn walsender_tls(db: &TestDatabase, url: &str) -> Result<bool, ConnectError> {
    let config = config(db, url);
    let params = ConnectParams::from_config(&config.postgres()).with_tls(config.tls());
    probe_connection(&params).await.map(|p| p.tls)
}

/// `walcast check` as a process: exit code and stdout.
fn walcast_check(db: &TestDatabase, url: &str) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walcast"));
    for key in walcast::config::ENVIRONMENT_KEYS {
        cmd.env_remove(key);
    }
    let out = cmd
        .env_remove("WALCAST_CONFIG")
        .env("DATABASE_URL", url)
        .env("WALCAST_SLOT", &db.name)
        .env("WALCAST_PUBLICATION", &db.name)
        .arg("check")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The pg_hba lines that admit [`TLS_USER`] over TLS only.
fn tls_only_lines() -> Vec<String> {
    vec![
        format!("hostnossl all {TLS_USER} 127.0.0.1/32 reject"),
        format!("hostssl all {TLS_USER} 127.0.0.1/32 scram-sha-256"),
    ]
}

/// Turns TLS off in the server again and takes out what the test added.
async fn restore_server(db: &TestDatabase, data_dir: &Path) {
    remove_hba_lines(&db.client, &tls_only_lines()).await;
    alter_system(
        &db.client,
        &[
            "ALTER SYSTEM RESET ssl".into(),
            "ALTER SYSTEM RESET ssl_cert_file".into(),
            "ALTER SYSTEM RESET ssl_key_file".into(),
        ],
    )
    .await;
    for file in ["server.crt", "server.key"] {
        let _ = std::fs::remove_file(data_dir.join(file));
    }
}

/// Waits until new connections see the server's TLS state as `on`.
async fn wait_for_server_tls(db: &TestDatabase, on: bool) {
    let require = url(db, "postgres", "127.0.0.1", "sslmode=require");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let state = sql_tls(db, &require).await;
        if state.is_ok() == on {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server's ssl did not turn {}: {state:?} (see the cluster's server.log)",
            if on { "on" } else { "off" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_connections_with_every_sslmode() {
    let db = TestDatabase::new().await;
    let data_dir = PathBuf::from(
        db.client
            .query_one("SHOW data_directory", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
    );
    // Whatever an interrupted run left behind.
    restore_server(&db, &data_dir).await;
    let result = std::panic::AssertUnwindSafe(tls_scenarios(&db, &data_dir))
        .catch_unwind()
        .await;
    restore_server(&db, &data_dir).await;
    wait_for_server_tls(&db, false).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    db.drop_all().await;
}

async fn tls_scenarios(db: &TestDatabase, data_dir: &Path) {
    // ssl = off: the strict modes refuse plain connections, with a clear message; prefer
    // connects in plain text.
    wait_for_server_tls(db, false).await;
    let require = url(db, "postgres", "127.0.0.1", "sslmode=require");
    let err = sql_tls(db, &require).await.unwrap_err();
    assert!(
        err.contains("does not accept TLS connections") && err.contains("sslmode=require"),
        "{err}"
    );
    let err = walsender_tls(db, &require).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::Tls(TlsError::NotSupported { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("ssl = on"), "{err}");
    let prefer = url(db, "postgres", "127.0.0.1", "sslmode=prefer");
    assert_eq!(sql_tls(db, &prefer).await, Ok(false));
    assert!(!walsender_tls(db, &prefer).await.unwrap());

    // ssl = on with a certificate of our test CA.
    let certs = make_certificates();
    let cert_file = data_dir.join("server.crt");
    let key_file = data_dir.join("server.key");
    write_for_server(&cert_file, &certs.server_cert, data_dir, 0o644);
    write_for_server(&key_file, &certs.server_key, data_dir, 0o600);
    alter_system(
        &db.client,
        &[
            format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert_file.display()),
            format!("ALTER SYSTEM SET ssl_key_file = '{}'", key_file.display()),
            "ALTER SYSTEM SET ssl = on".into(),
        ],
    )
    .await;
    wait_for_server_tls(db, true).await;

    // require, prefer and no sslmode at all (prefer) encrypt both connections.
    for query in ["sslmode=require", "sslmode=prefer", ""] {
        let url = url(db, "postgres", "127.0.0.1", query);
        assert_eq!(sql_tls(db, &url).await, Ok(true), "{query}");
        assert!(walsender_tls(db, &url).await.unwrap(), "{query}");
    }

    // verify-ca: the chain is checked, the name (127.0.0.1 is not in the certificate) not.
    let ca = certs.ca.display().to_string();
    let verify_ca = url(
        db,
        "postgres",
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    assert_eq!(sql_tls(db, &verify_ca).await, Ok(true));
    assert!(walsender_tls(db, &verify_ca).await.unwrap());

    // verify-full checks the name too.
    let wrong_name = url(
        db,
        "postgres",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let err = sql_tls(db, &wrong_name).await.unwrap_err();
    assert!(
        err.contains("not issued for host \"127.0.0.1\"") && err.contains("sslmode=verify-ca"),
        "{err}"
    );
    let err = walsender_tls(db, &wrong_name).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::Tls(TlsError::Certificate { .. })),
        "{err}"
    );

    // verify-full against the wrong CA: refused, saying what to do.
    let wrong_ca = url(
        db,
        "postgres",
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            certs.wrong_ca.display()
        ),
    );
    let err = sql_tls(db, &wrong_ca).await.unwrap_err();
    for needle in [
        "certificate verification",
        "sslmode=verify-full",
        "sslrootcert=",
        "sslmode=require",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let err = walsender_tls(db, &wrong_ca).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::Tls(TlsError::Certificate { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("wrong-ca.pem"), "{err}");
    let (code, output) = walcast_check(db, &wrong_ca);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("BLOCKER") && output.contains("certificate verification"),
        "{output}"
    );

    // A role pg_hba.conf admits over TLS only: refused in plain text with a hint, served
    // over TLS (SCRAM inside TLS, on both connections).
    db.ensure_role(TLS_USER, "REPLICATION", Some(("tls pw", "scram-sha-256")))
        .await;
    prepend_hba_lines(&db.client, &tls_only_lines()).await;
    let user = format!("{TLS_USER}:{TLS_PASSWORD}");
    let disable = url(db, &user, "127.0.0.1", "sslmode=disable");
    let err = sql_tls(db, &disable).await.unwrap_err();
    assert!(
        err.contains("no encryption") && err.contains("sslmode=require"),
        "{err}"
    );
    let err = walsender_tls(db, &disable).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("28000"), "{err}");
    assert!(err.to_string().contains("sslmode=require"), "{err}");
    let tls_user = url(db, &user, "127.0.0.1", "sslmode=require");
    assert_eq!(sql_tls(db, &tls_user).await, Ok(true));
    assert!(walsender_tls(db, &tls_user).await.unwrap());

    // End to end with verify-full: walcast streams over TLS, an event arrives, and the
    // server shows walcast's walsender as encrypted.
    let full = url(
        db,
        "postgres",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    db.grant("public", "api::tag.tag.find").await;
    let walcast = Walcast::start(config(db, &full)).await;
    let mut socket = JsClient::connect(&walcast.url(), json!({})).await;
    db.replay("09").await;
    let args = socket.event("tag:create", Duration::from_secs(15)).await;
    assert_eq!(args[0]["name"], "rust");
    let walsender_ssl: Option<bool> = db
        .client
        .query_one(
            "SELECT s.ssl FROM pg_replication_slots r JOIN pg_stat_ssl s ON s.pid = r.active_pid
              WHERE r.slot_name = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(walsender_ssl, Some(true));
    socket.close().await;
    walcast.stop().await;
    let (code, output) = walcast_check(db, &full);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("over TLS")
            && output.contains("replication connection accepted (over TLS)"),
        "{output}"
    );
}
