#!/usr/bin/env bash
# ansible-test units on this checkout: the tests under tests/unit, run the way a collection's CI runs them (each test
# module imported as ansible_collections.walm.qemu.tests.unit..., modules and module_utils tests kept from controller
# code). Exits non-zero on any failure. Extra arguments go to `ansible-test units` (e.g. a test file,
# --exclude FILE, -v, --num-workers 2).
#   scripts/units.sh                   # every unit test, as root (some start QEMU or a private NFS server)
#   scripts/units.sh tests/unit/plugins/module_utils/test_vmdef.py
#   VENV=/path/to/venv scripts/units.sh
# Plain pytest runs the same tests from the checkout: .venv/bin/python -m pytest tests/unit
# scripts/test.sh runs this among its static checks (WALM_STATIC_CHECKS=0 skips them).
# ansible-test runs the tests in three runs, each its own pytest, and stops at the first that fails: modules
# (tests/unit/plugins/modules), module_utils (tests/unit/plugins/module_utils), controller (the rest of tests/unit).
# The first two get a PYTHONPATH whose `ansible` package holds only module_utils, so modules cannot lean on
# controller code; an `ansible` or `ansible-doc` started from there inherits it and dies ("No module named
# 'ansible.cli'"). A test that runs either command therefore sits on the controller side, however module-bound it is:
# tests/unit/plugins/test_module_cli.py (walm_decide, walm_probe, walm_image through the ansible CLI),
# tests/unit/plugins/test_module_docs.py (ansible-doc). Every test passes here as under plain pytest.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"
# ansible-test wants the collection at .../ansible_collections/<namespace>/<name>; a symlink does not do (it resolves
# the working directory), so the files are copied there.
work="${WALM_UNITS_DIR:-/tmp/walm-units}"
dest="$work/ansible_collections/walm/qemu"

if [ ! -x "$venv/bin/ansible-test" ]; then
    echo "units.sh: no ansible-test in $venv (run scripts/install.sh, or set VENV)" >&2
    exit 1
fi
py="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# A fresh copy each run of the files git tracks, as they are in the working tree (no .venv, .collections, results or
# .git): what a clean clone, and so CI, tests. A new file is tested once git knows it (`git add -N FILE` will do).
rm -rf "$work"
mkdir -p "$dest"
(cd "$here" && git ls-files -z \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$dest"

# The collections walm.qemu's roles use (ansible.posix, requirements.yml), from the .collections tree
# scripts/install.sh fills: ansible-test gives its tests only the ansible_collections tree the collection sits in.
deps="$here/.collections/ansible_collections"
if [ -d "$deps" ]; then
    for dep in "$deps"/*/*; do
        ns="$(basename "$(dirname "$dep")")"
        name="$(basename "$dep")"
        [ "$ns/$name" = walm/qemu ] && continue
        mkdir -p "$work/ansible_collections/$ns"
        cp -a "$(readlink -f "$dep")" "$work/ansible_collections/$ns/$name"
    done
fi

cd "$dest"
# --local: in this Python, not a container; --python: this version only. One pytest worker, not xdist's one per core:
# tests start real QEMUs under fixed names and discovery sees every QEMU of the host, so two workers see each other's
# (test_probe.py finds 'pvm1' twice). A later --num-workers in the arguments wins.
exec "$venv/bin/ansible-test" units --local --python "$py" --color no --num-workers 1 "$@"
