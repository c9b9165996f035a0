# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The performance model behind walm_decide: total migration time, downtime, post-copy faults, guest slowdown and
post-copy exposure of pre-copy, post-copy and hybrid, predicted from one probe of the VM and the link.

Sizes are MiB, rates MiB/s, times ms (seconds inside the arithmetic). B is the usable link bandwidth (the link
less the guest's own traffic), D the dirty rate, W the working set, N the non-zero memory (what the guest has
touched; untouched pages go as zero pages, a header each), M the guest's RAM.

Pre-copy, as QEMU runs it (ram_save_iterate / migration_iteration_run):
- Pass 1 sends the N MiB of non-zero pages and a header for each of the M - N MiB of zero pages; it takes
  max(wire(N) / B, M / zero_page_scan_mib_s) + round_overhead_ms (the zero scan overlaps the sending).
- Pages written during a pass are resent in the next one. Writes spread over the working set, so a pass of t
  seconds leaves dirty(t) = W * (1 - exp(-D * t / W)) MiB to resend: D * t while that is small against W, never
  more than W (the pages a guest rewrites are sent once per pass however often they are written).
- QEMU switches over when what is dirty fits the downtime limit at its estimate of the link's speed
  (remainder <= switchover_threshold_pct of B * limit);
  downtime = (remainder + inflight_mib) / B + switchover_overhead_ms + the link latency: the guest also waits
  for what the source wrote before it stopped and the link has not carried yet (socket buffers, the link's
  queue), which the passes' time already counts, so TMT = setup + the passes + remainder / B + overhead.
- It does not converge when a pass no longer shrinks the remainder (precopy_min_progress_pct), when it would need
  more than max_passes passes, or when D reaches precopy_max_dirty_pct_of_link of B while W does not fit in one
  switchover: real dirtying is bursty and the lab's heavy writers never converge there.
- Dirty logging costs the guest a write fault per page on its first write after each bitmap sync
  (precopy_write_fault_us): pre-copy's only slowdown in the model.

Post-copy (the research's vanilla post-copy: switch right after the first pass has started):
- The guest stops for postcopy_switchover_ms plus the discard bitmap (M / page / 8 bytes), then runs on the
  destination while the source streams the N MiB once: TMT = setup + downtime + wire(N) / B. Every page is sent
  once, so post-copy finishes at the link's limit.
- Remote faults: the guest touches memory at A MiB/s (the dirty rate plus the read rate; without a measured read
  rate, assumed_read_rate_mib_s_per_busy_vcpu per busy vCPU) over its access set S (the working set W for a guest
  that only writes; all of N for one that also reads, since the probe sees writes only). A missing page of S
  arrives at a uniformly random time within the stream; the guest touches each page of S at rate a / n_S (a in
  pages/s, n_S pages in S), so a missing page is faulted before it arrives with probability
  1 - (1 - exp(-x)) / x, x = a * T / n_S. Each fault stalls a busy vCPU for postcopy_fault_service_ms plus the
  link's round trip. A stalled guest touches fewer pages, so the fault count and the stall share s are solved
  together: s = faults(a * (1 - s)) * fault_ms / (busy vCPUs * T).
- Guest slowdown = the share of the guest's running time lost to stalls; exposure = the time in post-copy, when a
  link failure costs the VM unless recovered (T).

Hybrid: k pre-copy passes exactly as above, then post-copy of what the k-th pass left dirty (all of it in the
working set, so every page of it is missing at the destination). A pre-copy that converges within k passes
completes as pre-copy (QEMU switches at the next iteration only). The policy chooses k.

Where the constants and the checks come from (QEMU 10.0.2 under TCG, 512 MiB guests, a link shaped to 1 Gbit/s
that measured 119.7 MB/s = 114 MiB/s; ../shared/ANCHORS.md, ../shared/LAB.md, issue 4):
- An idle guest pre-copies in ~0.75 s sending ~86 MiB (zero pages skipped): with N = 86 the model gives
  0.81 s and 87 MiB at 114 MiB/s (0.78 s at 119 MiB/s), 2 passes (the 0.125 s zero scan hides under the send).
- Post-copy finishes at the link's limit, ~2.2-2.3 s for ~276 MiB touched: the model gives 2.47 s at
  114 MiB/s, 2.37 s at 119 MiB/s.
- A heavy writer (~120 MiB/s dirtied over a 256 MiB set) never converges in pre-copy (91 passes in 80 s on QEMU
  10; ~27 s when it did on 7.2): the model says it does not converge (dirty rate >= 90 % of the link), and in
  post-copy it stalls ~2.3 s of its ~2.5 s (94 %; measured: stalls ~2 s, loses > 75 % of its progress) with
  ~2300 faults.
- A read-mostly guest with a large working set takes ~3 s in every method, thousands of remote faults in
  post-copy and none in hybrid (one pre-copy pass, which converges): the model gives ~3 s for each method,
  ~2500-2900 faults in post-copy and hybrid completing as pre-copy after one pass.
- postcopy_fault_service_ms (0.8) is set from those fault counts: a serial fault path that allows a few
  thousand faults in 2-3 s. setup_ms, round_overhead_ms and switchover_overhead_ms are typical QEMU
  setup-time / per-pass / downtime figures, to be refined by the lab calibration (issue 4).
"""

from __future__ import absolute_import, division, print_function

import math

from .decide_defaults import MODEL
from .errors import WalmError

MIB = 1024.0 * 1024.0

# Model parameters that must be strictly positive (the others may be zero).
POSITIVE_PARAMS = ("page_size_bytes", "zero_page_scan_mib_s")


def as_number(value, name, minimum=None, positive=False, allow_none=False):
    """A number from operator or probe input, or a WalmError naming the field and what it needs to be."""
    if value is None:
        if allow_none:
            return None
        raise WalmError("%s is missing: it must be a number" % name)
    if isinstance(value, bool):
        raise WalmError("%s must be a number, not %r" % (name, value))
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise WalmError("%s must be a number, not %r" % (name, value))
    if math.isnan(number) or math.isinf(number):
        raise WalmError("%s must be a finite number, not %r" % (name, value))
    if positive and number <= 0:
        raise WalmError("%s must be greater than 0 (got %s)" % (name, value))
    if minimum is not None and number < minimum:
        raise WalmError("%s must be at least %s (got %s)" % (name, minimum, value))
    return number


def model_params(overrides=None):
    """MODEL with the operator's overrides, each checked: unknown names and bad values are refused."""
    params = dict(MODEL)
    if overrides is None:
        return params
    if not isinstance(overrides, dict):
        raise WalmError("model must be a dict of model parameters (known: %s)" % ", ".join(sorted(MODEL)))
    for key, value in sorted(overrides.items()):
        if key not in MODEL:
            raise WalmError("unknown model parameter %r; known parameters: %s" % (key, ", ".join(sorted(MODEL))))
        params[key] = as_number(value, "model.%s" % key, minimum=0, positive=key in POSITIVE_PARAMS)
    return params


class ModelInput(object):
    """What the model needs about the VM and the link, in MiB, MiB/s and ms."""

    def __init__(self, memory_mib, nonzero_mib, working_set_mib, dirty_rate_mib_s, access_rate_mib_s,
                 busy_vcpus, bandwidth_mib_s, latency_ms, downtime_limit_ms, max_passes, access_set_mib=None):
        self.memory_mib = float(memory_mib)
        self.nonzero_mib = min(float(nonzero_mib), self.memory_mib)
        # Written pages (what pre-copy resends) and touched pages (what post-copy faults on) may differ: a guest
        # that reads reads more than it writes.
        self.working_set_mib = min(float(working_set_mib), self.nonzero_mib)
        access_set = self.working_set_mib if access_set_mib is None else float(access_set_mib)
        self.access_set_mib = min(max(access_set, self.working_set_mib), self.nonzero_mib)
        self.dirty_rate_mib_s = float(dirty_rate_mib_s)
        self.access_rate_mib_s = max(float(access_rate_mib_s), self.dirty_rate_mib_s)
        self.busy_vcpus = max(1.0, float(busy_vcpus))
        self.bandwidth_mib_s = float(bandwidth_mib_s)
        self.latency_ms = float(latency_ms)
        self.downtime_limit_ms = float(downtime_limit_ms)
        self.max_passes = int(max_passes)


class Model(object):
    """Predictions for one VM on one link; see the module docstring for the equations."""

    def __init__(self, inp, params=None):
        self.inp = inp
        self.p = model_params(params)
        self.page_mib = self.p["page_size_bytes"] / MIB
        self._rounds = None

    # --- building blocks ------------------------------------------------------------------------------------

    def wire_mib(self, nonzero_mib, zero_mib=0.0):
        """MiB on the wire for nonzero_mib of normal pages and zero_mib of zero pages."""
        per_page = 1.0 + self.p["page_header_bytes"] / self.p["page_size_bytes"]
        zero_pages = max(0.0, zero_mib) / self.page_mib
        return max(0.0, nonzero_mib) * per_page + zero_pages * self.p["zero_page_bytes"] / MIB

    def dirtied_mib(self, seconds):
        """Distinct MiB the guest dirties in `seconds`: D * t while small against W, never more than W."""
        w, d = self.inp.working_set_mib, self.inp.dirty_rate_mib_s
        if w <= 0 or d <= 0 or seconds <= 0:
            return 0.0
        return w * -math.expm1(-d * seconds / w)

    def first_pass_s(self):
        """Pass 1: the non-zero memory and a header per zero page; scanning for zeros overlaps the sending."""
        inp = self.inp
        wire = self.wire_mib(inp.nonzero_mib, inp.memory_mib - inp.nonzero_mib)
        return wire, max(wire / inp.bandwidth_mib_s, inp.memory_mib / self.p["zero_page_scan_mib_s"])

    def switchover_threshold_mib(self):
        """QEMU switches over when the dirty remainder fits the downtime limit at the link's speed."""
        return (self.inp.bandwidth_mib_s * self.inp.downtime_limit_ms / 1000.0
                * self.p["switchover_threshold_pct"] / 100.0)

    def postcopy_switch_downtime_ms(self):
        bitmap_mib = self.inp.memory_mib / self.page_mib / 8.0 / MIB
        return (self.p["postcopy_switchover_ms"] + self.inp.latency_ms
                + bitmap_mib / self.inp.bandwidth_mib_s * 1000.0)

    def fault_ms(self):
        return self.p["postcopy_fault_service_ms"] + 2.0 * self.inp.latency_ms

    def dirty_log_lost_s(self, rounds):
        """Guest time lost to dirty-logging write faults over these pre-copy passes."""
        faults = sum(r["dirtied_mib"] for r in rounds) / self.page_mib
        return faults * self.p["precopy_write_fault_us"] / 1e6 / self.inp.busy_vcpus

    # --- pre-copy -------------------------------------------------------------------------------------------

    def precopy_rounds(self):
        """The pre-copy passes up to convergence or giving up: (rounds, why_not_converging or None)."""
        if self._rounds is not None:
            return self._rounds
        inp, p = self.inp, self.p
        threshold = self.switchover_threshold_mib()
        rounds = []
        to_send = inp.nonzero_mib
        why = None
        while True:
            n = len(rounds) + 1
            if n == 1:
                wire, seconds = self.first_pass_s()
            else:
                wire = self.wire_mib(to_send)
                seconds = wire / inp.bandwidth_mib_s
            seconds += p["round_overhead_ms"] / 1000.0
            dirtied = self.dirtied_mib(seconds)
            rounds.append({"pass": n, "sent_mib": wire, "time_ms": seconds * 1000.0, "dirtied_mib": dirtied})
            if dirtied <= threshold:
                break
            if n >= inp.max_passes:
                why = "max_passes"
                break
            if dirtied >= to_send * (1.0 - p["precopy_min_progress_pct"] / 100.0):
                why = "stalled"
                break
            to_send = dirtied
        self._rounds = (rounds, why)
        return self._rounds

    def precopy(self, max_dirty_pct_of_link):
        """Pre-copy prediction; max_dirty_pct_of_link is the policy's convergence threshold."""
        inp, p = self.inp, self.p
        rounds, why = self.precopy_rounds()
        if (inp.dirty_rate_mib_s >= max_dirty_pct_of_link / 100.0 * inp.bandwidth_mib_s
                and inp.working_set_mib > self.switchover_threshold_mib()):
            why = "dirty_rate_near_link"
        pre_s = sum(r["time_ms"] for r in rounds) / 1000.0
        lost_s = self.dirty_log_lost_s(rounds)
        pred = _prediction("precopy")
        pred["rounds"] = rounds
        pred["why_not_converging"] = why
        pred["switchover_threshold_mib"] = self.switchover_threshold_mib()
        pred["guest_slowdown_pct"] = 100.0 * lost_s / pre_s if pre_s > 0 else 0.0
        if why is not None:
            pred["converges"] = False
            return pred
        final = self.wire_mib(rounds[-1]["dirtied_mib"])
        final_ms = final / inp.bandwidth_mib_s * 1000.0 + p["switchover_overhead_ms"] + inp.latency_ms
        # The guest also waits for the data still in flight, which the passes' time already counts.
        downtime_ms = final_ms + p["inflight_mib"] / inp.bandwidth_mib_s * 1000.0
        total_ms = p["setup_ms"] + pre_s * 1000.0 + final_ms
        pred.update(converges=True, total_time_ms=total_ms, downtime_ms=downtime_ms, passes=len(rounds) + 1,
                    transferred_mib=sum(r["sent_mib"] for r in rounds) + final,
                    guest_slowdown_pct=100.0 * lost_s * 1000.0 / (total_ms - downtime_ms),
                    guest_lost_ms=downtime_ms + lost_s * 1000.0, postcopy_exposure_ms=0.0)
        return pred

    # --- post-copy ------------------------------------------------------------------------------------------

    def postcopy_faults(self, missing_mib, stream_s):
        """(expected remote faults, share of the busy vCPUs' time stalled) while `missing_mib` of the memory the
        guest touches streams in over `stream_s` seconds."""
        inp = self.inp
        n_ws = inp.access_set_mib / self.page_mib
        n_missing = min(missing_mib, inp.access_set_mib) / self.page_mib
        rate = inp.access_rate_mib_s / self.page_mib
        fault_s = self.fault_ms() / 1000.0
        if n_missing <= 0 or n_ws <= 0 or stream_s <= 0 or rate <= 0:
            return 0.0, 0.0

        def faults(stalled):
            x = rate * (1.0 - stalled) * stream_s / n_ws
            if x < 1e-6:
                share = x / 2.0 - x * x / 6.0
            else:
                share = 1.0 + math.expm1(-x) / x
            return n_missing * share

        low, high = 0.0, 1.0
        for _step in range(60):
            mid = (low + high) / 2.0
            if faults(mid) * fault_s / (inp.busy_vcpus * stream_s) > mid:
                low = mid
            else:
                high = mid
        stalled = (low + high) / 2.0
        return faults(stalled), stalled

    def _postcopy_after(self, method, done):
        """Post-copy after the pre-copy passes `done` (none: vanilla post-copy)."""
        inp, p = self.inp, self.p
        if done:
            missing = done[-1]["dirtied_mib"]
            stream_mib = self.wire_mib(missing)
            stream_s = stream_mib / inp.bandwidth_mib_s
        else:
            missing = inp.nonzero_mib
            stream_mib, stream_s = self.first_pass_s()
        pre_s = sum(r["time_ms"] for r in done) / 1000.0
        downtime_ms = self.postcopy_switch_downtime_ms()
        faults, stalled = self.postcopy_faults(missing, stream_s)
        lost_s = self.dirty_log_lost_s(done) + stalled * stream_s
        total_ms = p["setup_ms"] + pre_s * 1000.0 + downtime_ms + stream_s * 1000.0
        pred = _prediction(method)
        pred.update(converges=True, total_time_ms=total_ms, downtime_ms=downtime_ms, passes=len(done) + 1,
                    transferred_mib=sum(r["sent_mib"] for r in done) + stream_mib, postcopy_faults=faults,
                    guest_slowdown_pct=100.0 * lost_s * 1000.0 / (total_ms - downtime_ms),
                    guest_lost_ms=downtime_ms + lost_s * 1000.0, postcopy_exposure_ms=stream_s * 1000.0,
                    postcopy_stall_pct=100.0 * stalled, postcopy_missing_mib=missing)
        return pred

    def postcopy(self):
        return self._postcopy_after("postcopy", [])

    def hybrid(self, passes, max_dirty_pct_of_link):
        """Hybrid: `passes` pre-copy passes, then post-copy (or pre-copy, if it converged by then)."""
        rounds, _why_not = self.precopy_rounds()
        pre = self.precopy(max_dirty_pct_of_link)
        if pre["converges"] and passes >= len(rounds):
            pred = dict(pre, method="hybrid", switch_after_passes=len(rounds), completes_as_precopy=True)
            pred.pop("rounds", None)
            pred.pop("why_not_converging", None)
            return pred
        pred = self._postcopy_after("hybrid", rounds[:max(1, min(passes, len(rounds)))])
        pred.update(switch_after_passes=pred["passes"] - 1, completes_as_precopy=False)
        return pred

    def hybrids(self, max_dirty_pct_of_link):
        """Every hybrid worth considering: post-copy after 1, 2, ... passes, up to the pass where pre-copy
        converges (that one completes as pre-copy) or where the model gives up on it."""
        rounds, _why_not = self.precopy_rounds()
        return [self.hybrid(k, max_dirty_pct_of_link) for k in range(1, len(rounds) + 1)]


def _prediction(method):
    return {
        "method": method, "converges": None, "total_time_ms": None, "downtime_ms": None, "passes": None,
        "transferred_mib": None, "postcopy_faults": 0.0, "guest_slowdown_pct": 0.0, "guest_lost_ms": None,
        "postcopy_exposure_ms": 0.0,
    }
