# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Run-time adaptation: checks a pre-copy against the decision's prediction at every pass boundary and says what
to do when it will not converge in time.

Pure (no I/O): the migration engine feeds it query-migrate snapshots and carries out the actions it returns.

At each pass boundary (QEMU's dirty-sync-count grew) the last pass is measured from the snapshots:
- sent: bytes transferred during the pass; throughput: sent / the pass's duration;
- remainder: what the sync found dirty (query-migrate's `remaining` right after it), i.e. what the guest wrote
  while the pass ran; the dirty rate the migration sees is remainder / duration (or QEMU's dirty-pages-rate,
  whichever is higher: both count a page once however often it was written);
- shrink ratio rho = remainder / sent. Each pass sends what the previous one left, so the remainder shrinks by rho
  per pass while the guest's behaviour holds. QEMU switches over once the remainder fits the downtime limit at the
  measured throughput (threshold = throughput * limit).

A pre-copy has diverged when a pass no longer shrinks the remainder (rho >= 1 - min_progress_pct / 100), or when
the remaining passes, projected geometrically from rho, end past the budget: the decision's predicted total time
with its slack (max of predicted * (1 + slack_pct / 100) and predicted + slack_ms), or the objective's time
budget if that is longer. Without a prediction only the first rule applies.

On divergence the next action of the policy is taken, in its order:
- postcopy: migrate-start-postcopy (only where postcopy-ram was negotiated on both sides);
- downtime: raise the downtime limit to what would let the remainder go in one switchover, in steps of at least
  double, up to the operator's ceiling max_downtime_limit_ms; exhausted at the ceiling;
- throttle: QEMU's auto-converge (set before the start where this action may be needed, since QEMU does not take
  capabilities during a migration) slows the vCPUs when passes stop shrinking; the adaptation gives it
  throttle_passes passes; exhausted after that;
- abort: cancel the migration; the VM keeps running on the source.
A hybrid uses the same check to switch early: when a pass stops shrinking the remainder (or the projection leaves
the budget) it switches to post-copy before its fixed switch_after_passes.
"""

from __future__ import absolute_import, division, print_function

import math

from .errors import WalmError
from .methods import METHOD_BY_NAME

MIB = 1024.0 * 1024.0
ACTIONS = ("postcopy", "downtime", "throttle", "abort")
DEFAULT_ACTIONS = ACTIONS
# A pass that shrinks the remainder by less than this share is not making progress.
MIN_PROGRESS_PCT = 10.0
# How far a pre-copy may run past the decision's predicted total time before it counts as diverged.
SLACK_PCT = 50.0
SLACK_MS = 2000.0
# Passes given to auto-converge's throttling before the next action.
THROTTLE_PASSES = 3
# QEMU decides the switchover from its estimate of the remainder's transfer time, which leaves out the data already
# in flight (socket buffers, the link's queue) and the switchover itself; the guest-visible downtime came out
# 2-10 % over the limit in the lab. QEMU is given the limit less this share, so the guest sees at most the limit.
DOWNTIME_HEADROOM_PCT = 20.0
# Passes that sent less than this carry no information about the rates.
MIN_PASS_BYTES = 1 * MIB
# Geometric projections beyond this many passes count as "does not converge".
MAX_PROJECTED_PASSES = 100


def qemu_downtime_limit_ms(downtime_limit_ms, headroom_pct=DOWNTIME_HEADROOM_PCT):
    """The downtime-limit given to QEMU so that the guest-visible downtime stays within downtime_limit_ms."""
    return max(1, int(math.floor(downtime_limit_ms * (1.0 - headroom_pct / 100.0))))


def check_actions(actions):
    """The adaptation policy as a tuple of known action names, in order; refuses anything else."""
    if actions is None:
        return DEFAULT_ACTIONS
    if isinstance(actions, str):
        actions = [a.strip() for a in actions.split(",") if a.strip()]
    actions = tuple(actions)
    bad = [a for a in actions if a not in ACTIONS]
    if bad or len(set(actions)) != len(actions):
        raise WalmError("adaptation_actions must list each of %s at most once, in the order to try them; got %r"
                        % (", ".join(ACTIONS), list(actions)))
    return actions


def _num(expect, key):
    value = (expect or {}).get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise WalmError("expect.%s must be a number, got %r (pass walm_decide's expectation)" % (key, value))
    if not math.isfinite(value) or value < 0:
        raise WalmError("expect.%s must be a finite number >= 0, got %r" % (key, value))
    return value


def check_expectation(expect):
    """The decision's prediction as the monitor uses it: {method, converges, total_time_ms, passes,
    dirty_rate_mib_s, budget_ms} (numbers or None). expect may be None (no prediction)."""
    if expect is None:
        return None
    if not isinstance(expect, dict):
        raise WalmError("expect must be a dictionary (walm_decide's expectation), got %r" % (expect,))
    out = dict((k, _num(expect, k)) for k in ("total_time_ms", "passes", "dirty_rate_mib_s", "budget_ms",
                                              "downtime_ms"))
    out["method"] = expect.get("method")
    out["converges"] = expect.get("converges")
    return out


def budget_ms(expect, slack_pct=SLACK_PCT, slack_ms=SLACK_MS):
    """How long the pre-copy may take before it counts as diverged; None without a prediction."""
    if not expect:
        return None
    candidates = []
    total = expect.get("total_time_ms")
    if total is not None and expect.get("converges") is not False:
        candidates.append(max(total * (1.0 + slack_pct / 100.0), total + slack_ms))
    if expect.get("budget_ms") is not None:
        candidates.append(expect["budget_ms"])
    return max(candidates) if candidates else None


def measure_pass(prev, cur, qemu_limit_ms):
    """The last pass, from the snapshot at its start (prev) and the first one after its end (cur).

    Snapshots: t_ms, pass, transferred_bytes, remaining_bytes, dirty_pages_rate, page_size. Returns None when the
    pass carried too little data to measure."""
    dt_s = (cur["t_ms"] - prev["t_ms"]) / 1000.0
    sent = cur["transferred_bytes"] - prev["transferred_bytes"]
    if dt_s <= 0 or sent < MIN_PASS_BYTES:
        return None
    remaining = float(cur["remaining_bytes"])
    throughput = sent / dt_s
    qemu_rate = (cur.get("dirty_pages_rate") or 0) * (cur.get("page_size") or 4096)
    rho = remaining / sent
    threshold = throughput * qemu_limit_ms / 1000.0
    return {
        "pass": cur["pass"] - 1,
        "t_ms": cur["t_ms"],
        "pass_ms": int(round(dt_s * 1000)),
        "sent_mib": round(sent / MIB, 1),
        "remaining_mib": round(remaining / MIB, 1),
        "throughput_mib_s": round(throughput / MIB, 1),
        "dirty_rate_mib_s": round(max(remaining / dt_s, qemu_rate) / MIB, 1),
        "shrink_ratio": round(rho, 3),
        "switchover_threshold_mib": round(threshold / MIB, 1),
        "_remaining": remaining, "_throughput": throughput, "_rho": rho, "_threshold": threshold,
    }


def project(m, elapsed_ms):
    """(passes still needed, projected total time in ms) from the last pass; (None, None) if it never ends."""
    remaining, rho, threshold, throughput = m["_remaining"], m["_rho"], m["_threshold"], m["_throughput"]
    if remaining <= threshold:
        return 0, elapsed_ms + remaining / throughput * 1000.0
    if rho >= 1.0:
        return None, None
    if rho <= 0.0 or threshold <= 0.0:
        passes = 1
    else:
        passes = int(math.ceil(math.log(threshold / remaining) / math.log(rho)))
    if passes > MAX_PROJECTED_PASSES:
        return None, None
    more_s = remaining / throughput * (1.0 - rho ** passes) / (1.0 - rho)
    return passes, elapsed_ms + more_s * 1000.0


class Monitor(object):
    """Watches one migration's snapshots; observe() returns the actions to carry out now (usually none).

    method: one that adapts (methods.py: precopy, hybrid; post-copy has no pre-copy to check). A method that
    switches to post-copy anyway switches early instead of the actions. postcopy_possible: postcopy-ram was negotiated.
    throttle_possible: auto-converge is on. The downtime limits are the operator's (not QEMU's) values.
    """

    def __init__(self, method, expect=None, actions=DEFAULT_ACTIONS, downtime_limit_ms=300,
                 max_downtime_limit_ms=None, postcopy_possible=False, throttle_possible=False,
                 headroom_pct=DOWNTIME_HEADROOM_PCT, min_progress_pct=MIN_PROGRESS_PCT, slack_pct=SLACK_PCT,
                 slack_ms=SLACK_MS, throttle_passes=THROTTLE_PASSES):
        self.method = method
        self.expect = check_expectation(expect)
        self.actions = check_actions(actions)
        self.limit_ms = downtime_limit_ms
        self.ceiling_ms = max(downtime_limit_ms, max_downtime_limit_ms or downtime_limit_ms)
        self.postcopy_possible = postcopy_possible
        self.throttle_possible = throttle_possible
        self.headroom_pct = headroom_pct
        self.min_progress_pct = min_progress_pct
        self.throttle_passes = throttle_passes
        self.budget_ms = budget_ms(self.expect, slack_pct, slack_ms)
        self.adaptations = []
        self.passes = []  # every measured pass (public fields)
        self._boundary = None
        self._throttle_until = None
        self.done = not (method in METHOD_BY_NAME and METHOD_BY_NAME[method].adapts)

    @property
    def qemu_limit_ms(self):
        return qemu_downtime_limit_ms(self.limit_ms, self.headroom_pct)

    def _usable(self, action):
        if action == "postcopy":
            return self.postcopy_possible
        if action == "downtime":
            return self.limit_ms < self.ceiling_ms
        if action == "throttle":
            return self.throttle_possible and self._throttle_until is None
        return True

    def observe(self, snap):
        """snap: a query-migrate snapshot (t_ms, status, pass, transferred_bytes, remaining_bytes,
        dirty_pages_rate, page_size). Returns a list of actions: {"action": postcopy | downtime | throttle | abort,
        "downtime_limit_ms", "qemu_downtime_limit_ms" (downtime only)}; each is also recorded in adaptations."""
        if self.done or snap.get("status") != "active":
            return []
        if self._boundary is None:
            # Pass 1 starts with the migration (dirty-sync-count 1): measured from nothing sent at t=0.
            self._boundary = {"t_ms": 0, "pass": 1, "transferred_bytes": 0}
        if snap["pass"] <= self._boundary["pass"]:
            return []
        prev, self._boundary = self._boundary, snap
        m = measure_pass(prev, snap, self.qemu_limit_ms)
        if m is None:
            return []
        passes, projected_ms = project(m, snap["t_ms"])
        public = dict((k, v) for k, v in m.items() if not k.startswith("_"))
        public["projected_total_ms"] = None if projected_ms is None else int(round(projected_ms))
        public["projected_passes"] = passes
        self.passes.append(public)
        stalled = m["_rho"] >= 1.0 - self.min_progress_pct / 100.0 and m["_remaining"] > m["_threshold"]
        over = projected_ms is None or (self.budget_ms is not None and projected_ms > self.budget_ms)
        if not (stalled or over):
            return []
        if self._throttle_until is not None and m["pass"] < self._throttle_until:
            return []  # auto-converge is still being given its passes
        if stalled:
            why = ("pass %d shrank the remainder only to %.0f %% (%.1f MiB dirtied while %.1f MiB were sent; the "
                   "guest dirties %.1f MiB/s against %.1f MiB/s of throughput)"
                   % (m["pass"], 100 * m["_rho"], m["remaining_mib"], m["sent_mib"], m["dirty_rate_mib_s"],
                      m["throughput_mib_s"]))
        elif projected_ms is None:
            why = ("at the dirty rate of pass %d (%.1f MiB/s against %.1f MiB/s of throughput) pre-copy would need "
                   "more than %d passes" % (m["pass"], m["dirty_rate_mib_s"], m["throughput_mib_s"],
                                            MAX_PROJECTED_PASSES))
        else:
            why = ("after pass %d pre-copy is projected to end at %.1f s (%d more passes at %.1f MiB/s dirtied), "
                   "past the %.1f s budget" % (m["pass"], projected_ms / 1000.0, passes, m["dirty_rate_mib_s"],
                                               self.budget_ms / 1000.0))
        if METHOD_BY_NAME[self.method].postcopy:  # it was going to switch anyway
            return [self._record(m, "postcopy", "%s switches early: %s" % (self.method, why))]
        for action in self.actions:
            if not self._usable(action):
                continue
            if action == "downtime":
                return [self._raise_downtime(m, why)]
            if action == "throttle":
                self._throttle_until = m["pass"] + self.throttle_passes
                return [self._record(m, "throttle", why + "; auto-converge throttles the vCPUs, given %d passes"
                                     % self.throttle_passes)]
            return [self._record(m, action, why)]
        return []

    def _raise_downtime(self, m, why):
        needed_ms = m["_remaining"] / m["_throughput"] * 1000.0 / (1.0 - self.headroom_pct / 100.0)
        new = min(self.ceiling_ms, max(2 * self.limit_ms, int(math.ceil(needed_ms))))
        old, self.limit_ms = self.limit_ms, new
        self._record(m, "downtime", "%s; downtime limit raised from %d ms to %d ms (ceiling %d ms)"
                     % (why, old, new, self.ceiling_ms))
        # The recorded adaptation says which limit each step set, as the action handed to the engine does.
        self.adaptations[-1].update(downtime_limit_ms=new, qemu_downtime_limit_ms=self.qemu_limit_ms)
        return dict(self.adaptations[-1])

    def _record(self, m, action, why):
        if action in ("postcopy", "abort"):
            self.done = True
        exp = self.expect or {}
        entry = {
            "t_ms": m["t_ms"], "pass": m["pass"], "action": action, "reason": why,
            "measured": {"dirty_rate_mib_s": m["dirty_rate_mib_s"], "throughput_mib_s": m["throughput_mib_s"],
                         "remaining_mib": m["remaining_mib"], "shrink_ratio": m["shrink_ratio"]},
            "predicted": {"dirty_rate_mib_s": exp.get("dirty_rate_mib_s"),
                          "total_time_ms": exp.get("total_time_ms"), "passes": exp.get("passes"),
                          "budget_ms": None if self.budget_ms is None else int(round(self.budget_ms))},
        }
        self.adaptations.append(entry)
        return dict(entry)
