# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""One migration request checked before anything is touched: the method, the timeout action, the limits and the
destination URI, each refused with its name and the fix, never replaced by a default. Pure (no I/O), so a
playbook's parameters can be checked on the controller too (filter walm.qemu.migration_request)."""

from __future__ import absolute_import, division, print_function

import math
import re

from .errors import WalmError
from .methods import METHODS, ON_TIMEOUT

# Ceilings of a migration request (check_request), so that a typo fails before anything is touched.
MAX_DOWNTIME_LIMIT_MS = 2000000  # QEMU's own maximum for downtime-limit (2000 s)
# 1 TiB/s: far above any link, and what 0 ("no limit") gives QEMU; in bytes/s it fits QEMU's int64 with room.
MAX_BANDWIDTH_MIB_S = 1024 * 1024
MAX_TIMEOUT_S = 86400  # a day: a pre-copy that has not converged by then will not
MAX_SWITCH_AFTER_PASSES = 1000  # far beyond where pre-copy has either converged or never will
# tcp:HOST:PORT, the only URI QEMU is given unless allow_unsafe_uri: HOST a name, IPv4, or IPv6 in brackets.
TCP_URI_RE = re.compile(r"^tcp:(\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
                        r":([0-9]{1,5})\Z")


def check_number(name, value, rule, low, high, integer=False, low_allowed=True):
    """value as an int or float if it is a finite number (or the string of one) within [low, high], else refuse.

    Playbook variables often arrive as strings ("300"); those are converted. Booleans and fractions where an
    integer is needed are refused, never rounded.
    """
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = None
    if isinstance(value, bool) or f is None or not math.isfinite(f) or (integer and f != int(f)) \
            or f < low or f > high or (f == low and not low_allowed):
        raise WalmError("%s must be %s, got %r" % (name, rule, value))
    return int(f) if integer else f


def check_flag(name, value):
    """A yes/no option: a boolean, or one of the strings Ansible reads as one; anything else is refused."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise WalmError("%s must be true or false, got %r" % (name, value))


def check_destination_uri(uri, allow_unsafe_uri=False):
    """Refuse a migration URI that is not tcp:HOST:PORT unless allow_unsafe_uri; returns the URI."""
    if not isinstance(uri, str) or not uri.strip():
        raise WalmError("destination_uri is missing: pass the incoming_uri that walm_vm state=incoming returned on "
                        "the destination (e.g. tcp:10.0.0.2:49152)")
    scheme, sep, _address = uri.partition(":")
    if not sep or not scheme:
        raise WalmError("destination_uri %r is not a QEMU migration URI (e.g. tcp:10.0.0.2:49152)" % (uri,))
    if scheme != "tcp":
        if allow_unsafe_uri:
            return uri
        raise WalmError("destination_uri %r uses the scheme %r: only tcp:HOST:PORT is accepted, because QEMU runs "
                        "an exec: URI as a shell command on the source and file:, unix: or fd: reach this host's "
                        "files. Pass the incoming_uri of walm_vm state=incoming, or set allow_unsafe_uri: true if "
                        "the other scheme is meant" % (uri, scheme + ":"))
    m = TCP_URI_RE.match(uri)
    if not m or not 1 <= int(m.group(4)) <= 65535:
        raise WalmError("destination_uri %r is not tcp:HOST:PORT with a port from 1 to 65535 (an IPv6 address "
                        "goes in brackets: tcp:[fd00::2]:49152)" % (uri,))
    return uri


def check_request(method, on_timeout, switch_after_passes, downtime_limit_ms, max_bandwidth_mib_s,
                  max_postcopy_bandwidth_mib_s, timeout_s, destination_uri=None, allow_unsafe_uri=False):
    """Validate one migration request before anything is touched; returns its values, converted.

    Pure (no I/O), so it can check a playbook's parameters on the controller before any QEMU starts. Numbers may
    be given as strings of numbers (as playbook variables often are); they come back as int (switch_after_passes,
    downtime_limit_ms) or float (the rest). destination_uri None means "not known yet" (the destination is not
    prepared) and is not checked. Raises WalmError naming the parameter and the fix.
    """
    if method not in METHODS:
        raise WalmError("unknown migration method %r; choose one of %s" % (method, ", ".join(METHODS)))
    if on_timeout not in ON_TIMEOUT:
        raise WalmError("unknown on_timeout %r; choose one of %s" % (on_timeout, ", ".join(ON_TIMEOUT)))
    allow_unsafe_uri = check_flag("allow_unsafe_uri", allow_unsafe_uri)
    bandwidth_rule = "0 (no limit) or at most %d MiB/s (1 TiB/s)" % MAX_BANDWIDTH_MIB_S
    return {
        "method": method,
        "on_timeout": on_timeout,
        "switch_after_passes": check_number(
            "switch_after_passes", switch_after_passes,
            "an integer from 1 to %d (complete pre-copy passes before a hybrid switches; to switch during the "
            "first pass use method postcopy)" % MAX_SWITCH_AFTER_PASSES, 1, MAX_SWITCH_AFTER_PASSES, integer=True),
        "downtime_limit_ms": check_number(
            "downtime_limit_ms", downtime_limit_ms,
            "an integer from 1 to %d (QEMU's limit)" % MAX_DOWNTIME_LIMIT_MS, 1, MAX_DOWNTIME_LIMIT_MS,
            integer=True),
        "max_bandwidth_mib_s": check_number("max_bandwidth_mib_s", max_bandwidth_mib_s, bandwidth_rule, 0,
                                            MAX_BANDWIDTH_MIB_S),
        "max_postcopy_bandwidth_mib_s": check_number("max_postcopy_bandwidth_mib_s", max_postcopy_bandwidth_mib_s,
                                                     bandwidth_rule, 0, MAX_BANDWIDTH_MIB_S),
        "timeout_s": check_number("timeout_s", timeout_s, "above 0 and at most %d s (a day)" % MAX_TIMEOUT_S,
                                  0, MAX_TIMEOUT_S, low_allowed=False),
        "destination_uri": None if destination_uri is None else check_destination_uri(destination_uri,
                                                                                      allow_unsafe_uri),
        "allow_unsafe_uri": allow_unsafe_uri,
    }
