"""Helpers to build and tear down the WALM lab (roles/lab) from tests, through the project's own playbooks.

All commands run from the repository root with the venv's Ansible, so ansible.cfg (collections_path, the lab
inventory) applies. Shared by the integration tests; a session fixture can call lab_setup() / lab_teardown().
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The tools of the Python that runs the tests or the script (scripts/install.sh's venv, or any other with
# requirements/test.txt); WALM_VENV names another venv.
VENV_BIN = Path(os.environ["WALM_VENV"]) / "bin" if os.environ.get("WALM_VENV") else Path(sys.executable).parent
LAB_DIR = Path(os.environ.get("WALM_LAB_DIR", "/var/lib/walm-lab"))
INVENTORY = LAB_DIR / "inventory.yml"
# playbooks/lab_setup.yml's three hosts (a source and two destinations) and the switch that joins them.
HOSTS = {"walm-src": "10.77.0.1", "walm-dst": "10.77.0.2", "walm-dst2": "10.77.0.3"}
SWITCH = "walm-sw"
NAMESPACES = (*HOSTS, SWITCH)
NFS_URL = "nfs://10.77.0.2/walm"

_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)",
    re.M,
)


@dataclass
class Run:
    """One finished ansible(-playbook) run."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host: {'localhost': {'ok': 33, 'changed': 0, ...}}."""
        return {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in _RECAP.finditer(self.stdout)
        }

    def check(self) -> "Run":
        if self.returncode != 0:
            raise AssertionError(
                f"{' '.join(self.args)} failed (rc={self.returncode}):\n{self.stdout[-6000:]}\n{self.stderr[-3000:]}"
            )
        return self


def _run(tool: str, args: tuple[str, ...], extra_vars: dict | None, timeout: float) -> Run:
    cmd = [str(VENV_BIN / tool), *args]
    for key, value in (extra_vars or {}).items():
        cmd += ["-e", f"{key}={value}"]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return Run(cmd, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def ansible_playbook(*args: str, extra_vars: dict | None = None, timeout: float = 900) -> Run:
    """Run .venv/bin/ansible-playbook ARGS from the repository root (not checked: call .check())."""
    return _run("ansible-playbook", args, extra_vars, timeout)


def ansible(*args: str, timeout: float = 300) -> Run:
    """Run .venv/bin/ansible ARGS (ad-hoc) from the repository root against the lab inventory."""
    return _run("ansible", ("-i", str(INVENTORY), *args), None, timeout)


def lab_setup(extra_vars: dict | None = None) -> Run:
    """Build (or complete) the lab; raises AssertionError when the playbook fails."""
    return ansible_playbook("playbooks/lab_setup.yml", extra_vars=extra_vars).check()


def lab_teardown(extra_vars: dict | None = None) -> Run:
    """Stop every lab process and delete the lab namespaces; raises AssertionError when the playbook fails."""
    return ansible_playbook("playbooks/lab_teardown.yml", extra_vars=extra_vars).check()


def netns(ns: str, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """Run CMD inside lab host NS (network namespace only)."""
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout,
                          check=check)


def lab_namespaces() -> list[str]:
    """Lab namespaces (the hosts' and the switch's) that currently exist."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in NAMESPACES]


def lab_processes() -> list[str]:
    """'PID ARGS' of processes that belong to the lab: anything in a lab namespace, and any process whose
    command line names the lab directory (daemons' configuration, QEMU pid files, consoles)."""
    found = []
    for ns in lab_namespaces():
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
        found += [f"{pid} (in {ns})" for pid in out.split()]
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        args = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if str(LAB_DIR) + "/hosts" in args or str(LAB_DIR / "ssh") in args:
            found.append(f"{entry.name} {args}")
    return found


def lab_mounts() -> list[str]:
    """Mount points of the lab's namespaces still in the mount table."""
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False).stdout
    return [t for t in out.splitlines() if t.startswith("/run/netns/") and t.rsplit("/", 1)[-1] in NAMESPACES]


if __name__ == "__main__":  # python tests/integration/lab.py setup|teardown
    action = sys.argv[1] if len(sys.argv) > 1 else "setup"
    run = lab_setup() if action == "setup" else lab_teardown()
    print(run.recap(), f"{run.seconds:.1f} s")
