#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run every test, smoke tests on the real models included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
