#!/bin/sh
# Usage: lab_pids.sh qemu|all LABDIR [NETNS...]
# Prints, one per line, the PIDs of the lab's processes:
#   qemu: QEMUs named by LABDIR/hosts/*/run/*.pid, and qemu-system-* processes inside the NETNS namespaces;
#   all:  the above, the daemons named by LABDIR/hosts/*/{sshd,rpcbind,ganesha}.pid, and every process inside
#         the NETNS namespaces (ssh sessions, ProxyCommand socats, test helpers).
# Pid files are only trusted when the PID's executable matches, so a recycled PID is never reported.
mode=$1 labdir=$2; shift 2
exe_of() { readlink "/proc/$1/exe" 2>/dev/null; }
is_qemu() { case $(exe_of "$1") in */qemu-system-*) return 0 ;; esac; return 1; }
from_pidfile() { # from_pidfile FILE -> PID or nothing
    p=$(head -n 1 "$1" 2>/dev/null | tr -d ' \n')
    case $p in '' | *[!0-9]*) return 1 ;; esac
    [ -d "/proc/$p" ] && echo "$p"
}
{
    for f in "$labdir"/hosts/*/run/*.pid; do
        [ -f "$f" ] || continue
        p=$(from_pidfile "$f") && is_qemu "$p" && echo "$p"
    done
    for ns in "$@"; do
        [ -e "/run/netns/$ns" ] || continue
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            if [ "$mode" = all ] || is_qemu "$p"; then echo "$p"; fi
        done
    done
    if [ "$mode" = all ]; then
        for f in "$labdir"/hosts/*/sshd.pid "$labdir"/hosts/*/rpcbind.pid "$labdir"/hosts/*/ganesha.pid; do
            [ -f "$f" ] || continue
            p=$(from_pidfile "$f") || continue
            case $(exe_of "$p") in
                */sshd | */sshd\ \(deleted\) | */rpcbind | */rpcbind\ \(deleted\) | */ganesha.nfsd*) echo "$p" ;;
            esac
        done
    fi
} | sort -un
