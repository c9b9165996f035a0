#!/bin/sh
# Usage: pid_state.sh PIDFILE EXE NETNS
# Prints "running PID" when PIDFILE names a live process whose executable is EXE and which runs in network
# namespace NETNS; "orphaned PID" when that process runs elsewhere (its namespace was deleted and recreated under
# it); "stopped" otherwise (missing or stale pid file, recycled PID).
pidfile=$1 exe=$2 ns=$3
pid=$(head -n 1 "$pidfile" 2>/dev/null | tr -d ' \n')
case $pid in '' | *[!0-9]*) echo stopped; exit 0 ;; esac
actual=$(readlink "/proc/$pid/exe" 2>/dev/null) || { echo stopped; exit 0; }
case $actual in "$exe" | "$exe (deleted)") ;; *) echo stopped; exit 0 ;; esac
ip netns identify "$pid" 2>/dev/null | grep -qxF "$ns" || { echo "orphaned $pid"; exit 0; }
echo "running $pid"
