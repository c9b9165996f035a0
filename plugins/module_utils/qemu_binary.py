# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""What this host's QEMU binary is: its version and the machine types it supports."""

from __future__ import absolute_import, division, print_function

import re

from . import host_command
from .errors import WalmError

QEMU_BINARY = "qemu-system-x86_64"


def qemu_version(binary=QEMU_BINARY):
    """QEMU's version as (major, minor, micro) and the full first line of --version."""
    out = host_command.run([binary, "--version"]).stdout.splitlines()[0]
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise WalmError("cannot parse the QEMU version from %r" % out)
    return tuple(int(x) for x in m.groups()), out.strip()


def resolve_machine(machine, binary=QEMU_BINARY):
    """Turn a machine alias (q35, pc) into the versioned type QEMU would use (pc-q35-10.0).

    Migration needs the same versioned machine type on both sides; recording it at start pins it.
    """
    names = {}
    for line in host_command.run([binary, "-machine", "help"]).stdout.splitlines():
        m = re.match(r"^(\S+)\s+.*?(?:\(alias of (\S+)\))?$", line)
        if m and not line.startswith("Supported"):
            names[m.group(1)] = m.group(2) or m.group(1)
    if machine not in names:
        raise WalmError("machine type %r is not supported by this host's QEMU (%s); choose one of: %s"
                        % (machine, binary, ", ".join(sorted(names))))
    return names[machine]
