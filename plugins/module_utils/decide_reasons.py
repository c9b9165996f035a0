# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""How walm_decide writes its reasons: numbers as an operator reads them, each method's prediction, the
workload's class, and the evidence behind a decision."""

from __future__ import absolute_import, division, print_function

from .methods import METHOD_BY_NAME


def num(x):
    """A number as an operator reads it: three significant digits, no exponent."""
    if x is None:
        return "?"
    if abs(x) >= 100:
        return "%d" % round(x)
    if abs(x) < 1e-3:
        return "0"
    return "%.3g" % x


def secs(ms):
    return "%s s" % num(ms / 1000.0)


def msecs(ms):
    return "%d ms" % round(ms)


def pct(x):
    return "%s %%" % ("%.0f" % x if x >= 10 else "%.1f" % x)


def label_of(pred):
    method = METHOD_BY_NAME[pred["method"]]
    if not method.switch_point:
        return method.label
    if pred.get("completes_as_precopy"):
        return "%s (completes as pre-copy)" % method.label
    return "%s (post-copy after pass %d)" % (method.label, pred["switch_after_passes"])


def describe_prediction(pred, limit_ms):
    """One sentence on a method's prediction."""
    label = label_of(pred)
    text = "%s: %s, downtime %s" % (label[0].upper() + label[1:], secs(pred["total_time_ms"]),
                                    msecs(pred["downtime_ms"]))
    if not METHOD_BY_NAME[pred["method"]].postcopy or pred.get("completes_as_precopy"):
        text += ", %d passes" % pred["passes"]
    if pred["postcopy_exposure_ms"] > 0:
        text += ", ~%d remote page faults, guest slowed ~%s, %s exposed in post-copy" % (
            round(pred["postcopy_faults"]), pct(pred["guest_slowdown_pct"]), secs(pred["postcopy_exposure_ms"]))
    elif pred["guest_slowdown_pct"] >= 1:
        text += ", guest slowed ~%s by dirty logging" % pct(pred["guest_slowdown_pct"])
    if pred["downtime_ms"] > limit_ms:
        text += " (over the %s downtime limit)" % msecs(limit_ms)
    return text + "."


def precopy_sentence(pred, inp, thresholds):
    """Why pre-copy does not converge, with the numbers; or its prediction when it does."""
    why = pred["why_not_converging"]
    if why is None:
        return describe_prediction(pred, inp.downtime_limit_ms)
    limit = inp.downtime_limit_ms
    fit_mib = pred["switchover_threshold_mib"]
    if why == "dirty_rate_near_link":
        share = thresholds["precopy_max_dirty_pct_of_link"]
        return ("Dirty rate %s MiB/s %s %s %% of the %s MiB/s usable link and the %s MiB working set does not fit "
                "in one %s switchover (%s MiB): pre-copy cannot converge."
                % (num(inp.dirty_rate_mib_s),
                   "exceeds" if inp.dirty_rate_mib_s > inp.bandwidth_mib_s * share / 100.0 else "reaches",
                   num(share), num(inp.bandwidth_mib_s), num(inp.working_set_mib), msecs(limit), num(fit_mib)))
    last = pred["rounds"][-1]
    if why == "stalled":
        return ("Pre-copy stalls: from pass %d on about %s MiB stays dirty after every pass (dirty rate %s MiB/s "
                "over a %s MiB working set), more than the %s MiB one %s switchover can take: it cannot converge."
                % (last["pass"], num(last["dirtied_mib"]), num(inp.dirty_rate_mib_s), num(inp.working_set_mib),
                   num(fit_mib), msecs(limit)))
    return ("Pre-copy would need more than %d passes (max_passes) to bring the dirty remainder (%s MiB after pass "
            "%d) under the %s MiB that fit in %s: treated as not converging."
            % (inp.max_passes, num(last["dirtied_mib"]), last["pass"], num(fit_mib), msecs(limit)))


def class_sentence(cls, measures, thresholds):
    network = measures["net_rx_mib_s"] + measures["net_tx_mib_s"]

    def measure(kind, op):
        if kind == "cpu":
            return "CPU %s %% %s %s %%" % (num(measures["cpu_percent"]), op, num(thresholds["cpu_percent"]))
        if kind == "memory":
            return "dirty rate %s MiB/s %s %s MiB/s" % (num(measures["dirty_rate_mib_s"]), op,
                                                        num(thresholds["dirty_rate_mib_s"]))
        return "network %s MiB/s %s %s MiB/s" % (num(network), op, num(thresholds["network_mib_s"]))

    if cls["dominant"] == "idle":
        return "Workload: idle (%s); %s." % (", ".join(measure(k, "<") for k in ("cpu", "memory", "network")),
                                             cls["access"])
    parts = ["%s-intensive (%s)" % ("CPU" if k == "cpu" else k, measure(k, ">=")) for k in cls["intensity"]]
    text = "Workload: " + parts[0]
    if len(parts) > 1:
        text += ", also " + " and ".join(parts[1:])
    text += "; " + cls["access"]
    if cls["write_share_pct"] is not None:
        text += " (%s %% of page accesses are writes)" % num(cls["write_share_pct"])
    return text + "."


def evidence(choice, cls, measures, link, sources, thresholds, mparams):
    """The sentences behind the decision: link, workload, memory, and each method's prediction."""
    inp, limit = choice.inp, choice.limit
    out = []
    if link["guest_traffic_mib_s"] > 0:
        out.append("The guest's own traffic (%s MiB/s tx + %s MiB/s rx) shares the link: %s of the %s MiB/s link "
                   "is usable for the migration%s."
                   % (num(measures["net_tx_mib_s"]), num(measures["net_rx_mib_s"]),
                      num(link["usable_bandwidth_mib_s"]), num(link["bandwidth_mib_s"]),
                      " (floored at %s %% of the link: TCP still gives the migration a share)"
                      % num(mparams["min_usable_link_pct"]) if link["floored"] else ""))
    out.append(class_sentence(cls, measures, thresholds))
    out.append("Memory: %s MiB of the %s MiB RAM to send (from %s), working set %s MiB (from %s)."
               % (num(inp.nonzero_mib), num(inp.memory_mib), sources["nonzero_source"], num(inp.working_set_mib),
                  sources["working_set_source"]))
    out.append(precopy_sentence(choice.pre, inp, thresholds))
    if choice.opts["allow_postcopy"]:
        out.append(describe_prediction(choice.post, limit))
        out.append(describe_prediction(choice.hybrid, limit))
    else:
        out.append("Post-copy and hybrid are not allowed (allow_postcopy: false).")
    return out
