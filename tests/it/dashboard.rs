//! The dashboard page (`/io/dashboard`) in headless Chromium, driven by playwright-core from
//! `tests/js/dashboard.mjs`: it loads, its connection count follows a socket.io-client that
//! connects, a test event sent from its form reaches that client, and a screenshot is written
//! to `target/dashboard.png`.
//!
//! Chromium is Debian's `chromium` package (`.ci/run` installs it). Without it the test says
//! why and passes without running; everything else missing is a failure.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::http_api::request;
use crate::support::{TestDatabase, Walcast, repo};

const API_KEY: &str = "dashboard-test-api-key-0123456789";

/// The Chromium binary: `WALCAST_CHROMIUM`, else the usual Debian paths.
pub(crate) fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("WALCAST_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .into_iter()
                .map(PathBuf::from),
        );
    candidates.into_iter().find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_connections_and_sends_a_test_event() {
    let Some(chromium) = chromium() else {
        println!(
            "SKIPPED dashboard test: no Chromium at /usr/bin/chromium (install Debian's `chromium` package: `apt-get install -y chromium`, which .ci/run does, or set WALCAST_CHROMIUM)"
        );
        return;
    };
    let js = repo().join("tests/js");
    assert!(
        js.join("node_modules/playwright-core").exists(),
        "tests/js/node_modules/playwright-core is missing: run `npm ci --prefix tests/js` (make test does)"
    );
    let db = TestDatabase::new().await;
    db.replay_range(1, 6).await;
    let mut config = db.config();
    config.admin.api_key = walcast::config::Secret::new(API_KEY);
    let walcast = Walcast::start(config).await;

    // The page itself needs no credentials; its calls do.
    let (status, page) = request(walcast.addr, "GET", "/io/dashboard", None, None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<canvas") && page.contains("/io/test-event"));

    let screenshot = repo().join("target/dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let run = Command::new("node")
        .arg(js.join("dashboard.mjs"))
        .args(["--url", &walcast.url(), "--key", API_KEY])
        .arg("--chromium")
        .arg(&chromium)
        .arg("--screenshot")
        .arg(&screenshot)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("dashboard.mjs finishes within 2 minutes")
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let steps: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        output.status.success(),
        "dashboard.mjs failed: {steps:#?}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let counts: Vec<i64> = steps
        .iter()
        .filter(|s| s["type"] == "count")
        .filter_map(|s| s["connections"].as_i64())
        .collect();
    assert_eq!(counts.len(), 2, "{steps:#?}");
    assert!(counts[1] > counts[0], "{counts:?}");
    let received = steps.iter().find(|s| s["type"] == "received").unwrap();
    assert_eq!(received["data"]["from"], json!("dashboard form"));
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG file");

    walcast.stop().await;
    db.drop_all().await;
}
