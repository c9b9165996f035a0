#!/usr/bin/env bash
# The collection as an operator gets it: build the tarball from this checkout, install it into an empty collections
# path, check the tarball keeps to the collection, and render every module, filter and role with ansible-doc from
# the installed copy (outside the checkout, none of its ansible.cfg). Any warning or error fails the check.
#   scripts/collection_check.sh            # as .ci/run runs it
#   VENV=/path/to/venv scripts/collection_check.sh
# Prints the tarball's size and file count. Offline: the install takes --no-deps (ansible.posix, the one dependency,
# comes from Galaxy for an operator; nothing here needs it to render the docs).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"
work="$(mktemp -d /tmp/walm-collection-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT
fail=0

"$venv/bin/ansible-galaxy" collection build --output-path "$work/build" "$here" >/dev/null
tarball="$(ls "$work"/build/walm-qemu-*.tar.gz)"
files="$(tar -tzf "$tarball" | grep -vc '/$')"
echo "collection_check: $(basename "$tarball"): $(stat -c %s "$tarball") bytes, $files files"

# Research data, lab tooling, test configuration and the development checkout stay in the repository (galaxy.yml's
# build_ignore says why each is left out).
unwanted="$(tar -tzf "$tarball" | grep -E '^(scripts|results|requirements|\.ci|\.venv|\.collections|collections|tests/integration|tests/output|docs/benchmark-study[^/]*|docs/[^/]*-runs)(/|$)|^(ansible\.cfg|pytest\.ini|\.ansible-lint|\.gitignore)$|\.pyc$' || true)"
if [ -n "$unwanted" ]; then
    echo "collection_check: the tarball holds files that are not the collection's (galaxy.yml build_ignore):" >&2
    echo "$unwanted" | head -20 >&2
    [ "$(echo "$unwanted" | wc -l)" -le 20 ] || echo "... ($(echo "$unwanted" | wc -l) in all)" >&2
    fail=1
fi

# An empty collections path, and an empty working directory with an empty ansible.cfg: only the installed copy counts.
mkdir -p "$work/collections" "$work/cwd"
: > "$work/cwd/ansible.cfg"
cd "$work/cwd"
export ANSIBLE_CONFIG="$work/cwd/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$work/collections"
export ANSIBLE_LOCAL_TEMP="$work/tmp" ANSIBLE_HOME="$work/home"
"$venv/bin/ansible-galaxy" collection install --no-deps -p "$work/collections" "$tarball" >/dev/null
installed="$work/collections/ansible_collections/walm/qemu"
[ -f "$installed/MANIFEST.json" ] || { echo "collection_check: nothing installed at $installed" >&2; exit 1; }

# What ansible-doc must find: every module and filter the tarball holds, every role with an argument spec.
expected() {
    local f
    case "$1" in
        module) for f in "$installed"/plugins/modules/*.py; do f="${f##*/}"; [ "$f" = __init__.py ] || echo "${f%.py}"; done ;;
        filter) for f in "$installed"/plugins/filter/*.yml; do f="${f##*/}"; echo "${f%.yml}"; done ;;
        role) for f in "$installed"/roles/*/meta/argument_specs.yml; do f="${f%/meta/argument_specs.yml}"; echo "${f##*/}"; done ;;
    esac
}
for kind in module filter role; do
    listed="$("$venv/bin/ansible-doc" -t "$kind" -l walm.qemu --json 2>"$work/err" \
        | "$venv/bin/python" -c 'import json, sys; print("\n".join(sorted(k.split(".")[-1] for k in json.load(sys.stdin))))')"
    if [ -s "$work/err" ]; then
        echo "collection_check: ansible-doc -t $kind -l walm.qemu printed:" >&2
        cat "$work/err" >&2
        fail=1
    fi
    missing="$(comm -23 <(expected "$kind" | sort) <(echo "$listed" | sort))"
    if [ -n "$missing" ]; then
        echo "collection_check: ansible-doc does not list these ${kind}s of the installed collection: $missing" >&2
        fail=1
    fi
    n=0
    for name in $(expected "$kind"); do
        if ! "$venv/bin/ansible-doc" -t "$kind" "walm.qemu.$name" >"$work/out" 2>"$work/err" || [ -s "$work/err" ]; then
            echo "collection_check: ansible-doc -t $kind walm.qemu.$name:" >&2
            cat "$work/err" >&2
            fail=1
        elif ! grep -q . "$work/out"; then
            echo "collection_check: ansible-doc -t $kind walm.qemu.$name rendered nothing" >&2
            fail=1
        fi
        n=$((n + 1))
    done
    echo "collection_check: $n ${kind}s render with ansible-doc from the installed collection"
done

# The playbooks an operator runs by name (ansible-playbook walm.qemu.evacuate_host) are in the installed copy.
for pb in evacuate_host migrate_vm; do
    if ! "$venv/bin/ansible-playbook" --syntax-check -i localhost, "walm.qemu.$pb" >"$work/out" 2>&1; then
        echo "collection_check: ansible-playbook --syntax-check walm.qemu.$pb:" >&2
        cat "$work/out" >&2
        fail=1
    fi
done
[ "$fail" = 0 ] && echo "collection_check: ok"
exit "$fail"
