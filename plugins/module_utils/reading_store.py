# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The probe's stored readings: each VM's latest reading and a short history, under the state directory."""

from __future__ import absolute_import, division, print_function

import json
import os
import re
import time

from . import procfs, vm_records
from .probe_stats import rounded

HISTORY_LEN = 60
PROBE_SUBDIR = "probe"


def reading_path(state_dir, name):
    # Names of VMs not started by WALM come from their command line: keep them to one safe file name.
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", name).lstrip(".") or "_"
    return os.path.join(state_dir, PROBE_SUBDIR, safe + ".json")


def load_reading(state_dir, name):
    try:
        with open(reading_path(state_dir, name)) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return None


def save_reading(state_dir, reading):
    """Store a reading as the VM's latest and append it to a short history (atomic replace, mode 0600)."""
    vm_records.check_state_dir(state_dir)
    directory = os.path.join(state_dir, PROBE_SUBDIR)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    name = reading["vm"]["name"]
    old = load_reading(state_dir, name) or {}
    history = [h for h in old.get("history", []) if h.get("pid") == reading["vm"]["pid"]]
    history.append({"probed_at": reading["probed_at"], "pid": reading["vm"]["pid"],
                    "workload": dict((k, v) for k, v in reading["workload"].items() if k != "net_per_tap")})
    doc = {"latest": reading, "history": history[-HISTORY_LEN:]}
    path = reading_path(state_dir, name)
    vm_records.write_file_atomic(path, json.dumps(doc, sort_keys=True))
    return path


def fresh_reading(state_dir, target, max_age_s, proc="/proc", now=None):
    """The stored reading of this very QEMU process if it is at most max_age_s old, else None."""
    if not max_age_s or max_age_s <= 0 or target.pid is None or target.name is None:
        return None
    doc = load_reading(state_dir, target.name)
    latest = (doc or {}).get("latest")
    if not latest:
        return None
    vm = latest.get("vm") or {}
    if vm.get("pid") != target.pid or vm.get("process_start_ticks") != procfs.process_start_ticks(target.pid, proc):
        return None  # another QEMU process (restarted VM, reused pid)
    age = (now if now is not None else time.time()) - float(latest.get("probed_at") or 0)
    if age < 0 or age > max_age_s:
        return None
    out = dict(latest)
    out["cached"] = True
    out["age_s"] = rounded(age)
    return out
