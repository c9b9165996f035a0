# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Tap names on a destination host: a tap name is the host's, only the MAC (and the bridge it joins) is the guest's.

An incoming VM keeps its source's tap name where this host has it free; where another process on this host holds
that tap open (another VM that came here earlier, or was started here with the same name), the NIC gets a name of
this host's own, derived from the VM's name so that the same VM asks for the same name again. Pure functions: the
caller says which names are held and which exist.
"""

from __future__ import absolute_import, division, print_function

import hashlib

# "wt" + 8 hex digits of the VM name's sha1 + the NIC's index (+ "x" and a counter after a clash): at most 15
# characters, the kernel's limit for an interface name, for up to 100 NICs and 100 clashes.
PREFIX = "wt"
MAX_TRIES = 100


def candidates(vm_name, index):
    """The names an incoming VM's NIC `index` may take on this host, in order of preference."""
    base = "%s%s%d" % (PREFIX, hashlib.sha1(vm_name.encode("utf-8")).hexdigest()[:8], index)
    yield base
    for n in range(1, MAX_TRIES):
        yield "%sx%d" % (base, n)


def host_taps(vm_name, nics, held, exists):
    """The NICs of an incoming VM with tap names free on this host, and the renames as (old, new, holders).

    nics: the normalized definition's NICs (tap, mac, bridge); held: {tap name: [who holds it open]} on this host;
    exists: a function telling whether an interface of that name exists on this host. A tap that exists but that no
    process holds is a leftover this VM may take over (as when it starts under its own name); a new name must not
    exist at all. Returns (nics, renames); nics are copies, the MAC and bridge kept.
    """
    out, renames, taken = [], [], set()
    for index, nic in enumerate(nics):
        nic = dict(nic)
        wanted = nic["tap"]
        if held.get(wanted) or wanted in taken:
            for name in candidates(vm_name, index):
                if not held.get(name) and name not in taken and not exists(name):
                    nic["tap"] = name
                    break
            else:
                raise ValueError("no free tap name for NIC %d of VM '%s' on this host (tried %d)"
                                 % (index, vm_name, MAX_TRIES))
            renames.append((wanted, nic["tap"], list(held.get(wanted) or ["another NIC of this VM"])))
        taken.add(nic["tap"])
        out.append(nic)
    return out, renames
