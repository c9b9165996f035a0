# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A VM's definition: validation, host-specific paths, and its fingerprint.

The definition is the small, host-independent description of a VM (memory, vCPUs, machine type, disks on shared
storage, NICs, boot). The source records it when it starts the VM; the destination starts an identical QEMU from the
same record, with only host-specific paths (QMP socket, pidfile, console log) changed.
"""

from __future__ import absolute_import, division, print_function

import copy
import hashlib
import json
import os
import re

from .errors import WalmError

# A VM's name becomes the names of its files in the state dir (HostPaths) and of its QEMU (-name guest=NAME).
# \Z, not $: $ also matches before a trailing newline.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
NAME_RULE = ("use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (the name becomes file "
             "names in the state dir: no '/', spaces or shell characters)")
# Linux interface names: at most 15 bytes.
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
ACCELS = ("kvm", "tcg")
DISK_FORMATS = ("qcow2", "raw")
CACHE_MODES = ("none", "writeback", "writethrough", "directsync", "unsafe")

DEFAULTS = {
    "memory_mib": 512,
    "vcpus": 1,
    "accel": "kvm",
    "cpu_model": None,
    "machine": "q35",
    "kernel": None,
    "initrd": None,
    "append": None,
    "disks": [],
    "nics": [],
    "extra_args": [],
}


def name_problem(name):
    """Why `name` cannot be a VM name, or None when it can."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return "name %r is invalid: %s" % (name, NAME_RULE)
    return None


def check_name(name):
    """Return `name` if it can be a VM name, else raise WalmError with the rule.

    The one check of a VM name: every path of a VM derives from it, so a name like '../x' or '/etc/x' would make
    WALM read, write and remove files outside the state dir.
    """
    problem = name_problem(name)
    if problem:
        raise WalmError("VM " + problem)
    return name


def _fail(name, msg):
    raise WalmError("VM definition%s: %s" % (" of '%s'" % name if name else "", msg))


def normalize(definition):
    """Validate a definition dict and return a complete copy with defaults filled in.

    Raises WalmError naming the field and the fix. Touches nothing on the host.
    """
    if not isinstance(definition, dict):
        _fail(None, "must be a dictionary, got %s" % type(definition).__name__)
    d = copy.deepcopy(DEFAULTS)
    unknown = set(definition) - set(DEFAULTS) - {"name"}
    if unknown:
        _fail(definition.get("name"), "unknown keys %s (known: name, %s)"
              % (", ".join(sorted(unknown)), ", ".join(sorted(DEFAULTS))))
    d.update({k: copy.deepcopy(v) for k, v in definition.items() if v is not None})
    name = d.get("name")
    problem = name_problem(name)
    if problem:
        _fail(None, problem)
    for key, low in (("memory_mib", 16), ("vcpus", 1)):
        try:
            d[key] = int(d[key])
        except (TypeError, ValueError):
            _fail(name, "%s must be an integer, got %r" % (key, d[key]))
        if d[key] < low:
            _fail(name, "%s must be at least %d, got %d" % (key, low, d[key]))
    if d["accel"] not in ACCELS:
        _fail(name, "accel must be one of %s, got %r" % (", ".join(ACCELS), d["accel"]))
    if d["cpu_model"] == "host" and d["accel"] != "kvm":
        _fail(name, "cpu_model 'host' needs accel 'kvm'; leave cpu_model unset or name a model (e.g. qemu64)")
    if d["append"] is not None and not d["kernel"]:
        _fail(name, "append is only used with kernel; set kernel or drop append")
    if d["initrd"] is not None and not d["kernel"]:
        _fail(name, "initrd is only used with kernel; set kernel or drop initrd")
    if not isinstance(d["disks"], list) or not isinstance(d["nics"], list):
        _fail(name, "disks and nics must be lists")
    d["disks"] = [_normalize_disk(name, i, disk) for i, disk in enumerate(d["disks"])]
    d["nics"] = [_normalize_nic(name, i, nic) for i, nic in enumerate(d["nics"])]
    taps = [n["tap"] for n in d["nics"]]
    if len(set(taps)) != len(taps):
        _fail(name, "each NIC needs its own tap device, got %s" % ", ".join(taps))
    if not isinstance(d["extra_args"], list) or not all(isinstance(a, str) for a in d["extra_args"]):
        _fail(name, "extra_args must be a list of strings")
    forbidden = {"-daemonize", "-pidfile", "-qmp", "-incoming", "-name", "-serial", "-monitor"}
    clash = forbidden.intersection(d["extra_args"])
    if clash:
        _fail(name, "extra_args may not contain %s: WALM sets these itself" % ", ".join(sorted(clash)))
    return d


def _normalize_disk(name, index, disk):
    if not isinstance(disk, dict) or not disk.get("file"):
        _fail(name, "disks[%d] needs 'file' (a path or an nfs:// URL)" % index)
    out = {"file": str(disk["file"]), "format": disk.get("format") or "qcow2",
           "cache": disk.get("cache") or "none", "size_mib": disk.get("size_mib"),
           "create": bool(disk.get("create", False))}
    unknown = set(disk) - set(out)
    if unknown:
        _fail(name, "disks[%d]: unknown keys %s" % (index, ", ".join(sorted(unknown))))
    if out["format"] not in DISK_FORMATS:
        _fail(name, "disks[%d].format must be one of %s" % (index, ", ".join(DISK_FORMATS)))
    if out["cache"] not in CACHE_MODES:
        _fail(name, "disks[%d].cache must be one of %s" % (index, ", ".join(CACHE_MODES)))
    if out["create"] and not out["size_mib"]:
        _fail(name, "disks[%d]: create needs size_mib" % index)
    if out["size_mib"] is not None:
        out["size_mib"] = int(out["size_mib"])
    return out


def _normalize_nic(name, index, nic):
    if not isinstance(nic, dict) or not nic.get("tap"):
        _fail(name, "nics[%d] needs 'tap' (the host tap device name)" % index)
    out = {"tap": str(nic["tap"]), "mac": nic.get("mac"), "bridge": nic.get("bridge")}
    unknown = set(nic) - set(out)
    if unknown:
        _fail(name, "nics[%d]: unknown keys %s" % (index, ", ".join(sorted(unknown))))
    if not IFNAME_RE.match(out["tap"]):
        _fail(name, "nics[%d].tap %r is not a valid interface name (1-15 characters)" % (index, out["tap"]))
    if not out["mac"] or not MAC_RE.match(str(out["mac"])):
        # A fixed MAC is part of the guest's identity: it must be the same on both hosts.
        _fail(name, "nics[%d].mac must be set to a fixed MAC (e.g. 52:54:00:12:34:56), got %r"
              % (index, out["mac"]))
    out["mac"] = out["mac"].lower()
    return out


class HostPaths(object):
    """Where one VM's host-specific files live on one host."""

    def __init__(self, state_dir, name):
        if not isinstance(state_dir, str) or not os.path.isabs(state_dir):
            raise WalmError("state_dir %r must be an absolute path (e.g. /run/walm)" % (state_dir,))
        self.state_dir = state_dir
        self.name = check_name(name)
        self.qmp_socket = os.path.join(state_dir, name + ".qmp")
        self.pidfile = os.path.join(state_dir, name + ".pid")
        self.console_log = os.path.join(state_dir, name + ".console.log")
        self.record = os.path.join(state_dir, name + ".json")
        # An incoming QEMU's second monitor and the log of its events (eventlog.py).
        self.events_socket = os.path.join(state_dir, name + ".events.qmp")
        self.event_log = os.path.join(state_dir, name + ".events.log")
        # The logger's control socket: out-of-band QMP commands on its monitor (post-copy recovery).
        self.control_socket = os.path.join(state_dir, name + ".events.ctl")
        # One change to the VM at a time on this host (vmlock.py).
        self.lock = os.path.join(state_dir, name + ".lock")
        # An outgoing migration's progress while it runs (progress.py).
        self.progress = os.path.join(state_dir, name + ".progress.json")

    def as_dict(self):
        return {"state_dir": self.state_dir, "qmp_socket": self.qmp_socket, "pidfile": self.pidfile,
                "console_log": self.console_log, "record": self.record}


def fingerprint(d):
    """sha256 of a normalized definition: equal on both hosts exactly when they would build the same machine.

    A NIC's tap name is left out: it is the host's (a destination may give the NIC a tap of its own), while its
    MAC, bridge and device model are the machine's."""
    machine = dict(d, nics=[dict((k, v) for k, v in nic.items() if k != "tap") for nic in d.get("nics") or []])
    return hashlib.sha256(json.dumps(machine, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
