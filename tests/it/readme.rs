//! README.md as a user runs it. Every fenced block is taken from README.md at test time and
//! either run against a real walcast (with a real Postgres change behind every event it should
//! receive) or checked, or listed in [`BLOCKS`] with the reason it is not run; a block that is
//! in none of these fails [`every_readme_block_is_run_or_checked`], so the README cannot drift.
//!
//! The examples use the address of `make demo`'s walcast ([`README_URL`]) and its admin API key
//! ([`README_API_KEY`]), as the README says; these two placeholders are the only text the tests
//! replace (with the test walcast's address and key). Everything else runs as written:
//! - TOML blocks: configurations walcast accepts.
//! - the set-up commands (`check`, `setup`, `run`, and `teardown` from the text) with the
//!   `walcast` binary on PATH and Strapi's `DATABASE_URL` pointing at a fresh fixture database;
//!   `run` until `/readyz` answers 200.
//! - the TLS `DATABASE_URL` line in bash, its value read by walcast's configuration.
//! - the socket.io-client examples in Node (the examples' module code, with the variables a
//!   fragment assumes — `url`, `jwt`, `socket`, … — defined before it and a few lines after it
//!   that print what the example's socket got).
//! - the @walcast/client, React and Vue examples bundled with esbuild and run in headless
//!   Chromium (`tests/js/readme-browser.mjs`; React and Vue inside the small apps of
//!   `tests/js/readme/`): each must show the article a Strapi publish creates. Like the
//!   dashboard test, skipped (saying why) only when no Chromium is installed.
//! - the curl examples of the HTTP API (the JSON block as their `settings.json`).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use walcast::config::{Config, Secret};
use walcast::tls::{RootCerts, SslMode};

use crate::auth::{access_jwt, create_session, create_token, token, user_jwt};
use crate::support::{TestDatabase, Walcast, http_get, repo, wait_for};

/// The address of `make demo`'s walcast, which the README's examples talk to.
const README_URL: &str = "http://127.0.0.1:1338";
/// `make demo`'s `[admin] api_key` (config.toml), in the README's curl examples.
const README_API_KEY: &str = "walcast-demo-admin-key";
/// The test walcast's admin API key.
const API_KEY: &str = "readme-test-admin-api-key-0123456789";
const TIMEOUT: Duration = Duration::from_secs(30);
/// "Hello WAL" of the Strapi capture: a draft after action 12, titled
/// "Hello WAL (edited draft)" by 13, published (an `article:create` of the published view) by 14.
const ARTICLE: &str = "dcwju77j680kjwyypp5f9onc";
const ARTICLE_TITLE: &str = "Hello WAL (edited draft)";
/// The article action 41 creates and publishes in one transaction.
const SECOND_ARTICLE: &str = "xdwr0ggh470obblseexurj00";

/// Every fenced block of README.md but the TOML ones (all of which
/// [`every_toml_block_is_a_configuration_walcast_accepts`] checks): its info string, a text
/// only it contains, and how it is run — or why it is not.
const BLOCKS: &[(&str, &str, &str)] = &[
    (
        "bash",
        "make demo",
        "not run: `make demo` runs until Ctrl-C, `make test` is this test suite itself",
    ),
    ("text", "Postgres WAL ──►", "not code: the pipeline diagram"),
    (
        "bash",
        "walcast --config config.toml setup",
        "run: the_set_up_commands_run_as_written",
    ),
    (
        "bash",
        "sslmode=verify-full",
        "run: the_tls_database_url_means_what_the_table_says",
    ),
    (
        "js",
        "// no token: the Public role",
        "run: the_socket_io_examples_receive_events",
    ),
    (
        "js",
        "createWalcastClient",
        "run: the_browser_examples_show_events",
    ),
    ("jsx", "useState", "run: the_browser_examples_show_events"),
    (
        "js",
        "from \"vue\"",
        "run: the_browser_examples_show_events",
    ),
    (
        "js",
        "strategy: \"api-token\"",
        "run: the_authentication_example_connects_each_principal",
    ),
    (
        "js",
        "\"subscribe-entity\"",
        "run: the_socket_io_examples_receive_events",
    ),
    (
        "js",
        "walcast:gap",
        "run: the_socket_io_examples_receive_events",
    ),
    ("bash", "/io/stats", "run: the_http_api_examples_answer"),
    (
        "json",
        "\"monitoring\"",
        "run: the_http_api_examples_answer, as settings.json",
    ),
    (
        "bash",
        "@settings.json",
        "run: the_http_api_examples_answer",
    ),
];

/// The fenced blocks of README.md with their info string (`bash`, `toml`, …), each line without
/// the indentation of the list item the block is in.
fn blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<(String, String, usize)> = None;
    for line in readme.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match (&mut current, trimmed.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new(), indent)),
            (Some(_), Some(_)) => {
                let (info, body, _) = current.take().unwrap();
                out.push((info, body));
            }
            (Some((_, body, indent)), None) => {
                let cut = line.len() - line.trim_start().len();
                body.push_str(&line[cut.min(*indent)..]);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "README.md has an unclosed code block");
    out
}

/// The one README block with info string `info` that contains `needle`.
fn block(info: &str, needle: &str) -> String {
    let mut found: Vec<String> = blocks()
        .into_iter()
        .filter(|(i, body)| i == info && body.contains(needle))
        .map(|(_, body)| body)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one ```{info} block of README.md contains {needle:?}"
    );
    found.remove(0)
}

/// `body` with `placeholder` (which it must contain) replaced by `value`.
fn put(body: &str, placeholder: &str, value: &str) -> String {
    assert!(
        body.contains(placeholder),
        "the README block uses {placeholder}: {body}"
    );
    body.replace(placeholder, value)
}

/// A JavaScript string literal.
fn js(value: &str) -> String {
    serde_json::to_string(value).unwrap()
}

#[test]
fn every_readme_block_is_run_or_checked() {
    let all = blocks();
    assert!(all.len() >= BLOCKS.len(), "README.md has its code blocks");
    for (info, body) in &all {
        if info == "toml" {
            continue;
        }
        let matches: Vec<_> = BLOCKS
            .iter()
            .filter(|(i, needle, _)| i == info && body.contains(needle))
            .collect();
        assert_eq!(
            matches.len(),
            1,
            "this ```{info} block of README.md is not classified (or matches several entries) in \
             tests/it/readme.rs BLOCKS: run or check it there, or say why it cannot be run:\n{body}"
        );
    }
    for (info, needle, how) in BLOCKS {
        let n = all
            .iter()
            .filter(|(i, body)| i == info && body.contains(needle))
            .count();
        assert_eq!(
            n, 1,
            "BLOCKS entry ```{info} {needle:?} ({how}) must match exactly one README block"
        );
    }
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
    let block = block("bash", "walcast --config config.toml setup");
    let db = TestDatabase::new().await;
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_walcast"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("WALCAST_SLOT", db.name.as_str()),
        ("WALCAST_PUBLICATION", db.name.as_str()),
        ("WALCAST_REPLAY_DIR", db.replay_dir.path().to_str().unwrap()),
    ];
    let lines: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    let (run, set_up): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| l.ends_with(" run"));
    assert_eq!(set_up.len(), 2, "check and setup: {lines:?}");
    assert_eq!(run.len(), 1, "run: {lines:?}");
    // A README line as a user runs it: bash in the repository, the test database's env.
    let run_line = |line: &str| {
        let output = std::process::Command::new("bash")
            .args(["-c", line])
            .current_dir(repo())
            .envs(env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status, stdout)
    };
    let mut codes = Vec::new();
    for round in 0..2 {
        for line in &set_up {
            let (status, stdout) = run_line(line);
            codes.push((round, line.to_string(), status.code(), stdout));
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

    // `run` serves until stopped: it is ready once replication streams, and SIGTERM stops it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut walcast = Command::new("bash")
        .args(["-c", &format!("exec {}", run[0])])
        .current_dir(repo())
        .envs(env)
        .env("WALCAST_LISTEN", addr.to_string())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(
        "`walcast run` to answer /readyz with 200",
        TIMEOUT,
        || async { matches!(http_get(addr, "/readyz").await, Ok((200, body)) if body == "ready") },
    )
    .await;
    let pid = walcast.id().unwrap().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(TIMEOUT, walcast.wait())
        .await
        .expect("`walcast run` stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "`walcast run` exits cleanly: {status}");

    // Step 5 (in the text, not a block): teardown drops the slot and the publication.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let teardown = "walcast --config config.toml teardown";
    assert!(
        readme.contains(&format!("`{teardown}`")),
        "README's teardown step"
    );
    let (status, stdout) = run_line(teardown);
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("walcast teardown:"), "{stdout}");
    let slots = db
        .client
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1
             UNION ALL SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&db.name],
        )
        .await
        .unwrap();
    assert!(
        slots.is_empty(),
        "teardown left the slot or the publication"
    );
    db.drop_all().await;
}

#[test]
fn the_tls_database_url_means_what_the_table_says() {
    let block = block("bash", "sslmode=verify-full");
    let output = std::process::Command::new("bash")
        .arg("-euc")
        .arg(format!("{block}\nprintf '%s' \"$DATABASE_URL\""))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let url = String::from_utf8(output.stdout).unwrap();
    let mut config = Config::default();
    config
        .apply_env(&HashMap::from([("DATABASE_URL".to_owned(), url.clone())]))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(config.database.url.expose(), url);
    let tls = walcast::tls::split_url(config.database.url.expose())
        .unwrap_or_else(|e| panic!("{url}: {e:?}"))
        .tls;
    assert_eq!(tls.mode, SslMode::VerifyFull);
    assert_eq!(
        tls.root_cert,
        Some(RootCerts::File("/etc/walcast/db-ca.pem".into()))
    );
    assert!(tls.verifies_chain() && tls.verifies_host());
}

/// A README example run by Node from a temporary folder that sees `tests/js/node_modules`.
struct NodeBlock {
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl NodeBlock {
    fn spawn(source: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            repo().join("tests/js/node_modules"),
            dir.path().join("node_modules"),
        )
        .unwrap();
        std::fs::write(dir.path().join("example.mjs"), source).unwrap();
        let mut child = Command::new("node")
            .arg("example.mjs")
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        NodeBlock {
            stdin: child.stdin.take().unwrap(),
            lines: BufReader::new(child.stdout.take().unwrap()).lines(),
            _child: child,
            _dir: dir,
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line printed that contains `needle` (others are skipped).
    async fn line_with(&mut self, needle: &str) -> String {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("the example exited before printing {needle:?}"));
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the example printed no {needle:?} within {TIMEOUT:?}"))
    }

    /// The next JSON line `{"readme": kind, …}` (printed by the lines the test adds).
    async fn next(&mut self, kind: &str) -> Value {
        loop {
            let line = self.line_with(&format!("{{\"readme\":{}", js(kind))).await;
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return value;
            }
        }
    }
}

/// The Strapi database the client examples watch: the capture up to the edited draft of
/// [`ARTICLE`], articles readable by the Public role.
async fn article_database() -> TestDatabase {
    let db = TestDatabase::new().await;
    db.replay_range(1, 13).await;
    db.grant("public", "api::article.article.find").await;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_io_examples_receive_events() {
    let db = article_database().await;
    let walcast = Walcast::start(db.config()).await;
    let url = walcast.url();

    // "Clients": the first example, with a line saying when its socket is connected.
    let first = block("js", "// no token: the Public role");
    let mut first = NodeBlock::spawn(&format!(
        "{}\nsocket.on(\"connect\", () => console.log(JSON.stringify({{ readme: \"connected\" }})));\n",
        put(&first, README_URL, &url)
    ));
    // "Resuming": the example, then what its socket gets and commands to go offline and back.
    let resume = block("js", "walcast:gap");
    let mut resume = NodeBlock::spawn(&format!(
        r#"{}
import {{ createInterface }} from "node:readline";
const print = (o) => console.log(JSON.stringify(o));
socket.on("connect", () => print({{ readme: "connected", sent: lastOffset ?? null }}));
socket.on("article:create", (article, offset) =>
  print({{ readme: "article:create", documentId: article.documentId, offset, lastOffset }}));
socket.on("walcast:gap", (gap) => print({{ readme: "gap", gap }}));
createInterface({{ input: process.stdin }}).on("line", (line) => {{
  if (line === "disconnect") {{ socket.disconnect(); print({{ readme: "disconnected", lastOffset }}); }}
  if (line === "connect") socket.connect();
}});
"#,
        put(&resume, README_URL, &url)
    ));
    first.next("connected").await;
    let connected = resume.next("connected").await;
    assert!(connected["sent"].is_null(), "{connected}");

    // Strapi publishes the article: both examples get its `article:create`.
    db.replay("14").await;
    let line = first.line_with(ARTICLE).await;
    assert_eq!(
        line,
        format!("{ARTICLE} {ARTICLE_TITLE}"),
        "what the example logs"
    );
    let created = resume.next("article:create").await;
    assert_eq!(created["documentId"], ARTICLE);
    let offset = created["offset"].as_str().expect("an offset").to_owned();
    assert_eq!(
        created["lastOffset"], offset,
        "the example's OFFSET pattern recognises walcast's offsets"
    );

    // "Client events": subscribe-entity on a socket to walcast, for that article.
    let subscribe = block("js", "\"subscribe-entity\"");
    let mut subscribe = NodeBlock::spawn(&format!(
        "import {{ io }} from \"socket.io-client\";\nimport {{ inspect }} from \"node:util\";\ninspect.defaultOptions.breakLength = Infinity; // one line per console.log\nconst socket = io({});\nconst article = {{ documentId: {} }};\n{subscribe}",
        js(&url),
        js(ARTICLE)
    ));
    let ack = subscribe.line_with("success").await;
    assert!(ack.contains("success: true"), "{ack}");
    assert!(
        ack.contains(&format!("room: 'api::article.article:{ARTICLE}'")),
        "{ack}"
    );

    // Offline while Strapi goes on (actions 15 to 41): reconnecting sends the example's last
    // offset, and walcast replays what was missed, newest last, nothing seen before.
    resume.send("disconnect").await;
    let gone = resume.next("disconnected").await;
    assert_eq!(gone["lastOffset"], offset.as_str());
    db.replay_range(15, 41).await;
    resume.send("connect").await;
    let again = resume.next("connected").await;
    assert_eq!(
        again["sent"],
        offset.as_str(),
        "the example sends its offset"
    );
    loop {
        let replayed = resume.next("article:create").await;
        let replayed_offset = replayed["offset"].as_str().unwrap();
        assert!(
            replayed_offset > offset.as_str(),
            "{replayed} after {offset}"
        );
        if replayed["documentId"] == SECOND_ARTICLE {
            break;
        }
    }

    drop((first, resume, subscribe));
    walcast.stop().await;
    db.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authentication_example_connects_each_principal() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 8).await;
    let config = db.config();
    create_session(&db, 301, "readme-admin-session", 1, "admin").await;
    let api_token = create_token(&db, &config, token(301, "readme", "full-access")).await;
    let jwt = user_jwt(&config, 1);
    let admin_jwt = access_jwt(
        config.strapi.admin_jwt_secret.expose(),
        1,
        "readme-admin-session",
    );
    let walcast = Walcast::start(config).await;

    // The example's three lines, with the credentials they name, and the rooms each socket is in.
    let example = block("js", "strategy: \"api-token\"");
    let mut node = NodeBlock::spawn(&format!(
        r#"import {{ io as connect }} from "socket.io-client";
const url = {}, jwt = {}, apiToken = {}, adminJwt = {};
const sockets = [];
const io = (...args) => {{ const socket = connect(...args); sockets.push(socket); return socket; }};
{example}
sockets.forEach((socket, i) => {{
  socket.on("connect_error", (e) => console.log(JSON.stringify({{ readme: "refused", i, message: e.message }})));
  socket.on("connect", () => socket.emit("get-rooms", (res) =>
    console.log(JSON.stringify({{ readme: "rooms", i, rooms: res.rooms }}))));
}});
console.log(JSON.stringify({{ readme: "sockets", n: sockets.length }}));
"#,
        js(&walcast.url()),
        js(&jwt),
        js(&api_token),
        js(&admin_jwt)
    ));
    assert_eq!(node.next("sockets").await["n"], 3);
    let mut rooms = [Value::Null, Value::Null, Value::Null];
    for _ in 0..3 {
        let line = loop {
            let line = node.line_with("\"readme\":").await;
            let value: Value = serde_json::from_str(&line).unwrap();
            assert_ne!(value["readme"], "refused", "{value}");
            if value["readme"] == "rooms" {
                break value;
            }
        };
        rooms[line["i"].as_u64().unwrap() as usize] = line["rooms"].clone();
    }
    assert_eq!(
        rooms[0],
        json!(["io-role-authenticated"]),
        "a logged-in user"
    );
    assert_eq!(rooms[1], json!(["io-token-readme"]), "an API token");
    assert_eq!(
        rooms[2],
        json!(["io-admin-user-1:draft"]),
        "an admin, drafts"
    );

    drop(node);
    walcast.stop().await;
    db.drop_all().await;
}

/// One JSON line of tests/js/readme-browser.mjs, which should come while `waiting` for it.
async fn browser_line(lines: &mut Lines<BufReader<ChildStdout>>, waiting: &str) -> Value {
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .unwrap_or_else(|_| {
            panic!("readme-browser.mjs printed nothing for {TIMEOUT:?} while waiting for {waiting}")
        })
        .unwrap()
        .expect("readme-browser.mjs exited");
    eprintln!("readme-browser.mjs: {line}");
    let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(
        value["type"] != "pageerror" && value["type"] != "failed",
        "{value}"
    );
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_examples_show_events() {
    let Some(chromium) = crate::dashboard::chromium() else {
        println!(
            "SKIPPED README browser examples: no Chromium at /usr/bin/chromium (install Debian's `chromium` package: `apt-get install -y chromium`, which .ci/run does, or set WALCAST_CHROMIUM)"
        );
        return;
    };
    let js_dir = repo().join("tests/js");
    for package in ["esbuild", "react", "react-dom", "vue", "@walcast/client"] {
        assert!(
            js_dir.join("node_modules").join(package).exists(),
            "tests/js/node_modules/{package} is missing: run `npm ci --prefix tests/js` (make test does)"
        );
    }
    let db = article_database().await;
    let walcast = Walcast::start(db.config()).await;
    let url = walcast.url();

    // The blocks as files next to the packages; the @walcast/client example says when it is
    // connected (its top-level `await` of a subscription returns once it is) and what it got.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(js_dir.join("node_modules"), dir.path().join("node_modules"))
        .unwrap();
    let client = put(&block("js", "createWalcastClient"), README_URL, &url);
    std::fs::write(
        dir.path().join("client.js"),
        format!("{client}\nconsole.log(\"readme:connected\", JSON.stringify(ack));\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("react.jsx"), block("jsx", "useState")).unwrap();
    std::fs::write(dir.path().join("vue.js"), block("js", "from \"vue\"")).unwrap();
    let page = |name: &str, app: Option<&str>, file: &str| {
        let file = dir.path().join(file);
        match app {
            Some(app) => format!(
                "{name}={}:{}",
                js_dir.join("readme").join(app).display(),
                file.display()
            ),
            None => format!("{name}={}", file.display()),
        }
    };
    let mut child = Command::new("node")
        .arg(js_dir.join("readme-browser.mjs"))
        .args(["--url", &url])
        .arg("--chromium")
        .arg(&chromium)
        .args(["--page", &page("client", None, "client.js")])
        .args(["--page", &page("react", Some("react-app.jsx"), "react.jsx")])
        .args(["--page", &page("vue", Some("vue-app.js"), "vue.js")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut connected = HashMap::new();
    while connected.len() < 3 {
        let line = browser_line(&mut lines, "every page to connect").await;
        if let Some(text) = line["text"].as_str()
            && let Some(rest) = text.strip_prefix("readme:connected")
        {
            connected.insert(line["page"].as_str().unwrap().to_owned(), rest.to_owned());
        }
    }
    let ack: Value = serde_json::from_str(connected["client"].trim()).unwrap();
    assert_eq!(
        ack,
        json!({"success": true, "room": format!("api::article.article:{ARTICLE}"),
               "uid": "api::article.article", "id": ARTICLE}),
        "the example's subscribeEntity"
    );

    // Strapi publishes the article: the plain example logs it, React and Vue render it.
    db.replay("14").await;
    let mut logged = false;
    let mut rendered = std::collections::HashSet::new();
    while !(logged && rendered.len() == 2) {
        let line = browser_line(
            &mut lines,
            "the @walcast/client example to log the article and React and Vue to render it",
        )
        .await;
        let page = line["page"].as_str().unwrap_or_default().to_owned();
        match line["type"].as_str() {
            Some("console")
                if page == "client" && line["text"] == format!("new {ARTICLE_TITLE}") =>
            {
                logged = true;
            }
            Some("rendered") if line["items"] == json!([ARTICLE_TITLE]) => {
                rendered.insert(page);
            }
            _ => {}
        }
    }
    stdin.write_all(b"exit\n").await.unwrap();
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("readme-browser.mjs exits")
        .unwrap();
    assert!(status.success());
    walcast.stop().await;
    db.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_examples_answer() {
    let db = TestDatabase::new().await;
    let mut config = db.config();
    config.admin.api_key = Secret::new(API_KEY);
    let walcast = Walcast::start(config).await;
    let url = walcast.url();
    let dir = tempfile::tempdir().unwrap();
    let localize = |body: &str| put(&put(body, README_URL, &url), README_API_KEY, API_KEY);
    let run = |line: &str| {
        let output = std::process::Command::new("bash")
            .args(["-euc", line])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let json = |line: &str, out: &str| -> Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{line}: {e}: {out}"))
    };

    let examples = localize(&block("bash", "/io/stats"));
    let mut checked = 0;
    for line in examples.lines().filter(|l| !l.trim().is_empty()) {
        let out = run(line);
        if line.contains("/readyz") {
            assert_eq!(out, "ready");
        } else if line.contains("/io/stats") {
            let data = &json(line, &out)["data"];
            assert!(data["connections"]["connected"].is_number(), "{out}");
            assert!(data["events"]["totalEvents"].is_number(), "{out}");
        } else if line.contains("/io/test-event") {
            let answer = &json(line, &out)["data"];
            assert_eq!(answer["success"], true, "{out}");
            assert_eq!(answer["eventName"], "hello", "{out}");
            assert_eq!(answer["data"]["from"], "curl", "{out}");
            assert_eq!(answer["data"]["test"], true, "{out}");
        } else if line.contains("/io/event-log") {
            let log = json(line, &out)["data"].clone();
            assert!(
                log.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["type"] == "test" && e["data"]["eventName"] == "hello"),
                "the test event is logged: {out}"
            );
        } else {
            panic!("a new curl example in README.md: check what it answers here: {line}");
        }
        checked += 1;
    }
    assert_eq!(checked, 4);

    // `PUT /io/settings` with the README's settings.json.
    std::fs::write(
        dir.path().join("settings.json"),
        block("json", "\"monitoring\""),
    )
    .unwrap();
    let put_settings = localize(&block("bash", "@settings.json"));
    let out = run(put_settings.trim());
    let answer = json(&put_settings, &out);
    assert_eq!(answer["reloaded"], true, "{out}");
    assert_eq!(
        answer["data"]["monitoring"]["maxEventLogSize"], 100,
        "{out}"
    );
    assert_eq!(
        answer["data"]["sensitiveFields"],
        json!(["internalNote"]),
        "{out}"
    );
    assert_eq!(
        answer["data"]["contentTypes"]["api::article.article"]["delete"], false,
        "{out}"
    );
    walcast.stop().await;
    db.drop_all().await;
}
