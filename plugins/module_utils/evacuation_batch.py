# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The hand-offs of an evacuation run as a batch (roles/evacuate/tasks/batch.yml), as pure functions: what the
destinations' preparation takes and gives each VM, the migrations walm_migrate_waves takes, the waves left when some
destinations are not ready, how long the batch is predicted to take, which VMs their destinations run afterwards
and the outcomes of those the batch finished. Filters walm.qemu.evacuation_incoming, walm.qemu.evacuation_prepared,
walm.qemu.evacuation_migrations, walm.qemu.evacuation_waves, walm.qemu.evacuation_predicted_s,
walm.qemu.evacuation_running and walm.qemu.evacuation_finished call them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.walm.qemu.plugins.module_utils import outcome


def incoming(entries, source_vms, allow_postcopy=True):
    """walm_vms state=incoming's vms for plan entries (one destination's): each VM's definition and QEMU version
    from the source's listing (walm_vm_info, read once), the method and on_timeout of the plan. Post-copy is
    negotiated only where the migration adapts (the naive baseline never does)."""
    listed = dict((v.get("name"), v) for v in source_vms or [])
    out = []
    for e in entries:
        src = listed.get(e["name"]) or {}
        out.append({"name": e["name"], "definition": src.get("definition"),
                    "source_qemu_version": src.get("qemu_version_tuple"), "migration_method": e["method"],
                    "on_timeout": e["on_timeout"],
                    "allow_postcopy": bool(allow_postcopy) if e.get("adapt") else False})
    return out


def prepared(incoming_result, entry, source, destination_tls_dir="", source_tls_dir="", started_at=None):
    """One VM's prepared destination from its walm_vms state=incoming result: {ok, uri, capabilities,
    definition_sha256, started, tls, prepare_started_at, prepared_at}, or {ok: false, started: false, error} when
    it failed (its QEMU was stopped again). TLS is used when both hosts have a certificates directory."""
    started_at = None if started_at is None else float(started_at)
    if incoming_result.get("failed") or not incoming_result.get("incoming_uri"):
        return {"ok": False, "started": False, "prepare_started_at": started_at, "prepared_at": None,
                "error": "%s: %s" % (entry.get("destination", "the destination"),
                                     incoming_result.get("msg") or "no incoming URI was returned")}
    vm = incoming_result.get("vm") or {}
    tls = {}
    if destination_tls_dir and source_tls_dir:
        tls = {"dir": destination_tls_dir, "source_dir": source_tls_dir, "allowed_clients": ["CN=" + source]}
    return {"ok": True, "uri": incoming_result["incoming_uri"],
            "capabilities": incoming_result.get("capabilities") or {},
            "definition_sha256": incoming_result.get("definition_sha256"),
            "started": bool(incoming_result.get("changed")), "tls": tls, "prepare_started_at": started_at,
            # When its QEMU started (a destination found waiting already: when that one started).
            "prepared_at": vm.get("started_at")}


def migrations(entries, ready, allow_postcopy=True):
    """walm_migrate_waves' migrations for the plan entries whose destination is ready ({VM: prepared}), in the
    plan's order. Post-copy may be negotiated only where the migration adapts (the naive baseline never does)."""
    out = []
    for e in entries:
        p = ready.get(e["name"]) or {}
        if not p.get("ok"):
            continue
        out.append({
            "name": e["name"], "destination_uri": p["uri"], "method": e["method"],
            "switch_after_passes": e.get("switch_after_passes") or 2, "on_timeout": e["on_timeout"],
            "capabilities": p.get("capabilities"), "expected_definition_sha256": p.get("definition_sha256"),
            "tls_dir": (p.get("tls") or {}).get("source_dir"),
            "allow_postcopy": bool(allow_postcopy) if e.get("adapt") else False,
            "adapt": bool(e.get("adapt")), "expect": e.get("expectation") or None})
    return out


def waves(plan_waves, names):
    """The plan's waves holding only `names` (the migrations that go), empty waves dropped, order kept."""
    names = set(names)
    return [w for w in ([n for n in wave if n in names] for wave in plan_waves) if w]


def predicted_s(entries):
    """The batch's predicted duration in s: per wave (the entries' `wave`), its longest predicted migration; a
    migration predicted without a time counts 0."""
    longest = {}
    for e in entries:
        t = e.get("predicted_total_time_ms") or 0
        longest[e.get("wave")] = max(longest.get(e.get("wave"), 0), t)
    return round(sum(longest.values()) / 1000.0, 3)


def running(pending, reads, read_key="_evacuate_dst"):
    """{VM: {"vm": its entry in its destination's walm_vm_info}} for the pending VMs whose destination's one read
    (walm_vm_info registered in a loop over the destinations, the loop variable `read_key`) shows them running;
    a VM not seen running there, or on a host whose read failed, is left out (it goes the careful way)."""
    by_host = dict((r.get(read_key), r) for r in reads or [])
    out = {}
    for d in pending:
        vm = d["vm"]
        read = by_host.get(vm["destination"]) or {}
        found = [v for v in read.get("vms") or [] if v.get("name") == vm["name"] and v.get("status") == "running"]
        if found:
            out[vm["name"]] = {"vm": found[0]}
    return out


def finished(pending, names, dst_vms, source, downtime_limit_ms, now):
    """The records of the VMs the batch finished cleanly (`names`: migrated, seen running on the destination, source
    copy stopped), each as the role walm.qemu.migrate's outcome for one VM (outcome.migrated) with its plan
    position, start and finish times, message and when its destination was prepared. Returns
    [{"vm": plan entry, "result": record, "message": text}] in the plan's order."""
    names = set(names)
    out = []
    for d in pending:
        vm = d["vm"]
        if vm["name"] not in names:
            continue
        o = outcome.migrated(vm["name"], source, vm["destination"], d["where"], d.get("migrated") or {},
                             adaptation={}, dst_vm=dst_vms[vm["name"]], check_mode=False, method=vm["method"],
                             downtime_limit_ms=downtime_limit_ms)
        prepared_ = d.get("prepared") or {}
        message = (o["message"] or "").strip()
        result = dict(o["result"], position=vm["position"], started_at=float(d["started_at"]),
                      finished_at=float(now), message=message,
                      prepare_started_at=prepared_.get("prepare_started_at"), prepared_at=prepared_.get("prepared_at"))
        out.append({"vm": vm, "result": result, "message": message})
    return out
