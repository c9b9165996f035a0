# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Reading /proc: the parsers of its files and the small readers built on them.

Each parser takes the text of one file, so that it can be tested on a captured copy; each reader takes `proc`
(default ``/proc``), so that it can be pointed at a fake tree.
"""

from __future__ import absolute_import, division, print_function

import os


def clock_ticks_per_s():
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - Linux always has it
        return 100


def parse_stat(text):
    """``/proc/PID[/task/TID]/stat``: the fields the probe uses (comm may contain spaces and parentheses)."""
    head, _paren, rest = text.rpartition(")")
    f = rest.split()
    # f[0] is field 3 (state); field N is f[N - 3].
    return {"comm": head.partition("(")[2], "state": f[0], "utime_ticks": int(f[11]), "stime_ticks": int(f[12]),
            "start_ticks": int(f[19]), "guest_ticks": int(f[40]) if len(f) > 40 else 0}


def parse_schedstat(text):
    """``/proc/.../schedstat``: nanoseconds on a CPU, nanoseconds waiting for one, timeslices."""
    f = text.split()
    return {"run_ns": int(f[0]), "wait_ns": int(f[1]), "timeslices": int(f[2])}


def parse_status(text):
    """``/proc/PID/status`` as a dict of strings; sizes keep their unit (``VmRSS: '123 kB'``)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def kib_to_mib(value):
    """``'123456 kB'`` from /proc/PID/status as MiB."""
    if not value:
        return None
    number, _space, unit = value.partition(" ")
    if unit and unit.strip().lower() != "kb":
        return None
    return int(number) / 1024.0


def parse_net_dev(text):
    """``/proc/net/dev`` as {interface: counters} (bytes, packets, drops in each direction)."""
    out = {}
    for line in text.splitlines()[2:]:
        name, sep, data = line.partition(":")
        if not sep:
            continue
        f = data.split()
        if len(f) < 16:
            continue
        out[name.strip()] = {"rx_bytes": int(f[0]), "rx_packets": int(f[1]), "rx_dropped": int(f[3]),
                             "tx_bytes": int(f[8]), "tx_packets": int(f[9]), "tx_dropped": int(f[11])}
    return out


def read_text(path):
    with open(path) as f:
        return f.read()
