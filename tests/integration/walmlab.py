"""Helpers for tests on the real lab: run playbooks and modules over SSH, read guest consoles, check VMs."""

import json
import os
import re
import subprocess
import tempfile
import time

from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP

import lab

# One set of lab paths for every test helper: lab.py's.
ROOT = str(lab.REPO)
VENV_BIN = str(lab.VENV_BIN)
LAB_DIR = str(lab.LAB_DIR)
INVENTORY = str(lab.INVENTORY)

# "WALM <workload> [WORD ...] key=value ..." -- bare words (state=..., ERROR) are kept as flags.
LINE_RE = re.compile(r"^WALM (\S+)(.*)$")
HEX_KEYS = ("expected", "got")  # 64-bit patterns stay strings, even when all their digits are decimal
# What a guest kernel prints when a migration broke it (seen with QEMU 7.2 under TCG, shared/LAB.md).
KERNEL_TROUBLE = ("general protection fault", "Oops", "Kernel panic", "BUG:", "segfault", "invalid opcode")


def state_dir(host):
    return os.path.join(LAB_DIR, "hosts", host, "run")


def console_log(host, vm):
    return os.path.join(state_dir(host), vm + ".console.log")


def run(argv, timeout=600, check=True, env=None):
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                          universal_newlines=True, env=e, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (exit %d):\n%s" % (" ".join(argv), proc.returncode, proc.stdout[-6000:]))
    return proc


def playbook(name, extra_vars=None, check=True, timeout=600, options=()):
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, os.path.join("playbooks", name)]
    argv += list(options)
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    return run(argv, timeout=timeout, check=check)


def module(host, name, args, check=True, timeout=300):
    """Run one module on one lab host over SSH; returns (ok, result dict)."""
    with tempfile.TemporaryDirectory() as tree:
        argv = [os.path.join(VENV_BIN, "ansible"), "-i", INVENTORY, host, "-m", name, "-a", json.dumps(args),
                "-t", tree]
        proc = run(argv, timeout=timeout, check=False)
        path = os.path.join(tree, host)
        result = json.load(open(path)) if os.path.exists(path) else {"msg": proc.stdout}
    ok = proc.returncode == 0
    if check and not ok:
        raise AssertionError("%s on %s failed: %s" % (name, host, result.get("msg", proc.stdout)))
    return ok, result


def start_vm(vm, workload, args=None, host="walm-src", memory_mib=512, tap=None, mac=None, ip=None):
    """Start a lab guest. Several guests on one host each need their own tap, MAC and address (the lab_vm
    defaults are one tap0, one MAC, one address)."""
    ev = {"walm_host": host, "lab_vm_name": vm, "lab_vm_workload": workload, "lab_vm_workload_args": args or {},
          "lab_vm_memory_mib": memory_mib}
    for key, value in (("lab_vm_tap", tap), ("lab_vm_mac", mac), ("lab_vm_ip", ip)):
        if value is not None:
            ev[key] = value
    playbook("vm_start.yml", ev)


def stop_vm(vm):
    for host in lab.HOSTS:
        module(host, "walm.qemu.walm_vm", {"name": vm, "state": "stopped", "state_dir": state_dir(host)},
               check=False)


def reset_vm(vm):
    """Stop the VM on every lab host and remove its consoles there: consoles are appended to, and no line of an
    earlier run may count."""
    stop_vm(vm)
    for host in lab.HOSTS:
        if os.path.exists(console_log(host, vm)):
            os.remove(console_log(host, vm))


def stop_all_vms():
    """Stop every VM recorded on a lab host (what an earlier run, or scripts/demo.sh, left running there)."""
    stopped = []
    for host in lab.HOSTS:
        ok, info = module(host, "walm.qemu.walm_vm_info", {"state_dir": state_dir(host)}, check=False)
        for vm in (info.get("vms") or []) if ok else []:
            if vm.get("running"):
                module(host, "walm.qemu.walm_vm", {"name": vm["name"], "state": "stopped",
                                                   "state_dir": state_dir(host)}, check=False)
                stopped.append("%s on %s" % (vm["name"], host))
    return stopped


def _read_json(path):
    return json.load(open(path)) if os.path.exists(path) else None


def migrate(vm, extra=None, check=True, options=()):
    with tempfile.TemporaryDirectory(prefix="walm-it-") as tmp:
        result_file = os.path.join(tmp, "result.json")
        ev = {"walm_vm_name": vm, "walm_source": "walm-src", "walm_destination": "walm-dst",
              "walm_result_file": result_file}
        ev.update(extra or {})
        proc = playbook("migrate_vm.yml", ev, check=check, options=options)
        return proc, _read_json(result_file)


def evacuate(extra=None, check=True, options=(), source="walm-src", destinations=("walm-dst",), timeout=900):
    """Run playbooks/evacuate_host.yml; returns (process, the results file as a dict or None)."""
    with tempfile.TemporaryDirectory(prefix="walm-it-") as tmp:
        result_file = os.path.join(tmp, "evacuation.json")
        ev = {"walm_source": source, "walm_destinations": list(destinations), "walm_result_file": result_file}
        ev.update(extra or {})
        proc = playbook("evacuate_host.yml", ev, check=check, timeout=timeout, options=options)
        report = _read_json(result_file)
    return proc, report


# Three guests for host evacuation: an idle one, a CPU-bound one and a writer pre-copy cannot keep up with, each
# with its own tap, MAC and address so they can share a host. name: (workload, kernel args, tap, MAC, address).
EVACUATION_VMS = {
    "ev-idle": ("idle", {}, "tap0", "52:54:00:77:00:71", "10.77.0.111/24"),
    "ev-cpu": ("cpu", {}, "tap1", "52:54:00:77:00:72", "10.77.0.112/24"),
    "ev-heavy": ("wset", {"wset_mib": 256, "rate_mib_s": 200}, "tap2", "52:54:00:77:00:73", "10.77.0.113/24"),
}


def start_evacuation_vms(host="walm-src"):
    for name, (workload, args, tap, mac, ip) in sorted(EVACUATION_VMS.items()):
        start_vm(name, workload, args, host=host, tap=tap, mac=mac, ip=ip)
    return sorted(EVACUATION_VMS)


def progress(host, vm, workload=None):
    """(last seq of the VM's workload lines, last disk record written) on a host's console; None when absent.
    workload: the kind of its progress lines (default: the evacuation guest's)."""
    workload = workload or (EVACUATION_VMS[vm][0] if vm in EVACUATION_VMS else None)
    lines = [r for r in parse_console(console_log(host, vm), workload) if "seq" in r and r["seq"] > 0]
    disk = [r for r in parse_console(console_log(host, vm), "disk") if "written" in r]
    return (lines[-1]["seq"] if lines else None, disk[-1]["written"] if disk else None)


def parse_line(line):
    """One console line as a dict: `_kind` (the workload or `boot`, `disk`, ...), numbers converted, bare words
    in `flags`; None for anything else the console prints."""
    m = LINE_RE.match(line.strip())
    if not m:
        return None
    # "_kind" cannot clash with a key on the line (the boot line carries workload=...).
    rec = {"_kind": m.group(1), "flags": []}
    for tok in m.group(2).split():
        key, sep, value = tok.partition("=")
        if not sep:
            rec["flags"].append(tok)
            continue
        if key in HEX_KEYS:
            rec[key] = value
            continue
        try:
            rec[key] = float(value) if "." in value else int(value)
        except ValueError:
            rec[key] = value
    return rec


def parse_console(path, workload=None):
    """The guest's `WALM <workload> ...` lines of a console log, parsed with parse_line."""
    recs = [parse_line(line) for line in console_text(path).splitlines()]
    return [r for r in recs if r and (workload is None or r["_kind"] == workload)]


def console_text(path):
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()


def kernel_trouble(path):
    text = console_text(path)
    return [t for t in KERNEL_TROUBLE if t in text]


def wait_until(predicate, timeout_s, what, interval_s=0.5):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError("timed out after %d s waiting for %s" % (timeout_s, what))


def pid_running(host, vm):
    try:
        pid = int(open(os.path.join(state_dir(host), vm + ".pid")).read().strip())
    except (IOError, OSError, ValueError):
        return None
    try:
        cmdline = open("/proc/%d/cmdline" % pid, "rb").read()
    except (IOError, OSError):
        return None
    return pid if ("guest=%s," % vm).encode() in cmdline else None


def qmp_status(host, name):
    with QMP(name, os.path.join(state_dir(host), name + ".qmp"), 10) as q:
        return q.execute("query-status")["status"]


def last(records, key):
    """The latest value of key (lines without it, such as 'state=ready', are skipped)."""
    values = [r[key] for r in records if key in r]
    return values[-1] if values else None


def assert_migrated_intact(name, workload, progress_key, migrate_vars=None, run_migration=None):
    """Migrate a lab guest from walm-src to walm-dst and prove it survived: the result says completed, the VM runs
    on walm-dst only, its workload goes on there with no error, and the disk records written before the move read
    back after it. run_migration(name, migrate_vars) -> (process, result dict) runs the migration (default: the
    checkout's playbooks/migrate_vm.yml)."""
    src_log, dst_log = console_log("walm-src", name), console_log("walm-dst", name)
    # The workload and the disk check ran on the source before the migration.
    before = wait_until(lambda: len([r for r in parse_console(src_log, workload) if progress_key in r]) >= 3
                        and last(parse_console(src_log, "disk"), "written"),
                        60, "%s progress on the source" % workload)
    assert before
    disk_written_before = last(parse_console(src_log, "disk"), "written")
    progress_before = last(parse_console(src_log, workload), progress_key)
    assert disk_written_before and disk_written_before > 0

    proc, result = (run_migration or migrate)(name, migrate_vars)
    assert result is not None, proc.stdout[-3000:]
    assert result["status"] == "completed", result
    assert result["destination_status"] == "running"
    assert result["total_time_ms"] > 0 and result["downtime_ms"] >= 0 and result["passes"] >= 1
    assert result["transferred_bytes"] > 0
    # Guest-visible downtime: the destination's RESUME less the source's STOP (one clock here). It lies within
    # the migration, and for pre-copy it is the stop-and-copy QEMU reports as its downtime, give or take.
    gv = result["guest_visible_downtime_ms"]
    assert gv is not None and 0 < gv <= result["total_time_ms"], result
    if not result["ran_postcopy"]:
        assert 0.5 * result["downtime_ms"] <= gv <= 1.5 * result["downtime_ms"] + 50, result
    print("guest-visible downtime %s ms (QEMU downtime %s ms)" % (gv, result["downtime_ms"]))

    # Running on the destination, gone from the source.
    assert pid_running("walm-dst", name)
    assert qmp_status("walm-dst", name) == "running"
    assert not pid_running("walm-src", name)

    # The guest proves it survived: it keeps making progress on the destination with no error.
    src_records = parse_console(src_log, workload)
    dst_records = wait_until(lambda: [r for r in parse_console(dst_log, workload)
                                      if r.get(progress_key, -1) > progress_before][3:], 60,
                             "%s progress on the destination" % workload)
    assert dst_records
    for rec in src_records + parse_console(dst_log, workload):
        assert rec.get("errors", 0) == 0, rec
    assert "ERROR" not in console_text(dst_log) and "ERROR" not in console_text(src_log)
    assert kernel_trouble(dst_log) == []
    # Disk: the records written on the source are re-read and checked on the destination.
    # Every disk line re-reads all records written so far: a line past the source's last write has checked them.
    disk = wait_until(lambda: [r for r in parse_console(dst_log, "disk")
                               if r.get("written", 0) > disk_written_before
                               and r.get("blocks_in_use", 0) > disk_written_before], 60,
                      "disk check on the destination")
    assert all(r.get("errors", 0) == 0 for r in parse_console(dst_log, "disk") + parse_console(src_log, "disk"))
    assert disk[-1]["written"] > disk_written_before
    return result


def wait_busy(host, vms):
    """Every VM has printed a few progress lines and a disk record on `host`; their last seq and record."""
    seen = {}
    for vm in vms:
        wait_until(lambda: (progress(host, vm)[0] or 0) >= 3 and progress(host, vm)[1], 120,
                   "%s progress on %s" % (vm, host))
        seen[vm] = progress(host, vm)
    return seen


def assert_guest_went_on(host, vm, before):
    """The same guest keeps working on `host`, with no error of any kind: its counters go on past where they were
    (a rebooted guest would start again at 1; a console started afresh holds only new lines)."""
    kind = EVACUATION_VMS[vm][0]
    seq_before, disk_before = before
    log = console_log(host, vm)
    after = wait_until(lambda: [r for r in parse_console(log, kind) if r.get("seq", 0) > seq_before][2:],
                       90, "%s progress on %s" % (vm, host))
    assert after
    # The disk records written before the move are re-read and checked after it.
    wait_until(lambda: [r for r in parse_console(log, "disk") if r.get("written", 0) > disk_before], 90,
               "%s disk check on %s" % (vm, host))
    for rec in parse_console(log, kind) + parse_console(log, "disk"):
        assert rec.get("errors", 0) == 0, (vm, rec)
    assert "ERROR" not in console_text(log) and kernel_trouble(log) == [], vm
