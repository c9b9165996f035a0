# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The statistics of a probe's readings: means, spread, rounding, timestamps."""

from __future__ import absolute_import, division, print_function

import datetime
import math


def mean_stdev(values):
    """Mean, population standard deviation, min and max of the non-null values (None if there are none)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))
    return {"mean": rounded(m), "stdev": rounded(sd), "min": rounded(min(vals)), "max": rounded(max(vals)),
            "n": len(vals)}


def rounded(value, digits=2):
    return None if value is None else round(float(value), digits)


def mean_of(values):
    vals = [v for v in values if v is not None]
    return rounded(sum(vals) / len(vals)) if vals else None


def iso_utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
