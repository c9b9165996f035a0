"""The lab guest (guest/): boots under plain QEMU and every workload makes the progress it promises.

No lab network needed: each test boots the built kernel + initramfs with `-accel tcg` in a temporary directory,
reads the serial console from a file and kills QEMU in a finalizer. The guest build is taken from
$WALM_GUEST_DIR (default /var/lib/walm-lab/guest) and (re)built with guest/build.sh first, which is a no-op
("unchanged") when nothing changed.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import time

import pytest

from walmlab import KERNEL_TROUBLE, parse_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_DIR = os.environ.get("WALM_GUEST_DIR", "/var/lib/walm-lab/guest")
QEMU = shutil.which("qemu-system-x86_64")
QEMU_IMG = shutil.which("qemu-img")
BOOT_TIMEOUT_S = 40


@pytest.fixture(scope="session")
def guest_dir():
    """The guest build: run the idempotent build (needs root for apt-get), else use what is there."""
    assert QEMU, "qemu-system-x86_64 missing: run scripts/install.sh"
    build = os.path.join(ROOT, "guest", "build.sh")
    outputs = [os.path.join(GUEST_DIR, f) for f in ("vmlinuz", "initrd.img", "build-info.json")]
    if os.geteuid() == 0:
        proc = subprocess.run([build, GUEST_DIR], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=900, check=False)
        assert proc.returncode == 0, "guest/build.sh failed:\n" + proc.stdout[-4000:]
        assert proc.stdout.strip().splitlines()[-1] in ("changed", "unchanged")
    elif not all(os.path.exists(p) for p in outputs):
        pytest.fail("no guest build in %s and not root to build it: run scripts/test.sh as root" % GUEST_DIR)
    return GUEST_DIR


class Guest:
    """One QEMU process with the lab guest; the console is a file the test polls."""

    def __init__(self, guest_dir, tmp_path, append, extra_args=(), name="console"):
        self.console = str(tmp_path / (name + ".log"))
        open(self.console, "w").close()
        argv = [QEMU, "-nodefaults", "-no-user-config", "-accel", "tcg", "-m", "512", "-smp", "2",
                "-display", "none", "-monitor", "none", "-no-reboot",
                "-kernel", os.path.join(guest_dir, "vmlinuz"), "-initrd", os.path.join(guest_dir, "initrd.img"),
                "-append", "console=ttyS0 panic=-1 " + append,
                "-chardev", "file,id=con0,path=" + self.console, "-serial", "chardev:con0"]
        argv += list(extra_args)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def text(self):
        with open(self.console, errors="replace") as f:
            return f.read()

    def records(self, workload=None):
        out = []
        for line in self.text().splitlines():
            rec = parse_line(line)
            if rec and (workload is None or rec["_kind"] == workload):
                out.append(rec)
        return out

    def progress(self, workload):
        """Progress lines only: not state=ready, ERROR or selftest lines."""
        return [r for r in self.records(workload) if not r["flags"] and "state" not in r and "selftest" not in r]

    def wait_for(self, predicate, what, timeout_s=BOOT_TIMEOUT_S):
        """Poll the console until predicate(self) is truthy; fail fast on a dead VM or a kernel crash."""
        deadline = self.started + timeout_s
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            text = self.text()
            trouble = [t for t in KERNEL_TROUBLE if t in text]
            if self.proc.poll() is not None or trouble:
                break
            time.sleep(0.25)
        qemu_out = b""
        if self.proc.poll() is not None:
            qemu_out = self.proc.stdout.read()
        raise AssertionError("timed out / failed waiting for %s (qemu rc=%s %s)\n--- console tail ---\n%s"
                             % (what, self.proc.poll(), qemu_out.decode(errors="replace")[-1000:],
                                self.text()[-3000:]))

    def boot_record(self):
        boots = self.wait_for(lambda g: g.records("boot"), "WALM boot")
        self.boot_wall_s = time.monotonic() - self.started  # within the 0.25 s poll interval
        assert not self.records("error"), self.records("error")
        return boots[0]


@pytest.fixture
def boot(guest_dir, tmp_path, request):
    guests = []

    def _boot(append, extra_args=(), name="console"):
        g = Guest(guest_dir, tmp_path, append, extra_args, name)
        guests.append(g)
        return g

    def _stop_all():
        for g in guests:
            g.stop()

    request.addfinalizer(_stop_all)
    return _boot


def wait_progress(guest, workload, count):
    return guest.wait_for(lambda g: len(g.progress(workload)) >= count and g.progress(workload),
                          "%d '%s' progress lines" % (count, workload))


def assert_rate(values, target, tolerance=0.2):
    """Median of the steady-state intervals within +-tolerance of the target."""
    median = statistics.median(values)
    assert abs(median - target) <= tolerance * target, "median %.2f not within %d%% of %.2f (%s)" % (
        median, tolerance * 100, target, values)


def test_idle(boot):
    g = boot("walm.workload=idle")
    rec = g.boot_record()
    assert rec["workload"] == "idle" and rec["kernel"].endswith("-amd64") and rec["disk"] == "none"
    lines = wait_progress(g, "idle", 3)
    seqs = [r["seq"] for r in lines]
    assert seqs == list(range(1, len(seqs) + 1))
    assert lines[-1]["t_ms"] > lines[0]["t_ms"]
    print("boot: WALM boot at guest t_ms=%d, host %.1f s after QEMU start" % (rec["t_ms"], g.boot_wall_s))


def test_cpu_sysbench(boot):
    g = boot("walm.workload=cpu walm.cpu_max_prime=10000")
    g.boot_record()
    lines = wait_progress(g, "cpu", 3)
    assert all(r["eps"] > 0 for r in lines), lines
    print("cpu: eps %s" % [r["eps"] for r in lines])


def test_wset_rate(boot):
    g = boot("walm.workload=wset walm.wset_mib=64 walm.rate_mib_s=32")
    g.boot_record()
    lines = wait_progress(g, "wset", 4)
    ready = [r for r in g.records("wset") if r.get("state") == "ready"]
    assert ready and ready[0]["mib"] == 64
    rates = [r["rate_mib_s"] for r in lines[1:]]  # the first interval includes start-up
    assert_rate(rates, 32)
    assert lines[-1]["written_mib"] > lines[0]["written_mib"]
    print("wset: target 32 MiB/s, achieved %s" % rates)


def test_rset_rate(boot):
    g = boot("walm.workload=rset walm.wset_mib=64 walm.rate_mib_s=64 walm.write_pct=5")
    g.boot_record()
    lines = wait_progress(g, "rset", 4)
    reads = [r["read_mib_s"] for r in lines[1:]]
    assert_rate(reads, 64)
    # 5 % of the page operations also write: 3.2 MiB/s.
    assert_rate([r["write_mib_s"] for r in lines[1:]], 3.2, tolerance=0.3)
    print("rset: target read 64 MiB/s, achieved %s, writes %s" % (reads, [r["write_mib_s"] for r in lines[1:]]))


def test_verify_clean(boot):
    g = boot("walm.workload=verify walm.verify_mib=32")
    g.boot_record()
    lines = wait_progress(g, "verify", 3)
    passes = [r["pass"] for r in lines]
    assert passes == sorted(passes) and passes[-1] > passes[0]
    assert all(r["errors"] == 0 for r in lines), lines
    assert not [r for r in g.records("verify") if "ERROR" in r["flags"]]
    print("verify: 32 MiB unpaced, %.1f MiB/s, passes %s" % (lines[-1]["rate_mib_s"], passes))


def test_verify_detects_corruption(boot):
    """Negative control: the program damages three pages itself after pass 1 and must report exactly those."""
    g = boot("walm.workload=verify walm.verify_mib=16 walm.verify_selftest=1")
    g.boot_record()
    g.wait_for(lambda g: [r for r in g.progress("verify") if r["pass"] >= 3], "3 verify passes")
    damaged = [r for r in g.records("verify") if r.get("selftest") == "corrupted"]
    assert len(damaged) == 1
    d = damaged[0]
    errors = [r for r in g.records("verify") if "ERROR" in r["flags"]]
    assert sorted(r["page"] for r in errors) == sorted([d["stale_page"], d["zeroed_page"], d["flipped_page"]])
    by_page = {r["page"]: r for r in errors}
    assert by_page[d["zeroed_page"]]["got"] == "0000000000000000"
    assert by_page[d["stale_page"]]["bad_words"] == 512  # a lost dirty page differs in every word
    assert by_page[d["flipped_page"]]["bad_words"] == 1
    assert g.progress("verify")[-1]["errors"] == 3  # counted once, then the pages are healthy again


def test_disk_check(boot, tmp_path):
    assert QEMU_IMG, "qemu-img missing: run scripts/install.sh"
    disk = str(tmp_path / "disk.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", disk, "64M"],
                   check=True)
    g = boot("walm.workload=idle walm.interval_ms=500",
             ["-drive", "file=%s,if=virtio,cache=none,format=qcow2" % disk])
    rec = g.boot_record()
    assert rec["disk"] == "vda"
    lines = wait_progress(g, "disk", 6)
    checked = [r["checked"] for r in lines]
    assert checked == sorted(checked) and checked[-1] > checked[0]
    # Read-back of every record written so far: 1 + 2 + ... + n blocks after n rounds.
    n = lines[-1]["written"]
    assert checked[-1] == n * (n + 1) // 2
    assert all(r["errors"] == 0 for r in lines), lines
    assert not [r for r in g.records("disk") if "ERROR" in r["flags"]]


def test_disk_off(boot, tmp_path):
    assert QEMU_IMG, "qemu-img missing: run scripts/install.sh"
    disk = str(tmp_path / "disk.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    g = boot("walm.workload=idle walm.disk=0", ["-drive", "file=%s,if=virtio,cache=none,format=qcow2" % disk])
    assert g.boot_record()["disk"] == "off"
    wait_progress(g, "idle", 2)
    assert not g.records("disk")


def test_net_stream(boot):
    # User networking with restrict=on: the guest's packets to the slirp gateway never leave QEMU.
    g = boot("walm.workload=net walm.ip=10.0.2.15/24 walm.net_dst=10.0.2.2 walm.net_rate_mbit=20",
             ["-nic", "user,model=virtio-net-pci,restrict=on"])
    rec = g.boot_record()
    assert rec["nic"] == "eth0"
    lines = wait_progress(g, "net", 4)
    sent = [r["sent_pkts"] for r in lines]
    assert sent == sorted(sent) and sent[-1] > sent[0]
    rates = [r["rate_mbit"] for r in lines[1:]]
    assert_rate(rates, 20)
    print("net: target 20 Mbit/s, achieved %s, errors %d" % (rates, lines[-1]["errors"]))


def test_bad_settings_are_reported(boot):
    """A typo on the command line is an error line, and the guest still runs (idle) rather than panicking."""
    g = boot("walm.workload=idle walm.interval_ms=fast walm.Bad=1")
    g.wait_for(lambda g: g.records("boot"), "WALM boot")
    msgs = [r["msg"] for r in g.records("error")]
    assert any(m.startswith("bad_number:walm.interval_ms") for m in msgs), msgs
    assert any(m.startswith("bad_cmdline_key") for m in msgs), msgs
    wait_progress(g, "idle", 2)


def qmp(path, commands, timeout_s=30):
    """Run QMP commands over the unix socket; returns their "return" values (raises on "error")."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(path)
        f = sock.makefile("rw")
        json.loads(f.readline())  # greeting
        results = []
        for cmd in [{"execute": "qmp_capabilities"}] + list(commands):
            f.write(json.dumps(cmd) + "\n")
            f.flush()
            while True:
                msg = json.loads(f.readline())
                if "event" in msg:
                    continue
                if "error" in msg:
                    raise AssertionError("QMP %s: %s" % (cmd["execute"], msg["error"]))
                results.append(msg["return"])
                break
        return results[1:]


def test_verify_and_disk_survive_migration(boot, tmp_path):
    """A real pre-copy (to a file, then a second QEMU loads it): the programs go on where they were, no errors.

    One QEMU at a time, so no network is needed: the source migrates into a file and quits, the destination
    starts with -incoming from that file and the same disk.
    """
    assert QEMU_IMG, "qemu-img missing: run scripts/install.sh"
    disk = str(tmp_path / "disk.qcow2")
    state = str(tmp_path / "state.bin")
    qmp_sock = str(tmp_path / "qmp.sock")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", disk, "64M"],
                   check=True)
    append = "walm.workload=verify walm.verify_mib=16 walm.interval_ms=500"
    drive = ["-drive", "file=%s,if=virtio,cache=none,format=qcow2" % disk]
    src = boot(append, drive + ["-qmp", "unix:%s,server=on,wait=off" % qmp_sock], name="source")
    src.boot_record()
    wait_progress(src, "disk", 4)
    before_verify = src.progress("verify")[-1]
    qmp(qmp_sock, [{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 1 << 30}},
                   {"execute": "migrate", "arguments": {"uri": "exec:cat > %s" % state}}])
    deadline = time.monotonic() + 30
    while True:
        info = qmp(qmp_sock, [{"execute": "query-migrate"}])[0]
        if info.get("status") in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert info.get("status") == "completed", info
    src_disk = src.progress("disk")[-1]
    src_verify = src.progress("verify")[-1]
    src.stop()
    print("migration: %d ms total, %s ms downtime, %d passes" % (
        info.get("total-time", -1), info.get("downtime"), info.get("ram", {}).get("dirty-sync-count", -1)))

    dst = boot(append, drive + ["-incoming", "exec:cat %s" % state], name="destination")
    # The destination's console continues mid-run: no boot line, the same programs with growing counters.
    dst.wait_for(lambda g: len(g.progress("disk")) >= 3 and len(g.progress("verify")) >= 3,
                 "disk and verify progress on the destination")
    assert not dst.records("boot"), "the destination rebooted instead of resuming"
    d_disk, d_verify = dst.progress("disk"), dst.progress("verify")
    # Continues, not restarted (a line cut at the switchover may be lost, hence +2).
    assert src_disk["seq"] < d_disk[0]["seq"] <= src_disk["seq"] + 2, (src_disk, d_disk[0])
    assert d_disk[-1]["written"] > src_disk["written"]
    assert d_disk[-1]["checked"] > src_disk["checked"]
    assert d_verify[-1]["pass"] > src_verify["pass"] >= before_verify["pass"]
    assert all(r["errors"] == 0 for r in d_disk + d_verify), (d_disk, d_verify)
    assert not [r for r in dst.records() if "ERROR" in r["flags"]]
    text = dst.text()
    assert not [t for t in KERNEL_TROUBLE if t in text], text[-3000:]
