# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""One VM of an evacuation: its method and predicted migration under the policy, and what the run-time
adaptation or timeout_s does to a pre-copy predicted not to converge."""

from __future__ import absolute_import, division, print_function

from .adaptation import THROTTLE_PASSES
from .errors import WalmError
from .evacuation_inputs import memory_mib
from .evacuation_text import class_text, number_text, seconds_text
from .methods import METHOD_BY_NAME, METHODS, ON_TIMEOUT_BY_NAME


def candidate(name, info, probe, probe_error, decision, policy, run):
    """One VM to move: its method and prediction under the policy. run: on_timeout, timeout_s, adapt,
    allow_postcopy and adaptation_actions, as the migrations will run."""
    c = {"name": name, "memory_mib": memory_mib(name, info, probe),
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
        if action == "abort" or (action == "postcopy" and postcopy_possible(run)):
            return action
    return None


def postcopy_possible(run):
    """postcopy-ram is negotiated when post-copy is allowed or is the timeout action (migration_capabilities.needs_postcopy)."""
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
        at = ("after pass %d (%s into the migration)" % (len(rounds), seconds_text(passes_ms)) if rounds
              else "after its first pass (about %s)" % seconds_text(passes_ms))
        first = []
        if "downtime" in before:
            first.append("a higher downtime limit (up to walm_max_downtime_limit_ms, where set)")
        if throttle_ms:
            first.append("auto-converge for %d passes (counted: %s)" % (THROTTLE_PASSES, seconds_text(throttle_ms)))
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
                "left is still to send." % (why, at, tried, seconds_text(c["predicted_total_time_ms"])))
        else:
            c["predicted_outcome"] = "adapt-abort"
            c["predicted_total_time_ms"] = int(passes_ms + throttle_ms)
            c["reasons"].append(
                "Pre-copy is predicted not to converge (%s): %s, so the run-time adaptation cancels it at the pass "
                "boundary where it stops converging, predicted %s, and the VM stays on the source, so the host is "
                "not emptied.%s" % (why, "post-copy is not among the adaptation actions before abort"
                                    if postcopy_possible(run) else "post-copy is not allowed (walm_allow_postcopy)",
                                    at, tried))
        return
    # Without a decisive adaptation it runs until timeout_s, then aborts or switches to post-copy.
    c["predicted_total_time_ms"] = timeout_ms
    if ON_TIMEOUT_BY_NAME[run["on_timeout"]].postcopy:
        c["predicted_outcome"] = "timeout-postcopy"
        c["predicted_total_time_ms"] += int(post.get("total_time_ms") or 0)
        c["predicted_downtime_ms"] = post.get("downtime_ms")
        c["reasons"].append("Pre-copy is predicted not to converge (%s): after timeout_s=%s it switches to "
                            "post-copy (on_timeout postcopy)." % (why, number_text(timeout_s)))
    else:
        c["predicted_outcome"] = "timeout-abort"
        c["reasons"].append("Pre-copy is predicted not to converge (%s): after timeout_s=%s it is cancelled and "
                            "the VM stays on the source (on_timeout abort), so the host is not emptied."
                            % (why, number_text(timeout_s)))
