#!/usr/bin/env bash
# ansible-test sanity on this checkout, with only PyPI and Debian's mirrors reachable (docs/sanity.md says why each
# step is needed). Idempotent: a second run reuses the bootstrap, the wheel and ansible-test's cached environments.
# Exits non-zero on any sanity error. Extra arguments go to `ansible-test sanity` (e.g. --test pylint, -v, a path).
#   scripts/sanity.sh                  # the whole collection, as .ci/run checks it
#   VENV=/path/to/venv scripts/sanity.sh
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"
# ansible-test wants the collection at .../ansible_collections/<namespace>/<name>; a symlink does not do (it resolves
# the working directory), so the files are copied there.
work="${WALM_SANITY_DIR:-/tmp/walm-sanity}"
dest="$work/ansible_collections/walm/qemu"
cache="$HOME/.ansible/test/cache"

if [ ! -x "$venv/bin/ansible-test" ]; then
    echo "sanity.sh: no ansible-test in $venv (run scripts/install.sh, or set VENV)" >&2
    exit 1
fi
py="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# Without the shellcheck program ansible-test only warns, and the shell scripts go unchecked.
if ! command -v shellcheck >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends shellcheck >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -q --no-install-recommends shellcheck >/dev/null; }
    else
        echo "sanity.sh: shellcheck is missing: apt-get install shellcheck" >&2
        exit 1
    fi
fi

# Each sanity test runs in its own virtual environment, which ansible-test fills from PyPI (reachable) after putting
# pip into it with a get-pip script downloaded from Ansible's CI file server (not reachable). ansible-test looks for
# that script in its cache first: a stand-in there runs pip from the pip wheel of the same version off PyPI.
pip_version="$("$venv/bin/python" -c '
from ansible_test._internal.python_requirements import get_venv_packages
class Python:
    version = "'"$py"'"
print(get_venv_packages(Python())["pip"])')"
mkdir -p "$cache"
if ! compgen -G "$cache/pip-$pip_version-*.whl" >/dev/null; then
    "$venv/bin/pip" download -q --no-deps --only-binary=:all: -d "$cache" "pip==$pip_version"
fi
bootstrap="$cache/get_pip_${pip_version//./_}.py"
stand_in="$(cat <<PY
"""Offline stand-in for ansible-test's get-pip $pip_version bootstrap (written by walm.qemu's scripts/sanity.sh).

ansible-test runs this file to put pip into each new, empty sanity virtual environment; it runs pip from the pip
wheel beside it to install what ansible-test asks for, as get-pip.py would.
"""
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WHEEL = sorted(glob.glob(os.path.join(HERE, 'pip-$pip_version-*.whl')))[0]
ARGS = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]

sys.path.insert(0, WHEEL)

from pip._internal.cli.main import main  # noqa: E402  pylint: disable=wrong-import-position

sys.exit(main(['install', '--upgrade', '--force-reinstall', '--find-links', HERE] + ARGS))
PY
)"
if [ ! -f "$bootstrap" ] || [ "$(cat "$bootstrap")" != "$stand_in" ]; then
    printf '%s\n' "$stand_in" > "$bootstrap"
fi

# A fresh copy each run of the files git tracks, as they are in the working tree (no .venv, .collections, results or
# .git): what a clean clone, and so CI, checks. A new file is checked once git knows it (`git add -N FILE` will do).
# WALM_SANITY_REF=HEAD checks a commit instead, leaving out work in progress.
rm -rf "$dest"
mkdir -p "$dest"
if [ -n "${WALM_SANITY_REF:-}" ]; then
    git -C "$here" archive "$WALM_SANITY_REF" | tar -xf - -C "$dest"
else
    (cd "$here" && git ls-files -z \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$dest"
fi

cd "$dest"
# --local: in this Python, not a container; --python: compile and import for this version only.
exec "$venv/bin/ansible-test" sanity --local --python "$py" --color no "$@"
