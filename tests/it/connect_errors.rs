//! What `walcast check` and `walcast run` say when the database refuses them: a role without
//! the REPLICATION attribute, a wrong password.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{TestDatabase, prepend_hba_lines};

fn walcast(db: &TestDatabase, url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walcast"));
    for key in walcast::config::ENVIRONMENT_KEYS {
        cmd.env_remove(key);
    }
    cmd.env_remove("WALCAST_CONFIG")
        .env("DATABASE_URL", url)
        .env("WALCAST_SLOT", &db.name)
        .env("WALCAST_PUBLICATION", &db.name)
        .env("WALCAST_LISTEN", "127.0.0.1:0")
        .args(args);
    cmd
}

/// Runs the command, killing it if it has not exited within `timeout`.
async fn output_within(cmd: Command, timeout: Duration) -> Output {
    let child = tokio::process::Command::from(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .expect("walcast exits by itself")
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A role without REPLICATION: `check` reports it as a blocker and `run` stops at once; both
/// say the exact statement that fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_replication_is_told_to_alter_role() {
    let db = TestDatabase::new().await;
    let user = "wt_norepl_user";
    db.ensure_role(user, "NOREPLICATION", None).await;
    // Publication and slot made by the owner, as `walcast setup` would be run.
    let owner = db.config();
    let client = walcast::service::connect_sql(&owner).await.unwrap();
    walcast::service::setup(&owner, &client).await.unwrap();
    let url = db.url.replacen("postgres@", &format!("{user}@"), 1);
    let fix = format!("ALTER ROLE {user} WITH REPLICATION;");

    let check = output_within(walcast(&db, &url, &["check"]), Duration::from_secs(30)).await;
    let out = text(&check);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("BLOCKER") && l.contains("REPLICATION") && l.contains(&fix)),
        "{out}"
    );

    let run = output_within(walcast(&db, &url, &["run"]), Duration::from_secs(30)).await;
    let out = text(&run);
    assert_eq!(run.status.code(), Some(1), "{out}");
    assert!(out.contains("42501") && out.contains(&fix), "{out}");
    db.drop_all().await;
}

/// A wrong password: `check` says it is the password, on the SQL connection and on the
/// walsender connection alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_named_as_such() {
    let db = TestDatabase::new().await;
    let user = "wt_password_user";
    db.ensure_role(user, "REPLICATION", Some(("right", "scram-sha-256")))
        .await;
    prepend_hba_lines(
        &db.client,
        &[format!("host all {user} 127.0.0.1/32 scram-sha-256")],
    )
    .await;
    let url = db.url.replacen("postgres@", &format!("{user}:wrong@"), 1);
    let check = output_within(walcast(&db, &url, &["check"]), Duration::from_secs(30)).await;
    let out = text(&check);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("BLOCKER")
            && l.contains("28P01")
            && l.contains("password")
            && l.contains("database.url")),
        "{out}"
    );
    let params = walcast::replication::ConnectParams::from_config(&url.parse().unwrap());
    let err = walcast::replication::probe_connection(&params)
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("28P01"));
    assert!(err.to_string().contains("DATABASE_PASSWORD"), "{err}");
    db.drop_all().await;
}
