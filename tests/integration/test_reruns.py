"""Never two copies, never none: the controller killed mid-migration and the playbook run again, two runs of one
VM's migration at once, parameters refused before anything starts, and the migration channel closed by TLS. Running
copies are counted by the guest's own console progress (a copy that keeps printing new verify passes runs the guest),
not by QMP status alone."""

import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP
from walmlab import (INVENTORY, ROOT, VENV_BIN, console_log, console_text, evacuate, kernel_trouble, migrate,
                     module, parse_console, pid_running, start_vm, state_dir, wait_until)

pytestmark = pytest.mark.lab

VM_PREFIX = "rr-"
VERIFY = {"verify_mib": 128, "rate_mib_s": 32}


def _migration_status(host, vm):
    try:
        with QMP(vm, os.path.join(state_dir(host), vm + ".qmp"), 5) as q:
            return q.execute("query-migrate").get("status")
    except Exception:  # noqa: BLE001 - the copy may be gone or busy
        return None


def _passes(host, vm):
    return [r["pass"] for r in parse_console(console_log(host, vm), "verify") if "pass" in r]


def running_copies(vm, window_s=4.0):
    """Hosts whose console shows the guest making progress (new verify passes) within window_s."""
    before = dict((h, len(_passes(h, vm))) for h in ("walm-src", "walm-dst"))
    time.sleep(window_s)
    return sorted(h for h in before if len(_passes(h, vm)) > before[h])


def assert_intact_on_destination(vm):
    src_log, dst_log = console_log("walm-src", vm), console_log("walm-dst", vm)
    assert pid_running("walm-dst", vm) and not pid_running("walm-src", vm)
    seen = len(_passes("walm-dst", vm))
    wait_until(lambda: len(_passes("walm-dst", vm)) > seen + 1, 60, "verify passes on the destination")
    assert running_copies(vm) == ["walm-dst"]
    for rec in parse_console(src_log, "verify") + parse_console(dst_log, "verify"):
        assert rec.get("errors", 0) == 0, rec
    assert "ERROR" not in console_text(dst_log) and kernel_trouble(dst_log) == []
    # The disk: the guest's own check re-reads every record written so far, on both hosts, with no error.
    disk = parse_console(src_log, "disk") + parse_console(dst_log, "disk")
    assert parse_console(dst_log, "disk"), "no disk check on the destination"
    assert all(r.get("errors", 0) == 0 and r.get("io_errors", 0) == 0 for r in disk), disk
    # The newest copy: the destination's passes continue from where the source's stopped.
    assert _passes("walm-dst", vm)[-1] > max(_passes("walm-src", vm) or [0])


def _start_controller(vm, extra):
    tmp = tempfile.mkdtemp(prefix="walm-rr-")
    ev = {"walm_vm_name": vm, "walm_source": "walm-src", "walm_destination": "walm-dst",
          "walm_result_file": os.path.join(tmp, "result.json")}
    ev.update(extra)
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, "playbooks/migrate_vm.yml", "-e",
            json.dumps(ev)]
    # Its own session, so the whole controller (ansible-playbook, its workers, its ssh clients) can be killed.
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, start_new_session=True), ev["walm_result_file"]


@pytest.mark.parametrize("method,extra,phase", [
    # Capped so that pre-copy converges in about 15 s (32 MiB/s written, 40 MiB/s sent).
    ("precopy", {"walm_max_bandwidth_mib_s": 40}, "active"),
    ("postcopy", {"walm_max_postcopy_bandwidth_mib_s": 16}, "postcopy-active"),
])
def test_controller_killed_mid_migration_then_rerun_finishes(vm, method, extra, phase):
    start_vm(vm, "verify", VERIFY)
    wait_until(lambda: len(_passes("walm-src", vm)) >= 3, 90, "verify passes on the source")
    ev = dict(extra, walm_method=method, walm_timeout_s=120)
    proc, _results = _start_controller(vm, ev)
    try:
        # The source's monitor is the migrating module's: watch the destination's.
        wait_until(lambda: _migration_status("walm-dst", vm) == phase, 120, "%s on the destination" % phase)
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The migration goes on inside QEMU without its controller. A rerun while it moves is refused, touching nothing
    # (unless the migration ended while the rerun started up: then it finishes it, as below).
    early, result = migrate(vm, ev, check=False)
    if result["whereabouts"] != "finish":
        assert early.returncode != 0, early.stdout[-5000:]
        assert result["whereabouts"] == "wait" and "Wait for it to end" in early.stdout, early.stdout[-3000:]
        assert pid_running("walm-src", vm) and pid_running("walm-dst", vm)
        wait_until(lambda: _migration_status("walm-dst", vm) in ("completed", "failed", None), 180,
                   "the orphaned migration to end")
        assert _migration_status("walm-dst", vm) == "completed"
        wait_until(lambda: _migration_status("walm-src", vm) == "completed", 60, "the source's monitor to be free")
        # The state the old playbook turned into two running copies: the source postmigrate, the destination
        # running. The rerun finishes the migration.
        rerun, result = migrate(vm, ev, check=False)
    else:
        rerun = early
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert result["status"] == "completed" and result["whereabouts"] == "finish", result
    assert "had completed" in rerun.stdout
    assert_intact_on_destination(vm)
    # A third run finds the work done and changes nothing.
    again, result = migrate(vm, ev, check=False)
    assert again.returncode == 0 and result["whereabouts"] == "done" and result["changed"] is False, result
    assert running_copies(vm) == ["walm-dst"]


@pytest.mark.parametrize("stagger_s", [0, 3])
def test_two_runs_of_one_vm_one_migrates_the_other_refuses(vm, stagger_s):
    start_vm(vm, "verify", VERIFY)
    wait_until(lambda: len(_passes("walm-src", vm)) >= 3, 90, "verify passes on the source")
    ev = {"walm_method": "precopy", "walm_max_bandwidth_mib_s": 48, "walm_timeout_s": 120}
    outcomes = [None, None]

    def run(i):
        outcomes[i] = migrate(vm, ev, check=False)

    first = threading.Thread(target=run, args=(0,))
    second = threading.Thread(target=run, args=(1,))
    first.start()
    time.sleep(stagger_s)
    second.start()
    first.join(600)
    second.join(600)
    results = [r for _process, r in outcomes]
    migrated = [r for r in results if r and r.get("whereabouts") == "migrate" and r.get("status") == "completed"]
    assert len(migrated) == 1, [(p.returncode, r) for p, r in outcomes]
    other = [o for o in outcomes if o[1] is not migrated[0]][0]
    proc, res = other
    # The other run either refused (a migration under way, the VM busy) or found the work done; it touched nothing
    # the first run needed.
    assert res["whereabouts"] in ("wait", "refuse", "done", "finish"), (proc.stdout[-3000:], res)
    assert res.get("rolled_back") is not True, res
    assert_intact_on_destination(vm)


BAD_PARAMETERS = [
    {"walm_timeout_s": 0},
    {"walm_max_bandwidth_mib_s": -5},
    {"walm_downtime_limit_ms": 0},
    {"walm_downtime_limit_ms": 10 ** 9},
    {"walm_switch_after_passes": 0, "walm_method": "hybrid"},
    {"walm_method": "fastest"},
]


def test_bad_parameters_are_refused_before_any_qemu_starts(vm):
    start_vm(vm, "idle")
    src_pid = pid_running("walm-src", vm)
    for bad in BAD_PARAMETERS:
        proc, _results = migrate(vm, bad, check=False)
        assert proc.returncode != 0, bad
        assert "refused before anything was started" in proc.stdout, (bad, proc.stdout[-2000:])
        # The block stopped at its first task: neither host was read, no destination prepared (the rescue's own
        # reads are skipped, and skipped tasks still print their headers).
        assert ": Read the VM on the source]" not in proc.stdout, proc.stdout[-3000:]
        assert ": Prepare the destination" not in proc.stdout, proc.stdout[-3000:]
        assert "-> walm-dst" not in proc.stdout and "changed: [walm-src]" not in proc.stdout, proc.stdout[-3000:]
        assert not pid_running("walm-dst", vm), bad
        assert not os.path.exists(os.path.join(state_dir("walm-dst"), vm + ".json")), bad
        assert pid_running("walm-src", vm) == src_pid


def _verify_guest_and_its_destination(vm, **incoming):
    """A verify guest on walm-src and its destination waiting on walm-dst, prepared by the modules themselves (as
    a run that was then interrupted would have left it); returns walm_vm's result on walm-dst."""
    start_vm(vm, "verify", VERIFY)
    wait_until(lambda: len(_passes("walm-src", vm)) >= 3, 90, "verify passes on the source")
    _ok, info = module("walm-src", "walm.qemu.walm_vm_info", {"name": vm, "state_dir": state_dir("walm-src")})
    src = info["vms"][0]
    args = {"name": vm, "state": "incoming", "definition": src["definition"], "state_dir": state_dir("walm-dst"),
            "listen_address": "10.77.0.2", "source_qemu_version": src["qemu_version_tuple"]}
    args.update(incoming)
    return module("walm-dst", "walm.qemu.walm_vm", args)[1]


def test_evacuation_rerun_finishes_a_migration_its_interrupted_run_completed(vm):
    """The state a controller killed right after walm_migrate leaves (source postmigrate, destination running):
    evacuate_host.yml finishes it (destination checked, stale copy stopped) instead of leaving the host unemptied."""
    dst = _verify_guest_and_its_destination(vm)
    _ok, mig = module("walm-src", "walm.qemu.walm_migrate", {
        "name": vm, "state_dir": state_dir("walm-src"), "destination_uri": dst["incoming_uri"],
        "capabilities": dst["capabilities"], "expected_definition_sha256": dst["definition_sha256"]})
    assert mig["status"] == "completed"
    wait_until(lambda: len(_passes("walm-dst", vm)) >= 1, 60, "the guest on the destination")
    proc, report = evacuate({"walm_timeout_s": 60}, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "an earlier run's migration to walm-dst had completed" in proc.stdout, proc.stdout[-4000:]
    assert_intact_on_destination(vm)


def _lab_certificates(tmp_path):
    """A CA and a certificate for each lab host, made by the script the role walm.qemu.migration_tls runs, and an
    inventory that gives each host its directory (walm_tls_dir)."""
    script = os.path.join(ROOT, "roles", "migration_tls", "files", "walm-tls.sh")
    ca = str(tmp_path / "ca")
    subprocess.run(["sh", script, "ca", ca], check=True, stdout=subprocess.DEVNULL)
    for host, address in (("walm-src", "10.77.0.1"), ("walm-dst", "10.77.0.2")):
        subprocess.run(["sh", script, "host", ca, host, "--san", host, "--san", address], check=True,
                       stdout=subprocess.DEVNULL)
    inv = tmp_path / "tls-inventory.yml"
    inv.write_text(json.dumps({"all": {"hosts": dict(
        (h, {"walm_tls_dir": os.path.join(ca, "hosts", h)}) for h in ("walm-src", "walm-dst"))}}))
    return str(inv), os.path.join(ca, "hosts")


def test_tls_migration_on_the_lab_and_a_peer_without_a_certificate(vm, tmp_path):
    """Between the two lab hosts over TLS: junk from a peer without a certificate does not reach the waiting
    destination, which then takes the real, encrypted migration; the guest's memory and disk come through."""
    inv, dirs = _lab_certificates(tmp_path)
    # Prepared as migrate_vm.yml prepares it (post-copy negotiated, walm_allow_postcopy's default), so it is reused.
    dst = _verify_guest_and_its_destination(vm, tls_dir=os.path.join(dirs, "walm-dst"),
                                            tls_allowed_clients=["CN=walm-src"], allow_postcopy=True)
    port = dst["incoming_uri"].rsplit(":", 1)[1]
    # A peer on the source host without a certificate sends 4 KiB of random bytes to the waiting destination.
    junk = ("import os, socket; s = socket.create_connection(('10.77.0.2', %s), 5); s.sendall(os.urandom(4096)); "
            "s.settimeout(5)\ntry:\n    s.recv(1)\nexcept Exception:\n    pass\ns.close()" % port)
    subprocess.run(["ip", "netns", "exec", "walm-src", "python3", "-c", junk], timeout=30, check=False)
    time.sleep(1)
    assert pid_running("walm-dst", vm), "the destination QEMU died of a peer without a certificate"
    assert _migration_status("walm-dst", vm) == "setup", "the destination no longer waits"
    # The real migration, through the playbook with each host's walm_tls_dir from the inventory: the waiting
    # destination is reused, TLS on both ends.
    proc, result = migrate(vm, {"walm_method": "precopy"}, check=False, options=["-i", inv])
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["status"] == "completed" and result["tls"]["endpoint"] == "client", result
    assert_intact_on_destination(vm)
    record = json.load(open(os.path.join(state_dir("walm-dst"), vm + ".json")))
    assert record.get("tls"), record


def test_evacuation_controller_killed_mid_migration_then_rerun_finishes(vm, tmp_path):
    """evacuate_host.yml killed 2 s into its migration: a rerun while the orphaned migration moves touches nothing,
    and a rerun after it ended finishes it; one running copy throughout, the newest."""
    start_vm(vm, "verify", VERIFY)
    wait_until(lambda: len(_passes("walm-src", vm)) >= 3, 90, "verify passes on the source")
    ev = {"walm_source": "walm-src", "walm_destinations": ["walm-dst"], "walm_timeout_s": 120,
          "walm_max_bandwidth_mib_s": 40, "walm_max_postcopy_bandwidth_mib_s": 16,
          "walm_result_file": str(tmp_path / "evacuation.json")}
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, "playbooks/evacuate_host.yml", "-e",
            json.dumps(ev)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_until(lambda: _migration_status("walm-dst", vm) in ("active", "postcopy-active"), 180,
                   "the evacuation's migration on the destination")
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    early, _results = evacuate({"walm_timeout_s": 120}, check=False)
    # Never two: a guest in a slow post-copy may print nothing for a while, so "at most one" here, exactly one below.
    copies = running_copies(vm)
    assert len(copies) <= 1, (copies, early.stdout[-3000:])
    wait_until(lambda: _migration_status("walm-dst", vm) in ("completed", "failed", None), 180,
               "the orphaned migration to end")
    # The early rerun may itself have finished it, if the migration ended while it planned.
    rerun, report = evacuate({"walm_timeout_s": 120}, check=False)
    assert rerun.returncode == 0, "early:\n%s\nrerun:\n%s" % (early.stdout[-3000:], rerun.stdout[-3000:])
    assert "had completed" in rerun.stdout + early.stdout, "early:\n%s\nrerun:\n%s" % (early.stdout[-3000:],
                                                                                       rerun.stdout[-3000:])
    assert_intact_on_destination(vm)
