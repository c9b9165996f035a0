"""roles/lab/files/stop_pids.sh on real processes: what it signals, what it waits for, what it reports.

The lab teardown stops every lab process through it, so a wrong "alive" here is either a process left running or a
teardown that fails on a process that is already gone (a zombie, or one reaped while it looked).

Also roles/lab/files/listen_fds.py, which hands rpcbind its sockets: what the started program receives, on
loopback ports the kernel picks (the lab's rpcbind itself is tests/integration/test_lab.py).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.walm.qemu.tests.unit.paths import ROOT

STOP_PIDS = os.path.join(ROOT, "roles", "lab", "files", "stop_pids.sh")
LISTEN_FDS = os.path.join(ROOT, "roles", "lab", "files", "listen_fds.py")


def stop_pids(timeout, *pids):
    started = time.monotonic()
    run = subprocess.run(["sh", STOP_PIDS, str(timeout)] + [str(p) for p in pids], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=60, check=False)
    return run, time.monotonic() - started


def state(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1]
    except OSError:
        return None
    return None


def wait_for_state(pid, wanted, seconds=10):
    deadline = time.monotonic() + seconds
    while state(pid) != wanted:
        assert time.monotonic() < deadline, (pid, state(pid))
        time.sleep(0.01)


def test_a_process_that_honours_sigterm_is_stopped():
    proc = subprocess.Popen(["sleep", "600"])
    try:
        run, _elapsed = stop_pids(5, proc.pid)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split("\n")[0] == "stopped %d" % proc.pid
        assert proc.wait(timeout=5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout():
    # The child ignores SIGTERM and says so once it does, so the signal cannot arrive before the handler is set.
    proc = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
                            stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        run, seconds = stop_pids(1, proc.pid)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split("\n")[0] == "killed %d" % proc.pid
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert seconds >= 1.0
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_counts_as_exited_and_is_neither_signalled_nor_waited_for():
    proc = subprocess.Popen(["true"])
    try:
        wait_for_state(proc.pid, "Z")  # exited; its parent (this test) has not reaped it yet
        run, seconds = stop_pids(30, proc.pid)
        assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
        assert seconds < 5  # not the 30 s timeout
    finally:
        proc.wait()


def test_gone_pids_and_garbage_are_skipped_and_the_rest_still_stopped():
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its /proc entry no longer exists
    assert state(gone.pid) is None
    proc = subprocess.Popen(["sleep", "600"])
    try:
        run, seconds = stop_pids(30, gone.pid, "", "12x", proc.pid)
        assert run.returncode == 0, run.stderr
        assert run.stdout == "stopped %d\n" % proc.pid
        assert seconds < 5
    finally:
        proc.kill()
        proc.wait()


def test_alive_mode_lists_live_pids_and_signals_nothing():
    live = subprocess.Popen(["sleep", "600"])
    zombie = subprocess.Popen(["true"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        wait_for_state(zombie.pid, "Z")
        run = subprocess.run(["sh", STOP_PIDS, "--alive", str(live.pid), str(zombie.pid), str(gone.pid), "x1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                             check=False)
        assert (run.returncode, run.stderr) == (0, "")
        assert re.fullmatch(r"process %d left \([RSD] \(\w+\)\)\n" % live.pid, run.stdout), run.stdout
        assert live.poll() is None  # not signalled
    finally:
        live.kill()
        live.wait()
        zombie.wait()


# What a program started by listen_fds.py finds: sd_listen_fds()'s view, and each descriptor's socket.
SHOW_FDS = """
import json, os, socket
n = int(os.environ["LISTEN_FDS"])
out = {"pid_matches": os.environ["LISTEN_PID"] == str(os.getpid()), "fds": []}
for fd in range(3, 3 + n):
    s = socket.socket(fileno=fd)
    v6only = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) if s.family == socket.AF_INET6 else None
    out["fds"].append([fd, s.type == socket.SOCK_STREAM, s.getsockname()[0], v6only,
                       s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)])
    s.detach()
print(json.dumps(out))
"""


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_listen_fds_hands_over_tcp_and_udp_sockets_in_order_and_keeps_the_pid():
    run = subprocess.run([sys.executable, LISTEN_FDS, "127.0.0.1:0", "[::1]:0", "--", sys.executable, "-c",
                          SHOW_FDS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["pid_matches"] is True  # exec in place: the pid file the lab wrote stays the daemon's
    want = [[3, True, "127.0.0.1", None, 1], [4, False, "127.0.0.1", None, 0]]
    if _has_ipv6_loopback():
        want += [[5, True, "::1", 1, 1], [6, False, "::1", 1, 0]]  # IPv6 only: rpcbind refuses dual-stack
    else:
        assert "skipping [::1]:0" in run.stderr
    assert got["fds"] == want


@pytest.mark.parametrize("args, message", [
    (["127.0.0.1", "--", "/bin/true"], "'127.0.0.1' is not ADDR:PORT"),
    # An address this machine does not have (TEST-NET-3): refused, nothing started.
    (["203.0.113.9:0", "--", "/bin/true"], "cannot listen on 203.0.113.9:0 (tcp)"),
    (["127.0.0.1:0"], "Usage: listen_fds.py"),
])
def test_listen_fds_refuses_what_it_cannot_open(args, message):
    run = subprocess.run([sys.executable, LISTEN_FDS] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60, check=False)
    assert run.returncode != 0 and message in run.stderr, run.stderr
