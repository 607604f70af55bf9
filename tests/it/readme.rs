//! README.md as a user runs it: every TOML block is a configuration walcast accepts, and the
//! set-up commands of "Pointing walcast at a real Strapi" run as written (with the `walcast`
//! binary on PATH and Strapi's `DATABASE_URL` pointing at a fresh fixture database). Not run
//! here: `make demo`/`make test` (this suite is `make test`), the long-running `walcast run`
//! line (every other test runs the service), and the JavaScript examples (the client tests
//! run the same calls).

use std::process::Command;

use walcast::config::Config;

use crate::support::{TestDatabase, repo};

/// The fenced blocks of README.md with their info string (`bash`, `toml`, …).
fn blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in readme.lines() {
        let trimmed = line.trim_start();
        match (&mut current, trimmed.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => out.push(current.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(trimmed);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

#[test]
fn every_toml_block_is_a_configuration_walcast_accepts() {
    let tomls: Vec<String> = blocks()
        .into_iter()
        .filter(|(info, _)| info == "toml")
        .map(|(_, body)| body)
        .collect();
    assert!(tomls.len() >= 2, "README shows its configuration");
    for body in tomls {
        let config = Config::from_toml(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        if let Err(errors) = config.validate() {
            panic!("{errors:?}\n{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_up_commands_run_as_written() {
    let (_, block) = blocks()
        .into_iter()
        .find(|(info, body)| info == "bash" && body.contains("walcast --config config.toml setup"))
        .expect("the set-up block");
    let db = TestDatabase::new().await;
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_walcast"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lines: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty() && !l.ends_with(" run"))
        .collect();
    assert_eq!(lines.len(), 2, "check and setup: {lines:?}");
    let mut codes = Vec::new();
    for round in 0..2 {
        for line in &lines {
            let output = Command::new("bash")
                .args(["-c", line])
                .current_dir(repo())
                .env("PATH", &path)
                .env("DATABASE_URL", &db.url)
                .env("WALCAST_SLOT", &db.name)
                .env("WALCAST_PUBLICATION", &db.name)
                .env("WALCAST_REPLAY_DIR", db.replay_dir.path())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            codes.push((round, line.to_string(), output.status.code(), stdout));
        }
    }
    // First round: check finds blockers (no publication or slot yet), setup creates them;
    // second round: check passes, setup has nothing to change.
    let code = |round: usize, needle: &str| {
        codes
            .iter()
            .find(|(r, l, _, _)| *r == round && l.ends_with(needle))
            .map(|(_, _, c, out)| (*c, out.clone()))
            .unwrap()
    };
    let (first_check, out) = code(0, "check");
    assert_eq!(first_check, Some(1), "{out}");
    let (setup, out) = code(0, "setup");
    assert_eq!(setup, Some(0), "{out}");
    assert!(out.contains("created logical replication slot"), "{out}");
    let (second_check, out) = code(1, "check");
    assert_eq!(second_check, Some(0), "{out}");
    let (again, out) = code(1, "setup");
    assert_eq!(again, Some(0));
    assert!(out.contains("nothing to change"), "{out}");
    db.drop_all().await;
}
