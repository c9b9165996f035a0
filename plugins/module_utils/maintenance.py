# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Rolling maintenance of a group of hypervisors: the run's plan, its record, its summary. Pure computation.

One host at a time is drained (its VMs evacuated to the others), maintained and returned to service. The plan says,
before anything moves, which VMs each host will hold at its turn and where they go:
- destinations that were maintained earlier (in this run or an interrupted one) come first, so a VM is not moved
  onto a host that will itself be emptied later, when a maintained host has room; among equals the most free memory
  left, as the evacuation itself places (module_utils/evacuation_placement.py);
- a host's free memory shrinks by the VMs placed on it and grows back by those that leave it;
- the least number of migrations the run could do, whatever the placement: a VM moves once if a host other than its
  own is maintained before its host's turn, twice otherwise (it goes to a host that is maintained later).
The record is the run's results file, updated at every step; a rerun reads it and goes on with the hosts not done.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.evacuation_text import text_table

# Host statuses in the record, in the order a host passes through them.
STATUSES = ("pending", "draining", "maintaining", "checking", "done")
# A VM copy in one of these states is not where the VM runs (an interrupted migration's other end).
NOT_THE_VM = ("inmigrate", "postmigrate")


def _memory_mib(vm):
    memory = (vm.get("definition") or {}).get("memory_mib")
    if memory is None:
        raise WalmError("VM %s has no recorded memory size (definition.memory_mib): it was not started by WALM; "
                        "move or stop it by hand before the maintenance run" % vm.get("name"))
    return int(memory)


def placement(reads):
    """Where each VM runs now, from every host's walm_vm_info: {host: [(name, memory_mib)]}. A VM seen on two hosts
    (a migration interrupted with the controller) counts where its copy runs as a guest, not where it is an incoming
    or finished copy; those copies are the evacuation's to clear up (it finishes or rolls back such a migration)."""
    where = dict((host, []) for host in reads)
    for host in sorted(reads):
        for vm in sorted(reads[host], key=lambda v: v["name"]):
            if vm.get("running") and vm.get("status") not in NOT_THE_VM:
                where[host].append((vm["name"], _memory_mib(vm)))
    return where


def minimum_migrations(order, where, done=()):
    """The fewest migrations any placement needs: each VM of a host still to do moves once if some other host is
    maintained by its turn, else twice."""
    total, maintained = 0, set(done)
    for host in order:
        if host in maintained:
            continue
        once = any(h != host for h in maintained)
        total += len(where.get(host, [])) * (1 if once else 2)
        maintained.add(host)
    return total


def plan_run(order, reads, free_mib, link_bandwidth_mib_s, done=(), overhead_per_vm_s=5.0, maintenance_s=60.0):
    """The whole run before it starts: per host in `order` (the hosts still to do; `done` those already
    maintained), the VMs it holds at its turn and each one's destination; the migrations planned against the least
    possible; a predicted time. `reads`: each host's walm_vm_info vms; `free_mib`: each host's free memory now.
    Raises WalmError, naming the VM and the hosts' room, if a VM would fit nowhere."""
    if len(set(order) | set(done)) < 2:
        raise WalmError("A maintenance run needs at least two hosts in the group (one to empty, one to take its "
                        "VMs); got %s" % ", ".join(list(order) + list(done)))
    if link_bandwidth_mib_s <= 0:
        raise WalmError("walm_link_bandwidth_mib_s must be above 0 (the migration link's bandwidth in MiB/s)")
    hosts = list(done) + [h for h in order if h not in done]
    missing = [h for h in hosts if h not in reads or h not in free_mib]
    if missing:
        raise WalmError("No reading of %s: every host of the group must answer walm_vm_info" % ", ".join(missing))
    where = placement(dict((h, reads[h]) for h in hosts))
    least = minimum_migrations(order, where, done)
    free = dict((h, int(free_mib[h])) for h in hosts)
    maintained = list(done)
    steps, planned, total_s = [], 0, 0.0
    for host in order:
        if host in done:
            continue
        moves = []
        others = [h for h in hosts if h != host]
        for name, memory in list(where[host]):
            fits = [h for h in others if free[h] >= memory]
            if not fits:
                raise WalmError(
                    "VM %s (%d MiB) on %s fits on no other host at %s's turn (free: %s). Add capacity, stop a VM, "
                    "or set walm_capacity_mib on a host whose free memory is under-reported; nothing was touched."
                    % (name, memory, host, host, ", ".join("%s %d MiB" % (h, free[h]) for h in others)))
            best = max(fits, key=lambda h: (h in maintained, free[h], -hosts.index(h)))
            free[best] -= memory
            free[host] += memory
            where[best].append((name, memory))
            moves.append({"vm": name, "memory_mib": memory, "destination": best,
                          "maintained_destination": best in maintained})
        where[host] = []
        memory_total = sum(m["memory_mib"] for m in moves)
        evacuation_s = memory_total / float(link_bandwidth_mib_s) + overhead_per_vm_s * len(moves)
        steps.append({"host": host, "vms": moves, "preferred_destinations": list(maintained),
                      "predicted_evacuation_s": round(evacuation_s, 1),
                      "predicted_total_s": round(evacuation_s + maintenance_s, 1)})
        planned += len(moves)
        total_s += evacuation_s + maintenance_s
        maintained.append(host)
    return {"steps": steps, "done": list(done), "migrations": planned,
            "minimum_migrations": least,
            "predicted_s": round(total_s, 1), "link_bandwidth_mib_s": link_bandwidth_mib_s,
            "overhead_per_vm_s": overhead_per_vm_s, "maintenance_s": maintenance_s}


def resumed_plan(previous, plan):
    """The plan of a resumed run: the interrupted run's steps for the hosts it finished, then the new plan's; the
    least possible migrations stay the first plan's (what the whole run could have done)."""
    kept = [s for s in previous.get("steps", []) if s["host"] in plan["done"]]
    out = dict(plan)
    out["steps"] = kept + [s for s in plan["steps"] if s["host"] not in plan["done"]]
    out["migrations"] = plan["migrations"] + sum(len(s["vms"]) for s in kept)
    out["minimum_migrations"] = previous.get("minimum_migrations", plan["minimum_migrations"])
    out["predicted_s"] = round(plan["predicted_s"] + sum(s["predicted_total_s"] for s in kept), 1)
    out["resumed"] = True
    return out


def resume_point(record, group):
    """From a previous run's record: (hosts done, hosts left mid-step with their status). A finished run, a run of
    another group, or none starts afresh."""
    if not record or record.get("state") != "running" or record.get("group") != group:
        return [], {}
    done, interrupted = [], {}
    for host, entry in (record.get("hosts") or {}).items():
        status = entry.get("status")
        if status == "done":
            done.append(host)
        elif status not in (None, "pending"):
            interrupted[host] = status
    return done, interrupted


def record_step(record, host, status, now, **fields):
    """The record with `host` moved to `status` at time `now` (seconds); timings derived from the step times."""
    if status not in STATUSES:
        raise WalmError("Unknown maintenance status %r (one of %s)" % (status, ", ".join(STATUSES)))
    out = dict(record)
    hosts = dict(out.get("hosts") or {})
    entry = dict(hosts.get(host) or {})
    entry["status"] = status
    entry["times"] = dict(entry.get("times") or {}, **{status: now})
    entry.update(fields)
    t = entry["times"]
    if "draining" in t and "maintaining" in t:
        entry["evacuation_s"] = round(t["maintaining"] - t["draining"], 1)
    if "maintaining" in t and "checking" in t:
        entry["maintenance_s"] = round(t["checking"] - t["maintaining"], 1)
    if "draining" in t and "done" in t:
        entry["total_s"] = round(t["done"] - t["draining"], 1)
    hosts[host] = entry
    out["hosts"] = hosts
    return out


def summary(record):
    """Rows per host and the run's totals, with the predicted time against the measured."""
    rows = []
    for step in (record.get("plan") or {}).get("steps", []):
        entry = (record.get("hosts") or {}).get(step["host"], {})
        rows.append({"host": step["host"], "status": entry.get("status", "pending"),
                     "vms_moved": entry.get("vms_moved"),
                     "host_empty_s": entry.get("host_empty_s"),
                     "evacuation_s": entry.get("evacuation_s"),
                     "maintenance_s": entry.get("maintenance_s"),
                     "total_s": entry.get("total_s"),
                     "predicted_total_s": step["predicted_total_s"]})
    measured = None
    if record.get("finished_at") and record.get("started_at"):
        measured = round(record["finished_at"] - record["started_at"], 1)
    plan = record.get("plan") or {}
    return {"rows": rows, "migrations": sum(r["vms_moved"] or 0 for r in rows),
            "planned_migrations": plan.get("migrations"), "minimum_migrations": plan.get("minimum_migrations"),
            "predicted_s": plan.get("predicted_s"), "measured_s": measured}


def _cell(value):
    return "-" if value is None else str(value)


def plan_table(plan):
    """The run plan as text lines: per host its VMs, their destinations, the predicted times."""
    rows = []
    for i, step in enumerate(plan["steps"], 1):
        vms = ", ".join("%s -> %s%s" % (m["vm"], m["destination"], "" if m["maintained_destination"] else " (*)")
                        for m in step["vms"]) or "none"
        rows.append([str(i), step["host"], str(len(step["vms"])), vms, "%.1f" % step["predicted_evacuation_s"],
                     "%.1f" % step["predicted_total_s"]])
    lines = text_table(("#", "host", "VMs", "moves", "pred evacuation s", "pred total s"), rows)
    if plan["done"]:
        lines.append("Already maintained (an interrupted run): %s" % ", ".join(plan["done"]))
    lines.append("(*) to a host maintained later in the run: that VM moves again then.")
    lines.append("Migrations planned: %d (least possible: %d); predicted run time %.1f s (link %s MiB/s, %s s per VM "
                 "of overhead, %s s of maintenance per host)."
                 % (plan["migrations"], plan["minimum_migrations"], plan["predicted_s"], plan["link_bandwidth_mib_s"],
                    plan["overhead_per_vm_s"], plan["maintenance_s"]))
    return lines


def summary_table(record):
    s = summary(record)
    rows = [[r["host"], r["status"], _cell(r["vms_moved"]), _cell(r["host_empty_s"]), _cell(r["maintenance_s"]),
             _cell(r["total_s"]), _cell(r["predicted_total_s"])] for r in s["rows"]]
    lines = text_table(("host", "status", "VMs moved", "host empty s", "maintenance s", "total s", "pred total s"), rows)
    lines.append("Migrations: %d (planned %s, least possible %s); run time %s s (predicted %s s)."
                 % (s["migrations"], _cell(s["planned_migrations"]), _cell(s["minimum_migrations"]),
                    _cell(s["measured_s"]), _cell(s["predicted_s"])))
    return lines
