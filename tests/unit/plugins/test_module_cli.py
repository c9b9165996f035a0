"""The modules run through the `ansible` and `ansible-doc` command lines: walm_decide, walm_probe, walm_image.

They sit with the controller's tests, not beside each module's other tests under plugins/modules and
plugins/module_utils: ansible-test units runs those with a PYTHONPATH whose `ansible` package holds only module_utils
(modules must not lean on controller code), and a child `ansible` started from there fails with "No module named
'ansible.cli'". The data and helpers they share with those tests are imported from them.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import images
from ansible_collections.walm.qemu.tests.unit.paths import COLLECTIONS, ROOT
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_decide_policy import HEAVY_AT_LINK, LAB_LINK_MIB_S, probe
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_decide_rules import RULE_DB
from ansible_collections.walm.qemu.tests.unit.plugins.modules.test_walm_image import VENV_BIN, export_files, make_sparse


# -- walm_decide (tests/unit/plugins/module_utils/test_decide_*.py) ---------------------------------------------

def adhoc(args, check=False):
    """Run walm_decide through ansible's ad-hoc command on localhost; (rc, parsed JSON result)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=" + sys.executable,
           "-m", "walm.qemu.walm_decide", "-a", json.dumps(args)] + (["--check"] if check else [])
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120, check=False)
    match = re.search(r"^localhost \| \w+!? => (\{.*?^\})", proc.stdout, re.S | re.M)
    assert match, "no result in ansible's output:\n%s\n%s" % (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(match.group(1))


@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
def test_module_end_to_end(check):
    args = {"probe": probe(name="db-7", **HEAVY_AT_LINK), "link_bandwidth_mib_s": LAB_LINK_MIB_S,
            "objective": "balanced", "rules": [dict(RULE_DB, when="starts_with(vm.name, 'web-')")]}
    rc, result = adhoc(args, check=check)
    assert rc == 0, result
    assert result["changed"] is False
    assert result["method"] == "hybrid" and result["switch_after_passes"] >= 1
    assert result["objective"] == "balanced" and result["meets_goal"] is True
    assert result["predictions"]["precopy"]["converges"] is False
    assert result["workload_class"]["dominant"] == "memory"
    assert result["rule"] is None
    assert result["reasons"][0].startswith("Objective balanced: hybrid")


def test_module_end_to_end_fails_clearly():
    rc, result = adhoc({"probe": {"vm": {"memory_mib": 512}, "workload": {}}, "link_bandwidth_mib_s": 119})
    assert rc != 0
    assert result["msg"].startswith("probe.workload.dirty_rate_mib_s is missing")


# -- walm_probe, on a real QEMU (tests/unit/plugins/module_utils/test_probe.py) ---------------------------------

def ansible(args, env, *flags):
    """One walm_probe run through Ansible on this machine (local connection, this Python)."""
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=" + sys.executable, "localhost"] + list(flags)
    argv += ["-m", "walm.qemu.walm_probe", "-a", json.dumps(args)]
    return subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=120, check=False)


def test_module_docs_and_run(tmp_path, vm):
    _proc, sock = vm
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS)
    doc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "walm.qemu.walm_probe"], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                         check=False)
    assert doc.returncode == 0 and "dirty_rate_mode" in doc.stdout, doc.stdout
    out = ansible({"qmp_socket": sock, "duration_s": 0.2, "samples": 1, "state_dir": str(tmp_path / "state")},
                  env, "-C")
    assert out.returncode == 0, out.stdout
    assert '"changed": false' in out.stdout and '"name": "pvm1"' in out.stdout
    bad = ansible({"name": "nosuchvm", "state_dir": str(tmp_path / "state")}, env)
    assert bad.returncode != 0 and "VM 'nosuchvm' is not running on this host" in bad.stdout


# -- walm_image, over a private NFS server (tests/unit/plugins/modules/test_walm_image.py) ----------------------

def walm_image(nfs, args, check_mode=False):
    """Run the module through Ansible in the NFS server's network namespace; returns (ok, result)."""
    with tempfile.TemporaryDirectory() as tree:
        argv = [os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local",
                "-e", "ansible_python_interpreter=" + os.path.join(VENV_BIN, "python"),
                "-m", "walm.qemu.walm_image", "-a", json.dumps(args), "-t", tree]
        if check_mode:
            argv.append("--check")
        proc = nfs.run(argv, check=False, cwd=ROOT, timeout=300)
        path = os.path.join(tree, "localhost")
        result = json.load(open(path)) if os.path.exists(path) else {"msg": proc.stdout}
    return proc.returncode == 0, result


def test_sparse_image_on_nfs_is_refused(nfs):
    url = make_sparse(nfs, "refused.qcow2")
    ok, res = walm_image(nfs, {"image": url})
    assert not ok
    assert "sparse qcow2" in res["msg"] and "preallocation=metadata" in res["msg"]
    assert res["affected"] and res["nfs"] and res["allocated_clusters"] < res["total_clusters"]
    ok, res = walm_image(nfs, {"image": url, "sparse_on_nfs": "report"})
    assert ok and not res["changed"] and res["affected"]


def test_fix_converts_atomically_keeps_data_and_is_idempotent(nfs):
    url = make_sparse(nfs, "fixed.qcow2", data_at_mib=3)
    ok, res = walm_image(nfs, {"image": url, "sparse_on_nfs": "fix"}, check_mode=True)
    assert ok and res["changed"] and res["fixed"]
    assert images.qcow2_allocation(os.path.join(nfs.export, "fixed.qcow2"))[0] < 512, "check mode converted"

    ok, res = walm_image(nfs, {"image": url, "sparse_on_nfs": "fix"})
    assert ok, res["msg"]
    assert res["changed"] and res["fixed"] and res["affected"]
    ok, res = walm_image(nfs, {"image": url, "sparse_on_nfs": "refuse"})
    assert ok and not res["changed"] and not res["sparse"] and not res["affected"]
    assert res["allocated_clusters"] == res["total_clusters"] == 512
    read = nfs.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0xa5 3M 64k", "-c", "read -P 0 0 1M", url])
    assert "Pattern verification failed" not in read.stdout
    assert "fixed.qcow2.walm-prealloc" not in export_files(nfs)
    nfs.run(["qemu-img", "check", "-q", "-f", "qcow2", url])

    ok, res = walm_image(nfs, {"image": url, "sparse_on_nfs": "fix"})
    assert ok and not res["changed"] and not res["fixed"]


def test_fix_is_refused_while_qemu_uses_the_image(nfs):
    url = make_sparse(nfs, "busy.qcow2")
    # Stands in for a QEMU that has the image open: a process named qemu-* with the image on its command line.
    holder = subprocess.Popen(["qemu-holder", "-c", "sleep 60; true", "qemu-holder", "-drive",
                               "file=%s,format=qcow2,if=none,cache=none" % url], executable="/bin/sh")
    try:
        ok, res = walm_image(nfs, {"image": url, "sparse_on_nfs": "fix"})
        assert not ok and "cannot be fixed while QEMU uses it" in res["msg"]
        assert holder.pid in [p["pid"] for p in res["in_use_by"]]
        assert not res["changed"]
    finally:
        holder.kill()
        holder.wait()
    assert images.qcow2_allocation(os.path.join(nfs.export, "busy.qcow2"))[0] < 512


def test_raw_and_missing_images(nfs):
    raw = "%s/disk.raw" % nfs.url
    nfs.run(["qemu-img", "create", "-q", "-f", "raw", raw, "16M"])
    ok, res = walm_image(nfs, {"image": raw, "format": "raw"})
    assert ok and res["exists"] and not res["affected"]
    ok, res = walm_image(nfs, {"image": nfs.url + "/nothing.qcow2", "must_exist": False})
    assert ok and not res["exists"] and not res["changed"]
    ok, res = walm_image(nfs, {"image": nfs.url + "/nothing.qcow2"})
    assert not ok and "does not exist" in res["msg"]
