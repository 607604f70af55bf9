"""make bench, socket figures (issue 10 items 1-3): walcast's real service (`walcast run`) on the
bench cluster, driven by real WAL (rows committed in the bench database), against Node
socket.io-client processes (bench/node-baseline/load.mjs); the Node baseline is a plain
socket.io@4 server (bench/node-baseline/server.mjs) broadcasting walcast's own payload."""
import base64
import hashlib
import hmac
import json
import os
import resource
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

import run  # noqa: E402  (bench/run.py: psql, progress, RELEASE, REPO)

NODE_DIR = os.path.join(run.REPO, "bench/node-baseline")
JWT_SECRET = "bench-users-permissions-jwt-secret-0123456789"
WALCAST_PORT = int(os.environ.get("WALCAST_BENCH_WS_PORT", "54371"))
NODE_PORT = int(os.environ.get("WALCAST_BENCH_NODE_PORT", "54372"))
FAN_CLIENTS = int(os.environ.get("WALCAST_BENCH_FAN_CLIENTS", "200"))
FAN_CHANGES = int(os.environ.get("WALCAST_BENCH_FAN_CHANGES", "2000"))
# The clients: "rust" (examples/load_client.rs, a lean Socket.IO client: one thread a process,
# so the servers, not the clients, are the ceiling on these 2 cores) or "node" (the official
# socket.io-client, bench/node-baseline/load.mjs). Both speak the same command line and output.
CLIENT = os.environ.get("WALCAST_BENCH_CLIENT", "rust")
LOADERS = int(os.environ.get("WALCAST_BENCH_LOADERS", "2" if CLIENT == "rust" else "4"))
IDLE_SOCKETS = int(os.environ.get("WALCAST_BENCH_IDLE_SOCKETS", "15000"))


def npm_ci():
    stamp = os.path.join(NODE_DIR, "node_modules/.package-lock.json")
    lock = os.path.join(NODE_DIR, "package-lock.json")
    if not os.path.exists(stamp) or os.path.getmtime(stamp) < os.path.getmtime(lock):
        run.progress("npm ci --prefix bench/node-baseline (socket.io 4.8.1, socket.io-client 4.8.4)")
        run.sh("npm", "ci", "--prefix", NODE_DIR, "--no-audit", "--no-fund")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def user_jwt(user_id=1):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"id": user_id, "iat": int(time.time())}).encode())
    sig = b64(hmac.new(JWT_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def wait_port(port, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process on port {port} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling", timeout=1).read()
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"nothing answers on port {port}")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Walcast:
    def __init__(self, url, slot):
        self.dir = tempfile.mkdtemp(prefix="walcast-bench-")
        self.config = os.path.join(self.dir, "walcast.toml")
        with open(self.config, "w") as f:
            f.write(f"""[database]
url = "{url}"
[replication]
slot = "{slot}"
publication = "{run.PUB}"
[server]
listen = "127.0.0.1:{WALCAST_PORT}"
[strapi]
jwt_secret = "{JWT_SECRET}"
api_token_salt = "bench-api-token-salt-0123456789"
admin_jwt_secret = "bench-admin-jwt-secret-0123456789"
[[content_types]]
uid = "api::article.article"
actions = ["create", "update", "delete", "publish", "unpublish"]
[security]
require_authentication = true
max_connections = 100000
rate_limit = {{ max_events_per_second = 10, max_connections_per_ip = 100000 }}
[delivery]
replay_dir = "{self.dir}/replay"
[clients]
socket_buffer_packets = 65536
""")
        exe = os.path.join(run.RELEASE, "walcast")
        run.sh(exe, "setup", "--config", self.config)
        self.log = open(os.path.join(self.dir, "walcast.log"), "w")
        self.proc = subprocess.Popen([exe, "run", "--config", self.config], stdout=self.log, stderr=self.log,
                                     env={**os.environ, "RUST_LOG": os.environ.get(
                                         "WALCAST_BENCH_LOG", "warn,walcast::replication::stream=info")})
        wait_port(WALCAST_PORT, self.proc)
        # The HTTP side answers before the document index snapshot is loaded and streaming
        # starts: wait for streaming, or latency and memory would include the snapshot.
        deadline = time.monotonic() + 120
        while "replication streaming" not in open(self.log.name).read():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"walcast did not start streaming (see {self.log.name})")
            time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class Loaders:
    """`clients` Socket.IO connections over `loaders` client processes (CLIENT: rust or node)."""

    def __init__(self, port, clients, expect=0, latency=False, sample=None, loaders=LOADERS):
        self.procs = []
        program = [os.path.join(run.RELEASE, "examples/load_client")] if CLIENT == "rust" else ["node", os.path.join(NODE_DIR, "load.mjs")]
        per = [clients // loaders + (1 if i < clients % loaders else 0) for i in range(loaders)]
        for i, n in enumerate(p for p in per if p):
            args = program + ["--url", f"http://127.0.0.1:{port}",
                    "--clients", str(n), "--auth", json.dumps({"token": user_jwt()}), "--expect", str(expect)]
            if latency:
                args.append("--latency")
            if sample and i == 0:
                args += ["--sample", sample]
            self.procs.append(subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in self.procs:
            line = p.stdout.readline()
            if '"ready"' not in line:
                raise SystemExit(f"load client did not connect: {line!r}")

    def results(self, timeout=120):
        """Each process's result line: when its clients have all expected events, or `done`
        sent at the timeout (stdin stays open until then: EOF would end the count)."""
        def stop_all():
            for p in self.procs:
                if p.poll() is None:
                    try:
                        p.stdin.write("done\n")
                        p.stdin.flush()
                    except OSError:
                        pass
        timer = threading.Timer(timeout, stop_all)
        timer.start()
        try:
            return [json.loads(p.stdout.readline()) for p in self.procs]
        finally:
            timer.cancel()

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=30)


def insert_articles(url, n, first_id):
    run.psql(url, f"""INSERT INTO articles (id, document_id, title, slug, body, views, secret_note, created_at, updated_at, published_at, locale)
      SELECT i, substr(md5(i::text), 1, 24), 'Article ' || i, 'article-' || i,
             repeat('Lorem ipsum dolor sit amet. ', 8), i % 1000, 'secret ' || i, now(), now(), now(), 'en'
      FROM generate_series({first_id}, {first_id + n - 1}) i""")


def update_articles(url, first_id, n, per_txn):
    """n published articles updated, per_txn a transaction (real WAL, one event each)."""
    run.psql(url, f"""DO $$ BEGIN
      FOR t IN 0..{(n + per_txn - 1) // per_txn - 1} LOOP
        UPDATE articles SET views = views + 1, updated_at = now()
         WHERE id BETWEEN {first_id} + t * {per_txn} AND least({first_id + n - 1}, {first_id} + (t + 1) * {per_txn} - 1);
        COMMIT;
      END LOOP; END $$""")


def paced_updates(url, first_id, n, per_s):
    """n single-row commits at per_s a second, synchronous_commit on; title = commit-side clock."""
    run.sh("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", "SET synchronous_commit = on", "-c", f"""DO $$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
      FOR i IN 0..{n - 1} LOOP
        PERFORM pg_sleep(greatest(0, extract(epoch FROM t0 + i * interval '{1000 / per_s} ms' - clock_timestamp())));
        UPDATE articles SET title = 'lat:' || (extract(epoch FROM clock_timestamp()) * 1000)::text, updated_at = now()
         WHERE id = {first_id} + i % 100;
        COMMIT;
      END LOOP; END $$""")


def rate(results):
    total = sum(r["received"] for r in results)
    first = min(r["first"] for r in results if r["first"])
    last = max(r["last"] for r in results)
    return total, total / max((last - first) / 1000, 1e-9)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def fanout(url, runs):
    """Deliveries/s, walcast (real WAL: FAN_CHANGES article updates, 100 per transaction) vs Node."""
    npm_ci()
    insert_articles(url, FAN_CHANGES, 20_000_001)
    run.psql(url, "SELECT pg_create_logical_replication_slot('bench_ws', 'pgoutput')")
    wal = Walcast(url, "bench_ws")
    sample = os.path.join(wal.dir, "payload.json")
    node = subprocess.Popen(["node", os.path.join(NODE_DIR, "server.mjs"), "--port", str(NODE_PORT)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    node.stdout.readline()
    figures = {"walcast": [], "node": []}
    try:
        for i in range(runs):
            loaders = Loaders(WALCAST_PORT, FAN_CLIENTS, expect=FAN_CHANGES, sample=sample if i == 0 else None)
            update_articles(url, 20_000_001, FAN_CHANGES, 100)
            total, r = rate(loaders.results())
            loaders.close()
            figures["walcast"].append(r)
            run.progress(f"fan-out run {i + 1}/{runs}: walcast {r:>10,.0f} deliveries/s ({total:,} delivered)")
            loaders = Loaders(NODE_PORT, FAN_CLIENTS, expect=FAN_CHANGES)
            node.stdin.write(f"emit {FAN_CHANGES} {sample}\n")
            node.stdin.flush()
            total, r = rate(loaders.results())
            node.stdout.readline()
            loaders.close()
            figures["node"].append(r)
            run.progress(f"fan-out run {i + 1}/{runs}: node    {r:>10,.0f} deliveries/s ({total:,} delivered)")
    finally:
        node.stdin.close()
        node.wait(timeout=30)
        wal.stop()
    return figures, wal


def latency(url, clients, changes, per_s, tag=""):
    slot = f"bench_lat{clients}{tag}"
    run.psql(url, f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    wal = Walcast(url, slot)
    try:
        loaders = Loaders(WALCAST_PORT, clients, expect=changes, latency=True)
        run.progress(f"latency: {clients} subscribers connected, committing {changes:,} changes at {per_s:,}/s")
        paced_updates(url, 20_000_001, changes, per_s)
        res = loaders.results(timeout=60)
        loaders.close()
    finally:
        wal.stop()
        run.psql(url, f"SELECT pg_drop_replication_slot('{slot}')")
    lat = [x for r in res for x in r["latencies"]]
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat) if lat else float("nan"),
            "samples": len(lat), "expected": clients * changes}


def idle_memory(url, sockets, tag=""):
    nofile = raise_nofile()
    slot = f"bench_idle{tag}"
    run.psql(url, f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    wal = Walcast(url, slot)
    try:
        time.sleep(1)
        base = rss_kb(wal.proc.pid)
        loaders = Loaders(WALCAST_PORT, sockets, loaders=max(LOADERS, sockets // 2500))
        time.sleep(2)
        full = rss_kb(wal.proc.pid)
        run.progress(f"idle memory: {sockets:,} authenticated sockets, RSS {base / 1024:.0f} → {full / 1024:.0f} MB")
        loaders.close()
        time.sleep(3)
        after = rss_kb(wal.proc.pid)
    finally:
        wal.stop()
        run.psql(url, f"SELECT pg_drop_replication_slot('{slot}')")
    return {"base": base, "full": full, "after": after, "per_socket": (full - base) * 1024 / sockets,
            "nofile": nofile, "sockets": sockets}


LAT_CHANGES = int(os.environ.get("WALCAST_BENCH_LAT_CHANGES", "3000"))
ROOM_CLIENTS = int(os.environ.get("WALCAST_BENCH_ROOM_CLIENTS", "1000"))
ROOM_RATE = int(os.environ.get("WALCAST_BENCH_ROOM_RATE", "50"))
ROOM_CHANGES = int(os.environ.get("WALCAST_BENCH_ROOM_CHANGES", "200"))


def section(url, runs):
    """The socket tables of bench/results.md (markdown), the misses, and their conditions."""
    med = statistics.median
    fan, _ = fanout(url, runs)
    w, n = fan["walcast"], fan["node"]
    ratios = [a / b for a, b in zip(w, n)]
    def median_run(measure, key, label):
        """`runs` runs of measure(i); the one with the median `key` (its other figures with
        it), with every run's `key` and the samples summed over the runs."""
        all_runs = []
        for i in range(runs):
            one = measure(i)
            run.progress(f"{label} run {i + 1}/{runs}: " + ", ".join(
                f"{k} {v:,.1f}" for k, v in one.items() if isinstance(v, float)))
            all_runs.append(one)
        chosen = dict(sorted(all_runs, key=lambda x: x[key])[len(all_runs) // 2])
        chosen["all"] = [x[key] for x in all_runs]
        chosen["runs"] = runs
        if "samples" in chosen:
            chosen["samples"] = sum(x["samples"] for x in all_runs)
            chosen["expected"] = sum(x["expected"] for x in all_runs)
        return chosen

    lat = median_run(lambda i: latency(url, 100, LAT_CHANGES, 1000, tag=f"_{i}"), "p99",
                     "latency, 100 subscribers")
    room = median_run(lambda i: latency(url, ROOM_CLIENTS, ROOM_CHANGES, ROOM_RATE, tag=f"_{i}"), "p99",
                      f"latency, {ROOM_CLIENTS:,}-subscriber room")
    idle = median_run(lambda i: idle_memory(url, IDLE_SOCKETS, tag=f"_{i}"), "per_socket", "idle memory")
    back = idle["after"] / idle["base"] - 1
    run.progress(f"idle memory: {idle['per_socket'] / 1024:.1f} KB per socket (median of {runs}); after they left RSS is {back * 100:+.0f}% of baseline")

    def r(xs, fmt="{:,.0f}"):
        return f"{fmt.format(med(xs))} | {fmt.format(min(xs))} – {fmt.format(max(xs))}"
    fan_md = "\n".join([
        f"| Fan-out, {FAN_CLIENTS} clients × {FAN_CHANGES:,} changes (median of {runs} runs) | Median | Min – max | Target |",
        "|---|---|---|---|",
        f"| walcast (`walcast run`, real WAL, permission check + sanitize on), deliveries/s | {r(w)} | ≥ 200,000 |",
        f"| Node socket.io 4.8.1 `io.emit` of walcast's payload, deliveries/s | {r(n)} | baseline |",
        f"| walcast ÷ Node (paired per round) | {r(ratios, '{:.2f}×')} | ≥ 5× |",
    ])
    lat_md = "\n".join([
        "| Commit → client latency | p50 | p99 | max | samples | Target |",
        "|---|---|---|---|---|---|",
        f"| 100 subscribers, 1,000 changes/s ({LAT_CHANGES:,} single-row commits; the run with the median p99 of {lat['runs']}: {', '.join(f'{x:.1f}' for x in lat['all'])} ms) | {lat['p50']:.1f} ms | {lat['p99']:.1f} ms | {lat['max']:.1f} ms | {lat['samples']:,} / {lat['expected']:,} | p50 ≤ 3 ms, p99 ≤ 15 ms |",
        f"| {ROOM_CLIENTS:,}-subscriber room, {ROOM_RATE} changes/s ({ROOM_CHANGES} commits; the run with the median p99 of {room['runs']}: {', '.join(f'{x:.1f}' for x in room['all'])} ms) | {room['p50']:.1f} ms | {room['p99']:.1f} ms | {room['max']:.1f} ms | {room['samples']:,} / {room['expected']:,} | p99 ≤ 50 ms |",
    ])
    mem_md = "\n".join([
        f"| Idle authenticated sockets ({idle['sockets']:,}; the run with the median per-socket figure of {idle['runs']}: {', '.join(f'{x / 1024:.1f}' for x in idle['all'])} KB) | walcast RSS | Target |",
        "|---|---|---|",
        f"| before they connect | {idle['base'] / 1024:.1f} MB | baseline |",
        f"| all connected | {idle['full'] / 1024:.1f} MB | |",
        f"| per socket (RSS delta ÷ sockets) | {idle['per_socket'] / 1024:.1f} KB | ≤ 10 KB |",
        f"| 3 s after they all left | {idle['after'] / 1024:.1f} MB ({back * 100:+.0f}% of baseline) | within 20 % |",
    ])
    misses = []
    if med(w) < 200_000:
        misses.append(f"- fan-out: {med(w):,.0f} deliveries/s, {(1 - med(w) / 200_000) * 100:.0f}% below 200,000.")
    if med(ratios) < 5:
        misses.append(f"- fan-out ÷ Node: {med(ratios):.2f}×, {(1 - med(ratios) / 5) * 100:.0f}% short of 5×.")
    if lat["p50"] > 3:
        misses.append(f"- latency p50 (100 subscribers): {lat['p50']:.1f} ms, {lat['p50'] - 3:.1f} ms over 3 ms.")
    if lat["p99"] > 15:
        misses.append(f"- latency p99 (100 subscribers): {lat['p99']:.1f} ms, {lat['p99'] - 15:.1f} ms over 15 ms.")
    if room["p99"] > 50:
        misses.append(f"- latency p99 ({ROOM_CLIENTS:,}-subscriber room): {room['p99']:.1f} ms, {room['p99'] - 50:.1f} ms over 50 ms.")
    if idle["per_socket"] > 10 * 1024:
        misses.append(f"- memory per idle socket: {idle['per_socket'] / 1024:.1f} KB, {idle['per_socket'] / 1024 - 10:.1f} KB over 10 KB.")
    if back > 0.2:
        misses.append(f"- RSS after the sockets left: {back * 100:+.0f}% of baseline, over +20 %.")
    for lost, name in ((lat, "100 subscribers"), (room, f"{ROOM_CLIENTS:,}-room")):
        if lost["samples"] < lost["expected"]:
            misses.append(f"- latency ({name}): {lost['expected'] - lost['samples']:,} of {lost['expected']:,} events not received within the 60 s window.")
    client_md = ("the lean Socket.IO client `examples/load_client.rs` (Rust, Engine.IO v4 over "
                 "WebSocket, one thread a process: it reads frames, counts `42` event packets, answers "
                 "pings; a drop-in for `bench/node-baseline/load.mjs`)" if CLIENT == "rust" else
                 "the official socket.io-client 4.8.4 (websocket transport, `bench/node-baseline/load.mjs`)")
    conditions = f"""- Sockets: walcast's real service (`target/release/walcast run`, a temporary config: article
  events, `require_authentication = true`, `socket_buffer_packets = 65536`, per-IP limit raised),
  its own slot made just before it starts. Clients (`WALCAST_BENCH_CLIENT={CLIENT}`): {client_md},
  in {LOADERS}+ processes, each socket authenticated with a users-permissions JWT of the
  fixture's user (role Authenticated), so all sit in `io-role-authenticated`; every delivery
  passed walcast's permission check and sanitizer (no `secretNote` in the payload). The
  clients share the 2 cores with the servers and the database. The same clients measure
  walcast and the Node baseline; the official Node client costs several times more CPU per
  received event than either server spends sending it, so with it the clients, not the
  servers, were the ceiling (walcast 204,119/s vs Node 184,926/s, 1.21×, in the 2026-11-25 run;
  `WALCAST_BENCH_CLIENT=node make bench` repeats that). The client compatibility itself is
  tested with the official client in `make test`.
- Fan-out: driven by real WAL — {FAN_CHANGES:,} published articles updated, 100 rows a
  transaction, committed after all clients connected; deliveries/s = deliveries ÷ (last − first
  receipt over all clients), so WAL write + decode are inside the window for walcast. Node
  baseline: a plain socket.io 4.8.1 server (`bench/node-baseline/server.mjs`) broadcasting the
  payload walcast sent (captured by the first client) {FAN_CHANGES:,} times with `io.emit` to
  the same number of clients; its time is emit → last receipt. Runs alternate walcast / Node.
- Latency: single-row commits with `synchronous_commit = on` (the cluster default here is off),
  paced by pg_sleep in one DO block; each UPDATE writes `title = 'lat:' || clock_timestamp()`
  in epoch ms, the client subtracts it from its receipt time (same machine clock). The commit
  comes slightly after clock_timestamp(), so the figures slightly overstate latency.
  The {ROOM_CLIENTS:,}-subscriber room runs at {ROOM_RATE} changes/s (not 1,000/s: {ROOM_CLIENTS:,} × 1,000
  = 1M deliveries/s is beyond what the clients on these 2 cores can receive).
- Idle memory: VmRSS of the walcast process (jemalloc, `walcast::service_allocator!`) before, 2 s after {idle['sockets']:,}
  sockets connected and authenticated, and 3 s after they disconnected; `ulimit -n` raised to
  {idle['nofile']:,} by the harness (RLIMIT_NOFILE, inherited by walcast and the client processes).
"""
    md = "## Fan-out (deliveries/s, permission checks + sanitization on)\n\n" + fan_md + "\n\n"
    md += "## Commit → client latency\n\n" + lat_md + "\n\n"
    md += "## Memory per idle authenticated socket\n\n" + mem_md + "\n\n"
    return md, misses, conditions
