# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Filter walm.qemu.whereabouts: where a VM is and what may be done to it, from both hosts' walm_vm_info."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.walm.qemu.plugins.module_utils.whereabouts import locate


def _one(vms, host):
    """One host's view: walm_vm_info's vms list, or its whole registered result (a failed read is a copy that
    cannot be seen, never a missing one)."""
    if vms is None:
        return None
    if isinstance(vms, dict) and vms.get("failed"):
        return {"pid": "?", "running": True, "status": "unreachable: %s" % (vms.get("msg") or "the read failed")}
    if isinstance(vms, dict) and vms.get("skipped"):
        raise AnsibleFilterError("whereabouts: the read of %s was skipped" % host)
    if isinstance(vms, dict):
        vms = vms["vms"] if "vms" in vms else [vms]
    if not isinstance(vms, list) or len(vms) > 1:
        raise AnsibleFilterError("whereabouts: expected walm_vm_info's vms for one VM on %s, got %r" % (host, vms))
    return vms[0] if vms else None


def whereabouts(source_vms, destination_vms, source_host="source", destination_host="destination",
                attempted=False, started_destination=False):
    return locate(_one(source_vms, source_host), _one(destination_vms, destination_host), source_host,
                  destination_host, attempted=bool(attempted), started_destination=bool(started_destination))


class FilterModule(object):
    def filters(self):
        return {"whereabouts": whereabouts}
