# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""What the walm_image module does: inspect one disk image for the sparse-qcow2-on-nfs:// trap, refuse or fix it.

Every mutation is guarded by check_mode and listed in `actions`, so check mode predicts `changed` exactly.
"""

from __future__ import absolute_import, division, print_function

from . import images, nfsurl, qemu_process
from .errors import WalmError


class ImageService(object):
    def __init__(self, image, fmt="qcow2", check_mode=False, timeout_s=3600):
        self.image = image
        self.format = fmt
        self.check_mode = check_mode
        self.timeout_s = timeout_s
        self.actions = []
        self.changed = False
        self.facts = {"image": image, "exists": False, "nfs": nfsurl.is_nfs_url(image), "sparse": False,
                      "affected": False, "in_use_by": [], "fixed": False}

    def result(self):
        out = dict(self.facts)
        out.update(changed=self.changed, actions=self.actions)
        return out

    def inspect(self):
        info = images.image_info(self.image, self.format)
        if info is None:
            return self.facts
        self.facts["exists"] = True
        self.facts["virtual_size_bytes"] = info.get("virtual-size")
        if self.format == "qcow2":
            allocated, total = images.qcow2_allocation(self.image, timeout_s=self.timeout_s)
            self.facts.update(allocated_clusters=allocated, total_clusters=total,
                              sparse=bool(total) and allocated < total)
            self.facts["affected"] = self.facts["sparse"] and self.facts["nfs"]
        self.facts["in_use_by"] = qemu_process.processes_using(self.image)
        return self.facts

    def ensure(self, sparse_on_nfs="refuse", must_exist=True):
        facts = self.inspect()
        if not facts["exists"]:
            if must_exist:
                raise WalmError("image %s does not exist or cannot be opened as %s" % (self.image, self.format))
            return self.result()
        if not facts["affected"] or sparse_on_nfs == "report":
            return self.result()
        detail = ("%s is a sparse qcow2 (%d of %d clusters allocated) opened through QEMU's nfs:// driver: live "
                  "migration would silently lose data written to it"
                  % (self.image, facts["allocated_clusters"], facts["total_clusters"]))
        if sparse_on_nfs == "refuse":
            raise WalmError("%s. Convert it with 'qemu-img convert -O qcow2 -o preallocation=metadata' while no VM "
                            "uses it (walm_image sparse_on_nfs=fix does that), or use raw." % detail)
        if facts["in_use_by"]:
            raise WalmError("%s, and it cannot be fixed while QEMU uses it on this host (pids %s): stop the VM, "
                            "then fix it" % (detail, ", ".join(str(p["pid"]) for p in facts["in_use_by"])))
        if not self.check_mode:
            # On failure the original is untouched and the copy removed: nothing changed.
            images.preallocate_qcow2(self.image, timeout_s=self.timeout_s)
        self.actions.append("replace %s by a copy with preallocated metadata (qemu-img convert, compare, atomic "
                            "rename)" % self.image)
        self.changed = True
        self.facts["fixed"] = True
        return self.result()
