//! The `walcast` command line: configuration errors, setup, check.

use std::process::Command;

use crate::support::TestDatabase;

fn walcast() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walcast"));
    for key in walcast::config::ENVIRONMENT_KEYS {
        cmd.env_remove(key);
    }
    cmd.env_remove("WALCAST_CONFIG");
    cmd
}

fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file
}

#[test]
fn a_misspelled_config_key_exits_2_naming_it_before_connecting() {
    // The database URL points nowhere: exiting 2 proves nothing tried to connect first.
    let file = temp_config(
        "[database]\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n[replication]\nslott = \"walcast\"\n",
    );
    let out = walcast()
        .arg("--config")
        .arg(file.path())
        .arg("check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("slott"), "{stderr}");
    assert!(stderr.contains("slot"), "names what is allowed: {stderr}");
}

#[test]
fn a_bad_value_exits_2_naming_key_value_and_allowed() {
    let file = temp_config("[events]\npermissions = \"everyone\"\n[server]\nlisten = \"here\"\n");
    let out = walcast()
        .arg("--config")
        .arg(file.path())
        .arg("run")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("everyone"), "{stderr}");
}

#[test]
fn a_bad_environment_value_exits_2() {
    let out = walcast()
        .env("WALCAST_LISTEN", "not-an-address")
        .arg("check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("server.listen") && stderr.contains("not-an-address"),
        "{stderr}"
    );
}

/// `walcast setup` creates what is missing, says so, and changes nothing the second time;
/// `walcast check` then passes, and fails with a blocker when the slot is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_is_idempotent_and_check_reports_blockers() {
    let db = TestDatabase::new().await;
    let run = |args: &[&str]| {
        walcast()
            .env("DATABASE_URL", &db.url)
            .env("WALCAST_SLOT", &db.name)
            .env("WALCAST_PUBLICATION", &db.name)
            .args(args)
            .output()
            .unwrap()
    };
    let first = run(&["setup"]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("created publication"), "{stdout}");
    assert!(
        stdout.contains("created logical replication slot"),
        "{stdout}"
    );
    assert!(
        stdout.contains("set REPLICA IDENTITY FULL on articles"),
        "{stdout}"
    );
    let identity: String = db
        .client
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'tags'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(identity, "f");

    let second = run(&["setup"]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success());
    assert!(stdout.contains("nothing to change"), "{stdout}");

    let check = run(&["check"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("wal_level is logical"), "{stdout}");

    // Clustered: check asks the Redis; one that does not answer is a blocker.
    let with_redis = |url: &str| {
        walcast()
            .env("DATABASE_URL", &db.url)
            .env("WALCAST_SLOT", &db.name)
            .env("WALCAST_PUBLICATION", &db.name)
            .env("WALCAST_REDIS_URL", url)
            .arg("check")
            .output()
            .unwrap()
    };
    let check = with_redis(&crate::cluster::redis_url());
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("answers over RESP3"), "{stdout}");
    let check = with_redis("redis://127.0.0.1:1/?protocol=resp3");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("BLOCKER  cannot reach Redis at redis://127.0.0.1:1/"),
        "{stdout}"
    );

    db.client
        .execute("SELECT pg_drop_replication_slot($1)", &[&db.name])
        .await
        .unwrap();
    let check = run(&["check"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("BLOCKER") && stdout.contains("does not exist"),
        "{stdout}"
    );
    db.drop_all().await;
}

/// A slot that retains more WAL than `replication.lag_budget_bytes` is a blocker in
/// `walcast check`, which says what to do about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_slot_over_its_lag_budget() {
    let db = TestDatabase::new().await;
    let file = temp_config("[replication]\nlag_budget_bytes = 1\n");
    let run = |args: &[&str]| {
        walcast()
            .env("DATABASE_URL", &db.url)
            .env("WALCAST_SLOT", &db.name)
            .env("WALCAST_PUBLICATION", &db.name)
            .arg("--config")
            .arg(file.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["setup"]).status.success());
    // WAL written after the slot was made, and nobody consuming it.
    db.replay("09").await;
    let check = run(&["check"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("lag_budget_bytes"))
        .unwrap_or_else(|| panic!("no lag budget finding: {stdout}"));
    assert!(
        line.starts_with("BLOCKER")
            && line.contains(&format!("slot {}", db.name))
            && line.contains("over replication.lag_budget_bytes = 1")
            && line.contains("max_slot_wal_keep_size"),
        "{line}"
    );
    db.drop_all().await;
}

/// `walcast teardown` removes what setup made, refuses while walcast consumes the slot, and is
/// idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_removes_slot_publication_and_full_identity() {
    let db = TestDatabase::new().await;
    let run = |args: &[&str]| {
        walcast()
            .env("DATABASE_URL", &db.url)
            .env("WALCAST_SLOT", &db.name)
            .env("WALCAST_PUBLICATION", &db.name)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["setup"]).status.success());

    // While a walcast consumes the slot, teardown refuses and changes nothing.
    let walcast = crate::support::Walcast::start(db.config()).await;
    let busy = run(&["teardown"]);
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(!busy.status.success(), "refused while in use");
    assert!(stderr.contains("is in use"), "{stderr}");
    walcast.stop().await;

    let done = run(&["teardown"]);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&done.stderr)
    );
    for line in [
        "dropped replication slot",
        "dropped publication",
        "set REPLICA IDENTITY DEFAULT on articles",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    let left: (i64, i64, i64) = {
        let row = db
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1),
                        (SELECT count(*) FROM pg_publication WHERE pubname = $1),
                        (SELECT count(*) FROM pg_class WHERE relname IN ('articles', 'tags', 'articles_tags_lnk') AND relreplident = 'f')",
                &[&db.name],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(left, (0, 0, 0), "slot, publication and FULL identity gone");
    let again = run(&["teardown"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
    db.drop_all().await;
}
