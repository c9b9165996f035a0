"""Real pre-copy migrations between the lab's two SSH hosts, driven by playbooks/migrate_vm.yml.

Outcomes asserted: the migration completed, the VM runs on the destination and not on the source, the guest's own
memory check reports no corruption after the migration, and the disk records written before it read back after it.
"""

import json
import os
import subprocess
import threading
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import eventlog
from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths
from lab import netns
from walmlab import (KERNEL_TROUBLE, assert_migrated_intact, console_log, console_text, kernel_trouble, last, migrate,
                     module, parse_console, pid_running, qmp_status, start_vm, state_dir, stop_vm, wait_until)

pytestmark = pytest.mark.lab


VM_PREFIX = "it-"


def test_precopy_verify_guest(vm):
    start_vm(vm, "verify", {"verify_mib": 128, "rate_mib_s": 32})
    result = assert_migrated_intact(vm, "verify", "pass")
    print("verify guest: TMT %s ms, DT %s ms, %s passes" % (result["total_time_ms"], result["downtime_ms"],
                                                            result["passes"]))


def test_precopy_wset_guest(vm):
    start_vm(vm, "wset", {"wset_mib": 128, "rate_mib_s": 20})
    result = assert_migrated_intact(vm, "wset", "written_mib")
    # A writer makes pre-copy resend memory: more than one pass over RAM.
    assert result["passes"] >= 2
    print("wset guest: TMT %s ms, DT %s ms, %s passes" % (result["total_time_ms"], result["downtime_ms"],
                                                          result["passes"]))


def test_disk_image_clean_after_migration(vm):
    start_vm(vm, "idle")
    proc, result = migrate(vm)
    assert result["status"] == "completed"
    stop_vm(vm)
    url = "nfs://10.77.0.2/walm/%s.qcow2" % vm
    check = subprocess.run(["ip", "netns", "exec", "walm-src", "qemu-img", "check", url],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout
    assert "No errors were found" in check.stdout


def test_unknown_vm_fails_clearly(lab):
    proc, result = migrate("no-such-vm", check=False)
    assert proc.returncode != 0
    # Both hosts were read and the play names what it found, touching nothing.
    assert "The VM runs neither on walm-src nor on walm-dst" in proc.stdout
    assert result["status"] == "not-found" and result["whereabouts"] == "refuse"


def test_destination_not_listening_leaves_vm_running(vm):
    start_vm(vm, "verify", {"verify_mib": 64, "rate_mib_s": 32})
    src_log = console_log("walm-src", vm)
    wait_until(lambda: len(parse_console(src_log, "verify")) >= 2, 60, "verify progress")
    # Nothing listens on port 9 of the destination host.
    ok, result = module("walm-src", "walm.qemu.walm_migrate",
                        {"name": vm, "state_dir": state_dir("walm-src"), "destination_uri": "tcp:10.77.0.2:9",
                         "timeout_s": 60}, check=False)
    assert not ok
    assert "VM '%s'" % vm in result["msg"] and "failed" in result["msg"], result["msg"]
    assert result["source_status"] == "running"
    assert qmp_status("walm-src", vm) == "running"
    seen = last(parse_console(src_log, "verify"), "pass")
    wait_until(lambda: last(parse_console(src_log, "verify"), "pass") > seen, 30, "the guest to keep running")
    assert all(r.get("errors", 0) == 0 for r in parse_console(src_log, "verify"))


def test_destination_preparation_fails_leaves_vm_running(vm):
    """A destination given an unpinned machine type refuses before anything starts; the source is untouched."""
    start_vm(vm, "idle")
    ok, res = module("walm-dst", "walm.qemu.walm_vm",
                     {"name": vm, "state": "incoming", "state_dir": state_dir("walm-dst"),
                      "definition": {"name": vm, "machine": "q35", "accel": "tcg"},
                      "listen_address": "10.77.0.2"}, check=False)
    assert not ok and "versioned machine type" in res["msg"]
    assert not pid_running("walm-dst", vm)
    assert qmp_status("walm-src", vm) == "running"


HEAVY_WSET = {"wset_mib": 256, "rate_mib_s": 200}  # dirties faster than the 1 Gbit/s link carries


@pytest.mark.parametrize("method", ["postcopy", "hybrid"])
def test_postcopy_methods_verify_guest(vm, method):
    start_vm(vm, "verify", {"verify_mib": 128, "rate_mib_s": 32})
    result = assert_migrated_intact(vm, "verify", "pass", {"walm_method": method})
    assert result["method"] == method
    assert result["capabilities"].get("postcopy-ram") is True
    print("%s verify guest: TMT %s ms, DT %s ms, %s passes, post-copy %s, %s page requests"
          % (method, result["total_time_ms"], result["downtime_ms"], result["passes"], result["ran_postcopy"],
             result["postcopy_requests"]))


@pytest.mark.parametrize("method", ["postcopy", "hybrid"])
def test_postcopy_methods_heavy_writer(vm, method):
    """A writer pre-copy cannot keep up with leaves the host in post-copy, intact."""
    start_vm(vm, "wset", HEAVY_WSET)
    result = assert_migrated_intact(vm, "wset", "written_mib",
                                    {"walm_method": method, "walm_switch_after_passes": 1})
    assert result["ran_postcopy"] is True
    print("%s heavy wset: TMT %s ms, DT %s ms, %s passes, %s page requests"
          % (method, result["total_time_ms"], result["downtime_ms"], result["passes"],
             result["postcopy_requests"]))


def test_precopy_timeout_switches_to_postcopy(vm):
    start_vm(vm, "wset", HEAVY_WSET)
    # Without the run-time adaptation, which would switch at the first pass boundary, long before the timeout.
    result = assert_migrated_intact(vm, "wset", "written_mib",
                                    {"walm_method": "precopy", "walm_on_timeout": "postcopy", "walm_timeout_s": 6,
                                     "walm_adapt": False})
    assert result["ran_postcopy"] is True and "timeout_s=6" in result["postcopy_reason"]
    assert result["total_time_ms"] >= 6000


def test_precopy_timeout_abort_keeps_vm_on_source(vm):
    start_vm(vm, "wset", HEAVY_WSET)
    src_log = console_log("walm-src", vm)
    wait_until(lambda: last(parse_console(src_log, "wset"), "written_mib"), 60, "wset progress")
    # Without the run-time adaptation, which would switch it to post-copy (or cancel it as "aborted") first.
    proc, result = migrate(vm, {"walm_method": "precopy", "walm_on_timeout": "abort", "walm_timeout_s": 6,
                                "walm_adapt": False}, check=False)
    assert proc.returncode != 0
    assert result["status"] == "timeout" and "cancelled" in result["error"]
    assert result["source_status_after"] == "running"
    assert qmp_status("walm-src", vm) == "running"
    assert not pid_running("walm-dst", vm)  # the destination copy was removed
    seen = last(parse_console(src_log, "wset"), "written_mib")
    wait_until(lambda: last(parse_console(src_log, "wset"), "written_mib") > seen + 100, 30,
               "the guest to keep writing on the source")
    assert kernel_trouble(src_log) == []


def _ns(host, *argv):
    subprocess.run(["ip", "netns", "exec", host] + list(argv), check=False, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Outages: a short one, and a minute, in which a destination's main loop has been seen blocked on a missing guest
# page (recovery then goes through the out-of-band monitor). WALM_OUTAGE_RUNS repeats the long one.
OUTAGES_S = [4] + [60] * int(os.environ.get("WALM_OUTAGE_RUNS", "1"))


@pytest.mark.parametrize("outage_s", OUTAGES_S, ids=["%ds-%d" % (o, i) for i, o in enumerate(OUTAGES_S)])
def test_postcopy_link_cut_recovers(vm, outage_s):
    """The link breaks during post-copy: both sides pause, the playbook recovers, the guest comes through intact."""
    start_vm(vm, "verify", {"verify_mib": 256, "rate_mib_s": 64})
    src_log, dst_log = console_log("walm-src", vm), console_log("walm-dst", vm)
    wait_until(lambda: len([r for r in parse_console(src_log, "verify") if "pass" in r]) >= 3, 90, "verify")
    outcome = {}

    def run():
        # A slow post-copy stream keeps the migration in post-copy long enough to cut the link under it.
        outcome["proc"], outcome["result"] = migrate(vm, {"walm_method": "postcopy",
                                                          "walm_max_postcopy_bandwidth_mib_s": 16,
                                                          "walm_recover_delay_s": 2}, check=False)

    worker = threading.Thread(target=run)
    worker.start()
    stuck = None
    try:
        wait_until(lambda: os.path.exists(os.path.join(state_dir("walm-dst"), vm + ".qmp"))
                   and _dst_migration_status(vm) == "postcopy-active", 90, "post-copy on the destination")
        time.sleep(1)
        # Cut: the link goes down and the migration connections are reset on both hosts.
        _ns("walm-src", "ip", "link", "set", "link0", "down")
        _ns("walm-dst", "ip", "link", "set", "link0", "down")
        # Only the migration's connections (main stream and preempt channel): not NFS, not SSH.
        port = json.load(open(os.path.join(state_dir("walm-dst"), vm + ".json")))["incoming_uri"].rsplit(":", 1)[1]
        _ns("walm-src", "ss", "-K", "dst", "10.77.0.2", "dport", "=", ":" + port)
        _ns("walm-dst", "ss", "-K", "src", "10.77.0.2", "sport", "=", ":" + port)
        try:
            # From the events the destination's logger keeps: its in-band monitor may not answer while its main
            # loop waits on a missing page (recovery then goes out-of-band).
            wait_until(lambda: eventlog.last_migration_status(HostPaths(state_dir("walm-dst"), vm))
                       == "postcopy-paused", 30, "the destination to pause")
            time.sleep(2)
            threads = _thread_states(pid_running("walm-dst", vm))
            print("outage %d s: destination paused; its threads (name:wchan): %s" % (outage_s, threads))
        except AssertionError as e:
            # Say what the destination QEMU was doing; the playbook's output follows once it has ended.
            stuck = "%s; destination QEMU threads (name:wchan): %s" % (e, _thread_states(pid_running("walm-dst", vm)))
        time.sleep(outage_s)
    finally:
        _ns("walm-src", "ip", "link", "set", "link0", "up")
        _ns("walm-dst", "ip", "link", "set", "link0", "up")
        worker.join(600)
    proc, result = outcome["proc"], outcome["result"]
    assert not stuck, "%s\nplaybook (exit %d):\n%s" % (stuck, proc.returncode, proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["status"] == "completed" and result.get("resume") is True, result
    print("outage %d s: recovered after %d resume attempt(s); TMT %s ms, %d post-copy requests, QEMU %s"
          % (outage_s, proc.stdout.count("the source resumes the migration"), result["total_time_ms"],
             result["postcopy_requests"], result.get("qemu_version")))
    assert "Post-copy recovery, the destination listens again: attempt 1/" in proc.stdout
    assert pid_running("walm-dst", vm) and qmp_status("walm-dst", vm) == "running"
    assert not pid_running("walm-src", vm)
    seen = last(parse_console(dst_log, "verify"), "pass") or 0
    wait_until(lambda: (last(parse_console(dst_log, "verify"), "pass") or 0) > seen + 1, 60,
               "verify passes on the destination after recovery")
    assert all(r.get("errors", 0) == 0 for r in parse_console(src_log, "verify") + parse_console(dst_log, "verify"))
    text = console_text(dst_log)
    if outage_s >= 20:
        # A vCPU that waited out the outage on a missing page makes the guest's watchdog report a soft lockup once it
        # runs again (seen in 1 of 5 one-minute outages, "stuck for 65s"): a stall, not damage. Anything else fails.
        text = text.replace("watchdog: BUG: soft lockup", "watchdog: soft lockup")
    assert "ERROR" not in text and [t for t in KERNEL_TROUBLE if t in text] == []


def _thread_states(pid):
    """name:wchan of every thread of a process (what each is blocked in), for a failure message."""
    states = []
    for tid in sorted(os.listdir("/proc/%d/task" % pid)) if pid else []:
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as c, open("/proc/%d/task/%s/wchan" % (pid, tid)) as w:
                states.append("%s:%s" % (c.read().strip(), w.read().strip() or "-"))
        except (IOError, OSError):
            pass
    return ", ".join(states) or "no process"


def _dst_migration_status(vm):
    try:
        with QMP(vm, os.path.join(state_dir("walm-dst"), vm + ".qmp"), 5) as q:
            return q.execute("query-migrate").get("status")
    except Exception:  # noqa: BLE001 - the socket may be busy with the playbook's own call
        return None


def test_destination_killed_during_precopy_keeps_vm_on_source(vm):
    """The destination QEMU dies mid pre-copy: the migration fails and the guest runs on, intact, on the source."""
    start_vm(vm, "wset", HEAVY_WSET)
    src_log = console_log("walm-src", vm)
    wait_until(lambda: last(parse_console(src_log, "wset"), "written_mib"), 60, "wset progress")
    outcome = {}

    def run():
        # A pre-copy to the end: the run-time adaptation would switch this writer to post-copy after pass 1.
        outcome["proc"], outcome["result"] = migrate(vm, {"walm_method": "precopy", "walm_timeout_s": 120,
                                                          "walm_adapt": False}, check=False)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_until(lambda: _dst_migration_status(vm) == "active", 90, "pre-copy under way on the destination")
        time.sleep(2)
        pid = pid_running("walm-dst", vm)
        assert pid, "destination QEMU not found"
        os.kill(pid, 9)
    finally:
        worker.join(300)
    proc, result = outcome["proc"], outcome["result"]
    assert proc.returncode != 0
    assert result["status"] == "failed", result
    assert result["source_status_after"] == "running"
    assert qmp_status("walm-src", vm) == "running" and not pid_running("walm-dst", vm)
    seen = last(parse_console(src_log, "wset"), "written_mib")
    wait_until(lambda: last(parse_console(src_log, "wset"), "written_mib") > seen + 100, 30,
               "the guest to keep writing on the source")
    assert kernel_trouble(src_log) == [] and "ERROR" not in console_text(src_log)


def test_check_mode_validates_both_sides_and_touches_nothing(vm):
    start_vm(vm, "idle")
    src_pid = pid_running("walm-src", vm)
    proc, result = migrate(vm, {"walm_method": "postcopy"}, options=["--check"])
    assert "Would migrate %s from walm-src to walm-dst" % vm in proc.stdout, proc.stdout[-3000:]
    assert "postcopy-ram" in proc.stdout
    assert result is None  # no result file in check mode
    assert pid_running("walm-src", vm) == src_pid and qmp_status("walm-src", vm) == "running"
    assert not pid_running("walm-dst", vm)
    assert not os.path.exists(os.path.join(state_dir("walm-dst"), vm + ".json"))


def test_mismatched_destination_definition_is_refused_before_anything_changes(vm):
    """A destination built from another definition (here: twice the memory) is refused before `migrate`."""
    start_vm(vm, "idle")
    _ok, info = module("walm-src", "walm.qemu.walm_vm_info", {"name": vm, "state_dir": state_dir("walm-src")})
    other = dict(info["vms"][0]["definition"], memory_mib=1024)
    _ok, dst = module("walm-dst", "walm.qemu.walm_vm", {"name": vm, "state": "incoming", "definition": other,
                                                        "state_dir": state_dir("walm-dst"),
                                                        "listen_address": "10.77.0.2"})
    ok, res = module("walm-src", "walm.qemu.walm_migrate",
                     {"name": vm, "state_dir": state_dir("walm-src"), "destination_uri": dst["incoming_uri"],
                      "expected_definition_sha256": dst["definition_sha256"]}, check=False)
    assert not ok and "prepared from a different definition" in res["msg"], res
    assert qmp_status("walm-src", vm) == "running"
    assert qmp_status("walm-dst", vm) == "inmigrate"  # untouched: still waiting, nothing was sent


def test_destination_that_already_uses_the_tap_name_gives_the_nic_its_own(vm):
    """A tap name is the host's: walm-dst already runs a VM on tap0, and the incoming VM (tap0 on walm-src) gets a
    tap of walm-dst's own on the same bridge, with its MAC; its traffic flows there and the other VM is untouched."""
    bystander = vm[:18] + "-by"
    start_vm(bystander, "idle", host="walm-dst", mac="52:54:00:77:00:70", ip="10.77.0.170/24")
    try:
        start_vm(vm, "net", {"net_rate_mbit": 5, "net_dst": "10.77.0.1"})
        result = assert_migrated_intact(vm, "net", "seq")
        _ok, info = module("walm-dst", "walm.qemu.walm_vm_info", {"name": vm, "state_dir": state_dir("walm-dst")})
        (nic,) = info["vms"][0]["definition"]["nics"]
        assert nic["tap"] != "tap0" and nic["mac"] == "52:54:00:77:00:64" and nic["bridge"] == "br0", nic
        # The renamed tap is on the bridge, and the guest's datagrams go out through it on walm-dst.
        (link,) = json.loads(netns("walm-dst", "ip", "-j", "link", "show", nic["tap"]).stdout)
        assert link.get("master") == "br0", link
        stat = "/sys/class/net/%s/statistics/rx_packets" % nic["tap"]
        before = int(netns("walm-dst", "cat", stat).stdout)
        wait_until(lambda: int(netns("walm-dst", "cat", stat).stdout) > before + 50, 30, "guest traffic on the tap")
        # The VM that was there first keeps its tap and runs on.
        assert qmp_status("walm-dst", bystander) == "running"
        _ok, by = module("walm-dst", "walm.qemu.walm_vm_info", {"name": bystander, "state_dir": state_dir("walm-dst")})
        assert by["vms"][0]["definition"]["nics"][0]["tap"] == "tap0"
        print("incoming NIC on %s (tap0 held by %s); TMT %s ms" % (nic["tap"], bystander, result["total_time_ms"]))
    finally:
        stop_vm(bystander)
