"""roles/lab/files/stop_pids.sh on real processes: what it signals, what it waits for, what it reports.

The lab teardown stops every lab process through it, so a wrong "alive" here is either a process left running or a
teardown that fails on a process that is already gone (a zombie, or one reaped while it looked).
"""

import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STOP_PIDS = os.path.join(ROOT, "roles", "lab", "files", "stop_pids.sh")


def stop_pids(timeout, *pids):
    started = time.monotonic()
    run = subprocess.run(["sh", STOP_PIDS, str(timeout)] + [str(p) for p in pids], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
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
        run, _ = stop_pids(5, proc.pid)
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
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
        assert (run.returncode, run.stderr) == (0, "")
        assert re.fullmatch(r"process %d left \([RSD] \(\w+\)\)\n" % live.pid, run.stdout), run.stdout
        assert live.poll() is None  # not signalled
    finally:
        live.kill()
        live.wait()
        zombie.wait()
