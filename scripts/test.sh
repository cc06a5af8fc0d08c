#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests on the real model, then the official
# `openai` Python SDK against a live server. CI runs this, then the fuzz targets (scripts/fuzz.sh).
source "$(dirname "$0")/setup.sh"

"$SMALLFIRST" pull smollm2-135m-instruct
SMALLFIRST_TEST_MODEL=$("$SMALLFIRST" models --json | python3 -c \
  'import json,sys; print(next(m["path"] for m in json.load(sys.stdin) if m["name"] == "smollm2-135m-instruct"))')
export SMALLFIRST_TEST_MODEL
# The upstream tier of the gateway tests: a second server on a larger model.
"$SMALLFIRST" pull qwen2.5-coder-0.5b-instruct
SMALLFIRST_UPSTREAM_MODEL=$("$SMALLFIRST" models --json | python3 -c \
  'import json,sys; print(next(m["path"] for m in json.load(sys.stdin) if m["name"] == "qwen2.5-coder-0.5b-instruct"))')
export SMALLFIRST_UPSTREAM_MODEL

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

# Servers the tests start keep their ledgers here, not in the user's data directory.
SMALLFIRST_DATA_DIR=$(mktemp -d)
export SMALLFIRST_DATA_DIR

# A PostgreSQL server of the run's own, on loopback, for the ledger's tests; stopped at exit.
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
pg_dir=$(mktemp -d)
pg_as=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root.
  chown postgres "$pg_dir"
  pg_as=(runuser -u postgres --)
fi
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >/dev/null
"${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
  -o "-k $pg_dir -p $pg_port -c listen_addresses=127.0.0.1" start >/dev/null
SMALLFIRST_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres"
export SMALLFIRST_TEST_POSTGRES
trap '"${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null; rm -rf "$SMALLFIRST_DATA_DIR" "$pg_dir"' EXIT

cargo fmt --all -- --check
cargo test --release --locked --workspace
.venv/bin/python -m pytest -q tests/python
