# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""How an evacuation went: the plan's table, and the summary of its migrations' outcomes against the plan."""

from __future__ import absolute_import, division, print_function

from .errors import WalmError
from .evacuation_plan import POLICY_BY_NAME
from .evacuation_text import ms_text, seconds_text, text_table
from .methods import METHOD_BY_NAME

PLAN_COLUMNS = ("#", "VM", "class", "method", "destination", "pred TMT", "pred DT ms", "wave", "why")
SUMMARY_COLUMNS = ("#", "VM", "class", "method", "destination", "pred TMT", "TMT", "pred DT ms", "DT ms", "status",
                   "why")


def plan_table(p):
    rows = []
    for c in p["order"]:
        rows.append([str(c["position"]), c["name"], c["class"], _method_text(c), c["destination"],
                     seconds_text(c["predicted_total_time_ms"]), ms_text(c["predicted_downtime_ms"]), str(c["wave"]),
                     _plan_why(p, c)])
    lines = ["Evacuation plan for %s (policy %s, concurrency %d, run %s):" % (
        p["source"], p["policy"], p["concurrency"], p["execution"])]
    return lines + (text_table(PLAN_COLUMNS, rows) if rows else []) + p["reasons"]


def _method_text(c):
    method = METHOD_BY_NAME.get(c["method"])
    if method is not None and method.switch_point and c.get("switch_after_passes"):
        return "%s/%d" % (c["method"], c["switch_after_passes"])
    return c["method"]


def _plan_why(p, c):
    if not c["decided"]:
        return c["reasons"][1] if len(c["reasons"]) > 1 else c["reasons"][0]
    # What happens to a pre-copy that does not converge matters more than why the method was chosen.
    extra = [r for r in c["reasons"] if r.startswith("Pre-copy is predicted not to converge")]
    if extra:
        return extra[0]
    policy = POLICY_BY_NAME.get(p["policy"])
    if policy is not None and policy.why is not None:
        return policy.why
    return c["decision_reasons"][0] if c["decision_reasons"] else c["reasons"][0]


def adaptation_text(result):
    """What the run-time adaptation did in one migration (walm_migrate's result or the role walm.qemu.migrate's), in a
    phrase: 'adapted: postcopy at 2.40 s (pass 1: ...)' and any later actions; '' when it did nothing."""
    adaptations = [a for a in ((result or {}).get("adaptations") or []) if isinstance(a, dict)]
    if not adaptations:
        return ""
    first = adaptations[0]
    text = "adapted: %s at %s (pass %s: %s)" % (first.get("action"), seconds_text(first.get("t_ms")), first.get("pass"),
                                                first.get("reason"))
    if len(adaptations) > 1:
        text += ", then " + ", ".join("%s at %s" % (a.get("action"), seconds_text(a.get("t_ms")))
                                      for a in adaptations[1:])
    return text


def _downtime_seen(result):
    """The downtime the role walm.qemu.migrate judged against the limit: the guest-visible one, else QEMU's."""
    if result.get("guest_visible_downtime_ms") is not None:
        return result["guest_visible_downtime_ms"], "guest-visible"
    return result.get("downtime_ms"), "QEMU"


def _measured(row):
    if row["total_time_ms"] is not None:
        return seconds_text(row["total_time_ms"])
    return "(%s)" % seconds_text(row["elapsed_ms"]) if row["elapsed_ms"] is not None else "-"


def _where(result):
    status = result.get("status")
    if status == "completed":
        return "destination"
    # the role walm.qemu.migrate's reading of both hosts after the failure (filter walm.qemu.whereabouts).
    if result.get("whereabouts") == "recover" or (result.get("rolled_back") is False and not result.get("where")):
        return "split between source and destination (post-copy): recover it"
    if result.get("where") and result["where"] != "source":
        return {"destination": "destination", "both": "both hosts (two running copies)", "none": "neither host",
                "unknown": "unknown (a copy does not answer)"}.get(result["where"], result["where"])
    after = result.get("source_status_after")
    return "source (%s)" % after if after else "source"


def summarize(p, results, started_at=None, migrations_started_at=None):
    """Plan plus the per-VM outcomes of evacuate_host.yml: the summary rows, totals and the table."""
    planned = dict((c["name"], c) for c in p["order"])
    got = {}
    for i, r in enumerate(results or []):
        if not isinstance(r, dict) or not r.get("vm"):
            raise WalmError("results[%d] must be a dict naming its VM (vm), as the role walm.qemu.migrate records it" % i)
        if r["vm"] not in planned:
            raise WalmError("results[%d] is for VM %s, which is not in the plan" % (i, r["vm"]))
        got[r["vm"]] = r
    rows, table_rows = [], []
    for c in p["order"]:
        r = got.get(c["name"])
        status = r.get("status") if r else "not run"
        row = {
            "position": c["position"], "vm": c["name"], "class": c["class"], "method": c["method"],
            "switch_after_passes": c["switch_after_passes"], "destination": c["destination"],
            "reasons": c["reasons"] + c["decision_reasons"],
            "predicted_total_time_ms": c["predicted_total_time_ms"],
            "predicted_downtime_ms": c["predicted_downtime_ms"],
            "predicted_outcome": c["predicted_outcome"],
            "total_time_ms": r.get("total_time_ms") if r else None,
            # How long a migration that did not complete held the link (QEMU reports no TMT for it).
            "elapsed_ms": r.get("wall_time_ms") if r else None,
            "downtime_ms": r.get("downtime_ms") if r else None,
            "ran_postcopy": r.get("ran_postcopy") if r else None,
            "guest_visible_downtime_ms": r.get("guest_visible_downtime_ms") if r else None,
            "downtime_limit_ms": r.get("downtime_limit_ms") if r else None,
            "downtime_within_limit": r.get("downtime_within_limit") if r else None,
            "adapt": r.get("adapt") if r else c["adapt"],
            "adaptations": (r.get("adaptations") or []) if r else [],
            "adaptation": adaptation_text(r),
            "status": status,
            "vm_is_on": _where(r) if r else "source (not run)",
            "error": r.get("error") if r else None,
            "started_at": r.get("started_at") if r else None,
            "finished_at": r.get("finished_at") if r else None,
        }
        rows.append(row)
        table_rows.append([str(c["position"]), c["name"], c["class"], _method_text(c), c["destination"],
                           seconds_text(c["predicted_total_time_ms"]), _measured(row),
                           ms_text(c["predicted_downtime_ms"]), ms_text(row["downtime_ms"]),
                           status if status == "completed" else "%s, VM on %s" % (status, row["vm_is_on"]),
                           _plan_why(p, c)])
    completed = [r["vm"] for r in rows if r["status"] == "completed"]
    failed = [r["vm"] for r in rows if r["status"] != "completed"]
    finished = [r["finished_at"] for r in rows if r["finished_at"] is not None]
    unplaced = p.get("unplaced") or []
    host_empty = not failed and not p["not_evacuable"] and not unplaced
    measured = [r["total_time_ms"] if r["total_time_ms"] is not None else r["elapsed_ms"] for r in rows
                if r["total_time_ms"] is not None or r["elapsed_ms"] is not None]
    time_to_empty = None
    last_finished = None
    if started_at is not None and finished:
        last_finished = round(max(finished) - started_at, 3)
        time_to_empty = last_finished if host_empty else None
    migration_phase = None
    if migrations_started_at is not None and finished:
        migration_phase = round(max(finished) - migrations_started_at, 3)
    totals = {
        "vms": len(rows) + len(unplaced), "completed": completed, "failed": failed, "not_evacuable": [
            v["name"] for v in p["not_evacuable"]], "unplaced": [v["name"] for v in unplaced],
        "host_empty": host_empty,
        "time_to_empty_s": time_to_empty,
        "time_until_last_finished_s": last_finished,
        "migration_phase_s": migration_phase,
        "measured_migration_time_s": round(sum(measured) / 1000.0, 3),
        "predicted_migration_time_s": p["predicted_migration_time_s"],
        "adapted": [r["vm"] for r in rows if r["adaptations"]],
        "downtime_over_limit": [r["vm"] for r in rows if r["downtime_within_limit"] is False],
    }
    head = "Evacuation of %s (policy %s): %d of %d VMs moved" % (p["source"], p["policy"], len(completed),
                                                                 len(rows) + len(unplaced))
    if time_to_empty is not None:
        head += ", host empty after %.1f s" % time_to_empty
    elif last_finished is not None:
        head += ", host NOT empty (last migration ended after %.1f s)" % last_finished
    elif not host_empty:
        head += ", host NOT empty"
    head += "; migrations took %s (predicted %s)." % (seconds_text(sum(measured)),
                                                      seconds_text(p["predicted_migration_time_s"] * 1000))
    lines = [head] + (text_table(SUMMARY_COLUMNS, table_rows) if table_rows else [])
    for r in rows:
        if r["adaptation"]:
            lines.append("%s: %s." % (r["vm"], r["adaptation"]))
        if r["downtime_within_limit"] is False:
            seen, what = _downtime_seen(got[r["vm"]])
            lines.append("%s: downtime %s ms (%s) over the %s ms limit." % (r["vm"], ms_text(seen), what,
                                                                            ms_text(r["downtime_limit_ms"])))
    for r in rows:
        if r["status"] != "completed":
            lines.append("%s: %s; the VM is on %s." % (r["vm"], r["error"] or r["status"], r["vm_is_on"]))
    for v in p["not_evacuable"]:
        lines.append("%s: not moved, %s." % (v["name"], v["reason"]))
    for v in unplaced:
        lines.append("%s: not moved, %s." % (v["name"], v["reason"]))
    return {"rows": rows, "totals": totals, "table": lines}
