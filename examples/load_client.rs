//! A lean Socket.IO load client for `make bench` (bench/sockets.py), a drop-in for
//! bench/node-baseline/load.mjs: same options, same output lines.
//!
//!   load_client --url http://127.0.0.1:PORT --clients N --auth '{"token":"…"}'
//!               [--expect E] [--latency] [--sample FILE]
//!
//! Opens N Socket.IO v5 / Engine.IO v4 connections over WebSocket to the default namespace with
//! `auth`, prints `{"type":"ready"}` once all are connected, then counts the events received
//! (`42[…]` packets) and answers the server's pings. The result line
//! `{"type":"result","received":n,"first":ms,"last":ms,"latencies":[ms…]}` is printed once every
//! client has E events, or on a `done` line / EOF on stdin.
//!
//! Why it exists: the official socket.io-client in Node costs far more CPU per received event
//! than either server spends sending it; on a 2-core machine the Node clients become the ceiling
//! of every fan-out and latency figure. This client does the protocol's minimum (one WebSocket
//! frame read, a prefix check, a counter) on one thread, so the servers are what is measured.
//! Both the walcast and the Node baseline server are measured with the same clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// The server's base URL (http://host:port).
    #[arg(long)]
    url: String,
    /// Connections to open.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// The handshake's `auth` object (JSON).
    #[arg(long, default_value = "{}")]
    auth: String,
    /// Events each client expects; 0: count until `done`.
    #[arg(long, default_value_t = 0)]
    expect: u64,
    /// Take a commit → client latency sample from events whose title is `lat:<epoch ms>`.
    #[arg(long)]
    latency: bool,
    /// Write the first event's arguments (JSON array) to this file.
    #[arg(long)]
    sample: Option<String>,
}

#[derive(Default)]
struct Tally {
    received: u64,
    first: f64,
    last: f64,
    latencies: Vec<f64>,
    sampled: bool,
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// `"title":"lat:<ms>"` in an event frame: the commit-side clock of the changed row.
fn latency_mark(frame: &str) -> Option<f64> {
    const MARK: &str = "\"title\":\"lat:";
    let at = frame.find(MARK)? + MARK.len();
    let rest = &frame[at..];
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

struct Shared {
    args: Args,
    tally: Mutex<Tally>,
    done: Notify,
    total_expected: u64,
}

impl Shared {
    fn on_event(&self, frame: &str) {
        let t = now_ms();
        let mut tally = self.tally.lock().expect("tally");
        if tally.first == 0.0 {
            tally.first = t;
        }
        tally.last = t;
        tally.received += 1;
        if !tally.sampled {
            tally.sampled = true;
            if let Some(path) = &self.args.sample {
                // `42["name", arg…]` → `[arg…]`, what load.mjs writes.
                if let Ok(serde_json::Value::Array(mut items)) = serde_json::from_str(&frame[2..]) {
                    if !items.is_empty() {
                        items.remove(0);
                    }
                    let _ = std::fs::write(path, serde_json::Value::Array(items).to_string());
                }
            }
        }
        if self.args.latency
            && let Some(mark) = latency_mark(frame)
        {
            tally.latencies.push(t - mark);
        }
        if self.total_expected > 0 && tally.received >= self.total_expected {
            self.done.notify_one();
        }
    }
}

/// One connection: Engine.IO open, Socket.IO CONNECT with `auth`, then events and pings.
async fn client(
    shared: Arc<Shared>,
    url: String,
    gate: Arc<Semaphore>,
    ready: Arc<Notify>,
    connected: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    // At most 256 handshakes at a time (the listen backlog); the permit goes once joined.
    let mut permit = Some(gate.acquire_owned().await?);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    // Engine.IO OPEN (`0{…}`), then our Socket.IO CONNECT and the server's answer.
    let mut joined = false;
    while let Some(message) = ws.next().await {
        let text = match message? {
            Message::Text(text) => text,
            Message::Close(_) => bail!("closed by the server"),
            _ => continue,
        };
        let frame = text.as_str();
        if frame.starts_with("42") {
            if joined {
                shared.on_event(frame);
            }
        } else if frame == "2" {
            ws.send(Message::text("3")).await?;
        } else if frame.starts_with('0') {
            ws.send(Message::text(format!("40{}", shared.args.auth)))
                .await?;
        } else if frame.starts_with("40") && !joined {
            joined = true;
            permit.take();
            if connected.fetch_add(1, Ordering::SeqCst) + 1 == shared.args.clients {
                ready.notify_one();
            }
        } else if let Some(error) = frame.strip_prefix("44") {
            bail!("connect_error: {error}");
        } else if frame.starts_with("41") {
            bail!("disconnected by the server");
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').replacen("http", "ws", 1);
    let url = format!("{base}/socket.io/?EIO=4&transport=websocket");
    let clients = args.clients;
    let shared = Arc::new(Shared {
        total_expected: args.expect * clients as u64,
        args,
        tally: Mutex::new(Tally::default()),
        done: Notify::new(),
    });
    let gate = Arc::new(Semaphore::new(256));
    let ready = Arc::new(Notify::new());
    let connected = Arc::new(AtomicUsize::new(0));
    let (failed_tx, mut failed) = tokio::sync::mpsc::unbounded_channel::<String>();
    for _ in 0..clients {
        let (shared, url, gate, ready, connected, failed_tx) = (
            Arc::clone(&shared),
            url.clone(),
            Arc::clone(&gate),
            Arc::clone(&ready),
            Arc::clone(&connected),
            failed_tx.clone(),
        );
        tokio::spawn(async move {
            if let Err(error) = client(shared, url, gate, ready, connected).await {
                let _ = failed_tx.send(format!("{error:#}"));
            }
        });
    }
    tokio::select! {
        _ = ready.notified() => println!("{{\"type\":\"ready\"}}"),
        Some(error) = failed.recv() => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    }
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            _ = shared.done.notified() => break,
            line = stdin.next_line() => match line {
                Ok(Some(line)) if line.trim() == "done" => break,
                Ok(Some(_)) => {}
                _ => break,
            },
            Some(error) = failed.recv() => eprintln!("{error}"),
        }
    }
    let tally = shared.tally.lock().expect("tally");
    let result = serde_json::json!({
        "type": "result",
        "received": tally.received,
        "first": tally.first,
        "last": tally.last,
        "latencies": tally.latencies,
    });
    println!("{result}");
    std::process::exit(0);
}
