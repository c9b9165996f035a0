# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A probed workload's class: which of CPU, memory and network are intensive (the dominant one first), and
whether the guest mostly writes or reads."""

from __future__ import absolute_import, division, print_function


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
