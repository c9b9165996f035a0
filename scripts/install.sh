#!/usr/bin/env bash
# Install everything the WALM lab and tests need, on Debian 12 (bookworm) or 13 (trixie), as root.
# Idempotent: a second run only checks. Usage: scripts/install.sh [VENV_DIR]
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$here/.venv}"

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: must run as root (apt-get, network namespaces)" >&2
    exit 1
fi

. /etc/os-release
apt_target=()
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    # Debian 12's QEMU 7.2 corrupts TCG guests in pre-copy (shared/LAB.md): the lab runs QEMU 10 from backports.
    src=/etc/apt/sources.list.d/walm-bookworm-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        cat > "$src" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        rm -f /var/lib/walm-apt-updated
    fi
    apt_target=(-t bookworm-backports)
fi

# Never let package installs start daemons: the lab starts its own, inside namespaces.
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT

qemu_pkgs=(qemu-system-x86 qemu-utils qemu-block-extra)
# python3-apt: ansible.builtin.apt, which walm.qemu.nfs_shared_storage uses (it needs it even in check mode).
pkgs=(busybox-static cpio gzip socat iproute2 openssh-server
      openssh-client nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils gcc libc6-dev sysbench kmod xz-utils
      python3 python3-venv make procps python3-apt)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# QEMU alone from backports on bookworm; everything else from the release itself.
need_qemu=0
for p in "${qemu_pkgs[@]}"; do
    v="$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null || true)"
    case "$v" in
        "install ok installed "*) [ "${#apt_target[@]}" -gt 0 ] && case "$v" in *bpo*) ;; *) need_qemu=1 ;; esac ;;
        *) need_qemu=1 ;;
    esac
done
if [ "$need_qemu" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${apt_target[@]}" "${qemu_pkgs[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv "$venv"
fi
# requirements/test.txt takes in the controller's and a hypervisor's files: pip runs again when any of them changed.
reqs="$(cat "$here"/requirements/*.txt)"
if [ "$reqs" != "$(cat "$venv/.walm-requirements.txt" 2>/dev/null)" ]; then
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r "$here/requirements/test.txt"
    printf '%s\n' "$reqs" > "$venv/.walm-requirements.txt"
fi
# Ansible finds the collection (walm.qemu.*) through ansible.cfg's collections_path.
mkdir -p "$here/.collections/ansible_collections/walm"
ln -sfn "$here" "$here/.collections/ansible_collections/walm/qemu"

# ansible.posix (requirements.yml), for ansible.posix.mount in walm.qemu.nfs_shared_storage. Galaxy is not reachable
# from every machine this runs on, PyPI is: the `ansible` package there bundles the collection, so its wheel is
# fetched and only that collection's directory unpacked into .collections (the venv stays ansible-core only). The
# bundle release pins the collection version: ansible 12.3.0 carries ansible.posix 2.1.0, as requirements.yml says.
posix_bundle="ansible==12.3.0"
posix_dir="$here/.collections/ansible_collections/ansible/posix"
if [ ! -f "$posix_dir/MANIFEST.json" ]; then
    tmp="$(mktemp -d)"
    "$venv/bin/pip" download -q --no-deps -d "$tmp/wheel" "$posix_bundle"
    "$venv/bin/python" - "$tmp" <<'PY'
import glob, os, sys, zipfile
tmp = sys.argv[1]
prefix = "ansible_collections/ansible/posix/"
with zipfile.ZipFile(glob.glob(os.path.join(tmp, "wheel", "*.whl"))[0]) as whl:
    members = [m for m in whl.namelist() if m.startswith(prefix)]
    if not any(m.endswith("/MANIFEST.json") for m in members):
        sys.exit("install.sh: ansible.posix is not in the downloaded wheel")
    whl.extractall(os.path.join(tmp, "x"), members)
PY
    mkdir -p "$(dirname "$posix_dir")"
    rm -rf "$posix_dir"
    # One rename: a half-unpacked collection is never taken for an installed one.
    mv "$tmp/x/ansible_collections/ansible/posix" "$posix_dir"
    rm -rf "$tmp"
fi
echo "install.sh: ok ($(qemu-system-x86_64 --version | head -1); $("$venv/bin/ansible" --version | head -1))"
