"""walm.qemu as an operator runs it: the tarball built from this checkout, installed into a collections path of its
own, and `ansible-playbook walm.qemu.migrate_vm` run from a directory outside the checkout with an inventory and an
ansible.cfg of its own. A writer guest moves from walm-src to walm-dst and proves it survived; every module the play
ran was the installed copy's.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import ansible
import pytest
import yaml

from walmlab import INVENTORY, ROOT, VENV_BIN, assert_migrated_intact, start_vm, stop_vm

pytestmark = pytest.mark.lab

VM = "ic-writer"


@pytest.fixture(scope="module")
def operator_dir(lab):
    """A directory outside the checkout: the installed collection, an inventory of the lab's two hosts written as an
    operator would write one, and an ansible.cfg naming only these."""
    tmp = tempfile.mkdtemp(prefix="walm-operator-", dir="/tmp")
    try:
        env = clean_env()
        subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--output-path",
                        os.path.join(tmp, "build"), ROOT], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        tarball = [os.path.join(tmp, "build", f) for f in os.listdir(os.path.join(tmp, "build"))][0]
        collections = os.path.join(tmp, "collections")
        env["ANSIBLE_COLLECTIONS_PATH"] = collections  # the path the play's ansible.cfg names, as an operator's would
        # --no-deps: ansible.posix (Galaxy, unreachable here) is needed by the NFS role only, not by this play.
        subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "--no-deps", "-p",
                        collections, tarball], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        installed = os.path.join(collections, "ansible_collections", "walm", "qemu")
        assert os.path.isfile(os.path.join(installed, "MANIFEST.json")) and not os.path.islink(installed)

        op = os.path.join(tmp, "ops")
        os.mkdir(op)
        with open(os.path.join(op, "inventory.yml"), "w") as f:
            yaml.safe_dump(own_inventory(), f, default_flow_style=False)
        with open(os.path.join(op, "ansible.cfg"), "w") as f:
            f.write("[defaults]\ncollections_path = %s\ninventory = inventory.yml\n"
                    "interpreter_python = auto_silent\n\n[ssh_connection]\npipelining = True\n" % collections)
        yield op, installed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_env():
    """The environment without any ANSIBLE_* setting of the caller (the lab's collections path among them)."""
    return dict((k, v) for k, v in os.environ.items() if not k.startswith("ANSIBLE_"))


def own_inventory():
    """walm-src and walm-dst with the connection settings and per-host variables an operator sets: how to reach
    the host, where its VMs' state lives, which Python has qemu.qmp (the hypervisor role's venv; here the lab's)."""
    with open(str(INVENTORY)) as f:
        lab = yaml.safe_load(f)["all"]["children"]["walm_lab"]
    group = dict(lab["vars"])
    group["ansible_python_interpreter"] = os.path.join(VENV_BIN, "python")
    group.pop("walm_lab_dir", None)
    hosts = {}
    for name in ("walm-src", "walm-dst"):
        hosts[name] = dict((k, v) for k, v in lab["hosts"][name].items() if k != "walm_lab_address")
    return {"all": {"children": {"hypervisors": {"vars": group, "hosts": hosts}}}}


@pytest.fixture
def writer():
    stop_vm(VM)
    start_vm(VM, "wset", {"wset_mib": 64, "rate_mib_s": 10}, tap="tap5", mac="52:54:00:77:00:95",
             ip="10.77.0.195/24")
    yield VM
    stop_vm(VM)


def test_a_migration_runs_from_the_installed_collection(operator_dir, writer):
    op, installed = operator_dir
    runs = []

    def run_installed(name, migrate_vars):
        result_file = os.path.join(op, "result.json")
        extra = {"walm_vm_name": name, "walm_source": "walm-src", "walm_destination": "walm-dst",
                 "walm_result_file": result_file}
        extra.update(migrate_vars or {})
        env = dict(clean_env(), ANSIBLE_CONFIG=os.path.join(op, "ansible.cfg"))
        # -vvv names the module file of every task: the installed copy's, never the checkout's.
        proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-vvv", "walm.qemu.migrate_vm",
                               "-e", json.dumps(extra)], cwd=op, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=900, check=False)
        runs.append(proc)
        assert proc.returncode == 0, proc.stdout[-6000:]
        with open(result_file) as f:
            return proc, json.load(f)

    result = assert_migrated_intact(writer, "wset", "written_mib", run_migration=run_installed)

    out = runs[0].stdout
    modules = set(re.findall(r"Using module file (\S+)", out))
    assert modules, out[-3000:]
    # ansible.builtin's modules come from ansible-core; every other one must be the installed copy's.
    builtin = os.path.join(os.path.dirname(ansible.__file__), "modules") + os.sep
    ours = {m for m in modules if not m.startswith(builtin)}
    assert ours and all(m.startswith(installed + os.sep) for m in ours), sorted(modules)
    assert any(m.endswith("/walm_migrate.py") for m in ours), sorted(modules)
    assert "Parsed %s inventory source" % os.path.join(op, "inventory.yml") in out, out[:3000]
    print("installed collection: %d module files, all under %s; TMT %s ms, DT %s ms, %s passes"
          % (len(ours), installed, result["total_time_ms"], result["downtime_ms"], result["passes"]))
