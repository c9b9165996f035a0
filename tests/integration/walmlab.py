"""Helpers for tests on the real lab: run playbooks and modules over SSH, read guest consoles, check VMs."""

import json
import os
import re
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
LAB_DIR = os.environ.get("WALM_LAB_DIR", "/var/lib/walm-lab")
INVENTORY = os.path.join(LAB_DIR, "inventory.yml")

LINE_RE = re.compile(r"^WALM (\S+)((?: \S+=\S*)*)\s*$")
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
                          universal_newlines=True, env=e)
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


def start_vm(vm, workload, args=None, host="walm-src", memory_mib=512):
    playbook("vm_start.yml", {"walm_host": host, "lab_vm_name": vm, "lab_vm_workload": workload,
                              "lab_vm_workload_args": args or {}, "lab_vm_memory_mib": memory_mib})


def stop_vm(vm):
    for host in ("walm-src", "walm-dst"):
        module(host, "walm.qemu.walm_vm", {"name": vm, "state": "stopped", "state_dir": state_dir(host)},
               check=False)


def migrate(vm, extra=None, check=True, options=()):
    result_file = os.path.join(tempfile.mkdtemp(prefix="walm-it-"), "result.json")
    ev = {"walm_vm_name": vm, "walm_source": "walm-src", "walm_destination": "walm-dst",
          "walm_result_file": result_file}
    ev.update(extra or {})
    proc = playbook("migrate_vm.yml", ev, check=check, options=options)
    result = json.load(open(result_file)) if os.path.exists(result_file) else None
    return proc, result


def parse_console(path, workload=None):
    """The guest's `WALM <workload> key=value ...` lines, as dicts (numbers converted)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE_RE.match(line.strip())
            if not m or (workload and m.group(1) != workload):
                continue
            rec = {"workload": m.group(1)}
            for kv in m.group(2).split():
                k, _, v = kv.partition("=")
                try:
                    rec[k] = float(v) if "." in v else int(v)
                except ValueError:
                    rec[k] = v
            out.append(rec)
    return out


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
