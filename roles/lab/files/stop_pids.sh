#!/bin/sh
# Usage: stop_pids.sh TIMEOUT [PID...]
# Sends SIGTERM to every live PID, waits up to TIMEOUT seconds for all of them to exit, sends SIGKILL to the
# survivors and waits 5 s more. Prints "stopped PID" or "killed PID" per process; exits 1 if one still lives.
# Usage: stop_pids.sh --alive [PID...]
# Signals nothing: prints "process PID left (STATE)" for each PID still alive.
alive() { # a zombie has exited: only its parent's wait() is missing. One read of the state: a test of the file
    # followed by a grep of it lets a process reaped in between count as alive (grep fails, `!` makes it true).
    state=$(sed -n 's/^State:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null)
    case $state in '' | Z*) return 1 ;; esac
}
if [ "$1" = --alive ]; then
    shift
    for p in "$@"; do
        case $p in '' | *[!0-9]*) continue ;; esac
        alive "$p" && echo "process $p left ($state)"
    done
    exit 0
fi
timeout=${1%%.*}; shift
pids=
for p in "$@"; do
    case $p in '' | *[!0-9]*) continue ;; esac
    if alive "$p" && kill -TERM "$p" 2>/dev/null; then pids="$pids $p"; fi
done
[ -n "$pids" ] || exit 0
wait_for() { # wait_for TENTHS PIDS... -> survivors in $left
    n=$1; shift
    while :; do
        left=
        for p in "$@"; do alive "$p" && left="$left $p"; done
        [ -z "$left" ] || [ "$n" -le 0 ] && return
        n=$((n - 1)); sleep 0.1
    done
}
# shellcheck disable=SC2086 # a list of PIDs, split into arguments on purpose
wait_for $((timeout * 10)) $pids
for p in $pids; do
    case " $left " in
        *" $p "*) kill -KILL "$p" 2>/dev/null; echo "killed $p" ;;
        *) echo "stopped $p" ;;
    esac
done
[ -n "$left" ] || exit 0
# shellcheck disable=SC2086 # a list of PIDs, split into arguments on purpose
wait_for 50 $left
[ -z "$left" ] || { echo "still alive after SIGKILL:$left" >&2; exit 1; }
