"""The guest's working-set writer (guest/src/walm-wset.c) and its adversarial variants, run natively; and the
guest/init keys that select them.

No QEMU: the program is compiled with the host's gcc and guest/build.sh's flags into a temporary directory and run
for a few seconds on a small set with short intervals. --same is checked from outside: the set's content through
/proc/PID/mem, and -- where the kernel tracks them (CONFIG_MEM_SOFT_DIRTY) -- that the pages are still written,
through soft-dirty bits in /proc/PID/pagemap. guest/init's parsing and dispatch run in a shell with walm-wset
replaced by a stub that prints its arguments.
"""

import hashlib
import os
import queue
import shutil
import statistics
import struct
import subprocess
import threading

import pytest

from ansible_collections.walm.qemu.tests.unit.paths import ROOT

SOURCE = os.path.join(ROOT, "guest", "src", "walm-wset.c")
INIT = os.path.join(ROOT, "guest", "init")
GCC = shutil.which("gcc")
PAGE_BYTES = 4096
SET_MIB = 6  # a size no other mapping of the process has: the set is found by it in /proc/PID/maps
PLAIN_KEYS = ["t_ms", "seq", "mib", "target_mib_s", "rate_mib_s", "written_mib"]


@pytest.fixture(scope="module")
def wset_binary(tmp_path_factory):
    if not GCC:
        pytest.skip("gcc missing: run scripts/install.sh")
    binary = str(tmp_path_factory.mktemp("wset") / "walm-wset")
    build = subprocess.run([GCC, "-O2", "-static", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", binary, SOURCE],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120,
                           check=False)
    assert build.returncode == 0, build.stdout
    return binary


def parse(line):
    """`WALM wset k=v ...` as a dict, numbers converted."""
    words = line.split()
    assert words[:2] == ["WALM", "wset"], line
    rec = {}
    for tok in words[2:]:
        key, sep, value = tok.partition("=")
        assert sep, line
        try:
            rec[key] = float(value) if "." in value else int(value)
        except ValueError:
            rec[key] = value
    rec["_keys"] = [tok.partition("=")[0] for tok in words[2:]]
    return rec


class Wset:
    """One walm-wset process; a thread drains its stdout into a queue so the pipe never fills."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([binary, "--mib", str(SET_MIB)] + [str(a) for a in args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        self.queue = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.ready = self.next()
        assert self.ready.get("state") == "ready", self.ready

    def _drain(self):
        for line in self.proc.stdout:
            self.queue.put(line)
        self.queue.put(None)

    def next(self, timeout_s=10):
        line = self.queue.get(timeout=timeout_s)
        assert line is not None, "walm-wset ended (rc %s): %s" % (self.proc.wait(), self.proc.stderr.read())
        return parse(line)

    def lines_until(self, since_ready_ms):
        """Progress lines up to the first one at least since_ready_ms after the ready line."""
        out = []
        while not out or out[-1]["t_ms"] - self.ready["t_ms"] < since_ready_ms:
            out.append(self.next())
        return out

    def set_range(self):
        """Start and end address of the working set: the one anonymous mapping of its size."""
        found = []
        with open("/proc/%d/maps" % self.proc.pid) as f:
            for line in f:
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if len(fields) == 5 and hi - lo == SET_MIB << 20:
                    found.append((lo, hi))
        assert len(found) == 1, found
        return found[0]

    def set_content(self):
        lo, hi = self.set_range()
        with open("/proc/%d/mem" % self.proc.pid, "rb") as mem:
            mem.seek(lo)
            return mem.read(hi - lo)

    def clear_soft_dirty(self):
        with open("/proc/%d/clear_refs" % self.proc.pid, "w") as f:
            f.write("4")

    def soft_dirty_pages(self):
        lo, hi = self.set_range()
        npages = (hi - lo) // PAGE_BYTES
        with open("/proc/%d/pagemap" % self.proc.pid, "rb") as f:
            f.seek(lo // PAGE_BYTES * 8)
            entries = struct.unpack("<%dQ" % npages, f.read(npages * 8))
        return sum(1 for e in entries if e >> 55 & 1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def wset(wset_binary):
    started = []

    def _start(*args):
        w = Wset(wset_binary, *args)
        started.append(w)
        return w

    yield _start
    for w in started:
        w.stop()


def digest(data):
    return hashlib.sha256(data).hexdigest()


def assert_near(values, target, tolerance):
    assert values, "no values"
    median = statistics.median(values)
    assert abs(median - target) <= tolerance * target, (median, target, values)


def test_plain_lines_are_unchanged(wset):
    w = wset("--rate-mib-s", 32, "--interval-ms", 100)
    lines = w.lines_until(400)
    assert all(r["_keys"] == PLAIN_KEYS for r in lines), lines
    assert_near([r["rate_mib_s"] for r in lines], 32, 0.15)


def test_start_after_idles_then_writes_at_the_rate(wset):
    w = wset("--rate-mib-s", 32, "--interval-ms", 100, "--start-after-s", 1)
    lines = w.lines_until(2500)
    idle = [r for r in lines if r["t_ms"] - w.ready["t_ms"] < 1000]
    writing = [r for r in lines if r["t_ms"] - w.ready["t_ms"] >= 1100]  # whole interval after the start
    assert len(idle) >= 7, lines
    assert all(r["rate_mib_s"] == 0 and r["written_mib"] == 0 and r["phase"] == "idle" for r in idle), idle
    assert all(r["phase"] == "writing" for r in writing), writing
    assert_near([r["rate_mib_s"] for r in writing], 32, 0.15)
    assert max(r["rate_mib_s"] for r in lines) <= 1.3 * 32, lines  # the idle time earned no credit
    # The total since the start, within what a busy host may cost (a stall longer than 100 ms loses credit) and
    # below the 100 ms of credit the idle time would have earned without the pacer's reset.
    expected_mib = 32 * (lines[-1]["t_ms"] - w.ready["t_ms"] - 1000) / 1000.0
    assert 0.85 * expected_mib <= lines[-1]["written_mib"] <= 1.04 * expected_mib, (lines[-1], expected_mib)


def test_bursts_alternate_without_catch_up(wset):
    rate, interval_ms, burst_ms, quiet_ms = 64, 50, 300, 300
    period_ms = burst_ms + quiet_ms
    w = wset("--rate-mib-s", rate, "--interval-ms", interval_ms, "--burst-ms", burst_ms, "--quiet-ms", quiet_ms)
    lines = w.lines_until(4 * period_ms)
    margin_ms = 15  # timing slack: a line's interval must lie this far inside a phase to count as wholly in it

    def wholly_in(rec, lo_ms, hi_ms):
        end = (rec["t_ms"] - w.ready["t_ms"]) % period_ms or period_ms
        return end - interval_ms >= lo_ms + margin_ms and end <= hi_ms - margin_ms

    in_burst = [r["rate_mib_s"] for r in lines if wholly_in(r, 0, burst_ms)]
    in_quiet = [r["rate_mib_s"] for r in lines if wholly_in(r, burst_ms, period_ms)]
    assert len(in_burst) >= 8 and len(in_quiet) >= 8, lines
    assert_near(in_burst, rate, 0.15)
    assert all(r == 0 for r in in_quiet), in_quiet
    assert {r["phase"] for r in lines} == {"writing", "quiet"}, lines
    # No catch-up: credit earned in a quiet phase (even the pacer's 100 ms cap) would show as an interval well above
    # the rate and as a total above rate x burst time.
    assert max(r["rate_mib_s"] for r in lines) <= 1.3 * rate, lines
    cycles = (lines[-1]["t_ms"] - w.ready["t_ms"]) // period_ms
    expected_mib = cycles * burst_ms / 1000.0 * rate
    at_cycle_end = min(lines, key=lambda r: abs(r["t_ms"] - w.ready["t_ms"] - cycles * period_ms))
    assert 0.9 * expected_mib <= at_cycle_end["written_mib"] <= 1.05 * expected_mib, (at_cycle_end, expected_mib)


def test_same_writes_leave_the_content_unchanged(wset):
    w = wset("--rate-mib-s", 64, "--interval-ms", 100, "--same")
    w.next()
    before = w.set_content()
    lines = [w.next() for _step in range(5)]
    after = w.set_content()
    assert all(r["same"] == 1 and "phase" not in r for r in lines), lines
    assert_near([r["rate_mib_s"] for r in lines], 64, 0.15)  # the stores happen ...
    assert digest(before) == digest(after)  # ... and change nothing
    # The touch phase made every page non-zero: a migration cannot skip any as a zero page.
    zero_page = bytes(PAGE_BYTES)
    assert not any(before[i:i + PAGE_BYTES] == zero_page for i in range(0, len(before), PAGE_BYTES))


def test_plain_writes_change_the_content(wset):
    """The contrast to --same: the same check sees a plain writer's content change."""
    w = wset("--rate-mib-s", 64, "--interval-ms", 100)
    w.next()
    before = w.set_content()
    [w.next() for _step in range(3)]
    assert digest(before) != digest(w.set_content())


def test_same_writes_still_dirty_the_pages(wset):
    """What migration's dirty log sees: the kernel's soft-dirty bits, set by any store to a page."""
    plain = wset("--rate-mib-s", 64, "--interval-ms", 100)
    plain.next()
    plain.clear_soft_dirty()
    [plain.next() for _step in range(3)]
    if plain.soft_dirty_pages() == 0:
        pytest.skip("the kernel does not track soft-dirty pages (CONFIG_MEM_SOFT_DIRTY)")
    plain.stop()
    same = wset("--rate-mib-s", 64, "--interval-ms", 100, "--same")
    same.next()
    before = same.set_content()
    same.clear_soft_dirty()
    [same.next() for _step in range(3)]  # 300 ms at 64 MiB/s: ~19 MiB of page writes over a 6 MiB set
    npages = (SET_MIB << 20) // PAGE_BYTES
    assert same.soft_dirty_pages() > npages // 2
    assert digest(before) == digest(same.set_content())


@pytest.mark.parametrize("args, msg", [
    (["--burst-ms", "100"], "burst_ms_and_quiet_ms_go_together"),
    (["--quiet-ms", "100"], "burst_ms_and_quiet_ms_go_together"),
    (["--read", "--same"], "same_start_after_burst_quiet_are_wset_only"),
    (["--read", "--start-after-s", "1"], "same_start_after_burst_quiet_are_wset_only"),
    (["--start-after-s", "soon"], "bad_number:soon"),
])
def test_refused_options(wset_binary, args, msg):
    run = subprocess.run([wset_binary, "--mib", "1"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=10, check=False)
    assert run.returncode == 2
    assert run.stdout.splitlines() == ["WALM error prog=walm-wset msg=" + msg]


# --- guest/init --------------------------------------------------------------------------------------------------

def init_runs(tmp_path, cmdline):
    """What guest/init runs for a kernel command line: its cmdline parsing and workload dispatch in busybox sh (the
    guest's shell; sh if busybox is missing), walm-wset a stub. Returns (walm-wset's argv, init's error lines)."""
    text = open(INIT).read()
    parsing = text[text.index("t_ms() {"):text.index("# --- kernel modules")]
    dispatch = text[text.index("# --- workloads"):text.index("rc=$?")]
    assert parsing.count("/proc/cmdline") == 1
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    (tmp_path / "init-part").write_text(parsing.replace("/proc/cmdline", str(tmp_path / "cmdline")) + dispatch)
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    stub = stub_dir / "walm-wset"
    stub.write_text("#!/bin/sh\nfor a in \"$@\"; do echo \"ARG $a\"; done\n")
    stub.chmod(0o755)
    busybox = shutil.which("busybox")
    shell = [busybox, "sh"] if busybox else ["sh"]
    env = dict(os.environ, PATH="%s:%s" % (stub_dir, os.environ.get("PATH", "/usr/bin:/bin")))
    run = subprocess.run(shell + [str(tmp_path / "init-part")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, env=env, timeout=30, check=False)
    assert run.returncode == 0, run.stdout
    args = [line[4:] for line in run.stdout.splitlines() if line.startswith("ARG ")]
    errors = [line for line in run.stdout.splitlines() if line.startswith("WALM error")]
    return args, errors


def test_init_runs_plain_wset_as_before(tmp_path):
    args, errors = init_runs(tmp_path, "console=ttyS0 walm.workload=wset walm.wset_mib=128")
    assert args == ["--mib", "128", "--rate-mib-s", "64", "--interval-ms", "1000"]
    assert not errors


def test_init_passes_the_adversarial_keys(tmp_path):
    args, errors = init_runs(tmp_path, "walm.workload=wset walm.rate_mib_s=20 walm.wset_same=1 "
                                       "walm.wset_start_after_s=2.5 walm.wset_burst_ms=200 walm.wset_quiet_ms=800")
    assert args == ["--mib", "256", "--rate-mib-s", "20", "--interval-ms", "1000", "--same",
                    "--start-after-s", "2.5", "--burst-ms", "200", "--quiet-ms", "800"]
    assert not errors


def test_init_passes_a_lone_burst_on_for_walm_wset_to_refuse(tmp_path):
    args, errors = init_runs(tmp_path, "walm.workload=wset walm.wset_burst_ms=200")
    assert args[-4:] == ["--burst-ms", "200", "--quiet-ms", "0"]
    assert not errors


def test_init_reports_a_bad_value_and_leaves_the_option_off(tmp_path):
    args, errors = init_runs(tmp_path, "walm.workload=wset walm.wset_start_after_s=soon walm.wset_same=yes")
    assert args == ["--mib", "256", "--rate-mib-s", "64", "--interval-ms", "1000"]
    assert [e.split("msg=")[1] for e in errors] == ["bad_number:walm.wset_same=yes",
                                                    "bad_number:walm.wset_start_after_s=soon"]


def test_init_keys_are_documented():
    with open(os.path.join(ROOT, "docs", "guest.md")) as f:
        doc = f.read()
    for key in ("wset_same", "wset_start_after_s", "wset_burst_ms", "wset_quiet_ms"):
        assert "| `walm.%s` |" % key in doc, key
