"""playbooks/maintain_hosts.yml on the three-host lab: every host of the group walm_lab drained, maintained (its
sshd restarted, playbooks/maintenance/lab_restart_sshd.yml) and returned to service in turn, with guests on every
host that run throughout. The run is killed mid-evacuation of the second host and run again: the rerun completes it,
no VM is left twice or nowhere, and every guest is intact.
"""

import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from walmlab import (INVENTORY, ROOT, VENV_BIN, console_log, console_text, kernel_trouble, module, parse_console,
                     pid_running, qmp_status, reset_vm, start_vm, state_dir, stop_all_vms, stop_vm, wait_until)

pytestmark = pytest.mark.lab

GROUP = "walm_lab"
HOSTS = ("walm-src", "walm-dst", "walm-dst2")
TASKS = os.path.join("playbooks", "maintenance", "lab_restart_sshd.yml")
# name: (host, workload, kernel arguments, tap, MAC, address): an idle and a CPU guest on the first host, a paced
# writer on the second, a network sender on the third.
GUESTS = {
    "mh-idle": ("walm-src", "idle", {}, "tap20", "52:54:00:77:02:01", "10.77.0.151/24"),
    "mh-cpu": ("walm-src", "cpu", {}, "tap21", "52:54:00:77:02:02", "10.77.0.152/24"),
    "mh-writer": ("walm-dst", "wset", {"wset_mib": 32, "rate_mib_s": 8}, "tap22", "52:54:00:77:02:03",
                  "10.77.0.153/24"),
    "mh-net": ("walm-dst2", "net", {"net_rate_mbit": 10}, "tap23", "52:54:00:77:02:04", "10.77.0.154/24"),
}
# The longest a guest's progress counter may stand still, seen from the host. Each guest prints a line a second and
# is sampled every half second, so a migration's downtime (a fraction of a second) shows as at most about 1 s;
# the margin is for four TCG guests and Ansible sharing two cores.
MAX_STALL_S = 5


def kind(vm):
    return GUESTS[vm][1]


def records(vm, kind):
    """The guest's `WALM <kind>` lines on every host it has run on (each host keeps its own console)."""
    return [r for host in HOSTS for r in parse_console(console_log(host, vm), kind)]


def latest_seq(vm):
    seqs = [r["seq"] for r in records(vm, GUESTS[vm][1]) if "seq" in r]
    return max(seqs) if seqs else None


def latest_disk(vm):
    written = [r["written"] for r in records(vm, "disk") if "written" in r]
    return max(written) if written else None


def assert_went_on(vm, host, before):
    """The same guest works on `host`: its workload counter and disk records go on past where they were before the
    run (a rebooted guest would start again at 1), the records written before are read back without error, and no
    console of it on any host shows an error."""
    seq_before, disk_before = before
    log = console_log(host, vm)
    wait_until(lambda: [r for r in parse_console(log, GUESTS[vm][1]) if r.get("seq", 0) > seq_before][2:], 90,
               "%s progress on %s" % (vm, host))
    wait_until(lambda: [r for r in parse_console(log, "disk") if r.get("written", 0) > disk_before], 90,
               "%s disk check on %s" % (vm, host))
    for rec in records(vm, GUESTS[vm][1]) + records(vm, "disk"):
        assert rec.get("errors", 0) == 0, (vm, rec)
    for h in HOSTS:
        assert "ERROR" not in console_text(console_log(h, vm)) and kernel_trouble(console_log(h, vm)) == [], (vm, h)


def where(vm):
    return [h for h in HOSTS if pid_running(h, vm) and qmp_status(h, vm) == "running"]


def marks():
    return dict((h, module(h, "walm.qemu.walm_vm_info", {"state_dir": state_dir(h)})[1]["draining"]) for h in HOSTS)


class StallWatch(threading.Thread):
    """Samples every guest's progress counter each half second; the longest time each one stood still."""

    def __init__(self, vms):
        super().__init__(daemon=True)
        self.vms, self.stop = vms, threading.Event()
        self.longest = dict((vm, 0.0) for vm in vms)

    def run(self):
        last = dict((vm, (latest_seq(vm), time.monotonic())) for vm in self.vms)
        while not self.stop.wait(0.5):
            now = time.monotonic()
            for vm in self.vms:
                seq = latest_seq(vm)
                if seq != last[vm][0]:
                    last[vm] = (seq, now)
                self.longest[vm] = max(self.longest[vm], now - last[vm][1])


def maintain_argv(result_file, check=False):
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, os.path.join("playbooks", "maintain_hosts.yml"),
            "-e", json.dumps({"walm_maintain_group": GROUP, "walm_maintenance_tasks": TASKS,
                              "walm_maintain_result_file": result_file, "walm_timeout_s": 120,
                              "walm_maintenance_estimate_s": 5})]
    return argv + (["--check"] if check else [])


def run_maintain(result_file, check=False, timeout=1500):
    return subprocess.run(maintain_argv(result_file, check), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout, check=False)


def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, ValueError):
        return None


@pytest.fixture
def guests(lab):
    """The four guests started on their own hosts, busy; their counters then."""
    stop_all_vms()
    for vm in GUESTS:
        reset_vm(vm)
    for vm, (host, workload, args, tap, mac, ip) in sorted(GUESTS.items()):
        start_vm(vm, workload, args, host=host, tap=tap, mac=mac, ip=ip, memory_mib=256)
    before = {}
    for vm in sorted(GUESTS):
        wait_until(lambda: (latest_seq(vm) or 0) >= 3 and latest_disk(vm), 120, "%s progress" % vm)
        before[vm] = (latest_seq(vm), latest_disk(vm))
    try:
        yield before
    finally:
        for vm in GUESTS:
            stop_vm(vm)
        for h in HOSTS:
            path = os.path.join(state_dir(h), "draining.json")
            if os.path.exists(path):
                os.remove(path)


def assert_run_complete(record, guests, watch, stdout):
    """Every host done and back in service, each guest on exactly one host, intact and never stopped for long."""
    print(stdout[stdout.rfind("Summary"):][:3000])
    print("longest stall per guest (s): %s" % dict((vm, round(s, 1)) for vm, s in watch.longest.items()))
    assert record["state"] == "finished"
    assert [record["hosts"][h]["status"] for h in HOSTS] == ["done"] * 3, record["hosts"]
    summary = record["summary"]
    # The guests started two on the first host, one on each other: the first host's move twice, the others once.
    assert summary["minimum_migrations"] == 6, summary
    assert summary["migrations"] >= 6, summary
    assert all(m is None for m in marks().values())
    for vm in GUESTS:
        assert len(where(vm)) == 1, (vm, where(vm))
    for vm, before in sorted(guests.items()):
        assert_went_on(vm, where(vm)[0], before)
    for vm in GUESTS:
        assert watch.longest[vm] <= MAX_STALL_S, watch.longest


def test_one_command_maintains_every_host_in_turn(guests):
    with tempfile.TemporaryDirectory(prefix="walm-it-") as tmp:
        result_file = os.path.join(tmp, "run.json")
        # --check: the whole run planned, nothing changed.
        proc = run_maintain(result_file, check=True)
        assert proc.returncode == 0, proc.stdout[-6000:]
        assert not os.path.exists(result_file)
        out = proc.stdout
        # Per host its VMs and their destinations: the first host's go to hosts maintained later, the others' to
        # hosts maintained before them; the count against the least possible; the predicted time.
        assert "mh-idle -> walm-d" in out and "mh-writer -> walm-src" in out, out[-4000:]
        assert "Migrations planned: 6 (least possible: 6)" in out, out[-4000:]
        assert "predicted run time" in out and "Check mode" in out
        assert all(m is None for m in marks().values())
        for vm, spec in GUESTS.items():
            assert where(vm) == [spec[0]], vm

        watch = StallWatch(sorted(GUESTS))
        watch.start()
        proc = run_maintain(result_file)
        watch.stop.set()
        watch.join(5)
        assert proc.returncode == 0, proc.stdout[-8000:]
        record = read(result_file)
    assert_run_complete(record, guests, watch, proc.stdout)
    assert record["summary"]["migrations"] == 6, record["summary"]


def test_interrupted_run_resumes_and_every_guest_runs_throughout(guests):
    watch = StallWatch(sorted(GUESTS))
    watch.start()
    with tempfile.TemporaryDirectory(prefix="walm-it-") as tmp:
        result_file = os.path.join(tmp, "run.json")
        second = os.path.join(tmp, "run-walm-dst.json")
        log = open(os.path.join(tmp, "first.log"), "w")
        first = subprocess.Popen(maintain_argv(result_file), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            # Mid-evacuation of the second host: its evacuation has written its plan and its migrations are under
            # way (the second "Migrate the waves" of the run; the first was walm-src's).
            wait_until(lambda: ((read(result_file) or {}).get("hosts", {}).get("walm-dst", {}).get("status")
                                == "draining" and (read(second) or {}).get("state") == "running"
                                and open(log.name).read().count("Migrate the waves]") >= 2), 600,
                       "the migrations of walm-dst's evacuation", interval_s=0.1)
            time.sleep(0.5)
            assert first.poll() is None, open(log.name).read()[-4000:]
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
            at_kill = dict((vm, [(h, qmp_status(h, vm)) for h in HOSTS if pid_running(h, vm)]) for vm in GUESTS)
            print("killed; the guests' copies then (host, status): %s" % at_kill)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
        log.close()
        killed = read(result_file)
        assert killed["state"] == "running" and killed["hosts"]["walm-src"]["status"] == "done", killed["hosts"]
        assert killed["hosts"]["walm-dst"]["status"] == "draining", killed["hosts"]
        assert marks()["walm-dst"] is not None

        proc = run_maintain(result_file)
        watch.stop.set()
        watch.join(5)
        assert proc.returncode == 0, proc.stdout[-8000:]
        assert "Resuming the run started at" in proc.stdout
        record = read(result_file)
    print("\n".join(line for line in proc.stdout.splitlines() if "Resuming" in line))
    assert_run_complete(record, guests, watch, proc.stdout)
