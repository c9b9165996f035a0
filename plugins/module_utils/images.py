# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Disk images: creating and inspecting them, the nfs:// trap of sparse qcow2 images, and preallocating one."""

from __future__ import absolute_import, division, print_function

import json

from . import host_command, nfsurl
from .errors import WalmError


def disk_info(disk):
    """`qemu-img info` of a disk, or None if it does not exist."""
    proc = host_command.run(["qemu-img", "info", "--output=json", "-U", "-f", disk["format"], disk["file"]],
                            check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        if "No such file" in err or "NOENT" in err or "does not exist" in err:
            return None
        raise WalmError("cannot inspect disk %s: %s" % (disk["file"], err))
    return json.loads(proc.stdout)


def create_disk(disk):
    """Create a disk image. qcow2 gets preallocated metadata: QEMU's nfs:// driver never refreshes the file
    length, so clusters allocated on the source after the destination opened a sparse image read as zeros there
    (silent data loss found in the lab, shared/LAB.md)."""
    argv = ["qemu-img", "create", "-q", "-f", disk["format"]]
    if disk["format"] == "qcow2":
        argv += ["-o", "preallocation=metadata"]
    argv += [disk["file"], "%dM" % disk["size_mib"]]
    host_command.run(argv, timeout_s=300)


def qcow2_allocation(file, timeout_s=300):
    """(allocated clusters, total clusters) of a qcow2 image, as `qemu-img check` counts them.

    A qcow2 created with preallocation=metadata (or falloc, full) has every cluster allocated in its metadata; a
    sparse one allocates clusters, and grows its file, as the guest writes.
    """
    proc = host_command.run(["qemu-img", "check", "--output=json", "-U", "-f", "qcow2", file], check=False,
                            timeout_s=timeout_s)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise WalmError("cannot check disk %s: %s" % (file, proc.stderr.strip()))
    return report.get("allocated-clusters", 0), report.get("total-clusters")


def nfs_trap(disk):
    """(allocated, total) clusters if the disk is a sparse qcow2 opened through QEMU's nfs:// driver, else None.

    That driver never refreshes the file length: clusters the source allocates after the destination opened the
    image read as zeros there and get overwritten, so live migration silently loses data (shared/LAB.md). Raw
    images and images opened through the file driver (a kernel NFS mount) are not affected.
    """
    if disk.get("format", "qcow2") != "qcow2" or not nfsurl.is_nfs_url(disk["file"]):
        return None
    allocated, total = qcow2_allocation(disk["file"])
    if total and allocated < total:
        return allocated, total
    return None


def check_disk_migratable(vm, disk):
    """Refuse a sparse qcow2 opened through QEMU's nfs:// driver (see nfs_trap)."""
    try:
        sparse = nfs_trap(disk)
    except WalmError as exc:
        raise WalmError("VM '%s': %s" % (vm, exc))
    if sparse:
        raise WalmError(
            "VM '%s': disk %s is a sparse qcow2 (%d of %d clusters allocated) opened through QEMU's nfs:// "
            "driver: live migration would silently lose data written during it. Convert it with "
            "'qemu-img convert -O qcow2 -o preallocation=metadata' (or use raw) before starting the VM."
            % ((vm, disk["file"]) + sparse))


def image_info(file, fmt="qcow2"):
    """`qemu-img info` of an image (read-only, shared lock), or None if it does not exist."""
    return disk_info({"file": file, "format": fmt})


def preallocated_name(file):
    """Where the preallocated copy of an image is written before it replaces the original (same directory)."""
    base, query = nfsurl.split_query(file)
    return base + ".walm-prealloc" + query


def preallocate_qcow2(file, timeout_s=3600):
    """Replace a sparse qcow2 by a copy with preallocated metadata, atomically; the caller ensures that no process
    uses the image. The copy is compared with the original before the rename; on any failure the original is left
    untouched and the copy removed. Returns the qemu-img info of the result."""
    info = image_info(file)
    if info is None:
        raise WalmError("image %s does not exist" % file)
    if info.get("format") != "qcow2":
        raise WalmError("image %s is %s, not qcow2" % (file, info.get("format")))
    specific = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename"):
        # A converted copy would be flattened (the backing chain merged in): a different image, not ours to make.
        raise WalmError("image %s has a backing file (%s): convert it by hand, deciding what becomes of the chain"
                        % (file, info["backing-filename"]))
    if specific.get("encrypt") or info.get("encrypted"):
        raise WalmError("image %s is encrypted: convert it by hand with its secret" % file)
    if specific.get("corrupt") or info.get("dirty-flag"):
        raise WalmError("image %s is marked corrupt or dirty: repair it with 'qemu-img check -r' first" % file)
    opts = ["preallocation=metadata", "cluster_size=%d" % info.get("cluster-size", 65536)]
    if specific.get("compat"):
        opts.append("compat=%s" % specific["compat"])
    if specific.get("refcount-bits"):
        opts.append("refcount_bits=%d" % specific["refcount-bits"])
    if specific.get("extended-l2"):
        opts.append("extended_l2=on")
    tmp = preallocated_name(file)
    # A copy left by an interrupted run is incomplete by definition.
    nfsurl.remove(tmp, missing_ok=True)
    try:
        host_command.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", "-o", ",".join(opts), file,
                          tmp], timeout_s=timeout_s)
        proc = host_command.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", file, tmp], check=False,
                                timeout_s=timeout_s)
        if proc.returncode != 0:
            raise WalmError("the preallocated copy %s differs from %s (qemu-img compare exit %d: %s); the original "
                            "was kept" % (tmp, file, proc.returncode, (proc.stderr or proc.stdout).strip()))
        allocated, total = qcow2_allocation(tmp)
        if total and allocated < total:
            raise WalmError("the copy %s is still sparse (%d of %d clusters); the original was kept"
                            % (tmp, allocated, total))
        nfsurl.rename(tmp, file)
    except Exception:
        try:
            nfsurl.remove(tmp, missing_ok=True)
        except WalmError:
            pass  # the first error is the one to report
        raise
    return image_info(file)
