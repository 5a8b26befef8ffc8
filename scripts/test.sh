#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run every test, smoke tests on the real models included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The llamacpp extra (llama.cpp serving and GGUF quantizing): pip builds llama.cpp from source the first time
# (7.5 CPU-minutes, docs/gguf.md) and reuses the built wheel from its cache afterwards.
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" .venv/bin/python -m pip --disable-pip-version-check -q install -e ".[llamacpp]"
# The product's end-to-end tests drive a real browser and a real PostgreSQL server (Debian packages). Without
# them (not root, no apt) those tests skip and say why.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v pg_ctl >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || true
fi
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
