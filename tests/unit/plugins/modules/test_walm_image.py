"""walm_image: the sparse-qcow2-on-nfs:// trap is found, refused and fixed, over a real userspace NFS server.

The lab is not needed: a private rpcbind + nfs-ganesha runs in throwaway namespaces (private_nfs.py), and the module
runs through Ansible inside that network namespace, exactly as it runs on a hypervisor that reaches its storage only
through QEMU's `nfs://` driver (those tests are in tests/unit/plugins/test_module_cli.py: ansible-test runs this file
without the controller's code, so no `ansible` command). Images are made and checked with real qemu-img and qemu-io;
no VM is started.
"""

import os
import sys

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import nfsurl
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.tests.unit.paths import COLLECTIONS

# The tools of the Python that runs the tests (scripts/install.sh's venv, or any other with requirements/test.txt).
VENV_BIN = os.path.dirname(sys.executable)
PATTERN = bytes(range(0xa0, 0xa4))


# -- pure functions ---------------------------------------------------------------------------------------------

def test_rename_refuses_across_directories():
    with pytest.raises(WalmError, match="same NFS directory"):
        nfsurl.rename("nfs://s/e/x/a.qcow2", "nfs://s/e/y/a.qcow2")


# -- over a real NFS server -------------------------------------------------------------------------------------
# The module itself, run through the ansible command line in the server's namespace: tests/unit/plugins/
# test_module_cli.py. Here: what the module and walm_vm build on.

def make_sparse(nfs, name, data_at_mib=1):
    url = "%s/%s" % (nfs.url, name)
    nfs.run(["qemu-img", "create", "-q", "-f", "qcow2", url, "32M"])
    nfs.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 %dM 64k" % data_at_mib, url])
    return url


def export_files(nfs):
    return sorted(os.listdir(nfs.export))


def nfsurl_call(nfs, code):
    """Run nfsurl code in the server's network namespace (libnfs talks to nfs://127.0.0.1 there)."""
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from ansible_collections.walm.qemu.plugins.module_utils import nfsurl\n"
              "u = %r\n" % (COLLECTIONS, nfs.url)) + code
    return nfs.run([os.path.join(VENV_BIN, "python"), "-c", script]).stdout


def test_nfs_rename_and_remove_through_libnfs(nfs):
    with open(os.path.join(nfs.export, "a.tmp"), "wb") as f:
        f.write(PATTERN)
    with open(os.path.join(nfs.export, "b.bin"), "wb") as f:
        f.write(b"old")
    nfsurl_call(nfs, "nfsurl.rename(u + '/a.tmp', u + '/b.bin')\n")
    assert open(os.path.join(nfs.export, "b.bin"), "rb").read() == PATTERN  # replaced in one rename
    assert "a.tmp" not in export_files(nfs)
    out = nfsurl_call(nfs, "print(nfsurl.remove(u + '/b.bin'), nfsurl.remove(u + '/b.bin'))\n")
    assert out.split() == ["True", "False"]
    assert "b.bin" not in export_files(nfs)
    out = nfsurl_call(nfs, "try:\n    nfsurl.remove(u + '/b.bin', missing_ok=False)\n"
                           "except Exception as e:\n    print('ERR', e)\n")
    assert out.startswith("ERR") and "b.bin" in out


def test_walm_vm_guard_still_refuses_a_sparse_nfs_disk(nfs):
    """images.check_disk_migratable (walm_vm's check before starting a VM) shares nfs_trap with walm_image."""
    sparse = make_sparse(nfs, "guard.qcow2")
    good = nfs.url + "/guard-good.qcow2"
    nfs.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", good, "16M"])
    out = nfsurl_call(nfs, (
        "from ansible_collections.walm.qemu.plugins.module_utils import images\n"
        "images.check_disk_migratable('vm1', {'file': %r, 'format': 'qcow2'})\n"
        "images.check_disk_migratable('vm1', {'file': %r, 'format': 'raw'})\n"
        "try:\n"
        "    images.check_disk_migratable('vm1', {'file': %r, 'format': 'qcow2'})\n"
        "except Exception as e:\n"
        "    print('REFUSED', e)\n") % (good, sparse, sparse))
    assert out.startswith("REFUSED VM 'vm1': disk %s is a sparse qcow2" % sparse), out
