#!/usr/bin/env python3
"""walcast benchmarks (`make bench`). Prints a progress line per step, a table at the end, and
writes bench/results.md. Every figure is the median of RUNS runs; each contender's baseline
runs in the same invocation, interleaved with it (the order rotates every round), and ratios
are taken round by round. Timings are never pass/fail: nothing here fails on a slow figure.

Socket figures (fan-out vs Node socket.io, latency, idle memory) are in bench/sockets.py (sizes:
WALCAST_BENCH_SOCKET_RUNS, _FAN_CLIENTS, _FAN_CHANGES, _LAT_CHANGES, _ROOM_CLIENTS, _IDLE_SOCKETS);
the route-cost figure is read from target/route_cost.txt (`cargo bench --bench route_cost`).

Environment: WALCAST_BENCH_RUNS (default 5), WALCAST_BENCH_TXNS (default 200 transactions of
1,000 articles rows + 1,000 articles_category_lnk rows), WALCAST_PG_BENCH_PORT (cluster port).
"""
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("WALCAST_BENCH_RUNS", "5"))
TXNS = int(os.environ.get("WALCAST_BENCH_TXNS", "200"))
ROWS_PER_TXN = 1000
BIG_ROWS = int(os.environ.get("WALCAST_BENCH_BIG_ROWS", "1000000"))
BIG_RUNS = int(os.environ.get("WALCAST_BENCH_BIG_RUNS", "2"))
DB = "walcast_bench"
TEMPLATE = "walcast_bench_template_06"
# Schema, first boot, admin, full-access API token, fr locale, a user, Authenticated may read articles.
FIXTURE_FILES = ["schema.sql"] + [f"replay/{f}" for f in sorted(os.listdir(os.path.join(REPO, "fixtures/strapi-5.54/replay"))) if f[:2] in ("00", "01", "02", "03", "04", "05", "06")]
PUB = "walcast_bench"
PGBIN = "/usr/lib/postgresql/15/bin"
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release")
STARTED = time.monotonic()


def progress(msg):
    print(f"[bench {time.monotonic() - STARTED:6.1f}s] {msg}", file=sys.stderr, flush=True)


def sh(*args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(args)[:300]}\n{p.stderr}")
    return p.stdout


def psql(url, sql):
    return sh("psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql).strip()


def psql_file(url, path):
    sh("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-f", path)


def cluster():
    progress("starting the bench Postgres cluster (scripts/pg-cluster.sh start bench)")
    base = sh(os.path.join(REPO, "scripts/pg-cluster.sh"), "start", "bench").strip().splitlines()[-1]
    return base.rsplit("/", 1)[0]


def fresh_database(base):
    admin = f"{base}/postgres"
    for (slot,) in [r.split("|") for r in psql(admin, "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'bench\\_%'").splitlines() if r]:
        psql(admin, f"SELECT pg_drop_replication_slot('{slot}')")
    if not psql(admin, f"SELECT 1 FROM pg_database WHERE datname = '{TEMPLATE}'"):
        progress(f"creating the template database (fixtures/strapi-5.54: {', '.join(FIXTURE_FILES)})")
        psql(admin, f"CREATE DATABASE {TEMPLATE}_building")
        for f in FIXTURE_FILES:
            psql_file(f"{base}/{TEMPLATE}_building", os.path.join(REPO, "fixtures/strapi-5.54", f))
        psql(admin, f"ALTER DATABASE {TEMPLATE}_building RENAME TO {TEMPLATE}")
    progress(f"fresh database {DB} from the template (a Strapi app with no articles)")
    psql(admin, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql(admin, f"CREATE DATABASE {DB} TEMPLATE {TEMPLATE}")
    url = f"{base}/{DB}"
    # The two categories the links point to (draft and published rows, as Strapi writes them).
    psql(url, """INSERT INTO categories (id, document_id, name, created_at, updated_at, published_at, locale)
      VALUES (1, 'benchcategory000000000001', 'One', now(), now(), NULL, NULL),
             (2, 'benchcategory000000000001', 'One', now(), now(), now(), NULL)""")
    sh(os.path.join(RELEASE, "examples/drain"), "prepare", url, PUB)
    return url


def big_transaction(url, rows, first_id):
    """One transaction of `rows` articles rows; returns an LSN taken inside it, before its commit."""
    out = psql(url, f"""BEGIN;
      INSERT INTO articles (id, document_id, title, slug, body, views, secret_note, created_at, updated_at, published_at, locale)
      SELECT i, substr(md5(i::text), 1, 24), 'Article ' || i, 'article-' || i,
             repeat('Lorem ipsum dolor sit amet. ', 8), i % 1000, 'secret ' || i, now(), now(), now(), 'en'
      FROM generate_series({first_id}, {first_id + rows - 1}) i;
      SELECT pg_current_wal_insert_lsn();
      COMMIT;""")
    return out.splitlines()[-1].strip()


def wait_rss_mb(p):
    """Reaps p; its peak resident set (ru_maxrss) in MB."""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{p.args[0]} exited with {p.returncode}")
    return usage.ru_maxrss / 1024


def big_transaction_rss(url):
    rows = BIG_ROWS
    runs = BIG_RUNS
    progress(f"big transaction: creating {2 * runs} slots, starting {runs} walcast drains")
    slots = {c: [f"bench_big{c}_{i}" for i in range(runs)] for c in ("recv", "walcast")}
    for names in slots.values():
        for s in names:
            psql(url, f"SELECT pg_create_logical_replication_slot('{s}', 'pgoutput')")
    drains = []
    for s in slots["walcast"]:
        p = subprocess.Popen([os.path.join(RELEASE, "examples/drain"), "run", url, s, PUB],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("drain did not start")
        drains.append(p)
    progress(f"big transaction: writing one transaction of {rows:,} articles rows")
    t0 = time.monotonic()
    end = big_transaction(url, rows, 10_000_001)
    progress(f"big transaction: written in {time.monotonic() - t0:.1f}s, end LSN {end}")
    host, port = url.split("@", 1)[1].split("/", 1)[0].split(":")
    rss = {"pg_recvlogical": [], "walcast": []}
    seconds = {"pg_recvlogical": [], "walcast": []}
    note = ""
    for i in range(runs):
        t = time.monotonic()
        p = subprocess.Popen([os.path.join(PGBIN, "pg_recvlogical"), "-h", host, "-p", port, "-U", "postgres",
                              "-d", DB, "--slot", slots["recv"][i], "--start", "--endpos", end,
                              "-o", "proto_version=1", "-o", f"publication_names={PUB}", "-f", "/dev/null"])
        rss["pg_recvlogical"].append(wait_rss_mb(p))
        seconds["pg_recvlogical"].append(time.monotonic() - t)
        progress(f"big transaction run {i + 1}/{runs}: pg_recvlogical peak RSS {rss['pg_recvlogical'][-1]:.0f} MB, {seconds['pg_recvlogical'][-1]:.1f}s")
        p = drains[i]
        t = time.monotonic()
        p.stdin.write(f"go {end}\n")
        p.stdin.flush()
        note = p.stdout.readline().strip()
        seconds["walcast"].append(time.monotonic() - t)
        rss["walcast"].append(wait_rss_mb(p))
        progress(f"big transaction run {i + 1}/{runs}: walcast peak RSS {rss['walcast'][-1]:.0f} MB, {seconds['walcast'][-1]:.1f}s  {note}")
    for names in slots.values():
        for s in names:
            psql(url, f"SELECT pg_drop_replication_slot('{s}')")
    return rss, seconds, note


def generate_wal(url, txns, first_id=1):
    """txns transactions of ROWS_PER_TXN articles rows + as many articles_category_lnk rows;
    returns an LSN taken inside the last transaction, before its commit."""
    n = ROWS_PER_TXN
    body = f"""
      INSERT INTO articles (id, document_id, title, slug, body, views, secret_note, created_at, updated_at, published_at, locale)
      SELECT i, substr(md5(i::text), 1, 24), 'Article ' || i, 'article-' || i,
             repeat('Lorem ipsum dolor sit amet. ', 8), i % 1000, 'secret ' || i,
             now(), now(), now(), 'en'
      FROM generate_series(base + 1, base + {n}) i;
      INSERT INTO articles_category_lnk (id, article_id, category_id, article_ord)
      SELECT i, i, 1 + i % 2, 1 FROM generate_series(base + 1, base + {n}) i;"""
    psql(url, f"""DO $$ DECLARE base int; BEGIN
      FOR t IN 0..{txns - 2} LOOP base := {first_id - 1} + t * {n}; {body} COMMIT; END LOOP; END $$""")
    last = first_id - 1 + (txns - 1) * n
    out = psql(url, f"""BEGIN;
      DO $$ DECLARE base int := {last}; BEGIN {body} END $$;
      SELECT pg_current_wal_insert_lsn();
      COMMIT;""")
    return out.splitlines()[-1].strip()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def throughput(url):
    rows = TXNS * ROWS_PER_TXN * 2
    progress(f"throughput: creating {3 * RUNS} slots (3 contenders x {RUNS} runs) before the WAL")
    slots = {c: [f"bench_{c}_{i}" for i in range(RUNS)] for c in ("recv", "decode", "walcast")}
    for names in slots.values():
        for s in names:
            psql(url, f"SELECT pg_create_logical_replication_slot('{s}', 'pgoutput')")
    progress(f"throughput: starting {RUNS} walcast drains (model + permissions + document index snapshot)")
    drains = []
    for s in slots["walcast"]:
        p = subprocess.Popen([os.path.join(RELEASE, "examples/drain"), "run", url, s, PUB],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"drain did not start: {line!r}")
        drains.append(p)
    progress(f"throughput: writing the WAL ({TXNS} transactions x ({ROWS_PER_TXN} articles + {ROWS_PER_TXN} links) = {rows} row changes)")
    t0 = time.monotonic()
    end = generate_wal(url, TXNS)
    progress(f"throughput: WAL written in {time.monotonic() - t0:.1f}s, end LSN {end}")
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")

    def recv(i):
        t = time.monotonic()
        subprocess.run([os.path.join(PGBIN, "pg_recvlogical"), "-h", host, "-p", port, "-U", "postgres",
                        "-d", DB, "--slot", slots["recv"][i], "--start", "--endpos", end,
                        "-o", "proto_version=1", "-o", f"publication_names={PUB}", "-f", "/dev/null"],
                       check=True)
        return rows / (time.monotonic() - t), ""

    def decode(i):
        t = time.monotonic()
        out = sh(os.path.join(RELEASE, "examples/decode_only"), url, slots["decode"][i], PUB, end)
        return rows / (time.monotonic() - t), out.strip()

    def walcast(i):
        p = drains[i]
        t = time.monotonic()
        p.stdin.write(f"go {end}\n")
        p.stdin.flush()
        out = p.stdout.readline().strip()
        elapsed = time.monotonic() - t
        p.wait()
        return rows / elapsed, out

    contenders = [("pg_recvlogical", recv), ("decode-only", decode), ("walcast", walcast)]
    results = {name: [] for name, _ in contenders}
    notes = {}
    for i in range(RUNS):
        order = contenders[i % 3:] + contenders[:i % 3]
        for name, fn in order:
            rate, out = fn(i)
            results[name].append(rate)
            if out:
                notes[name] = out
            progress(f"throughput run {i + 1}/{RUNS}: {name:<15} {rate:>10,.0f} rows/s  {out}")
    for names in slots.values():
        for s in names:
            psql(url, f"SELECT pg_drop_replication_slot('{s}')")
    return rows, end, results, notes


SOCKET_RUNS = int(os.environ.get("WALCAST_BENCH_SOCKET_RUNS", "3"))


def route_cost():
    """The criterion figure `make bench` wrote to target/route_cost.txt (middle of `time: [...]`)."""
    path = os.path.join(REPO, "target/route_cost.txt")
    try:
        line = next(l for l in open(path) if "time:" in l)
    except (OSError, StopIteration):
        return "## Permission + sanitize cost per change\n\n(not measured: run `make bench`)\n\n", []
    value, unit = line.split("[", 1)[1].split()[2:4]
    micros = float(value) * {"ns": 0.001, "µs": 1.0, "us": 1.0, "ms": 1000.0}[unit]
    md = ("## Permission + sanitize cost per change\n\n| `cargo bench --bench route_cost` (criterion) | Estimate | Target |\n|---|---|---|\n"
          f"| one change, 10 roles, 10,000 subscribers in role rooms; route + sanitize + serialize; 0 DB queries | {micros:.1f} µs | ≤ 50 µs |\n\n")
    return md, ([f"- route cost: {micros:.1f} µs per change, over 50 µs."] if micros > 50 else [])


def machine():
    def first(cmd):
        try:
            return sh(*cmd).strip().splitlines()[0]
        except Exception:
            return "?"
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1048576:.0f} GiB"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), {mem}",
        "rustc": first(["rustc", "--version"]),
        "postgres": first([os.path.join(PGBIN, "postgres"), "--version"]),
        "walcast": first(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
        "load": " ".join(open("/proc/loadavg").read().split()[:3]),
    }


def main():
    m = machine()
    base = cluster()
    url = fresh_database(base)
    rows, end, tp, notes = throughput(url)
    rss, big_seconds, big_note = big_transaction_rss(url)
    sys.modules.setdefault("run", sys.modules[__name__])
    import sockets  # bench/sockets.py: fan-out, latency, idle memory (needs this module's helpers)
    socket_md, socket_misses, socket_conditions = sockets.section(url, SOCKET_RUNS)
    route_md, route_misses = route_cost()
    m["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    rec, dec, wal = tp["pg_recvlogical"], tp["decode-only"], tp["walcast"]
    vs_rec = [w / r for w, r in zip(wal, rec)]
    vs_dec = [w / d for w, d in zip(wal, dec)]

    def row(name, xs, target):
        return f"| {name} | {median(xs):,.0f} | {min(xs):,.0f} – {max(xs):,.0f} | {target} |"

    def ratio(name, xs, target):
        return f"| {name} | {median(xs):.2f}× | {min(xs):.2f}× – {max(xs):.2f}× | {target} |"

    table = "\n".join([
        "| Figure (median of %d runs) | Median | Min – max | Target |" % RUNS,
        "|---|---|---|---|",
        row("pg_recvlogical → /dev/null, row changes/s", rec, "baseline"),
        row("decode-only client (`examples/decode_only.rs`), row changes/s", dec, "baseline"),
        row("walcast decode + fold + populate + route (`examples/drain.rs`), row changes/s", wal, "≥ 100,000"),
        ratio("walcast ÷ pg_recvlogical (paired per round)", vs_rec, "≥ 1.0×"),
        ratio("walcast ÷ decode-only (paired per round)", vs_dec, "≥ 0.8×"),
    ])
    big_table = "\n".join([
        f"| One {BIG_ROWS:,}-row transaction (median of {BIG_RUNS} runs) | Peak RSS | Min – max | Drain time | Target |",
        "|---|---|---|---|---|",
        f"| pg_recvlogical → /dev/null | {median(rss['pg_recvlogical']):.0f} MB | {min(rss['pg_recvlogical']):.0f} – {max(rss['pg_recvlogical']):.0f} MB | {median(big_seconds['pg_recvlogical']):.1f} s | baseline |",
        f"| walcast drain (buffer spills past 10,000 changes; fold + route per window) | {median(rss['walcast']):.0f} MB | {min(rss['walcast']):.0f} – {max(rss['walcast']):.0f} MB | {median(big_seconds['walcast']):.1f} s | ≤ 256 MB |",
    ])
    misses = []
    if median(wal) < 100_000:
        misses.append(f"- walcast rows/s: {median(wal):,.0f}, {100 - median(wal) / 1000:.0f}% below the 100,000 target.")
    if median(vs_rec) < 1.0:
        misses.append(f"- walcast ÷ pg_recvlogical: {median(vs_rec):.2f}×, {(1 - median(vs_rec)) * 100:.0f}% short of 1.0×.")
    if median(vs_dec) < 0.8:
        misses.append(f"- walcast ÷ decode-only: {median(vs_dec):.2f}×, short of 0.8×.")
    if median(rss["walcast"]) > 256:
        misses.append(f"- {BIG_ROWS:,}-row transaction peak RSS: {median(rss['walcast']):.0f} MB, {median(rss['walcast']) - 256:.0f} MB over 256 MB.")
    misses += socket_misses + route_misses
    print("\n" + table + "\n\n" + big_table + "\n\n" + socket_md + route_md)
    conditions = f"""## Conditions

- Date: {m['date']}; walcast commit {m['walcast']} (release build, `cargo build --release --examples --bins`).
- Machine: {m['machine']}. Load average before / after: {m['load']} / {m['load_after']}.
  The 2 cores are shared with other engineers' builds and tests: wall-clock rates can move 2–3×
  between identical runs (see min – max), which is why every figure is a median and every
  ratio is paired round by round.
- {m['rustc']}; {m['postgres']} (private `bench` cluster of scripts/pg-cluster.sh, port
  {base.rsplit(':', 1)[1]}, fsync off, synchronous_commit off, logical_decoding_work_mem 64MB).
- Database: the Strapi 5.54 fixture (schema.sql + replay/00–06: first boot, an admin, a
  full-access API token, the fr locale, a user, Authenticated granted article find) plus one category (draft +
  published row), no articles when the slots and the drains' snapshots are made.
- WAL: {TXNS} transactions, each {ROWS_PER_TXN} `articles` rows (INSERT … SELECT generate_series;
  ~300-byte body, published rows) + {ROWS_PER_TXN} `articles_category_lnk` rows = {rows:,} row changes; end LSN {end}.
- One logical slot per contender and run, all created before the WAL is written; runs interleaved
  (pg_recvlogical, decode-only, walcast; the order rotates every round).
- pg_recvlogical: `--start --endpos <lsn> -o proto_version=1 -o publication_names=… -f /dev/null`,
  timed as a whole process. decode-only: walcast's `ReplicationStream` counting changes, whole
  process. walcast: `examples/drain.rs`, snapshot loaded before the WAL exists, timed from `go`
  (connect + START_REPLICATION included) to its result line. All three over TCP on 127.0.0.1.
- Big transaction: one transaction of {BIG_ROWS:,} `articles` rows (published), one slot per
  contender and run made before it; peak RSS is the process's ru_maxrss (snapshot included for
  walcast). Last walcast report: `{big_note}`.
{socket_conditions}- Route cost: `cargo bench --bench route_cost` (criterion, run by `make bench` before this
  script; its output is in target/route_cost.txt): 10 users-permissions roles (5 may read
  articles), one article update routed (rooms chosen), sanitized and serialized per iteration;
  no database client exists in that process (zero queries). Subscribers sit in role rooms, so
  the figure does not depend on their number (10,000 assumed, 1,000 per role).
- Last run's own reports: decode-only `{notes.get('decode-only', '')}`; walcast `{notes.get('walcast', '')}`.
"""
    md = "# walcast benchmark results (`make bench`)\n\n## Decode + map + route throughput (one slot)\n\n" + table + "\n\n"
    md += "## Peak memory of one large transaction\n\n" + big_table + "\n\n"
    md += socket_md + route_md
    md += ("### Targets missed\n\n" + "\n".join(misses) + "\n\n") if misses else "All targets above met.\n\n"
    profile = os.path.join(REPO, "bench/profile.md")
    if misses and os.path.exists(profile):
        md += open(profile).read() + "\n"
    md += conditions
    out = os.path.join(REPO, "bench/results.md")
    extra = os.path.join(REPO, "bench/results-extra.md")
    if os.path.exists(extra):
        md += "\n" + open(extra).read()
    with open(out, "w") as f:
        f.write(md)
    progress(f"wrote {os.path.relpath(out, REPO)} ({time.monotonic() - STARTED:.0f}s in all)")


if __name__ == "__main__":
    main()
