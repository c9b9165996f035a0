# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A VM's tap devices on this host: made, put on their bridge and brought up, deleted."""

from __future__ import absolute_import, division, print_function

import os

from . import host_command
from .errors import WalmError


def tap_exists(tap):
    return os.path.exists("/sys/class/net/%s" % tap)


def ensure_tap(nic):
    """Create the NIC's tap device (vnet_hdr, as QEMU's virtio-net wants) and put it on its bridge.

    Returns True when something was changed.
    """
    changed = False
    tap = nic["tap"]
    if not tap_exists(tap):
        host_command.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])
        changed = True
    if nic.get("bridge"):
        master = os.path.realpath("/sys/class/net/%s/master" % tap)
        if os.path.basename(master) != nic["bridge"]:
            if not os.path.exists("/sys/class/net/%s/bridge" % nic["bridge"]):
                raise WalmError("bridge %s for tap %s does not exist on this host" % (nic["bridge"], tap))
            host_command.run(["ip", "link", "set", tap, "master", nic["bridge"]])
            changed = True
    with open("/sys/class/net/%s/flags" % tap) as f:
        flags = int(f.read().strip(), 16)
    if not flags & 0x1:  # IFF_UP
        host_command.run(["ip", "link", "set", tap, "up"])
        changed = True
    return changed


def delete_tap(tap):
    if tap_exists(tap):
        host_command.run(["ip", "link", "delete", tap], check=False)
        return True
    return False
