#!/usr/bin/env bash
# Quick start: install what is missing, build, fetch the default model, and serve the
# OpenAI-compatible API on http://127.0.0.1:8080/v1. Extra arguments go to `smallfirst serve`.
source "$(dirname "$0")/setup.sh"
"$SMALLFIRST" pull qwen2.5-coder-1.5b-instruct
exec "$SMALLFIRST" serve --host 127.0.0.1 --port 8080 "$@"
