# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Filters walm.qemu.maintenance_plan, walm.qemu.maintenance_resume, walm.qemu.maintenance_record and
walm.qemu.maintenance_summary: a rolling maintenance run's plan, resume point, record and summary
(module_utils/maintenance.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.walm.qemu.plugins.module_utils import maintenance
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError


def _reads(results, capacity_mib):
    """walm_vm_info registered over the group's hosts (loop results, item = host): {host: vms}, {host: free MiB}
    (a host's capacity_mib entry, else its MemAvailable)."""
    reads, free = {}, {}
    for r in results:
        host = r.get("item")
        if r.get("failed") or "vms" not in r:
            raise AnsibleFilterError("maintenance_plan: the read of %s failed: %s" % (host, r.get("msg")))
        reads[host] = r["vms"]
        given = capacity_mib.get(host)
        free[host] = int(given) if given is not None else (r.get("host_memory") or {}).get("available_mib")
        if free[host] is None:
            raise AnsibleFilterError("maintenance_plan: %s reports no free memory; set walm_capacity_mib for it"
                                     % host)
    return reads, free


def maintenance_plan(results, order, link_bandwidth_mib_s, done=None, overhead_per_vm_s=5.0, maintenance_s=60.0,
                     capacity_mib=None, previous_plan=None):
    reads, free = _reads(results, capacity_mib or {})
    try:
        plan = maintenance.plan_run(list(order), reads, free, float(link_bandwidth_mib_s), done=list(done or []),
                                    overhead_per_vm_s=float(overhead_per_vm_s), maintenance_s=float(maintenance_s))
    except WalmError as exc:
        raise AnsibleFilterError(str(exc))
    plan["table"] = maintenance.plan_table(plan)
    if previous_plan:
        plan = maintenance.resumed_plan(previous_plan, plan)
    return plan


def maintenance_resume(record, group):
    done, interrupted = maintenance.resume_point(record, group)
    return {"done": done, "interrupted": interrupted}


def maintenance_record(record, host, status, now, fields=None):
    try:
        return maintenance.record_step(record or {}, host, status, float(now), **(fields or {}))
    except WalmError as exc:
        raise AnsibleFilterError(str(exc))


def maintenance_summary(record):
    out = maintenance.summary(record or {})
    out["table"] = maintenance.summary_table(record or {})
    return out


class FilterModule(object):
    def filters(self):
        return {"maintenance_plan": maintenance_plan,
                "maintenance_resume": maintenance_resume,
                "maintenance_record": maintenance_record,
                "maintenance_summary": maintenance_summary}
