# Everything CI runs is reachable from here: `make check` is the whole gate.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: install proto proto-check lint format typecheck test check run clean

install: $(STAMP)

$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./client -e '.[dev]'
	touch $(STAMP)

## proto: regenerate client/llmfeedback/proto from protos/ (commit the result)
proto: $(STAMP)
	scripts/generate_protos.sh

## proto-check: fail if the committed generated code differs from what protos/ generates
proto-check: $(STAMP)
	rm -rf build/proto-check && mkdir -p build/proto-check
	scripts/generate_protos.sh build/proto-check > /dev/null
	diff -r --exclude=__pycache__ client/llmfeedback/proto build/proto-check/llmfeedback/proto
	@echo "generated code matches protos/"

lint: $(STAMP)
	ruff check .
	ruff format --check .
	buf lint

format: $(STAMP)
	ruff check --fix .
	ruff format .

typecheck: $(STAMP)
	mypy

# The parallel run leaves out the tests marked `alone` (latency limits); the second runs them.
# Bytecode caches on even where the environment sets PYTHONDONTWRITEBYTECODE: without them every
# worker and every server process compiles the sources and rewrites the test modules again
# (collecting the suite: 5.5 s instead of 2.3 s).
test: export PYTHONDONTWRITEBYTECODE =
test: $(STAMP)
	pytest
	pytest -n 0 -m alone

check: proto-check lint typecheck test

## run: serve on 127.0.0.1:50051 with the embedded SQLite database in ./data
run: $(STAMP)
	$(BIN)/feedback-server

## bench: measure the server against an empty one and raw SQLite; writes bench-results/bench.json
## (needs h2load from nghttp2-client; BENCH_ARGS=--quick for a smoke run)
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## bench-auth: the cost of API keys on one in-process server, its key check switched off and on
## between alternating rounds of durable SubmitFeedback at c=64 (needs h2load)
.PHONY: bench-auth
bench-auth: $(STAMP)
	$(BIN)/python -m bench.auth_toggle $(BENCH_AUTH_ARGS)

## bench-metrics: the cost of Prometheus metrics on one in-process server, its call counting
## switched off and on (and /metrics scraped every second while on) between alternating rounds of
## durable SubmitFeedback at c=64 (needs h2load)
.PHONY: bench-metrics
bench-metrics: $(STAMP)
	$(BIN)/python -m bench.metrics_toggle $(BENCH_METRICS_ARGS)

## bench-redaction: the cost of PII redaction on one in-process server, switched off and on
## between alternating rounds of durable SubmitFeedback at c=64, for a comment without and one
## with personal data (needs h2load)
.PHONY: bench-redaction
bench-redaction: $(STAMP)
	$(BIN)/python -m bench.redaction_toggle $(BENCH_REDACTION_ARGS)

## bench-read: GetStats, ListFeedback and ExportFeedback on bulk-loaded 1M and 10M-row SQLite
## files next to plain SQL; writes bench-results/bench-read.json (BENCH_READ_ARGS=--quick)
.PHONY: bench-read
bench-read: $(STAMP)
	$(BIN)/python -m bench.read $(BENCH_READ_ARGS)

## bench-retention: durable SubmitFeedback at c=16 while the retention sweep expires 1M bulk-loaded
## rows, against the same writes alone, in alternating rounds on copies of one SQLite file; then
## each kind swept alone; writes bench-results/bench-retention.json (needs h2load;
## BENCH_RETENTION_ARGS=--quick for a smoke run)
.PHONY: bench-retention
bench-retention: $(STAMP)
	$(BIN)/python -m bench.retention $(BENCH_RETENTION_ARGS)

## bench-watch: durable SubmitFeedback at c=64 with 2,000 watchers of mixed filters connected,
## against the same writes with none, in alternating rounds on one server; delivery p50/p99 and
## server RSS (BENCH_WATCH_ARGS=--quick for a smoke run; needs h2load)
.PHONY: bench-watch
bench-watch: $(STAMP)
	$(BIN)/python -m bench.watch $(BENCH_WATCH_ARGS)

## bench-pii: precision, recall and speed of the PII detector (server.service.pii) on 2,500 seeded
## labelled texts, a third without PII; exits 1 when a structured entity misses its target
## (PII_EVAL_ARGS=--quiet, --json bench-results/pii.json; Presidio, under a Python that has it:
## python -m bench.pii_eval --detector presidio)
.PHONY: bench-pii
bench-pii: $(STAMP)
	$(BIN)/python -m bench.pii_eval $(PII_EVAL_ARGS)

## reliability: kill -9, SIGTERM, a stopped PostgreSQL, retry storms, two replicas on one PostgreSQL
## database (no deadlock) and fuzz against real servers on SQLite and a private PostgreSQL 15
## cluster; one table, bench-results/reliability.json; exits 1
## on any FAIL (RELIABILITY_ARGS=--quick, or e.g. --scenarios kill,term --databases sqlite)
.PHONY: reliability
reliability: $(STAMP)
	$(BIN)/python -m reliability $(RELIABILITY_ARGS)

clean:
	rm -rf build $(VENV) .pytest_cache .mypy_cache .ruff_cache
