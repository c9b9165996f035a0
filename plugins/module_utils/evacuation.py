# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Host evacuation: which VM goes first, by which method, to which destination, and how it went.

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

from collections import namedtuple

from .adaptation import THROTTLE_PASSES, check_actions
from .decide_policy import decide_each
from .errors import WalmError
from .methods import METHOD_BY_NAME, METHODS, ON_TIMEOUT, ON_TIMEOUT_BY_NAME

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


def _s(ms):
    """Milliseconds as seconds for sentences and tables: '0.98 s', or '-' when unknown."""
    if ms is None:
        return "-"
    return "%.2f s" % (ms / 1000.0) if ms < 10000 else "%.1f s" % (ms / 1000.0)


def _ms(ms):
    return "-" if ms is None else "%d" % int(round(ms))


def _num(value, what, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WalmError("%s must be a number, got %r" % (what, value))
    if minimum is not None and value < minimum:
        raise WalmError("%s must be at least %s, got %s" % (what, minimum, value))
    return value


def _flag(value, default, what):
    if value is None:
        return default
    if not isinstance(value, bool):
        raise WalmError("%s must be true or false, got %r" % (what, value))
    return value


def _by_name(entries, what, key="name"):
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


def class_text(workload_class):
    """A decision's workload_class in a few words: 'idle', 'cpu', 'memory+cpu write-intensive'."""
    if not workload_class:
        return "unknown"
    intensity = workload_class.get("intensity") or [workload_class.get("dominant") or "unknown"]
    text = "+".join(intensity)
    if workload_class.get("access") == "write-intensive":
        text += " write-intensive"
    return text


def _read_destinations(destinations, source):
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
        free = _num(d["free_mib"], "free_mib of destination %s (set walm_capacity_mib for it)" % name, 0)
        out.append({"name": name, "free_mib": int(free), "free_mib_left": int(free),
                    "capacity_source": d.get("capacity_source") or "given", "vms": [],
                    "preferred": bool(d.get("preferred"))})
    return out


def _memory_mib(name, info, probe):
    memory = None
    if probe and isinstance(probe.get("vm"), dict):
        memory = probe["vm"].get("memory_mib")
    if memory is None:
        memory = ((info or {}).get("definition") or {}).get("memory_mib")
    if memory is None:
        raise WalmError("VM %s: its memory size is unknown (no probe reading and no recorded definition with "
                        "memory_mib); pass walm_vm_info's entry for it." % name)
    return int(_num(memory, "memory_mib of VM %s" % name, 1))


def _candidate(name, info, probe, probe_error, decision, policy, run):
    """One VM to move: its method and prediction under the policy. run: on_timeout, timeout_s, adapt,
    allow_postcopy and adaptation_actions, as the migrations will run."""
    c = {"name": name, "memory_mib": _memory_mib(name, info, probe),
         # What a migration must send at least (the probe's sample of non-zero memory); null when not measured.
         "nonzero_mib": ((probe or {}).get("workload") or {}).get("nonzero_mib"),
         "class": "unknown", "workload_class": None,
         "method": "precopy", "switch_after_passes": None, "on_timeout": run["on_timeout"],
         "predicted_total_time_ms": None, "predicted_downtime_ms": None, "predicted_outcome": "unknown",
         "decided": False, "heavy": False, "decision_reasons": [], "reasons": [], "meets_goal": None,
         # A baseline policy (naive) runs its migrations as they come, without the run-time check.
         "adapt": bool(run["adapt"]) and policy.adapt, "expectation": None}
    if decision is not None and decision.get("failed"):
        c["reasons"].append("walm_decide failed for it (%s): it goes last, by pre-copy, which can fall back to "
                            "the source." % (decision.get("msg") or "no message"))
        return c
    if decision is None:
        why = probe_error or ("it was not probed" if probe is None else "there is no decision for it")
        c["reasons"].append("No prediction (%s): it goes last, by pre-copy, which can fall back to the source."
                            % why)
        return c
    method = decision.get("method")
    if method not in METHODS:
        raise WalmError("The decision for VM %s has method %r; pass walm_decide's result for it." % (name, method))
    preds = decision.get("predictions") or {}
    cls = decision.get("workload_class") or {}
    c.update(decided=True, workload_class=cls, decision_reasons=list(decision.get("reasons") or []),
             meets_goal=decision.get("meets_goal"))
    c["class"] = class_text(cls)
    write_heavy = cls.get("access") == "write-intensive"
    if policy.method is not None:
        method = policy.method
    else:
        c["switch_after_passes"] = (decision.get("switch_after_passes") if METHOD_BY_NAME[method].switch_point
                                    else None)
    c["method"] = method
    c["heavy"] = write_heavy or METHOD_BY_NAME[method].postcopy
    # What walm_migrate checks this migration against: the decision's, when it is about the method that runs.
    expectation = decision.get("expectation")
    if isinstance(expectation, dict) and expectation.get("method") == method:
        c["expectation"] = expectation
    pred = preds.get(method) or {}
    if pred.get("converges") is False or (pred and pred.get("total_time_ms") is None):
        _not_converging(c, pred, preds.get("postcopy") or {}, run)
    elif pred:
        c["predicted_total_time_ms"] = pred.get("total_time_ms")
        c["predicted_downtime_ms"] = pred.get("downtime_ms")
        c["predicted_outcome"] = "completed"
    return c


def _adaptation_step(c, run):
    """What the run-time adaptation does to a pre-copy that stops converging: 'postcopy', 'abort', or None (nothing
    decisive: it runs until timeout_s). downtime and throttle may let it converge, which the model cannot say."""
    if not c["adapt"]:
        return None
    for action in run["adaptation_actions"]:
        if action == "abort" or (action == "postcopy" and _postcopy_possible(run)):
            return action
    return None


def _postcopy_possible(run):
    """postcopy-ram is negotiated when post-copy is allowed or is the timeout action (migration.needs_postcopy)."""
    return run["allow_postcopy"] or ON_TIMEOUT_BY_NAME[run["on_timeout"]].postcopy


def _not_converging(c, pred, post, run):
    """Prediction for a pre-copy the model says does not converge: adapted at run time, or ended by timeout_s."""
    why = pred.get("why_not_converging") or "model"
    timeout_s = run["timeout_s"]
    timeout_ms = int(timeout_s * 1000)
    c["heavy"] = True
    step = _adaptation_step(c, run)
    rounds = pred.get("rounds") or []
    # The run-time check sees what the model sees: the passes up to the one that stops converging (one pass, about
    # as long as post-copy's stream of the whole memory, when the passes are not given).
    passes_ms = sum(r.get("time_ms") or 0 for r in rounds) if rounds else post.get("total_time_ms")
    actions = list(run["adaptation_actions"])
    before = actions[:actions.index(step)] if step else []
    # auto-converge is set only where the throttle action can be reached before post-copy (walm_migrate).
    throttle_ms = THROTTLE_PASSES * (rounds[-1].get("time_ms") or 0) if "throttle" in before and rounds else 0
    if step and passes_ms is not None and passes_ms + throttle_ms < timeout_ms:
        at = ("after pass %d (%s into the migration)" % (len(rounds), _s(passes_ms)) if rounds
              else "after its first pass (about %s)" % _s(passes_ms))
        first = []
        if "downtime" in before:
            first.append("a higher downtime limit (up to walm_max_downtime_limit_ms, where set)")
        if throttle_ms:
            first.append("auto-converge for %d passes (counted: %s)" % (THROTTLE_PASSES, _s(throttle_ms)))
        tried = (" First %s %s tried; %s may still let it converge." % (
            " and ".join(first), "are" if len(first) > 1 else "is", "they" if len(first) > 1 else "it")
            if first else "")
        if step == "postcopy":
            c["predicted_outcome"] = "adapt-postcopy"
            total = post.get("total_time_ms")
            c["predicted_total_time_ms"] = None if total is None else int(passes_ms + throttle_ms + total)
            c["predicted_downtime_ms"] = post.get("downtime_ms")
            c["reasons"].append(
                "Pre-copy is predicted not to converge (%s): the run-time adaptation switches it to post-copy at "
                "the pass boundary where it stops converging, predicted %s.%s Predicted TMT at most %s: those "
                "passes plus post-copy's own prediction, which moves all the memory where only what the passes "
                "left is still to send." % (why, at, tried, _s(c["predicted_total_time_ms"])))
        else:
            c["predicted_outcome"] = "adapt-abort"
            c["predicted_total_time_ms"] = int(passes_ms + throttle_ms)
            c["reasons"].append(
                "Pre-copy is predicted not to converge (%s): %s, so the run-time adaptation cancels it at the pass "
                "boundary where it stops converging, predicted %s, and the VM stays on the source, so the host is "
                "not emptied.%s" % (why, "post-copy is not among the adaptation actions before abort"
                                    if _postcopy_possible(run) else "post-copy is not allowed (walm_allow_postcopy)",
                                    at, tried))
        return
    # Without a decisive adaptation it runs until timeout_s, then aborts or switches to post-copy.
    c["predicted_total_time_ms"] = timeout_ms
    if ON_TIMEOUT_BY_NAME[run["on_timeout"]].postcopy:
        c["predicted_outcome"] = "timeout-postcopy"
        c["predicted_total_time_ms"] += int(post.get("total_time_ms") or 0)
        c["predicted_downtime_ms"] = post.get("downtime_ms")
        c["reasons"].append("Pre-copy is predicted not to converge (%s): after timeout_s=%s it switches to "
                            "post-copy (on_timeout postcopy)." % (why, _g(timeout_s)))
    else:
        c["predicted_outcome"] = "timeout-abort"
        c["reasons"].append("Pre-copy is predicted not to converge (%s): after timeout_s=%s it is cancelled and "
                            "the VM stays on the source (on_timeout abort), so the host is not emptied."
                            % (why, _g(timeout_s)))


def _g(value):
    return ("%g" % value) if isinstance(value, float) else str(value)


def _mean_wait_ms(tmts):
    """Mean time until each VM is off the host when they go one after another in this order."""
    done, total = 0, 0
    for t in tmts:
        done += t
        total += done
    return total / float(len(tmts)) if tmts else 0.0


def _order(cands, policy, listing):
    if not policy.by_prediction:
        return sorted(cands, key=lambda c: listing.index(c["name"]))

    def key(c):
        known = c["predicted_total_time_ms"] is not None
        return (0 if known else 1, c["predicted_total_time_ms"] if known else 0, c["memory_mib"],
                listing.index(c["name"]))
    return sorted(cands, key=key)


def _waves(order, concurrency):
    """Waves of up to `concurrency` VMs in plan order, never two heavy (write-heavy or post-copy) ones together."""
    waves = []
    for c in order:
        wave = waves[-1] if waves else None
        if wave is None or len(wave) >= concurrency or (c["heavy"] and any(o["heavy"] for o in wave)):
            wave = []
            waves.append(wave)
        wave.append(c)
        c["wave"] = len(waves)
    return waves


def _no_room(c, dests, source):
    """Why VM c has no destination, in a sentence that names its memory, each destination's and the fix."""
    if any(d["free_mib"] >= c["memory_mib"] for d in dests):
        why = "no destination has that much left after the VMs placed before it in the plan"
    else:
        why = "no destination has that much free memory"
    hosts = []
    for d in dests:
        text = "%s has %d MiB free (%s)" % (d["name"], d["free_mib"], d["capacity_source"])
        if d["vms"]:
            text += ", %d MiB left after %s" % (d["free_mib_left"], ", ".join(d["vms"]))
        hosts.append(text)
    return ("it needs %d MiB and %s: %s. It stays on %s; add a destination to walm_destinations, free memory on "
            "one, or set walm_capacity_mib on a destination whose free memory is under-reported"
            % (c["memory_mib"], why, "; ".join(hosts), source))


def _place(order, dests, source):
    """Each VM in plan order to a destination that fits it: (placed in order, unplaced with their reasons)."""
    placed, unplaced = [], []
    for c in order:
        fits = [d for d in dests if d["free_mib_left"] >= c["memory_mib"]]
        if not fits:
            # Like a failed migration, one VM without room does not hold the others back.
            unplaced.append({"name": c["name"], "memory_mib": c["memory_mib"], "class": c["class"],
                             "reason": _no_room(c, dests, source),
                             "destinations": [dict((k, d[k]) for k in ("name", "free_mib", "free_mib_left"))
                                              for d in dests]})
            continue
        placed.append(c)
        # A preferred destination first (one a rolling maintenance has already maintained: the VM will not have to
        # move again), then the most free memory left: spreads the VMs by capacity; ties go to the first listed.
        best = max(fits, key=lambda d: (d["preferred"], d["free_mib_left"], -dests.index(d)))
        before = best["free_mib_left"]
        best["free_mib_left"] -= c["memory_mib"]
        best["vms"].append(c["name"])
        c["destination"] = best["name"]
        if best["preferred"] and len(dests) > 1:
            c["reasons"].append("Destination %s: preferred (already maintained), %d MiB free before this VM, %d MiB "
                                "after." % (best["name"], before, best["free_mib_left"]))
        elif len(dests) > 1:
            c["reasons"].append("Destination %s: the most free memory left (%d MiB before this VM, %d MiB after)."
                                % (best["name"], before, best["free_mib_left"]))
        else:
            c["reasons"].append("Destination %s (%d MiB free before this VM, %d MiB after)."
                                % (best["name"], before, best["free_mib_left"]))
    return placed, unplaced


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
    concurrency = 1 if concurrency is None else int(_num(concurrency, "concurrency (walm_concurrency)", 1))
    timeout_s = params.get("timeout_s")
    timeout_s = 600.0 if timeout_s is None else float(_num(timeout_s, "timeout_s (walm_timeout_s)", 1))
    run = {"on_timeout": on_timeout, "timeout_s": timeout_s,
           "adapt": _flag(params.get("adapt"), True, "adapt (walm_adapt)"),
           "allow_postcopy": _flag(params.get("allow_postcopy"), True, "allow_postcopy (walm_allow_postcopy)"),
           "adaptation_actions": check_actions(params.get("adaptation_actions"))}
    vms = params.get("vms")
    if not isinstance(vms, list):
        raise WalmError("vms must be the list walm_vm_info returns for the source (its 'vms'), got %r" % (vms,))
    info = _by_name(vms, "vms")
    probes = _by_name(params.get("probes"), "probes")
    probe_errors = dict((n, f.get("error") or "probe failed")
                        for n, f in _by_name(params.get("probe_failures"), "probe_failures").items())
    decisions = params.get("decisions")
    if not decisions and params.get("decide") is not None:
        # Decided here, as a library call, for the VMs walm_vm_info lists (not one walm_decide task per VM).
        decisions = decide_each(params.get("probes"), params["decide"], names=set(v.get("name") for v in vms
                                                                                  if isinstance(v, dict)))
    decisions = _by_name(decisions, "decisions", key="vm")
    for n in decisions:
        if n not in info:
            raise WalmError("There is a decision for VM %s, which walm_vm_info does not list on %s; pass the "
                            "source's VMs and their decisions from the same run." % (n, source))
    dests = _read_destinations(params.get("destinations"), source)

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
        cands.append(_candidate(name, v, probes.get(name), probe_errors.get(name), decisions.get(name), pol,
                                run))
    for name, p in sorted(probes.items()):
        if name not in info:
            not_evacuable.append({"name": name, "reason": "a QEMU (pid %s) not started by walm.qemu.walm_vm: WALM "
                                  "has no definition to start its destination from; move or stop it by hand"
                                  % (p.get("vm") or {}).get("pid")})

    order, unplaced = _place(_order(cands, pol, listing), dests, source)
    waves = _waves(order, concurrency)
    n = len(order)
    for i, c in enumerate(order):
        c["position"] = i + 1
        if pol.position is not None:
            lead = "Position %d of %d: %s." % (i + 1, n, pol.position)
        elif c["predicted_total_time_ms"] is None:
            lead = "Position %d of %d: no predicted TMT, so after the VMs that have one." % (i + 1, n)
        else:
            lead = ("Position %d of %d: predicted TMT %s by %s; shorter migrations go first so the most VMs are "
                    "off the host earliest." % (i + 1, n, _s(c["predicted_total_time_ms"]),
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
        "predicted_mean_wait_s": round(_mean_wait_ms(known) / 1000.0, 3) if len(known) == n else None,
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
                       % (_s(_mean_wait_ms([c["predicted_total_time_ms"] for c in timed])),
                          _s(_mean_wait_ms([c["predicted_total_time_ms"] for c in listed]))))
    if not policy.adapt:
        out.append("No run-time adaptation (%s is the baseline): a pre-copy runs until it converges or "
                   "timeout_s ends it." % policy.name)
    elif run["adapt"]:
        out.append("Run-time adaptation: walm_migrate checks each pre-copy (and a hybrid's pre-copy phase) against "
                   "its prediction at every pass boundary and, when it stops converging, acts in this order: %s%s."
                   % (", ".join(run["adaptation_actions"]), "" if _postcopy_possible(run)
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
                   % (_s(total_ms), "".join(", " + text for text in counted)))
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
                                         (_postcopy_possible(run) and any(
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


# -- tables and the summary -----------------------------------------------------------------------------------

PLAN_COLUMNS = ("#", "VM", "class", "method", "destination", "pred TMT", "pred DT ms", "wave", "why")
SUMMARY_COLUMNS = ("#", "VM", "class", "method", "destination", "pred TMT", "TMT", "pred DT ms", "DT ms", "status",
                   "why")


def _table(columns, rows):
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    last = len(columns) - 1

    def line(cells):
        return "  ".join(c if i == last else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()
    return [line(columns), line(["-" * w for w in widths])] + [line(r) for r in rows]


def plan_table(p):
    rows = []
    for c in p["order"]:
        rows.append([str(c["position"]), c["name"], c["class"], _method_text(c), c["destination"],
                     _s(c["predicted_total_time_ms"]), _ms(c["predicted_downtime_ms"]), str(c["wave"]),
                     _plan_why(p, c)])
    lines = ["Evacuation plan for %s (policy %s, concurrency %d, run %s):" % (
        p["source"], p["policy"], p["concurrency"], p["execution"])]
    return lines + (_table(PLAN_COLUMNS, rows) if rows else []) + p["reasons"]


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
    text = "adapted: %s at %s (pass %s: %s)" % (first.get("action"), _s(first.get("t_ms")), first.get("pass"),
                                                first.get("reason"))
    if len(adaptations) > 1:
        text += ", then " + ", ".join("%s at %s" % (a.get("action"), _s(a.get("t_ms"))) for a in adaptations[1:])
    return text


def _downtime_seen(result):
    """The downtime the role walm.qemu.migrate judged against the limit: the guest-visible one, else QEMU's."""
    if result.get("guest_visible_downtime_ms") is not None:
        return result["guest_visible_downtime_ms"], "guest-visible"
    return result.get("downtime_ms"), "QEMU"


def _measured(row):
    if row["total_time_ms"] is not None:
        return _s(row["total_time_ms"])
    return "(%s)" % _s(row["elapsed_ms"]) if row["elapsed_ms"] is not None else "-"


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
                           _s(c["predicted_total_time_ms"]), _measured(row),
                           _ms(c["predicted_downtime_ms"]), _ms(row["downtime_ms"]),
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
    head += "; migrations took %s (predicted %s)." % (_s(sum(measured)), _s(p["predicted_migration_time_s"] * 1000))
    lines = [head] + (_table(SUMMARY_COLUMNS, table_rows) if table_rows else [])
    for r in rows:
        if r["adaptation"]:
            lines.append("%s: %s." % (r["vm"], r["adaptation"]))
        if r["downtime_within_limit"] is False:
            seen, what = _downtime_seen(got[r["vm"]])
            lines.append("%s: downtime %s ms (%s) over the %s ms limit." % (r["vm"], _ms(seen), what,
                                                                            _ms(r["downtime_limit_ms"])))
    for r in rows:
        if r["status"] != "completed":
            lines.append("%s: %s; the VM is on %s." % (r["vm"], r["error"] or r["status"], r["vm_is_on"]))
    for v in p["not_evacuable"]:
        lines.append("%s: not moved, %s." % (v["name"], v["reason"]))
    for v in unplaced:
        lines.append("%s: not moved, %s." % (v["name"], v["reason"]))
    return {"rows": rows, "totals": totals, "table": lines}
