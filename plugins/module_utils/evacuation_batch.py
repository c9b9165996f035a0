# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The hand-offs of an evacuation run as a batch (roles/evacuate/tasks/batch.yml), as pure functions: what the
destinations' preparation takes and gives each VM, the migrations walm_migrate_waves takes, the waves left when some
destinations are not ready, and how long the batch is predicted to take. Filters walm.qemu.evacuation_incoming,
walm.qemu.evacuation_prepared, walm.qemu.evacuation_migrations, walm.qemu.evacuation_waves and
walm.qemu.evacuation_predicted_s call them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


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
