# walcast: `make test` runs every test, `make demo` shows walcast at work.
# Both install what is missing (PostgreSQL server binaries, Node packages) and say what they do.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# The machine's own cargo (rustup's), also when ~/.cargo/bin is not on PATH.
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)
NPM ?= npm
JS_DIR := tests/js
# npm ci writes node_modules/.package-lock.json: older than the lockfile means stale.
JS_STAMP := $(JS_DIR)/node_modules/.package-lock.json
say = @printf '\n==> %s\n' $(1)

.PHONY: help test lint demo pg-stop clean-pg js-deps bench

help:
	@echo "make test      private Postgres cluster, a Redis (the machine's or a private one) and Node"
	@echo "              packages, then cargo test --all-targets"
	@echo "make lint      cargo fmt --check and cargo clippy --all-targets -- -D warnings"
	@echo "make demo      walcast on a demo cluster loaded with the Strapi 5.54 fixture (scripts/demo.sh;"
	@echo "              WALCAST_DEMO_FRESH=1 reloads the fixture from scratch)"
	@echo "make bench     release build, then the benchmarks on a private bench cluster (bench/run.py);"
	@echo "              prints a table and writes bench/results.md (a few minutes; never part of make test)"
	@echo "make pg-stop   stop the test, restart and demo clusters"
	@echo "make clean-pg  stop them and delete their data directories"

$(JS_STAMP): $(JS_DIR)/package-lock.json $(JS_DIR)/package.json
	$(call say,"installing the Node packages of the JS client tests (npm ci --prefix $(JS_DIR))")
	$(NPM) ci --prefix $(JS_DIR) --no-audit --no-fund
	@touch $@

js-deps: $(JS_STAMP)
	@true

# The integration tests start the cluster themselves (scripts/pg-cluster.sh start test); starting
# it here installs/initialises it up front and shows what happened. The cluster is stopped at the
# end (also on failure) unless it was already running before.
test:
	@stop_pg=0; \
	if scripts/pg-cluster.sh status test 2>/dev/null; then \
	    echo "==> the test Postgres cluster is already running: it stays up afterwards"; \
	else \
	    stop_pg=1; \
	fi; \
	trap 'scripts/redis.sh stop; if [ $$stop_pg = 1 ]; then printf "\n==> stopping the test Postgres cluster (it was not running before)\n"; scripts/pg-cluster.sh stop test; fi' EXIT; \
	trap 'exit 130' INT; trap 'exit 143' TERM; \
	printf '\n==> starting the private test Postgres cluster (scripts/pg-cluster.sh start test)\n'; \
	url="$$(scripts/pg-cluster.sh start test | tail -n 1)"; \
	echo "    $$url"; \
	printf '\n==> finding a Redis 7+ for the cluster tests (scripts/redis.sh ensure)\n'; \
	redis_out="$$(scripts/redis.sh ensure)"; echo "$$redis_out" | sed 's/^/    /'; \
	export WALCAST_TEST_REDIS_URL="$$(echo "$$redis_out" | tail -n 1)"; \
	$(MAKE) --no-print-directory js-deps; \
	printf '\n==> running the tests (RUST_BACKTRACE=1 cargo test --all-targets)\n'; \
	mkdir -p target; \
	set +e; RUST_BACKTRACE=1 $(CARGO) test --all-targets 2>&1 | tee target/test-output.log; status=$${PIPESTATUS[0]}; set -e; \
	awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i } } \
	     END { printf "\ntests: %d passed, %d failed\n", p, f }' target/test-output.log; \
	exit $$status

lint:
	$(call say,"checking formatting (cargo fmt --check)")
	$(CARGO) fmt --check
	$(call say,"running clippy (cargo clippy --all-targets -- -D warnings)")
	$(CARGO) clippy --all-targets -- -D warnings

demo:
	$(call say,"starting the demo (scripts/demo.sh)")
	scripts/demo.sh

pg-stop:
	$(call say,"stopping the test, restart and demo Postgres clusters")
	scripts/pg-cluster.sh stop test
	scripts/pg-cluster.sh stop restart
	scripts/pg-cluster.sh stop demo

clean-pg:
	$(call say,"stopping the test, restart and demo Postgres clusters and deleting their data")
	scripts/pg-cluster.sh clean test
	scripts/pg-cluster.sh clean restart
	scripts/pg-cluster.sh clean demo

# Benchmarks: never part of `make test`. The bench cluster is stopped at the end unless it was
# already running. WALCAST_BENCH_RUNS (default 5) sets the runs per figure. The socket benches
# (bench/sockets.py) need Node (npm ci of bench/node-baseline) and raise RLIMIT_NOFILE themselves.
bench:
	$(call say,"building walcast in release (cargo build --release --examples --bins)")
	$(CARGO) build --release --examples --bins
	@if scripts/pg-cluster.sh status bench 2>/dev/null; then \
	    echo "==> the bench Postgres cluster is already running: it stays up afterwards"; \
	else \
	    trap 'printf "\n==> stopping the bench Postgres cluster\n"; scripts/pg-cluster.sh stop bench' EXIT; \
	fi; \
	printf '\n==> permission + sanitize cost per change (cargo bench --bench route_cost)\n'; \
	$(CARGO) bench --bench route_cost -- --warm-up-time 1 --measurement-time 3 2>&1 | tee target/route_cost.txt; \
	printf '\n==> running the benchmarks (bench/run.py)\n'; \
	python3 bench/run.py
