# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""walm_decide: read one VM's probe (decide_input), classify its workload (decide_classes), predict every method
with decide_model, choose by the objective (decide_choice), apply the operator's rules (decide_rules) and return
the choice with its reasons (decide_reasons) and what walm_migrate checks the migration against."""

from __future__ import absolute_import, division, print_function

import copy

from .decide_choice import Choice, disruption
from .decide_classes import classify
from .decide_input import model_input, read_options, read_probe, read_thresholds
from .decide_model import Model, model_params
from .decide_reasons import evidence
from .decide_rules import apply_rule, compile_rules, match_rule
from .errors import WalmError
from .methods import METHOD_BY_NAME


def check_options(params):
    """walm_decide's options other than the probe, checked as decide() checks them (WalmError naming the fix), so
    that a caller deciding for many VMs refuses bad options once, before any VM."""
    opts = read_options(params)
    read_thresholds(params.get("thresholds"))
    model_params(params.get("model"))
    compile_rules(params.get("rules"), opts["allow_postcopy"])
    return opts


def decide_each(probes, options, names=None):
    """walm_decide for every probe reading (those of VMs in `names` when given), as a library call: the list of
    results, each naming its VM in `vm`; a VM the model cannot decide gets {"vm", "failed": True, "msg"} and does not
    stop the others. options: walm_decide's options without the probe, checked once first."""
    options = dict(options or {})
    if "probe" in options:
        raise WalmError("the decide options must not hold a probe: each VM's reading is given by probes")
    check_options(options)
    out = []
    for reading in probes or []:
        name = ((reading or {}).get("vm") or {}).get("name") if isinstance(reading, dict) else None
        if names is not None and name not in names:
            continue
        try:
            out.append(decide(dict(options, probe=reading)))
        except WalmError as exc:
            out.append({"vm": name, "failed": True, "msg": str(exc)})
    return out


def decide(params):
    """walm_decide: the method for one VM, the predictions of every method and the reasons, as a result dict.

    params: probe (required), link_bandwidth_mib_s (required), and the optional link_latency_ms,
    downtime_limit_ms, allow_postcopy, objective, time_budget_s, safety_margin_pct, thresholds, rules, max_passes,
    model (see walm_decide's documentation). Bad input raises WalmError before anything is computed.
    """
    opts = read_options(params)
    thresholds = read_thresholds(params.get("thresholds"))
    mparams = model_params(params.get("model"))
    rules = compile_rules(params.get("rules"), opts["allow_postcopy"])
    probe = params.get("probe")
    measures = read_probe(probe)

    inp, link, sources = model_input(measures, mparams, opts)
    model = Model(inp, mparams)
    cls = classify(measures, thresholds)
    share = thresholds["precopy_max_dirty_pct_of_link"]
    choice = Choice(model.precopy(share), model.postcopy(), model.hybrids(share), opts, thresholds, mparams, inp)
    best, meets_goal, decision = choice.choose()

    limit, weight, allow_post = choice.limit, choice.weight, opts["allow_postcopy"]
    predictions = {
        "precopy": _public(choice.pre, True, limit, weight),
        "postcopy": _public(choice.post, allow_post, limit, weight),
        "hybrid": _public(choice.hybrid, allow_post, limit, weight),
    }
    document = copy.deepcopy(probe)
    document.update(workload_class=cls, predictions=predictions, link=link)
    rule = match_rule(rules, document, measures["name"])
    if rule is not None:
        best, meets_goal, text = apply_rule(rule, choice, model, best)
        decision = [text]
        if best["method"] == "hybrid":  # report the hybrid the rule runs
            choice.hybrid = best
            predictions["hybrid"] = _public(best, allow_post, limit, weight)
        rule = dict((k, rule[k]) for k in ("index", "when", "method", "reason"))

    return {
        "changed": False,
        "vm": measures["name"],
        "method": best["method"],
        "switch_after_passes": best["switch_after_passes"] if METHOD_BY_NAME[best["method"]].switch_point else None,
        "meets_goal": meets_goal,
        "objective": opts["objective"],
        "reasons": decision + evidence(choice, cls, measures, link, sources, thresholds, mparams),
        "workload_class": cls,
        "predictions": predictions,
        "link": link,
        "model_inputs": sources,
        "policy": {"objective": opts["objective"], "downtime_limit_ms": int(round(limit)),
                   "allow_postcopy": allow_post,
                   "time_budget_s": round(choice.budget_ms / 1000.0, 3) if choice.budgeted else None,
                   "time_budget_source": (None if not choice.budgeted else "time_budget_s"
                                          if opts["time_budget_s"] is not None else "balanced_budget_factor"),
                   "safety_margin_pct": opts["safety_margin_pct"], "max_passes": opts["max_passes"]},
        "model": mparams,
        "rule": rule,
        "expectation": _expectation(best, inp, opts, choice),
    }


def _expectation(best, inp, opts, choice):
    """What walm_migrate checks the migration against while it runs (its option expect)."""
    converges = bool(best.get("converges"))
    return {
        "method": best["method"], "converges": converges,
        "total_time_ms": int(round(best["total_time_ms"])) if converges else None,
        "downtime_ms": int(round(best["downtime_ms"])) if converges else None,
        "passes": best.get("passes") if converges else None,
        "dirty_rate_mib_s": round(inp.dirty_rate_mib_s, 2),
        "working_set_mib": round(inp.working_set_mib, 1),
        "link_bandwidth_mib_s": round(inp.bandwidth_mib_s, 2),
        "objective": opts["objective"],
        # balanced allows the migration its time budget; urgent only the prediction's slack (walm_migrate's).
        "budget_ms": int(round(choice.budget_ms)) if choice.budgeted else None,
    }


def _public(pred, allowed, limit_ms, weight):
    """A prediction as walm_decide returns it: rounded, with the derived fields."""
    def whole(x):
        return None if x is None else int(round(x))

    out = {
        "method": pred["method"],
        "allowed": allowed,
        "converges": pred["converges"],
        "total_time_ms": whole(pred["total_time_ms"]),
        "downtime_ms": whole(pred["downtime_ms"]),
        "meets_downtime_limit": bool(pred["converges"]) and pred["downtime_ms"] <= limit_ms,
        "passes": pred["passes"],
        "transferred_mib": None if pred["transferred_mib"] is None else round(pred["transferred_mib"], 1),
        "postcopy_faults": whole(pred["postcopy_faults"]),
        "guest_slowdown_pct": round(pred["guest_slowdown_pct"], 1),
        "guest_lost_ms": whole(pred["guest_lost_ms"]),
        "postcopy_exposure_ms": whole(pred["postcopy_exposure_ms"]),
        "disruption_ms": None if pred["guest_lost_ms"] is None else whole(disruption(pred, weight)),
    }
    if pred["method"] == "precopy":
        out["why_not_converging"] = pred["why_not_converging"]
        out["rounds"] = [{"pass": r["pass"], "sent_mib": round(r["sent_mib"], 1),
                          "time_ms": whole(r["time_ms"]), "dirtied_mib": round(r["dirtied_mib"], 1)}
                         for r in pred["rounds"]]
    if pred["method"] == "hybrid":
        out["switch_after_passes"] = pred["switch_after_passes"]
        out["completes_as_precopy"] = pred["completes_as_precopy"]
    return out
