#!/usr/bin/env bash
# The tests: unit tests, then integration tests on the real lab (real QEMU, real migrations, SSH, NFS).
# Installs everything it needs first. Root, Debian 12/13. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -v -rs "$@" tests
