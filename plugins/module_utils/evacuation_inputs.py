# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""walm_plan's inputs, checked: numbers and flags, the per-VM lists by VM name, the destinations, a VM's memory."""

from __future__ import absolute_import, division, print_function

from .errors import WalmError


def check_number(value, what, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WalmError("%s must be a number, got %r" % (what, value))
    if minimum is not None and value < minimum:
        raise WalmError("%s must be at least %s, got %s" % (what, minimum, value))
    return value


def check_flag(value, default, what):
    if value is None:
        return default
    if not isinstance(value, bool):
        raise WalmError("%s must be true or false, got %r" % (what, value))
    return value


def by_vm_name(entries, what, key="name"):
    out = {}
    for i, entry in enumerate(entries or []):
        if not isinstance(entry, dict):
            raise WalmError("%s[%d] must be a dict, got %r" % (what, i, entry))
        name = entry.get(key)
        if isinstance(entry.get("vm"), dict):  # a walm_probe reading names its VM in vm.name
            name = entry["vm"].get("name")
        if not name and isinstance(entry.get("item"), dict):
            # A failed walm_decide in a loop over probe readings: only its loop item names the VM.
            name = (entry["item"].get("vm") or {}).get("name")
        if not name:
            raise WalmError("%s[%d] has no VM name (%s)" % (what, i, key))
        out[name] = entry
    return out


def read_destinations(destinations, source):
    if not destinations:
        raise WalmError("No destination hosts: set walm_destinations to a list of inventory hosts that can run "
                        "the source's VMs (for example ['walm-dst']).")
    out, seen = [], set()
    for i, d in enumerate(destinations):
        if not isinstance(d, dict) or not d.get("name"):
            raise WalmError("destinations[%d] must be a dict with name and free_mib, got %r" % (i, d))
        name = d["name"]
        if name in seen:
            raise WalmError("Destination %s is listed twice in walm_destinations; list each host once." % name)
        if name == source:
            raise WalmError("Destination %s is the source host itself; walm_destinations must name other hosts."
                            % name)
        seen.add(name)
        if d.get("free_mib") is None:
            raise WalmError("Destination %s has no free memory figure (free_mib); set walm_capacity_mib for it "
                            "in the inventory." % name)
        free = check_number(d["free_mib"], "free_mib of destination %s (set walm_capacity_mib for it)" % name, 0)
        out.append({"name": name, "free_mib": int(free), "free_mib_left": int(free),
                    "capacity_source": d.get("capacity_source") or "given", "vms": [],
                    "preferred": bool(d.get("preferred"))})
    return out


def memory_mib(name, info, probe):
    memory = None
    if probe and isinstance(probe.get("vm"), dict):
        memory = probe["vm"].get("memory_mib")
    if memory is None:
        memory = ((info or {}).get("definition") or {}).get("memory_mib")
    if memory is None:
        raise WalmError("VM %s: its memory size is unknown (no probe reading and no recorded definition with "
                        "memory_mib); pass walm_vm_info's entry for it." % name)
    return int(check_number(memory, "memory_mib of VM %s" % name, 1))
