# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""How an evacuation's plan and summary write times, workload classes and tables."""

from __future__ import absolute_import, division, print_function


def seconds_text(ms):
    """Milliseconds as seconds for sentences and tables: '0.98 s', or '-' when unknown."""
    if ms is None:
        return "-"
    return "%.2f s" % (ms / 1000.0) if ms < 10000 else "%.1f s" % (ms / 1000.0)


def ms_text(ms):
    return "-" if ms is None else "%d" % int(round(ms))


def number_text(value):
    return ("%g" % value) if isinstance(value, float) else str(value)


def class_text(workload_class):
    """A decision's workload_class in a few words: 'idle', 'cpu', 'memory+cpu write-intensive'."""
    if not workload_class:
        return "unknown"
    intensity = workload_class.get("intensity") or [workload_class.get("dominant") or "unknown"]
    text = "+".join(intensity)
    if workload_class.get("access") == "write-intensive":
        text += " write-intensive"
    return text


def text_table(columns, rows):
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    last = len(columns) - 1

    def line(cells):
        return "  ".join(c if i == last else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()
    return [line(columns), line(["-" * w for w in widths])] + [line(r) for r in rows]
