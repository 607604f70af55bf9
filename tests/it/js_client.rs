//! The JavaScript client module (`clients/js`, ES module + TypeScript declarations) against a
//! running walcast: typed content handlers, the offset kept and sent on reconnect so missed
//! events are replayed, promise-based entity subscriptions; and its declarations compile.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout, Command};

use crate::support::{TestDatabase, Walcast, repo};

struct Driver {
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _child: tokio::process::Child,
}

impl Driver {
    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line of `type`, skipping others; fails after 20 s.
    async fn next(&mut self, kind: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the client exited");
                let value: Value = serde_json::from_str(&line).unwrap();
                if value["type"] == kind {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} line within 20 s"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_resumes_with_its_offset_and_subscribes() {
    let db = TestDatabase::new().await;
    db.grant("public", "api::tag.tag.find").await;
    let walcast = Walcast::start(db.config()).await;
    let mut child = Command::new("node")
        .arg(repo().join("tests/js/walcast-client.mjs"))
        .arg(walcast.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut client = Driver {
        stdin: child.stdin.take().unwrap(),
        lines: BufReader::new(child.stdout.take().unwrap()).lines(),
        _child: child,
    };
    let connected = client.next("connected").await;
    assert!(connected["sentOffset"].is_null(), "nothing seen yet");

    db.replay("09").await;
    let rust = client.next("tag:create").await;
    assert_eq!(rust["name"], "rust");
    let offset = rust["offset"].as_str().expect("an offset").to_owned();

    // Offline while a tag is created: on reconnect the module sends its last offset and
    // walcast replays what was missed.
    client.send("disconnect").await;
    let gone = client.next("disconnected").await;
    assert_eq!(gone["lastOffset"], offset.as_str());
    db.replay("10").await;
    client.send("connect").await;
    let again = client.next("connected").await;
    assert_eq!(
        again["sentOffset"],
        offset.as_str(),
        "the stored offset was sent"
    );
    let postgres = client.next("tag:create").await;
    assert_eq!(
        postgres["name"], "postgres",
        "the missed event was replayed"
    );
    assert!(postgres["offset"].as_str().unwrap() > offset.as_str());

    let document_id = postgres["documentId"].as_str().unwrap().to_owned();
    client
        .send(&format!("subscribe api::tag.tag {document_id}"))
        .await;
    let ack = client.next("ack").await;
    assert_eq!(ack["ack"]["success"], true, "{ack}");
    client.send("subscribe not-a-uid 1").await;
    let refused = client.next("ack").await;
    assert_eq!(refused["ack"]["success"], false, "{refused}");
    assert!(refused["ack"]["error"].is_string());

    client.send("exit").await;
    walcast.stop().await;
    db.drop_all().await;
}

#[test]
fn the_js_client_declarations_compile() {
    let js = repo().join("tests/js");
    let tsc = js.join("node_modules/typescript/bin/tsc");
    assert!(
        tsc.exists(),
        "tests/js/node_modules is missing typescript: run `npm ci --prefix tests/js` (make test does)"
    );
    let output = std::process::Command::new("node")
        .arg(tsc)
        .args(["-p", "tsconfig.json"])
        .current_dir(&js)
        .output()
        .expect("node");
    assert!(
        output.status.success(),
        "tsc: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
