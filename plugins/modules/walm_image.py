#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_image
short_description: Check a VM disk image on shared storage for the sparse qcow2 data-loss trap, and fix it
version_added: "0.1.0"
description:
  - Inspects one disk image (a path, or an C(nfs://SERVER/EXPORT/FILE) URL as QEMU's userspace NFS driver opens
    it) with C(qemu-img check) and reports whether it is a sparse qcow2, whether that matters, and which QEMU
    processes on this host use it.
  - A sparse qcow2 opened through QEMU's C(nfs://) driver is silently corrupted by live migration. The driver never
    refreshes the file length, so clusters the source allocates after the destination opened the image read as
    zeros there and get overwritten. Images created with C(preallocation=metadata) (or falloc, full) and raw images
    are safe, and so are images opened through the C(file) driver on a kernel NFS mount.
  - With O(sparse_on_nfs=refuse) such an image fails the task. With O(sparse_on_nfs=fix) it is replaced by a copy
    made with C(qemu-img convert -O qcow2 -o preallocation=metadata) (same cluster size, compat level and refcount
    width), compared with the original with C(qemu-img compare), and renamed over it in one atomic rename. The fix
    is refused while any QEMU process on this host names the image on its command line.
  - Renaming and removing over C(nfs://) go through libnfs (the library QEMU's driver is built on), so no kernel
    NFS mount is needed.
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later on the host
  - qemu-img (qemu-utils), and for C(nfs://) images QEMU's nfs block driver and libnfs (Debian qemu-block-extra)
options:
  image:
    description: The image, as a local path or an C(nfs://SERVER/EXPORT/FILE) URL.
    type: str
    required: true
  format:
    description: The image format. Raw images are never affected; they are only reported.
    type: str
    choices: [qcow2, raw]
    default: qcow2
  sparse_on_nfs:
    description:
      - What to do with a sparse qcow2 opened through the C(nfs://) driver.
      - V(report) only returns what was found.
      - V(refuse) fails the task, naming the fix.
      - V(fix) replaces it by a copy with preallocated metadata, unless a QEMU process on this host uses it (then
        the task fails and nothing changes). Other hosts are not looked at, so stop the VM everywhere first (the
        role C(walm.qemu.nfs_shared_storage) checks every host of the play before fixing).
    type: str
    choices: [report, refuse, fix]
    default: refuse
  must_exist:
    description: Fail when the image does not exist (otherwise report C(exists=false)).
    type: bool
    default: true
  timeout_s:
    description: Seconds a single qemu-img command (check, convert, compare) may take.
    type: int
    default: 3600
extends_documentation_fragment:
  - walm.qemu.attributes
attributes:
  check_mode:
    support: full
    details:
      Inspects and reports; with O(sparse_on_nfs=fix) RV(actions) says what would be converted and C(changed)
      predicts it, but nothing is changed.
notes:
  - Check mode inspects and reports, and with O(sparse_on_nfs=fix) says what it would convert; it changes nothing.
  - Processes are recognised by their command line (C(qemu-*) programs naming the image as an argument, a
    C(file=) value or a JSON C(filename)), because an image on C(nfs://) leaves no lock and no open file on the host.
  - The role C(walm.qemu.nfs_shared_storage) (task file C(check_images)) runs this module on every host of a play
    before it fixes anything.
seealso:
  - module: walm.qemu.walm_vm
"""

EXAMPLES = r"""
- name: Refuse a sparse image on the lab's NFS export
  walm.qemu.walm_image:
    image: nfs://10.77.0.2/walm/vm1.qcow2

- name: Convert it to preallocated metadata (no VM may use it)
  walm.qemu.walm_image:
    image: nfs://10.77.0.2/walm/vm1.qcow2
    sparse_on_nfs: fix

- name: Only look
  walm.qemu.walm_image:
    image: /var/lib/walm/images/vm1.qcow2
    sparse_on_nfs: report
  register: img
"""

RETURN = r"""
image:
  description: The image as given.
  returned: always
  type: str
exists:
  description: Whether the image exists (could be opened by qemu-img).
  returned: always
  type: bool
nfs:
  description: Whether the image is opened through QEMU's userspace C(nfs://) driver.
  returned: always
  type: bool
virtual_size_bytes:
  description: Guest-visible size of the image.
  returned: when the image exists
  type: int
allocated_clusters:
  description: Clusters allocated in the qcow2 metadata (before a fix).
  returned: when the image exists and is qcow2
  type: int
total_clusters:
  description: Clusters of the image's virtual size.
  returned: when the image exists and is qcow2
  type: int
sparse:
  description: Whether the qcow2 has unallocated clusters (before a fix).
  returned: always
  type: bool
affected:
  description: Whether the image is exposed to the data-loss trap (a sparse qcow2 on C(nfs://)) before a fix.
  returned: always
  type: bool
in_use_by:
  description: QEMU processes on this host whose command line names the image.
  returned: always
  type: list
  elements: dict
  sample: [{"pid": 4242, "argv0": "qemu-system-x86_64"}]
fixed:
  description: Whether the image was (in check mode, would be) replaced by a preallocated copy.
  returned: always
  type: bool
actions:
  description: What was done (or, in check mode, would be done).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            image=dict(type="str", required=True),
            format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
            sparse_on_nfs=dict(type="str", default="refuse", choices=["report", "refuse", "fix"]),
            must_exist=dict(type="bool", default=True),
            timeout_s=dict(type="int", default=3600),
        ),
        supports_check_mode=True,
    )
    from ansible_collections.walm.qemu.plugins.module_utils.image_service import ImageService

    p = module.params
    service = ImageService(p["image"], p["format"], check_mode=module.check_mode, timeout_s=p["timeout_s"])
    try:
        result = service.ensure(p["sparse_on_nfs"], p["must_exist"])
    except WalmError as exc:
        module.fail_json(msg=str(exc), **dict(service.result(), **exc.details))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
