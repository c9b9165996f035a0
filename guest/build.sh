#!/usr/bin/env bash
# Build the WALM lab guest: Debian's kernel plus a busybox initramfs with the
# workload programs (guest/src), sysbench and the virtio modules.
#
#   guest/build.sh [--check] OUTPUT_DIR
#
# Writes OUTPUT_DIR/vmlinuz, OUTPUT_DIR/initrd.img and OUTPUT_DIR/build-info.json;
# the kernel package is cached in OUTPUT_DIR/cache so a rebuild does not
# download it again. Idempotent: a fingerprint of every input (sources, init,
# this script, kernel package version, busybox/sysbench/libc/gcc versions and
# binaries) is stored in build-info.json; when it matches and the outputs are
# intact nothing is rebuilt. The LAST line on stdout is "changed" or
# "unchanged" (the Ansible role keys changed_when on it); progress goes to stderr.
#
# Needs root only for apt-get (update/download); runs on Debian 12 and 13 with
# busybox-static, cpio, gzip, gcc, libc6-dev, sysbench, kmod, xz-utils installed.
set -euo pipefail
umask 022
export LC_ALL=C

# --check: only say whether a build would change anything (Ansible check mode).
check_only=0
if [ "${1:-}" = --check ]; then
    check_only=1
    shift
fi
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 [--check] OUTPUT_DIR" >&2
    exit 2
fi
src_dir=$(cd "$(dirname "$0")" && pwd)
if [ "$check_only" = 1 ] && [ ! -d "$1" ]; then
    echo changed
    exit 0
fi
[ "$check_only" = 1 ] || mkdir -p "$1/cache"
out=$(cd "$1" && pwd)

log() { echo "build.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Two builders at once (a test session and a playbook) must not interleave.
if [ "$check_only" = 0 ]; then
    exec 9>"$out/.build.lock"
    flock 9
fi

programs=(walm-wset walm-verify walm-net walm-disk)
# virtio_pci is the transport; net and blk are the devices the lab attaches.
# Their dependencies are resolved from the modules themselves.
wanted_modules=(virtio_pci virtio_net virtio_blk)
busybox_bin=/bin/busybox
sysbench_bin=/usr/bin/sysbench
for tool in apt-cache apt-get dpkg-deb dpkg-query gcc cpio gzip modinfo sha256sum ldd; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done
[ -x "$busybox_bin" ] || die "missing $busybox_bin (package busybox-static)"
[ -x "$sysbench_bin" ] || die "missing $sysbench_bin (package sysbench)"

# --- which kernel ---------------------------------------------------------------
# The package the linux-image-amd64 metapackage depends on, i.e. Debian's
# current kernel for this release (6.1 on bookworm).
kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
kpkg=$(kernel_pkg)
if [ -z "$kpkg" ] && [ "$check_only" = 1 ]; then
    echo changed # apt lists missing: a real run would update them and build
    exit 0
fi
if [ -z "$kpkg" ]; then
    log "apt-cache does not know linux-image-amd64: running apt-get update"
    apt-get update -q >&2
    kpkg=$(kernel_pkg)
fi
[ -n "$kpkg" ] || die "cannot resolve the package linux-image-amd64 depends on"
kver=$(apt-cache policy "$kpkg" | awk '$1 == "Candidate:" { print $2; exit }')
case "$kver" in ""|"(none)") die "no installable version of $kpkg" ;; esac

# --- fingerprint of all inputs ----------------------------------------------------
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }
sysbench_libs=()
while read -r lib; do
    sysbench_libs+=("$lib")
done < <(ldd "$sysbench_bin" | awk '
    / => not found/ { print "MISSING:" $1; next }
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }')
for lib in "${sysbench_libs[@]}"; do
    case "$lib" in MISSING:*) die "sysbench library not found: ${lib#MISSING:}" ;; esac
done

manifest() {
    echo "walm-guest-format=1"
    (cd "$src_dir" && sha256sum build.sh init src/*)
    echo "kernel=$kpkg $kver"
    echo "busybox-static=$(pkg_version busybox-static)"
    echo "sysbench=$(pkg_version sysbench)"
    echo "libc6-dev=$(pkg_version libc6-dev)"
    echo "gcc=$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)"
    # The binaries themselves: a rebuilt library with an unchanged package
    # version still changes the initramfs.
    sha256sum "$busybox_bin" "$sysbench_bin" "${sysbench_libs[@]}"
}
fingerprint=$(manifest | sha256sum | cut -c1-64)
build_id=${fingerprint:0:12}

info="$out/build-info.json"
sha_of() { sha256sum "$1" | cut -c1-64; }
if [ -f "$info" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] &&
    grep -qF "\"fingerprint\": \"$fingerprint\"" "$info" &&
    grep -qF "\"vmlinuz\": {\"sha256\": \"$(sha_of "$out/vmlinuz")\"" "$info" &&
    grep -qF "\"initrd.img\": {\"sha256\": \"$(sha_of "$out/initrd.img")\"" "$info"; then
    log "up to date: build $build_id ($kpkg $kver) in $out"
    echo unchanged
    exit 0
fi

if [ "$check_only" = 1 ]; then
    log "would build $build_id ($kpkg $kver) into $out"
    echo changed
    exit 0
fi
log "building $build_id ($kpkg $kver) into $out"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

# --- kernel package: download once, then from the cache ---------------------------
deb=""
for f in "$out"/cache/"${kpkg}"_*.deb; do
    [ -f "$f" ] || continue
    if [ "$(dpkg-deb -f "$f" Version 2>/dev/null)" = "$kver" ]; then
        deb=$f
    else
        rm -f "$f" # an older kernel version: no longer an input
    fi
done
if [ -z "$deb" ]; then
    log "downloading $kpkg=$kver"
    # Run as root into a root-owned dir: tell apt not to drop to _apt for it.
    (cd "$out/cache" && apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver" >&2)
    for f in "$out"/cache/"${kpkg}"_*.deb; do
        [ "$(dpkg-deb -f "$f" Version 2>/dev/null)" = "$kver" ] && deb=$f
    done
    [ -n "$deb" ] || die "download of $kpkg=$kver produced no package"
fi
dpkg-deb -x "$deb" "$work/kernel"
vmlinuz=$(find "$work/kernel/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $deb"
moddir=""
for d in "$work"/kernel/lib/modules/* "$work"/kernel/usr/lib/modules/*; do
    [ -d "$d/kernel" ] && moddir=$d && break
done
[ -n "$moddir" ] || die "no lib/modules/*/kernel in $deb"
krelease=$(basename "$moddir")

# --- initramfs tree -----------------------------------------------------------------
mkdir -p "$root"/{bin,sbin,usr/bin,proc,sys,dev,tmp,run,etc,lib/modules}
cp "$busybox_bin" "$root/bin/busybox"
for applet in $("$busybox_bin" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$src_dir/init" "$root/init"
echo "$build_id" >"$root/etc/walm-build"

for prog in "${programs[@]}"; do
    gcc -O2 -static -std=c99 -Wall -Wextra -Werror -o "$root/bin/$prog" "$src_dir/src/$prog.c"
    strip "$root/bin/$prog" 2>/dev/null || true
done

# sysbench is dynamic: copy it with every library ldd names, each at the path
# it has here, the dynamic loader included; ldconfig -r then writes the
# initramfs its own ld.so.cache so the loader finds them without a search path.
cp -L "$sysbench_bin" "$root/usr/bin/sysbench"
for lib in "${sysbench_libs[@]}"; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
if command -v ldconfig >/dev/null; then
    ldconfig -r "$root" 2>/dev/null || log "ldconfig -r failed; the loader's default paths must do"
fi

# --- kernel modules: the wanted ones and their dependencies, uncompressed --------------
# busybox insmod takes plain .ko only; Debian 13 ships .ko.xz.
declare -A mod_file=() mod_state=()
while IFS= read -r -d '' f; do
    name=$(basename "$f")
    name=${name%%.ko*}
    mod_file[${name//-/_}]=$f
done < <(find "$moddir/kernel" -name '*.ko*' -print0)

is_builtin() {
    [ -f "$moddir/modules.builtin" ] && tr '-' '_' <"$moddir/modules.builtin" | grep -q "/$1\.ko$"
}

uncompress_module() {
    case "$1" in
        *.ko) cp "$1" "$2" ;;
        *.ko.xz) xz -dc "$1" >"$2" ;;
        *.ko.zst) zstd -dcq "$1" >"$2" ;;
        *.ko.gz) gzip -dc "$1" >"$2" ;;
        *) die "unknown module compression: $1" ;;
    esac
}

load_order=()
resolve_module() {
    local name=$1 deps dep
    case "${mod_state[$name]:-}" in
        done) return 0 ;;
        visiting) die "module dependency cycle at $name" ;;
    esac
    if [ -z "${mod_file[$name]:-}" ]; then
        is_builtin "$name" || die "module $name is neither in $kpkg nor built in"
        log "module $name is built into the kernel"
        mod_state[$name]="done"
        return 0
    fi
    mod_state[$name]=visiting
    uncompress_module "${mod_file[$name]}" "$root/lib/modules/$name.ko"
    deps=$(modinfo -F depends "$root/lib/modules/$name.ko")
    for dep in ${deps//,/ }; do
        resolve_module "${dep//-/_}"
    done
    mod_state[$name]="done"
    load_order+=("$name.ko")
}
for m in "${wanted_modules[@]}"; do
    resolve_module "$m"
done
printf '%s\n' "${load_order[@]}" >"$root/lib/modules/walm-load-order"

# --- pack -------------------------------------------------------------------------------
# Fixed timestamps, owners and sorted names: the same inputs give the same bytes.
(
    cd "$root"
    find . -mindepth 1 -print0 | xargs -0 touch -h -d @0
    find . -mindepth 1 | sort | cpio -o -H newc --owner=0:0 --reproducible --quiet
) | gzip -6 -n >"$work/initrd.img"
cp "$vmlinuz" "$work/vmlinuz"

# Replace outputs; build-info.json goes last, so an interrupted build never
# looks complete.
rm -f "$info"
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initrd.img" "$out/initrd.img"

json_list() {
    local first=1 x
    printf '['
    for x in "$@"; do
        [ $first = 1 ] || printf ', '
        first=0
        printf '"%s"' "$x"
    done
    printf ']'
}
cat >"$info.tmp" <<JSON
{
  "format": 1,
  "fingerprint": "$fingerprint",
  "build_id": "$build_id",
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "kernel": {"package": "$kpkg", "version": "$kver", "release": "$krelease"},
  "busybox_static": "$(pkg_version busybox-static)",
  "sysbench": "$(pkg_version sysbench)",
  "modules": $(json_list "${load_order[@]}"),
  "programs": $(json_list "${programs[@]}" sysbench),
  "outputs": {
    "vmlinuz": {"sha256": "$(sha_of "$out/vmlinuz")", "bytes": $(stat -c %s "$out/vmlinuz")},
    "initrd.img": {"sha256": "$(sha_of "$out/initrd.img")", "bytes": $(stat -c %s "$out/initrd.img")}
  }
}
JSON
mv -f "$info.tmp" "$info"
log "built $build_id: initrd.img $(stat -c %s "$out/initrd.img") bytes, modules: ${load_order[*]}"
echo changed
