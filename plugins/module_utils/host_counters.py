# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""CPU time of a QEMU's vCPU threads and process, and its taps' traffic: snapshots from /proc and the rates
between two of them."""

from __future__ import absolute_import, division, print_function

import time

from .procfs import clock_ticks_per_s, parse_net_dev, parse_schedstat, parse_stat, read_text

MIB = 1024 * 1024
TAP_METRICS = ("rx_mib_s", "tx_mib_s", "rx_pps", "tx_pps", "rx_mbit_s", "tx_mbit_s")


class HostSnapshot(object):
    """CPU time of the vCPU threads and the process, and tap counters, at one instant."""

    def __init__(self, pid, threads, taps, proc="/proc", use_schedstat=True):
        self.t = time.monotonic()
        self.thread_ns = {}
        self.thread_wait_ns = {}
        ticks_ns = 1e9 / clock_ticks_per_s()
        for tid in threads:
            base = "%s/%d/task/%d/" % (proc, pid, tid)
            self.thread_wait_ns[tid] = None
            try:
                if use_schedstat:
                    ss = parse_schedstat(read_text(base + "schedstat"))
                    self.thread_ns[tid] = ss["run_ns"]
                    self.thread_wait_ns[tid] = ss["wait_ns"]
                else:
                    st = parse_stat(read_text(base + "stat"))
                    self.thread_ns[tid] = (st["utime_ticks"] + st["stime_ticks"]) * ticks_ns
            except (IOError, OSError, ValueError, IndexError):
                self.thread_ns[tid] = None
        try:
            st = parse_stat(read_text("%s/%d/stat" % (proc, pid)))
            self.process_ns = (st["utime_ticks"] + st["stime_ticks"]) * ticks_ns
        except (IOError, OSError, ValueError, IndexError):
            self.process_ns = None
        try:
            counters = parse_net_dev(read_text("%s/%d/net/dev" % (proc, pid)))
        except (IOError, OSError):
            counters = {}
        self.net = dict((tap, counters.get(tap)) for tap in taps)


def schedstat_available(pid, tid, proc="/proc"):
    try:
        parse_schedstat(read_text("%s/%d/task/%d/schedstat" % (proc, pid, tid)))
        return True
    except (IOError, OSError, ValueError, IndexError):
        return False


def cpu_percentages(before, after, vcpu_threads, field="thread_ns"):
    """Per-vCPU CPU use (100 = one host CPU busy all the window), the vCPUs' total, and the whole process.

    vcpu_threads lists each vCPU's thread id in vCPU order. vCPUs sharing a thread (single-threaded TCG) share
    its time evenly; the total counts each thread once. With field="thread_wait_ns" the same for the time the
    vCPU threads were runnable but waited for a host CPU (schedstat only; None from stat).
    """
    wall_ns = (after.t - before.t) * 1e9
    if wall_ns <= 0:
        raise ValueError("snapshots are not in time order")
    per_thread = {}
    for tid in set(vcpu_threads):
        a, b = getattr(before, field).get(tid), getattr(after, field).get(tid)
        per_thread[tid] = None if a is None or b is None else max(0.0, (b - a) * 100.0 / wall_ns)
    sharing = dict((tid, vcpu_threads.count(tid)) for tid in per_thread)
    per_vcpu = [None if per_thread[tid] is None else per_thread[tid] / sharing[tid] for tid in vcpu_threads]
    known = [v for v in per_thread.values() if v is not None]
    total = sum(known) if known else None
    process = None
    if before.process_ns is not None and after.process_ns is not None:
        process = max(0.0, (after.process_ns - before.process_ns) * 100.0 / wall_ns)
    return per_vcpu, total, process


def net_rates(before, after):
    """Tap traffic per second, from the guest's side: the guest's rx is what the tap sends (tap tx)."""
    secs = after.t - before.t
    per_tap = {}
    totals = dict((k, 0.0) for k in TAP_METRICS)
    for tap, b in before.net.items():
        a = after.net.get(tap)
        if b is None or a is None:
            per_tap[tap] = None
            continue
        d = dict((k, max(0, a[k] - b[k])) for k in b)
        rates = {
            "rx_mib_s": d["tx_bytes"] / MIB / secs, "tx_mib_s": d["rx_bytes"] / MIB / secs,
            "rx_pps": d["tx_packets"] / secs, "tx_pps": d["rx_packets"] / secs,
            "rx_mbit_s": d["tx_bytes"] * 8 / 1e6 / secs, "tx_mbit_s": d["rx_bytes"] * 8 / 1e6 / secs,
            # the tap's own drops: rx_dropped are frames from the guest the host dropped, and the reverse
            "rx_dropped": d["tx_dropped"], "tx_dropped": d["rx_dropped"],
        }
        per_tap[tap] = rates
        for k in TAP_METRICS:
            totals[k] += rates[k]
    return per_tap, totals
