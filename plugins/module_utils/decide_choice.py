# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The choice among the predicted methods by the objective, and the sentences that explain it.

Objectives (docs/decide.md):
- `urgent` (the default: evacuating a failing host): the VM off the host fastest within the downtime limit.
  Methods within tmt_tolerance_pct of the fastest count as equally fast; among them the least disruptive wins.
- `balanced` (planned maintenance): the least disruption among the methods that finish within the time budget.
Disruption = downtime + guest time lost to slowdown + postcopy_exposure_weight x time spent in post-copy (a link
failure then costs the VM unless recovered). Post-copy cannot fall back to the source, so pre-copy wins whenever
it is within safety_margin_pct of the chosen method (by time for `urgent`, by disruption for `balanced`).
"""

from __future__ import absolute_import, division, print_function

import math

from .decide_defaults import OBJECTIVE_BY_NAME
from .decide_reasons import label_of, msecs, num, pct, secs
from .methods import METHOD_BY_NAME


def disruption(pred, weight):
    return pred["guest_lost_ms"] + weight * pred["postcopy_exposure_ms"]


def _least_disruptive(weight):
    """Sort key: least disruption, then the fastest, then the safest method, then the latest switch."""
    return lambda p: (round(disruption(p, weight), 3), round(p["total_time_ms"], 3),
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


class Choice(object):
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
            return "the VM off the host fastest within the %s downtime limit" % msecs(self.limit)
        return "the least disruption within the %s time budget and the %s downtime limit" % (
            secs(self.budget_ms), msecs(self.limit))

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
                    % (self.objective, label_of(best), msecs(best["downtime_ms"]), pct(best["guest_slowdown_pct"]),
                       secs(best["postcopy_exposure_ms"]), secs(self.budget_ms),
                       "" if self.opts["time_budget_s"] is not None else
                       " (%s x the fastest method; set time_budget_s to choose it)"
                       % num(self.t["balanced_budget_factor"])))
        band = _urgent_band(self.candidates, self.limit, self.t)
        if len(band) == 1:
            return ("Objective %s: %s is the fastest within the %s downtime limit (%s)."
                    % (self.objective, label_of(best), msecs(self.limit), secs(best["total_time_ms"])))
        # A hybrid that completes as pre-copy is pre-copy: name it once.
        names = ["%s (%s)" % (label_of(c), secs(c["total_time_ms"])) for c in band
                 if not (c.get("completes_as_precopy") and self.pre in band)]
        if len(names) == 1:
            return ("Objective %s: %s is the fastest within the %s downtime limit (%s)."
                    % (self.objective, label_of(best), msecs(self.limit), secs(best["total_time_ms"])))
        return ("Objective %s: %s and %s are within %s %% of the fastest; %s disrupts the guest least "
                "(downtime %s, slowdown %s, %s in post-copy)."
                % (self.objective, ", ".join(names[:-1]), names[-1], num(self.t["tmt_tolerance_pct"]),
                   label_of(best), msecs(best["downtime_ms"]), pct(best["guest_slowdown_pct"]),
                   secs(best["postcopy_exposure_ms"])))

    def _safety(self, best):
        """A sentence when pre-copy replaces `best` because it is within the safety margin, else None."""
        pre, margin = self.pre, self.opts["safety_margin_pct"]
        if best is pre or best.get("completes_as_precopy") or not self.meets(pre):
            return None
        if not self.budgeted:
            if pre["total_time_ms"] > best["total_time_ms"] * (1 + margin / 100.0):
                return None
            mine, theirs = secs(pre["total_time_ms"]), secs(best["total_time_ms"])
        else:
            if disruption(pre, self.weight) > disruption(best, self.weight) * (1 + margin / 100.0):
                return None
            mine, theirs = msecs(disruption(pre, self.weight)), msecs(disruption(best, self.weight))
        return ("Pre-copy is within the %s %% safety margin of %s (%s against %s) and, unlike post-copy, can "
                "fall back to the source: pre-copy." % (num(margin), label_of(best), mine, theirs))

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
                % (msecs(self.limit), msecs(self.mparams["switchover_overhead_ms"] + self.inp.latency_ms),
                   label_of(best), msecs(best["downtime_ms"]), secs(best["total_time_ms"]),
                   msecs(math.ceil(best["downtime_ms"])))]
        best = _rank(fitting, "urgent", self.limit, self.budget_ms, self.t)
        return best, False, [
            "No method meets the goal: none finishes within the %s time budget (the fastest takes %s). Choosing "
            "the fastest within the %s downtime limit: %s (%s)."
            % (secs(self.budget_ms), secs(min(c["total_time_ms"] for c in fitting)), msecs(self.limit),
               label_of(best), secs(best["total_time_ms"]))]
