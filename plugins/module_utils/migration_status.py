# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""What query-migrate says: the states of a migration, and one snapshot of its progress per poll."""

from __future__ import absolute_import, division, print_function

import time

# query-migrate states in which a migration is still under way.
ACTIVE_STATES = ("setup", "active", "device", "pre-switchover", "postcopy-active", "postcopy-paused",
                 "postcopy-recover", "postcopy-recover-setup", "wait-unplug", "cancelling", "colo")
FINAL_STATES = ("completed", "failed", "cancelled")
# A resumed post-copy still connecting to the destination.
RESUMING = ("postcopy-recover-setup", "postcopy-recover")
POSTCOPY_STATES = ("postcopy-active", "postcopy-paused", "postcopy-recover", "postcopy-recover-setup")


def snapshot(info, t0):
    ram = info.get("ram") or {}
    return {
        "t_ms": int((time.time() - t0) * 1000),
        "status": info.get("status"),
        "pass": ram.get("dirty-sync-count", 0),
        "transferred_bytes": ram.get("transferred", 0),
        "remaining_bytes": ram.get("remaining", 0),
        "dirty_pages_rate": ram.get("dirty-pages-rate", 0),
        "mbps": ram.get("mbps", 0),
        "postcopy_requests": ram.get("postcopy-requests", 0),
        "page_size": ram.get("page-size", 4096),
        "cpu_throttle_pct": info.get("cpu-throttle-percentage", 0),
    }
