# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""walm_decide's defaults, as data: the thresholds and policy numbers an operator may override, and the
constants of the performance model.

Three tables, each a plain dict of number-valued (or bool-valued) keys:

- THRESHOLDS: when a workload counts as CPU-, memory- or network-intensive and write-intensive, and the numbers
  the policy uses to compare methods. The operator overrides any of them with walm_decide's `thresholds` option.
- MODEL: QEMU's and the link's constants in the performance model (decide_model.py). The operator overrides any of
  them with walm_decide's `model` option; the lab calibration tunes them.
- OPTIONS: the defaults of walm_decide's other options (the module's argument spec repeats them; a unit test
  checks that the two agree).

docs/decide.md carries the same tables with the reasoning behind each value.
"""

from __future__ import absolute_import, division, print_function

from collections import namedtuple

# The objectives walm_decide chooses by (its option `objective`; docs/decide.md).
# time_budget: False - the fastest method within the downtime limit, the least disruptive among those within
#   tmt_tolerance_pct of it, and pre-copy when it is within safety_margin_pct of that one's time (`urgent`).
#   True - the least disruptive method that finishes within the time budget (time_budget_s, else
#   balanced_budget_factor x the fastest), and pre-copy when within safety_margin_pct of its disruption (`balanced`).
Objective = namedtuple("Objective", "name time_budget")

OBJECTIVE_TABLE = (
    Objective("urgent", time_budget=False),
    Objective("balanced", time_budget=True),
)
OBJECTIVES = tuple(o.name for o in OBJECTIVE_TABLE)
OBJECTIVE_BY_NAME = dict((o.name, o) for o in OBJECTIVE_TABLE)

THRESHOLDS = {
    # --- classification ---------------------------------------------------------------------------------
    # Total CPU use of the vCPUs (100 = one busy vCPU) from which the guest is CPU-intensive.
    "cpu_percent": 50.0,
    # Page-dirtying rate from which the guest is memory-intensive (and, without a read rate, write-intensive).
    "dirty_rate_mib_s": 8.0,
    # Guest network traffic (tap tx + rx) from which the guest is network-intensive (4 MiB/s ~ 34 Mbit/s).
    "network_mib_s": 4.0,
    # With a measured read rate: share of writes in the guest's page accesses from which it is write-intensive.
    "write_share_pct": 50.0,
    # --- decision ---------------------------------------------------------------------------------------
    # Pre-copy cannot converge when the dirty rate reaches this share of the usable link, unless the guest's
    # whole working set fits in one switchover (Hines et al.; the lab's heavy writers never converge there).
    "precopy_max_dirty_pct_of_link": 90.0,
    # Methods whose predicted total migration time is within this share of the fastest count as "as fast";
    # among them the least disruptive wins (objective `urgent`).
    "tmt_tolerance_pct": 10.0,
    # Objective `balanced` without time_budget_s: the budget is this factor times the fastest method's time.
    "balanced_budget_factor": 3.0,
    # Weight of one millisecond spent in post-copy (where a link failure costs the VM unless recovered) against
    # one millisecond of guest time lost to downtime or slowdown.
    "postcopy_exposure_weight": 1.0,
}

MODEL = {
    # Guest page size: QEMU migrates target pages (4 KiB on x86).
    "page_size_bytes": 4096,
    # Header QEMU sends with every normal page (RAM_SAVE_FLAG_* with the page offset): 8 bytes.
    "page_header_bytes": 8,
    # What a zero page costs on the wire: the 8-byte header and one byte of fill (RAM_SAVE_FLAG_ZERO).
    "zero_page_bytes": 9,
    # How fast QEMU scans guest memory for zero pages (buffer_is_zero); scanning overlaps the sending, so it
    # only matters for a guest that is almost all zero pages.
    "zero_page_scan_mib_s": 4096.0,
    # Migration setup before the first page goes out (QEMU's setup-time: capabilities, bitmaps, the stream;
    # the lab measured 1 ms of setup-time and ~10 ms more before the first pass runs at full speed).
    "setup_ms": 10.0,
    # Fixed cost of every pre-copy pass: the dirty-bitmap sync and the iteration's bookkeeping.
    "round_overhead_ms": 5.0,
    # Stop-and-copy cost beyond the last RAM: device state, the final sync, the destination's start. It adds to
    # the downtime and to the total time (the lab: ~5 ms; many devices or slow storage flushes take longer).
    "switchover_overhead_ms": 5.0,
    # Data the source has written but the link has not carried yet when the guest stops (TCP send buffers and
    # the link's queue): the guest waits for it during pre-copy's switchover, so it adds to the downtime, but
    # it was sent with the passes before, so not to the total time. The lab (a tbf-shaped 1 Gbit/s veth, 50 ms
    # queue, Linux's default socket buffers) drains ~22 MiB: pre-copy's downtime of an idle guest is ~200 ms
    # there against QEMU's own estimate of ~0 ms. A fast link without a deep queue drains it in a few ms.
    "inflight_mib": 22.0,
    # Share of bandwidth x downtime limit below which QEMU switches over. QEMU compares the dirty remainder with
    # its own bandwidth estimate of the last period times the limit; the lab's pre-copies ran one more pass than
    # the full link would allow (wset 10 MiB/s: 4 syncs where 100 % gives 3), which 50 % reproduces.
    "switchover_threshold_pct": 50.0,
    # Post-copy's switchover as QEMU reports it (downtime): the source stops, sends the device state and the
    # discard bitmap, and the destination starts; data still in flight does not delay it (the lab: 1-2 ms).
    "postcopy_switchover_ms": 2.0,
    # Serving one post-copy page fault besides the link's round trip: userfaultfd wake-up, the request on the
    # return path, and the requested page's wait behind the background stream. Calibrated so a guest touching
    # its working set at full speed takes a few thousand faults in a 2-3 s post-copy, as measured in the lab
    # (QEMU 10, TCG, no postcopy-preempt); postcopy-preempt shortens the wait.
    "postcopy_fault_service_ms": 0.8,
    # Read rate assumed per busy vCPU when the probe has no read_rate_mib_s (only for post-copy faults).
    "assumed_read_rate_mib_s_per_busy_vcpu": 32.0,
    # Cost of one dirty-logging write fault in pre-copy (the first write to a page after each bitmap sync).
    "precopy_write_fault_us": 2.0,
    # A pre-copy pass that shrinks the dirty remainder by less than this is a stall: it will not converge.
    "precopy_min_progress_pct": 2.0,
    # Share of the guest's own traffic (tap tx + rx) carried by the migration link (1 = all of it).
    "guest_traffic_share": 1.0,
    # The migration keeps at least this share of the link even when the guest's traffic would take it all
    # (TCP shares a congested link between flows).
    "min_usable_link_pct": 10.0,
}

OPTIONS = {
    "link_latency_ms": 0.1,
    "downtime_limit_ms": 300,
    "allow_postcopy": True,
    "objective": "urgent",
    "time_budget_s": None,
    "safety_margin_pct": 10.0,
    "max_passes": 30,
}
