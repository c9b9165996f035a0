"""Disk images on a local file system: the nfs:// trap does not apply, preallocation keeps the data (real qemu-img and
qemu-io, no VM). Over a real NFS server: tests/unit/plugins/modules/test_walm_image.py."""

import os
import subprocess

from ansible_collections.walm.qemu.plugins.module_utils import images


def test_preallocated_copy_sits_beside_the_image_and_keeps_the_url_options():
    assert images.preallocated_name("nfs://s/e/a.qcow2") == "nfs://s/e/a.qcow2.walm-prealloc"
    assert (images.preallocated_name("nfs://s/e/a.qcow2?version=3") == "nfs://s/e/a.qcow2.walm-prealloc?version=3")


def test_local_images_are_never_affected(tmp_path):
    img = str(tmp_path / "a.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"], check=True)
    assert images.nfs_trap({"file": img, "format": "qcow2"}) is None
    allocated, total = images.qcow2_allocation(img)
    assert allocated < total  # sparse, but the file driver is not exposed to the trap


def test_local_preallocation_keeps_the_data(tmp_path):
    img = str(tmp_path / "a.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=131072", img, "16M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 1M 128k", img], check=True,
                   stdout=subprocess.DEVNULL)
    info = images.preallocate_qcow2(img)
    assert info["cluster-size"] == 131072
    allocated, total = images.qcow2_allocation(img)
    assert allocated == total
    read = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0xa5 1M 128k", img],
                          stdout=subprocess.PIPE, universal_newlines=True, check=True)
    assert "Pattern verification failed" not in read.stdout
    assert os.listdir(str(tmp_path)) == ["a.qcow2"]
