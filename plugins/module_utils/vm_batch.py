# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Several VMs on one host brought to a state in one step (walm_vms): the destinations of an evacuation started, or
the source copies it left stopped, side by side.

Each VM is done exactly as walm_vm does one (VMService, under the VM's lock), on a thread of its own, so that the
QEMU start or stop of one does not wait for the others'. The choice of a destination's tap names and the creation of
the taps are done one VM at a time (a lock), so two VMs never take the same free name. A VM that fails is its own
result: the others go on, and the module reports which failed.
"""

from __future__ import absolute_import, division, print_function

import threading

from . import vm_records
from .batch import requests as batch_requests, side_by_side
from .errors import WalmError
from .vm_service import VMService, apply

__metaclass__ = type

# What each VM of state=incoming may give for itself; anything else is the batch's.
PER_VM = ("name", "definition", "migration_method", "on_timeout", "allow_postcopy", "source_qemu_version")


def requests(state, shared, vms):
    """The per-VM requests: each VM's own keys over the shared ones. A VM named twice, a nameless one or (state
    incoming) one without a definition is refused, naming the fix, before anything is touched."""
    out = batch_requests(shared, vms, PER_VM, "vms", "entry of vms", "name at least one VM")
    for p in out:
        if state == "incoming" and not p.get("definition"):
            raise WalmError("VM %s: state incoming needs its definition (the source's record, walm_vm_info)"
                            % p["name"])
    return out


def _one(state, p, check_mode, tap_lock, out):
    service = None
    try:
        service = VMService(p["name"], p["state_dir"], check_mode=check_mode, qemu_binary=p["qemu_binary"],
                            tap_lock=tap_lock)
        result = apply(service, dict(p, state=state), who="walm_vms")
        result["failed"] = False
    except WalmError as exc:
        result = {"failed": True, "msg": "VM '%s': %s" % (p["name"], exc),
                  "changed": bool(service and service.changed), "actions": service.actions if service else []}
        result.update(exc.details)
    except Exception as exc:  # pylint: disable=broad-except  # one VM's crash is its result, not the batch's
        result = {"failed": True, "changed": bool(service and service.changed),
                  "msg": "VM '%s': unexpected error: %r" % (p["name"], exc)}
    out[p["name"]] = result


def run(state, requests_, check_mode=False):
    """Bring every VM of requests() to `state` (incoming or stopped), side by side; returns {VM: result}."""
    results = {}
    tap_lock = threading.Lock()
    if state == "incoming" and not check_mode and requests_:
        vm_records.ensure_state_dir(requests_[0]["state_dir"])  # once, before the threads would race to make it
    side_by_side(lambda p: _one(state, p, check_mode, tap_lock, results), requests_)
    return dict((p["name"], results[p["name"]]) for p in requests_)
