# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""walm_decide's policy: read one VM's probe, classify its workload, predict every method with decide_model,
apply the operator's rules and objective, and explain the choice in sentences an operator can check.

Objectives (docs/decide.md):
- `urgent` (the default: evacuating a failing host): the VM off the host fastest within the downtime limit.
  Methods within tmt_tolerance_pct of the fastest count as equally fast; among them the least disruptive wins.
- `balanced` (planned maintenance): the least disruption among the methods that finish within the time budget.
Disruption = downtime + guest time lost to slowdown + postcopy_exposure_weight x time spent in post-copy (a link
failure then costs the VM unless recovered). Post-copy cannot fall back to the source, so pre-copy wins whenever
it is within safety_margin_pct of the chosen method (by time for `urgent`, by disruption for `balanced`).
"""

from __future__ import absolute_import, division, print_function

import copy
import math

from .decide_defaults import OBJECTIVE_BY_NAME, OBJECTIVES, OPTIONS, THRESHOLDS
from .decide_model import Model, ModelInput, as_number, model_params
from .errors import WalmError
from .methods import METHOD_BY_NAME, METHODS

try:
    import jmespath
    from jmespath.exceptions import JMESPathError
    from jmespath.functions import Functions as _JMESPathFunctions
    HAS_JMESPATH = True
except ImportError:  # pragma: no cover - the collection's requirements install it
    HAS_JMESPATH = False

RULE_KEYS = ("when", "method", "reason", "switch_after_passes")


# --- formatting -------------------------------------------------------------------------------------------------

def _n(x):
    """A number as an operator reads it: three significant digits, no exponent."""
    if x is None:
        return "?"
    if abs(x) >= 100:
        return "%d" % round(x)
    if abs(x) < 1e-3:
        return "0"
    return "%.3g" % x


def _s(ms):
    return "%s s" % _n(ms / 1000.0)


def _ms(ms):
    return "%d ms" % round(ms)


def _jmespath_true(value):
    """JMESPath truthiness: false, null and empty strings, lists and objects are false; 0 is true."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict)) and not value:
        return False
    return True


# --- input ------------------------------------------------------------------------------------------------------

def _sub(probe, key):
    value = probe.get(key)
    if not isinstance(value, dict):
        raise WalmError("probe.%s is missing or not a dict: walm_decide needs the probe result of one VM from "
                        "walm.qemu.walm_probe (at least vm.memory_mib and workload.dirty_rate_mib_s)" % key)
    return value


def _required(section, name, key, **kw):
    if section.get(key) is None:
        raise WalmError("probe.%s.%s is missing or null: walm_decide needs it to predict the migration; pass the "
                        "probe result of one VM from walm.qemu.walm_probe" % (name, key))
    return as_number(section[key], "probe.%s.%s" % (name, key), **kw)


def _optional(section, name, key, default=None):
    return as_number(section.get(key, default), "probe.%s.%s" % (name, key), minimum=0, allow_none=True)


def read_probe(probe):
    """The measurements of one VM's probe result, checked: required keys present, numbers non-negative."""
    if not isinstance(probe, dict):
        raise WalmError("probe must be the probe result of one VM (a dict with vm and workload), not %s"
                        % type(probe).__name__)
    if "vm" not in probe and isinstance(probe.get("vms"), list):
        raise WalmError("probe holds %d VMs (probe.vms): walm_decide decides for one VM; pass one entry, e.g. "
                        "loop over probe.vms" % len(probe["vms"]))
    vm = _sub(probe, "vm")
    workload = _sub(probe, "workload")
    cpu = workload.get("cpu_percent")
    if isinstance(cpu, dict):  # a per-vCPU breakdown with its total
        cpu = cpu.get("total", cpu.get("total_percent"))
    vcpus = as_number(vm.get("vcpus", 1) or 1, "probe.vm.vcpus", positive=True)
    return {
        "name": str(vm.get("name") or "(unnamed)"),
        "memory_mib": _required(vm, "vm", "memory_mib", positive=True),
        "vcpus": int(vcpus),
        "dirty_rate_mib_s": _required(workload, "workload", "dirty_rate_mib_s", minimum=0),
        "cpu_percent": as_number(cpu if cpu is not None else 0, "probe.workload.cpu_percent", minimum=0),
        "net_rx_mib_s": _optional(workload, "workload", "net_rx_mib_s", 0) or 0.0,
        "net_tx_mib_s": _optional(workload, "workload", "net_tx_mib_s", 0) or 0.0,
        "wws_mib": _optional(workload, "workload", "wws_mib"),
        "rss_mib": _optional(workload, "workload", "rss_mib"),
        "nonzero_mib": _optional(workload, "workload", "nonzero_mib"),
        "working_set_mib": _optional(workload, "workload", "working_set_mib"),
        "read_rate_mib_s": _optional(workload, "workload", "read_rate_mib_s"),
    }


def read_thresholds(overrides):
    thresholds = dict(THRESHOLDS)
    if overrides is None:
        return thresholds
    if not isinstance(overrides, dict):
        raise WalmError("thresholds must be a dict (known keys: %s)" % ", ".join(sorted(THRESHOLDS)))
    for key, value in sorted(overrides.items()):
        if key not in THRESHOLDS:
            raise WalmError("unknown threshold %r; known thresholds: %s" % (key, ", ".join(sorted(THRESHOLDS))))
        thresholds[key] = as_number(value, "thresholds.%s" % key, minimum=0,
                                    positive=key in ("cpu_percent", "dirty_rate_mib_s", "network_mib_s",
                                                     "balanced_budget_factor"))
    return thresholds


def _function_names(node):
    """Names of the functions a parsed JMESPath expression calls."""
    names = []
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            names.append(node.get("value"))
        for child in node.get("children", []):
            names.extend(_function_names(child))
    return names


def compile_rules(rules, allow_postcopy=True):
    """Check the operator's rules up front: shape, method, JMESPath syntax and function names."""
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise WalmError("rules must be a list of {when, method, reason} dicts")
    if rules and not HAS_JMESPATH:
        raise WalmError("rules need the jmespath Python library on the host that runs walm_decide "
                        "(pip install jmespath)")
    known_functions = set(_JMESPathFunctions.FUNCTION_TABLE) if rules else set()
    compiled = []
    for index, rule in enumerate(rules, 1):
        if not isinstance(rule, dict):
            raise WalmError("rule %d must be a dict with when, method and an optional reason, not %r"
                            % (index, rule))
        unknown = sorted(set(rule) - set(RULE_KEYS))
        if unknown:
            raise WalmError("rule %d has unknown keys %s; a rule has %s" % (index, ", ".join(unknown),
                                                                            ", ".join(RULE_KEYS)))
        when = rule.get("when")
        if not isinstance(when, str) or not when.strip():
            raise WalmError("rule %d needs `when`: a JMESPath expression over the probe result, e.g. "
                            "\"starts_with(vm.name, 'db-')\"" % index)
        method = rule.get("method")
        if method not in METHODS:
            raise WalmError("rule %d: unknown method %r; choose one of %s" % (index, method, ", ".join(METHODS)))
        if METHOD_BY_NAME[method].postcopy and not allow_postcopy:
            raise WalmError("rule %d chooses %s, which runs post-copy, but allow_postcopy is false; allow "
                            "post-copy or change the rule" % (index, method))
        switch = rule.get("switch_after_passes")
        if switch is not None:
            if not METHOD_BY_NAME[method].switch_point:
                raise WalmError("rule %d: switch_after_passes applies to method %s only" % (index, " or ".join(
                    m for m in METHODS if METHOD_BY_NAME[m].switch_point)))
            switch = int(as_number(switch, "rule %d switch_after_passes" % index, minimum=1))
        try:
            expression = jmespath.compile(when)
        except JMESPathError as exc:
            raise WalmError("rule %d: `when` is not a valid JMESPath expression (%s): %s"
                            % (index, when, str(exc).replace("\n", " ")))
        bad = sorted(set(f for f in _function_names(expression.parsed) if f not in known_functions))
        if bad:
            raise WalmError("rule %d: `when` (%s) calls unknown JMESPath function %s; JMESPath has %s"
                            % (index, when, ", ".join(bad), ", ".join(sorted(known_functions))))
        compiled.append({"index": index, "when": when, "method": method, "expression": expression,
                         "reason": str(rule.get("reason") or "").strip(), "switch_after_passes": switch})
    return compiled


def match_rule(rules, document, vm_name):
    """The first rule whose expression is true for this document, or None."""
    for rule in rules:
        try:
            value = rule["expression"].search(document)
        except JMESPathError as exc:
            raise WalmError("rule %d (`%s`) failed on VM '%s': %s; guard the expression for missing keys "
                            "(e.g. `vm.name && starts_with(vm.name, 'db-')`)"
                            % (rule["index"], rule["when"], vm_name, str(exc).replace("\n", " ")))
        if _jmespath_true(value):
            return rule
    return None


# --- classification ---------------------------------------------------------------------------------------------

def classify(measures, thresholds):
    """Intensity (cpu, memory, network, or idle when none applies; the dominant one first) and access mode."""
    network = measures["net_rx_mib_s"] + measures["net_tx_mib_s"]
    scores = {
        "cpu": measures["cpu_percent"] / thresholds["cpu_percent"],
        "memory": measures["dirty_rate_mib_s"] / thresholds["dirty_rate_mib_s"],
        "network": network / thresholds["network_mib_s"],
    }
    intensity = sorted((k for k, v in scores.items() if v >= 1.0), key=lambda k: (-scores[k], k))
    read = measures["read_rate_mib_s"]
    write_share = None
    if read is not None and read + measures["dirty_rate_mib_s"] > 0:
        write_share = 100.0 * measures["dirty_rate_mib_s"] / (read + measures["dirty_rate_mib_s"])
    # The research's modes: memory-intensive guests are write-intensive, CPU and network ones read-intensive;
    # a measured read rate can show a memory-intensive guest to be mostly reading.
    write = "memory" in intensity and (write_share is None or write_share >= thresholds["write_share_pct"])
    return {
        "intensity": intensity or ["idle"],
        "dominant": intensity[0] if intensity else "idle",
        "access": "write-intensive" if write else "read-intensive",
        "scores": dict((k, round(v, 3)) for k, v in scores.items()),
        "write_share_pct": None if write_share is None else round(write_share, 1),
        "thresholds_used": dict(thresholds),
    }


def _class_sentence(cls, measures, thresholds):
    network = measures["net_rx_mib_s"] + measures["net_tx_mib_s"]

    def measure(kind, op):
        if kind == "cpu":
            return "CPU %s %% %s %s %%" % (_n(measures["cpu_percent"]), op, _n(thresholds["cpu_percent"]))
        if kind == "memory":
            return "dirty rate %s MiB/s %s %s MiB/s" % (_n(measures["dirty_rate_mib_s"]), op,
                                                        _n(thresholds["dirty_rate_mib_s"]))
        return "network %s MiB/s %s %s MiB/s" % (_n(network), op, _n(thresholds["network_mib_s"]))

    if cls["dominant"] == "idle":
        return "Workload: idle (%s); %s." % (", ".join(measure(k, "<") for k in ("cpu", "memory", "network")),
                                             cls["access"])
    parts = ["%s-intensive (%s)" % ("CPU" if k == "cpu" else k, measure(k, ">=")) for k in cls["intensity"]]
    text = "Workload: " + parts[0]
    if len(parts) > 1:
        text += ", also " + " and ".join(parts[1:])
    text += "; " + cls["access"]
    if cls["write_share_pct"] is not None:
        text += " (%s %% of page accesses are writes)" % _n(cls["write_share_pct"])
    return text + "."


# --- the decision -----------------------------------------------------------------------------------------------

def _disruption(pred, weight):
    return pred["guest_lost_ms"] + weight * pred["postcopy_exposure_ms"]


def _least_disruptive(weight):
    """Sort key: least disruption, then the fastest, then the safest method, then the latest switch."""
    return lambda p: (round(_disruption(p, weight), 3), round(p["total_time_ms"], 3),
                      METHOD_BY_NAME[p["method"]].safety_rank,
                      -(p.get("switch_after_passes") or 0))


def _within_limit(candidates, limit_ms):
    return [c for c in candidates if c["converges"] and c["downtime_ms"] <= limit_ms]


def _urgent_band(candidates, limit_ms, thresholds):
    """The methods within the downtime limit whose time is within tmt_tolerance_pct of the fastest of them."""
    fit = _within_limit(candidates, limit_ms)
    if not fit:
        return []
    fastest = min(c["total_time_ms"] for c in fit)
    return [c for c in fit if c["total_time_ms"] <= fastest * (1 + thresholds["tmt_tolerance_pct"] / 100.0)]


def _rank(candidates, objective, limit_ms, budget_ms, thresholds):
    """The best candidate by the objective, or None when none completes within the limits."""
    if not OBJECTIVE_BY_NAME[objective].time_budget:
        fit = _urgent_band(candidates, limit_ms, thresholds)
    else:
        fit = [c for c in _within_limit(candidates, limit_ms) if c["total_time_ms"] <= budget_ms]
    return min(fit, key=_least_disruptive(thresholds["postcopy_exposure_weight"])) if fit else None


def _pct(x):
    return "%s %%" % ("%.0f" % x if x >= 10 else "%.1f" % x)


def _label(pred):
    method = METHOD_BY_NAME[pred["method"]]
    if not method.switch_point:
        return method.label
    if pred.get("completes_as_precopy"):
        return "%s (completes as pre-copy)" % method.label
    return "%s (post-copy after pass %d)" % (method.label, pred["switch_after_passes"])


def _describe(pred, limit_ms):
    """One sentence on a method's prediction."""
    label = _label(pred)
    text = "%s: %s, downtime %s" % (label[0].upper() + label[1:], _s(pred["total_time_ms"]), _ms(pred["downtime_ms"]))
    if not METHOD_BY_NAME[pred["method"]].postcopy or pred.get("completes_as_precopy"):
        text += ", %d passes" % pred["passes"]
    if pred["postcopy_exposure_ms"] > 0:
        text += ", ~%d remote page faults, guest slowed ~%s, %s exposed in post-copy" % (
            round(pred["postcopy_faults"]), _pct(pred["guest_slowdown_pct"]), _s(pred["postcopy_exposure_ms"]))
    elif pred["guest_slowdown_pct"] >= 1:
        text += ", guest slowed ~%s by dirty logging" % _pct(pred["guest_slowdown_pct"])
    if pred["downtime_ms"] > limit_ms:
        text += " (over the %s downtime limit)" % _ms(limit_ms)
    return text + "."


def _precopy_sentence(pred, inp, thresholds):
    """Why pre-copy does not converge, with the numbers; or its prediction when it does."""
    why = pred["why_not_converging"]
    if why is None:
        return _describe(pred, inp.downtime_limit_ms)
    limit = inp.downtime_limit_ms
    fit_mib = pred["switchover_threshold_mib"]
    if why == "dirty_rate_near_link":
        share = thresholds["precopy_max_dirty_pct_of_link"]
        return ("Dirty rate %s MiB/s %s %s %% of the %s MiB/s usable link and the %s MiB working set does not fit "
                "in one %s switchover (%s MiB): pre-copy cannot converge."
                % (_n(inp.dirty_rate_mib_s),
                   "exceeds" if inp.dirty_rate_mib_s > inp.bandwidth_mib_s * share / 100.0 else "reaches",
                   _n(share), _n(inp.bandwidth_mib_s), _n(inp.working_set_mib), _ms(limit), _n(fit_mib)))
    last = pred["rounds"][-1]
    if why == "stalled":
        return ("Pre-copy stalls: from pass %d on about %s MiB stays dirty after every pass (dirty rate %s MiB/s "
                "over a %s MiB working set), more than the %s MiB one %s switchover can take: it cannot converge."
                % (last["pass"], _n(last["dirtied_mib"]), _n(inp.dirty_rate_mib_s), _n(inp.working_set_mib),
                   _n(fit_mib), _ms(limit)))
    return ("Pre-copy would need more than %d passes (max_passes) to bring the dirty remainder (%s MiB after pass "
            "%d) under the %s MiB that fit in %s: treated as not converging."
            % (inp.max_passes, _n(last["dirtied_mib"]), last["pass"], _n(fit_mib), _ms(limit)))


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
        "disruption_ms": None if pred["guest_lost_ms"] is None else whole(_disruption(pred, weight)),
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


def _model_input(measures, params, opts):
    """Turn the measurements into the model's inputs; say where each came from."""
    memory = measures["memory_mib"]
    wws, rss = measures["wws_mib"], measures["rss_mib"]
    if measures["nonzero_mib"]:  # 0 is a failed measurement: a running guest's kernel alone is non-zero
        nonzero, nonzero_source = min(memory, max(measures["nonzero_mib"], wws or 0.0)), "nonzero_mib"
    elif rss:  # a resident size of 0 is a failed measurement, not an empty guest
        nonzero, nonzero_source = (min(memory, max(rss, wws or 0.0)),
                                   "rss_mib: no nonzero_mib, the QEMU process's resident memory counted")
    else:
        nonzero, nonzero_source = memory, "memory_mib: no usable nonzero_mib or rss_mib, every page counted"
    # walm_probe's wws_mib is what one window wrote (dirty rate x window), a lower bound of the pages a pass of
    # several seconds finds dirty: it cannot bound them. Without a real working-set estimate the guest may write
    # anywhere in its non-zero memory.
    if measures["working_set_mib"] is not None:
        working_set, ws_source = min(measures["working_set_mib"], nonzero), "working_set_mib"
    else:
        working_set, ws_source = nonzero, ("%s: no working_set_mib (wws_mib is only a lower bound)"
                                           % nonzero_source.split(":", maxsplit=1)[0])
    busy_share = min(float(measures["vcpus"]), measures["cpu_percent"] / 100.0)
    if measures["read_rate_mib_s"] is not None:
        reads, access_source = measures["read_rate_mib_s"], "dirty rate + read_rate_mib_s"
    else:
        reads = busy_share * params["assumed_read_rate_mib_s_per_busy_vcpu"]
        access_source = "dirty rate + assumed_read_rate_mib_s_per_busy_vcpu: no read_rate_mib_s"
    # The probe sees writes only: a guest that reads may read anything it has touched.
    if reads > 0:
        access_set, access_set_source = nonzero, "nonzero_mib: the guest reads, and may read all it touched"
    else:
        access_set, access_set_source = working_set, "working_set_mib: the guest does not read"
    bandwidth = opts["link_bandwidth_mib_s"]
    traffic = params["guest_traffic_share"] * (measures["net_rx_mib_s"] + measures["net_tx_mib_s"])
    floor = bandwidth * params["min_usable_link_pct"] / 100.0
    usable = max(bandwidth - traffic, floor)
    inp = ModelInput(memory_mib=memory, nonzero_mib=nonzero, working_set_mib=working_set,
                     dirty_rate_mib_s=measures["dirty_rate_mib_s"], access_set_mib=access_set,
                     access_rate_mib_s=measures["dirty_rate_mib_s"] + reads,
                     busy_vcpus=max(1.0, busy_share), bandwidth_mib_s=usable, latency_ms=opts["link_latency_ms"],
                     downtime_limit_ms=opts["downtime_limit_ms"], max_passes=opts["max_passes"])
    link = {"bandwidth_mib_s": bandwidth, "usable_bandwidth_mib_s": round(usable, 2),
            "guest_traffic_mib_s": round(traffic, 2), "latency_ms": opts["link_latency_ms"],
            "floored": bandwidth - traffic < floor}
    sources = {
        "memory_mib": memory, "nonzero_mib": round(inp.nonzero_mib, 1), "nonzero_source": nonzero_source,
        "working_set_mib": round(inp.working_set_mib, 1), "working_set_source": ws_source,
        "dirty_rate_mib_s": measures["dirty_rate_mib_s"], "access_rate_mib_s": round(inp.access_rate_mib_s, 2),
        "access_rate_source": access_source, "access_set_mib": round(inp.access_set_mib, 1),
        "access_set_source": access_set_source, "busy_vcpus": round(inp.busy_vcpus, 2),
        "switchover_threshold_mib": round(Model(inp, params).switchover_threshold_mib(), 1),
    }
    return inp, link, sources


def _options(params):
    """walm_decide's scalar options with their defaults (decide_defaults.OPTIONS), checked."""
    opts = dict(OPTIONS)
    opts.update(dict((k, v) for k, v in params.items() if k in OPTIONS and v is not None))
    if params.get("link_bandwidth_mib_s") is None:
        raise WalmError("link_bandwidth_mib_s is required: the migration link's bandwidth in MiB/s "
                        "(1 Gbit/s is about 119 MiB/s)")
    opts["link_bandwidth_mib_s"] = as_number(params["link_bandwidth_mib_s"], "link_bandwidth_mib_s", positive=True)
    opts["link_latency_ms"] = as_number(opts["link_latency_ms"], "link_latency_ms", minimum=0)
    opts["downtime_limit_ms"] = as_number(opts["downtime_limit_ms"], "downtime_limit_ms", positive=True)
    opts["safety_margin_pct"] = as_number(opts["safety_margin_pct"], "safety_margin_pct", minimum=0)
    opts["max_passes"] = int(as_number(opts["max_passes"], "max_passes", minimum=1))
    if opts["time_budget_s"] is not None:
        opts["time_budget_s"] = as_number(opts["time_budget_s"], "time_budget_s", positive=True)
    if opts["objective"] not in OBJECTIVES:
        raise WalmError("unknown objective %r; choose one of %s" % (opts["objective"], ", ".join(OBJECTIVES)))
    if not isinstance(opts["allow_postcopy"], bool):
        raise WalmError("allow_postcopy must be true or false")
    return opts


class _Choice(object):
    """The candidates of one decision and the rules to choose among them."""

    def __init__(self, pre, post, hybrids, opts, thresholds, mparams, inp):
        self.pre, self.post, self.opts, self.t, self.inp = pre, post, opts, thresholds, inp
        self.mparams = mparams
        self.limit = opts["downtime_limit_ms"]
        self.objective = opts["objective"]
        self.budgeted = OBJECTIVE_BY_NAME[self.objective].time_budget
        self.weight = thresholds["postcopy_exposure_weight"]
        allow_post = opts["allow_postcopy"]
        # The default time budget scales with the fastest allowed method (any method, if none is allowed).
        completing = ([p for p in [pre] + ([post] + hybrids if allow_post else []) if p["converges"]]
                      or [p for p in [post] + hybrids if p["converges"]])
        fastest = min(p["total_time_ms"] for p in completing)
        self.budget_ms = (opts["time_budget_s"] * 1000.0 if opts["time_budget_s"] is not None
                          else fastest * thresholds["balanced_budget_factor"])
        # The hybrid switch point: the best by the objective, else the least downtime, then the fastest.
        self.hybrid = (self.rank(hybrids)
                       or min(hybrids, key=lambda p: (p["downtime_ms"], p["total_time_ms"])))
        self.candidates = [pre] + ([post, self.hybrid] if allow_post else [])

    def rank(self, candidates):
        return _rank(candidates, self.objective, self.limit, self.budget_ms, self.t)

    def meets(self, pred):
        return bool(pred["converges"]) and pred["downtime_ms"] <= self.limit and (
            not self.budgeted or pred["total_time_ms"] <= self.budget_ms)

    def goal(self):
        if not self.budgeted:
            return "the VM off the host fastest within the %s downtime limit" % _ms(self.limit)
        return "the least disruption within the %s time budget and the %s downtime limit" % (
            _s(self.budget_ms), _ms(self.limit))

    def choose(self):
        """(prediction chosen, meets_goal, sentences explaining it)."""
        best = self.rank(self.candidates)
        if best is None:
            return self._fallback()
        sentences = [self._why(best)]
        safer = self._safety(best)
        if safer is not None:
            sentences.append(safer)
            best = self.pre
        return best, True, sentences

    def _why(self, best):
        if self.budgeted:
            return ("Objective %s: %s disrupts the guest least (downtime %s, slowdown %s, %s in post-copy) "
                    "among the methods that finish within the %s time budget%s."
                    % (self.objective, _label(best), _ms(best["downtime_ms"]), _pct(best["guest_slowdown_pct"]),
                       _s(best["postcopy_exposure_ms"]), _s(self.budget_ms),
                       "" if self.opts["time_budget_s"] is not None else
                       " (%s x the fastest method; set time_budget_s to choose it)"
                       % _n(self.t["balanced_budget_factor"])))
        band = _urgent_band(self.candidates, self.limit, self.t)
        if len(band) == 1:
            return ("Objective %s: %s is the fastest within the %s downtime limit (%s)."
                    % (self.objective, _label(best), _ms(self.limit), _s(best["total_time_ms"])))
        # A hybrid that completes as pre-copy is pre-copy: name it once.
        names = ["%s (%s)" % (_label(c), _s(c["total_time_ms"])) for c in band
                 if not (c.get("completes_as_precopy") and self.pre in band)]
        if len(names) == 1:
            return ("Objective %s: %s is the fastest within the %s downtime limit (%s)."
                    % (self.objective, _label(best), _ms(self.limit), _s(best["total_time_ms"])))
        return ("Objective %s: %s and %s are within %s %% of the fastest; %s disrupts the guest least "
                "(downtime %s, slowdown %s, %s in post-copy)."
                % (self.objective, ", ".join(names[:-1]), names[-1], _n(self.t["tmt_tolerance_pct"]), _label(best),
                   _ms(best["downtime_ms"]), _pct(best["guest_slowdown_pct"]), _s(best["postcopy_exposure_ms"])))

    def _safety(self, best):
        """A sentence when pre-copy replaces `best` because it is within the safety margin, else None."""
        pre, margin = self.pre, self.opts["safety_margin_pct"]
        if best is pre or best.get("completes_as_precopy") or not self.meets(pre):
            return None
        if not self.budgeted:
            if pre["total_time_ms"] > best["total_time_ms"] * (1 + margin / 100.0):
                return None
            mine, theirs = _s(pre["total_time_ms"]), _s(best["total_time_ms"])
        else:
            if _disruption(pre, self.weight) > _disruption(best, self.weight) * (1 + margin / 100.0):
                return None
            mine, theirs = _ms(_disruption(pre, self.weight)), _ms(_disruption(best, self.weight))
        return ("Pre-copy is within the %s %% safety margin of %s (%s against %s) and, unlike post-copy, can "
                "fall back to the source: pre-copy." % (_n(margin), _label(best), mine, theirs))

    def _fallback(self):
        """Nothing meets the goal: say so, choose what comes closest and say what will happen."""
        finishing = [c for c in self.candidates if c["converges"]]
        fitting = _within_limit(finishing, self.limit)
        if not finishing:
            return self.pre, False, [
                "No method meets the goal (%s): pre-copy is predicted not to converge and post-copy is not allowed "
                "(allow_postcopy: false). WALM runs pre-copy anyway: it will not finish on its own. walm_migrate's "
                "run-time check acts at the first pass that confirms it (a higher downtime limit up to "
                "max_downtime_limit_ms, throttling, or abort, which keeps the VM running on the source); without "
                "it timeout_s ends it and its timeout action applies. To move this VM, allow post-copy, reduce the guest's load or give the migration "
                "more bandwidth." % self.goal()]
        if not fitting:
            best = min(finishing, key=lambda p: (round(p["downtime_ms"], 3), METHOD_BY_NAME[p["method"]].safety_rank,
                                                 p["total_time_ms"]))
            return best, False, [
                "No method meets the goal: none keeps the downtime within the %s limit (the switchover alone takes "
                "about %s). Choosing %s, the least downtime (%s, total %s); a downtime_limit_ms of at least %s "
                "can be met."
                % (_ms(self.limit), _ms(self.mparams["switchover_overhead_ms"] + self.inp.latency_ms),
                   _label(best), _ms(best["downtime_ms"]), _s(best["total_time_ms"]),
                   _ms(math.ceil(best["downtime_ms"])))]
        best = _rank(fitting, "urgent", self.limit, self.budget_ms, self.t)
        return best, False, [
            "No method meets the goal: none finishes within the %s time budget (the fastest takes %s). Choosing "
            "the fastest within the %s downtime limit: %s (%s)."
            % (_s(self.budget_ms), _s(min(c["total_time_ms"] for c in fitting)), _ms(self.limit), _label(best),
               _s(best["total_time_ms"]))]


def _evidence(choice, cls, measures, link, sources, thresholds, mparams):
    """The sentences behind the decision: link, workload, memory, and each method's prediction."""
    inp, limit = choice.inp, choice.limit
    out = []
    if link["guest_traffic_mib_s"] > 0:
        out.append("The guest's own traffic (%s MiB/s tx + %s MiB/s rx) shares the link: %s of the %s MiB/s link "
                   "is usable for the migration%s."
                   % (_n(measures["net_tx_mib_s"]), _n(measures["net_rx_mib_s"]), _n(link["usable_bandwidth_mib_s"]),
                      _n(link["bandwidth_mib_s"]),
                      " (floored at %s %% of the link: TCP still gives the migration a share)"
                      % _n(mparams["min_usable_link_pct"]) if link["floored"] else ""))
    out.append(_class_sentence(cls, measures, thresholds))
    out.append("Memory: %s MiB of the %s MiB RAM to send (from %s), working set %s MiB (from %s)."
               % (_n(inp.nonzero_mib), _n(inp.memory_mib), sources["nonzero_source"], _n(inp.working_set_mib),
                  sources["working_set_source"]))
    out.append(_precopy_sentence(choice.pre, inp, thresholds))
    if choice.opts["allow_postcopy"]:
        out.append(_describe(choice.post, limit))
        out.append(_describe(choice.hybrid, limit))
    else:
        out.append("Post-copy and hybrid are not allowed (allow_postcopy: false).")
    return out


def _apply_rule(rule, choice, model, chosen):
    """The prediction an operator rule forces, whether it meets the goal, and the sentence saying so."""
    forced = {"precopy": choice.pre, "postcopy": choice.post, "hybrid": choice.hybrid}[rule["method"]]
    if rule["method"] == "hybrid" and rule["switch_after_passes"]:
        forced = model.hybrid(rule["switch_after_passes"], choice.t["precopy_max_dirty_pct_of_link"])
    text = "Operator rule %d (`%s`) chooses %s%s" % (rule["index"], rule["when"], METHOD_BY_NAME[rule["method"]].label,
                                                     ": " + rule["reason"] if rule["reason"] else "")
    text = text.rstrip(".") + "."
    if forced is not chosen:
        text += " The model alone would choose %s." % _label(chosen)
    ok = choice.meets(forced)
    if not forced["converges"]:
        text += (" It does not meet the goal: pre-copy is predicted not to converge. walm_migrate's run-time check "
                 "(adapt) acts at the first pass that confirms it (post-copy where allowed, else a higher downtime "
                 "limit, throttling or abort, which keeps the VM running on the source); without it timeout_s ends "
                 "the migration and its timeout action applies.")
    elif forced["downtime_ms"] > choice.limit:
        text += " It does not meet the goal: predicted downtime %s exceeds the %s limit." % (
            _ms(forced["downtime_ms"]), _ms(choice.limit))
    elif not ok:
        text += " It does not meet the goal: %s exceeds the %s time budget." % (
            _s(forced["total_time_ms"]), _s(choice.budget_ms))
    return forced, ok, text


def check_options(params):
    """walm_decide's options other than the probe, checked as decide() checks them (WalmError naming the fix), so
    that a caller deciding for many VMs refuses bad options once, before any VM."""
    opts = _options(params)
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
    opts = _options(params)
    thresholds = read_thresholds(params.get("thresholds"))
    mparams = model_params(params.get("model"))
    rules = compile_rules(params.get("rules"), opts["allow_postcopy"])
    probe = params.get("probe")
    measures = read_probe(probe)

    inp, link, sources = _model_input(measures, mparams, opts)
    model = Model(inp, mparams)
    cls = classify(measures, thresholds)
    share = thresholds["precopy_max_dirty_pct_of_link"]
    choice = _Choice(model.precopy(share), model.postcopy(), model.hybrids(share), opts, thresholds, mparams, inp)
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
        best, meets_goal, text = _apply_rule(rule, choice, model, best)
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
        "reasons": decision + _evidence(choice, cls, measures, link, sources, thresholds, mparams),
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
