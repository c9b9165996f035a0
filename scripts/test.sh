#!/usr/bin/env bash
# The tests: the static checks (ansible-test sanity, ansible-lint --profile production, the built collection installed
# and rendered by ansible-doc, the unit tests under ansible-test units), then the integration tests on the real lab
# (real QEMU, real migrations, SSH, NFS) and the scripts' tests under pytest (with WALM_STATIC_CHECKS=0, every test
# under pytest, the unit tests included).
# Installs everything it needs first. Root, Debian 12/13. Extra arguments go to pytest.
# WALM_STATIC_CHECKS=0 skips the static checks (for example to rerun one test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
paths=(tests)
if [ "${WALM_STATIC_CHECKS:-1}" != 0 ]; then
    # Both gate the collection as Galaxy reviewers check it: 0 errors, 0 findings (docs/sanity.md).
    bash scripts/sanity.sh
    .venv/bin/ansible-lint
    bash scripts/collection_check.sh
    bash scripts/units.sh  # the unit tests as a collection's CI runs them (docs/sanity.md)
    # ansible-test has just run every test under tests/unit: pytest runs the rest.
    paths=(tests/integration tests/scripts)
fi
exec .venv/bin/python -m pytest -v -rs "$@" "${paths[@]}"
