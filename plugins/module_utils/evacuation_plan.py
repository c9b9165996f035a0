# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Host evacuation: which VM goes first, by which method, to which destination.

Pure computation on what walm_vm_info, walm_probe and walm_decide report (no host access), so the plan can be made
and checked anywhere, in check mode too. Used by walm_plan and playbooks/evacuate_host.yml.

The plan, for one source host with one migration link:

- order: policy `walm` puts the shortest predicted total migration time (TMT) first. On one shared link the
  migrations run one after another, so the host is empty after about the sum of the TMTs whatever the order; the
  order decides how many VMs are safe early, and shortest-first minimises the mean time a VM waits (the
  shortest-processing-time rule). VMs without a prediction go last. Policy `naive` is what Nova, KubeVirt, oVirt
  and Proxmox do: listing order, every VM by pre-copy.
- concurrency: 1 by default, because parallel migrations on one link only split its bandwidth and lengthen every
  pre-copy. A higher concurrency groups VMs into waves that never hold two write-heavy or post-copy migrations.
- destination: each VM in plan order goes to the destination with the most free memory left that fits it. A VM
  that fits nowhere is listed in `unplaced` with the reason (its memory, each destination's) and the others still
  go, as they do when one migration fails; the host is then not empty.
- run-time adaptation: under policy `walm` each migration carries its decision's expectation, and walm_migrate
  checks a pre-copy against it at every pass boundary (adaptation.py). A pre-copy predicted not to converge then no
  longer runs until timeout_s: where post-copy is allowed it is switched to post-copy at the boundary where it stops
  converging (outcome `adapt-postcopy`), else cancelled there (`adapt-abort`, the VM stays on the source). Its
  predicted TMT is the model's pre-copy passes up to that boundary (plus auto-converge's passes when the throttle
  action comes first) plus post-copy's own prediction: an upper bound, since post-copy's prediction moves all of
  the memory while only what the passes left is still to send. Policy `naive` is the baseline without adaptation.
"""

from __future__ import absolute_import, division, print_function

from __future__ import absolute_import, division, print_function

from collections import namedtuple

from .adaptation import check_actions
from .decide_policy import decide_each
from .errors import WalmError
from .evacuation_candidate import candidate, postcopy_possible
from .evacuation_inputs import by_vm_name, check_flag, check_number, read_destinations
from .evacuation_placement import group_waves, mean_wait_ms, place, plan_order
from .evacuation_text import seconds_text
from .methods import METHOD_BY_NAME, ON_TIMEOUT, ON_TIMEOUT_BY_NAME

# The evacuation policies (walm_plan's `policy`, the playbook's walm_evacuate_policy).
# method: the method every VM gets, or None for the method walm_decide chose for it.
# by_prediction: shortest predicted TMT first (VMs without a prediction last), else the source's listing order.
# adapt: its migrations run with the run-time adaptation (where adapt allows it).
# order_reason: the plan's sentence on its order.
# position: why each VM is where it is in the plan, or None to say its predicted TMT.
# why: the plan table's `why` of a VM with a decision, or None for the decision's first reason.
Policy = namedtuple("Policy", "name method by_prediction adapt order_reason position why")

POLICY_TABLE = (
    Policy("walm", method=None, by_prediction=True, adapt=True,
           order_reason="Order: shortest predicted total migration time (TMT) first, each VM by the method "
                        "walm_decide chose. On one shared migration link the host is empty after about the sum of "
                        "the TMTs whatever the order; shortest first gets the most VMs off the host earliest.",
           position=None, why=None),
    # The baseline to compare with.
    Policy("naive", method="precopy", by_prediction=False, adapt=False,
           order_reason="Order: the source's listing order, every VM by pre-copy (naive policy, as Nova, KubeVirt, "
                        "oVirt and Proxmox evacuate); kept for comparison with the walm policy.",
           position="listing order, by pre-copy (naive policy)", why="listing order, pre-copy (naive)"),
)
POLICIES = tuple(p.name for p in POLICY_TABLE)
POLICY_BY_NAME = dict((p.name, p) for p in POLICY_TABLE)

# A VM whose record says it is one of these is not a running guest to move.
_NOT_MOVABLE_STATUS = {
    "inmigrate": "it is the destination of an incoming migration on this host, not a guest to move",
    "postmigrate": "it completed an outgoing migration already; stop this copy once its destination runs",
    "finish-migrate": "it is finishing an outgoing migration",
}


def plan(params):
    """walm_plan without results: the evacuation plan of one source host as a dict (see walm_plan's RETURN)."""
    source = params.get("source")
    if not source:
        raise WalmError("source must name the host to empty (walm_source)")
    policy = params.get("policy") or "walm"
    if policy not in POLICIES:
        raise WalmError("policy must be one of %s, got %r (walm_evacuate_policy)" % (", ".join(POLICIES), policy))
    pol = POLICY_BY_NAME[policy]
    on_timeout = params.get("on_timeout") or "abort"
    if on_timeout not in ON_TIMEOUT:
        raise WalmError("on_timeout must be %s, got %r (walm_on_timeout)" % (" or ".join(ON_TIMEOUT), on_timeout))
    concurrency = params.get("concurrency")
    concurrency = 1 if concurrency is None else int(check_number(concurrency, "concurrency (walm_concurrency)", 1))
    timeout_s = params.get("timeout_s")
    timeout_s = 600.0 if timeout_s is None else float(check_number(timeout_s, "timeout_s (walm_timeout_s)", 1))
    run = {"on_timeout": on_timeout, "timeout_s": timeout_s,
           "adapt": check_flag(params.get("adapt"), True, "adapt (walm_adapt)"),
           "allow_postcopy": check_flag(params.get("allow_postcopy"), True, "allow_postcopy (walm_allow_postcopy)"),
           "adaptation_actions": check_actions(params.get("adaptation_actions"))}
    vms = params.get("vms")
    if not isinstance(vms, list):
        raise WalmError("vms must be the list walm_vm_info returns for the source (its 'vms'), got %r" % (vms,))
    info = by_vm_name(vms, "vms")
    probes = by_vm_name(params.get("probes"), "probes")
    probe_errors = dict((n, f.get("error") or "probe failed")
                        for n, f in by_vm_name(params.get("probe_failures"), "probe_failures").items())
    decisions = params.get("decisions")
    if not decisions and params.get("decide") is not None:
        # Decided here, as a library call, for the VMs walm_vm_info lists (not one walm_decide task per VM).
        decisions = decide_each(params.get("probes"), params["decide"], names=set(v.get("name") for v in vms
                                                                                  if isinstance(v, dict)))
    decisions = by_vm_name(decisions, "decisions", key="vm")
    for n in decisions:
        if n not in info:
            raise WalmError("There is a decision for VM %s, which walm_vm_info does not list on %s; pass the "
                            "source's VMs and their decisions from the same run." % (n, source))
    dests = read_destinations(params.get("destinations"), source)

    listing = [v["name"] for v in vms]
    cands, skipped, not_evacuable = [], [], []
    for name in listing:
        v = info[name]
        if not v.get("running"):
            skipped.append({"name": name, "reason": "recorded on %s but not running: nothing to migrate" % source})
            continue
        # A VM that arrived here by migration keeps its record's role "incoming" once it runs: the status tells.
        status = v.get("status")
        if status in _NOT_MOVABLE_STATUS:
            not_evacuable.append({"name": name, "reason": _NOT_MOVABLE_STATUS[status]})
            continue
        cands.append(candidate(name, v, probes.get(name), probe_errors.get(name), decisions.get(name), pol, run))
    for name, p in sorted(probes.items()):
        if name not in info:
            not_evacuable.append({"name": name, "reason": "a QEMU (pid %s) not started by walm.qemu.walm_vm: WALM "
                                  "has no definition to start its destination from; move or stop it by hand"
                                  % (p.get("vm") or {}).get("pid")})

    order, unplaced = place(plan_order(cands, pol, listing), dests, source)
    waves = group_waves(order, concurrency)
    n = len(order)
    for i, c in enumerate(order):
        c["position"] = i + 1
        if pol.position is not None:
            lead = "Position %d of %d: %s." % (i + 1, n, pol.position)
        elif c["predicted_total_time_ms"] is None:
            lead = "Position %d of %d: no predicted TMT, so after the VMs that have one." % (i + 1, n)
        else:
            lead = ("Position %d of %d: predicted TMT %s by %s; shorter migrations go first so the most VMs are "
                    "off the host earliest." % (i + 1, n, seconds_text(c["predicted_total_time_ms"]),
                                                METHOD_BY_NAME[c["method"]].label))
        c["reasons"].insert(0, lead)

    known = [c["predicted_total_time_ms"] for c in order if c["predicted_total_time_ms"] is not None]
    total_ms = sum(known)
    stays = [c["name"] for c in order if c["predicted_outcome"] in ("timeout-abort", "adapt-abort")]
    unknown = [c["name"] for c in order if c["predicted_total_time_ms"] is None]
    reasons = _plan_reasons(pol, run, order, listing, concurrency, waves, dests, total_ms, stays, unknown,
                            skipped, not_evacuable, unplaced)
    return {
        "source": source,
        "policy": policy,
        "concurrency": concurrency,
        "execution": "waves",
        "waves": [[c["name"] for c in w] for w in waves],
        "order": order,
        "destinations": [dict((k, d[k]) for k in ("name", "free_mib", "free_mib_left", "capacity_source", "vms"))
                         for d in dests],
        "skipped": skipped,
        "not_evacuable": not_evacuable,
        "unplaced": unplaced,
        "on_timeout": on_timeout,
        "timeout_s": timeout_s,
        "adapt": run["adapt"] and pol.adapt,
        "allow_postcopy": run["allow_postcopy"],
        "adaptation_actions": list(run["adaptation_actions"]),
        "predicted_migration_time_s": round(total_ms / 1000.0, 3),
        "predicted_mean_wait_s": round(mean_wait_ms(known) / 1000.0, 3) if len(known) == n else None,
        "predicted_stay_on_source": stays,
        "predicted_adapt_postcopy": [c["name"] for c in order if c["predicted_outcome"] == "adapt-postcopy"],
        "predicted_unknown": unknown,
        "predicted_empties_host": not stays and not not_evacuable and not unplaced,
        "reasons": reasons,
    }


def _plan_reasons(policy, run, order, listing, concurrency, waves, dests, total_ms, stays, unknown, skipped,
                  not_evacuable, unplaced):
    out = [policy.order_reason]
    if policy.by_prediction:
        timed = [c for c in order if c["predicted_total_time_ms"] is not None]
        if len(timed) == len(order) and len(order) > 1:
            listed = sorted(timed, key=lambda c: listing.index(c["name"]))
            out.append("Mean time until a VM is off the host: predicted %s in this order, %s in listing order."
                       % (seconds_text(mean_wait_ms([c["predicted_total_time_ms"] for c in timed])),
                          seconds_text(mean_wait_ms([c["predicted_total_time_ms"] for c in listed]))))
    if not policy.adapt:
        out.append("No run-time adaptation (%s is the baseline): a pre-copy runs until it converges or "
                   "timeout_s ends it." % policy.name)
    elif run["adapt"]:
        out.append("Run-time adaptation: walm_migrate checks each pre-copy (and a hybrid's pre-copy phase) against "
                   "its prediction at every pass boundary and, when it stops converging, acts in this order: %s%s."
                   % (", ".join(run["adaptation_actions"]), "" if postcopy_possible(run)
                      else " (post-copy not allowed: walm_allow_postcopy is false)"))
    else:
        out.append("Run-time adaptation is off (walm_adapt false): a pre-copy runs until it converges or timeout_s "
                   "ends it.")
    if any(c["predicted_total_time_ms"] is not None for c in order):
        counted = [text for outcome, text in (
            ("timeout", "timeouts counted in full"),
            ("adapt-postcopy", "a pre-copy switched to post-copy counted as its passes plus a whole post-copy"),
            ("adapt-abort", "a pre-copy the adaptation cancels counted until it is cancelled"))
            if any(c["predicted_outcome"].startswith(outcome) for c in order)]
        out.append("Predicted time to empty: about %s of migrations one after another (the sum of the predicted "
                   "TMTs%s), plus preparing each destination and checking each VM there."
                   % (seconds_text(total_ms), "".join(", " + text for text in counted)))
    if concurrency == 1:
        out.append("Concurrency 1: the source has one migration link, and parallel migrations on it only split its "
                   "bandwidth and lengthen every pre-copy.")
    else:
        out.append("Concurrency %d requested: %d wave(s) of up to %d VMs, never two write-heavy or post-copy "
                   "migrations in one wave. The migrations of a wave run side by side; on one shared link a wave "
                   "takes about as long as its migrations one after another." % (concurrency, len(waves),
                                                                                 concurrency))
    out.append("Destinations: %s." % "; ".join(
        "%s with %d MiB free (%s), %d MiB left after %s" % (
            d["name"], d["free_mib"], d["capacity_source"], d["free_mib_left"],
            ", ".join(d["vms"]) if d["vms"] else "no VM") for d in dests))
    if stays:
        fixes = [fix for needed, fix in ((policy is not POLICY_BY_NAME["walm"], "policy walm"),
                                         (not run["allow_postcopy"], "allow post-copy (walm_allow_postcopy)"),
                                         (not ON_TIMEOUT_BY_NAME[run["on_timeout"]].postcopy,
                                          "on_timeout postcopy"),
                                         (postcopy_possible(run) and any(
                                             c["predicted_outcome"] == "adapt-abort" for c in order),
                                          "postcopy before abort in walm_adaptation_actions"))
                 if needed]
        out.append("Predicted to stay on the source (pre-copy does not converge and is cancelled, at timeout_s with "
                   "on_timeout abort or by the run-time adaptation): %s. The host will not be empty; use %s."
                   % (", ".join(stays), " or ".join(fixes)))
    if unknown:
        out.append("No prediction for %s: migrated last by pre-copy." % ", ".join(unknown))
    for s in skipped:
        out.append("Skipped %s: %s." % (s["name"], s["reason"]))
    for s in not_evacuable:
        out.append("Cannot move %s: %s. The host will not be empty while it runs." % (s["name"], s["reason"]))
    for s in unplaced:
        out.append("No room for %s: %s. The VMs that fit still go; the host will not be empty while it runs."
                   % (s["name"], s["reason"]))
    if not order and not not_evacuable and not unplaced:
        out.append("No VM runs on the source: nothing to do.")
    return out
