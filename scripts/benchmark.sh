#!/usr/bin/env bash
# The benchmark in one command on a fresh machine: install (packages, QEMU 10, the venv with matplotlib), then
# scripts/benchmark.py with the arguments given (it builds the lab itself). Root, Debian 12/13.
#   scripts/benchmark.sh                 # quick run: every workload x every strategy x 1 repeat (~50 min)
#   scripts/benchmark.sh --repeats 3     # the study, ~2.5 h (resumes where an interrupted one stopped)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python scripts/benchmark.py "$@"
