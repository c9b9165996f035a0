# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A migration's progress while it runs: one small document per VM, rewritten as the migration goes.

walm_migrate writes it on the source (``STATE_DIR/NAME.progress.json``) at every pass boundary, status change and
at most every PROGRESS_EVERY_S seconds in between; the evacuation's wait step (action walm_migration_wait) reads it
and prints one line per change, so an operator sees the pass, the remainder, the throughput, the method and any
adaptation while a migration runs, not only when it ends. The document is JSON with public fields only.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import time

__metaclass__ = type

MIB = 1024.0 * 1024.0
# The longest a running migration's progress document goes without being rewritten.
PROGRESS_EVERY_S = 1.0
# QEMU's migration states after which a document is not rewritten any more.
ENDED = ("completed", "failed", "cancelled")


def document(vm, method, snap, postcopy_requested_ms=None, adaptations=(), now=None):
    """The progress document of one migration from its latest snapshot (migration_status.snapshot)."""
    mbps = snap.get("mbps") or 0
    return {
        "vm": vm,
        "method": method,
        "status": snap.get("status"),
        "pass": snap.get("pass", 0),
        "t_ms": snap.get("t_ms", 0),
        "remaining_mib": round((snap.get("remaining_bytes") or 0) / MIB, 1),
        "transferred_mib": round((snap.get("transferred_bytes") or 0) / MIB, 1),
        # QEMU's mbps is megabits per second (10^6): in MiB/s for the operator, like every other figure.
        "throughput_mib_s": round(mbps * 1e6 / 8 / MIB, 1),
        "postcopy_requested_ms": postcopy_requested_ms,
        "adaptations": [a.get("action") for a in adaptations],
        "updated_at": time.time() if now is None else now,
    }


def changed(before, after):
    """Whether `after` says something new to the operator (pass, status, method switch or adaptation)."""
    if before is None:
        return True
    keys = ("status", "pass", "postcopy_requested_ms", "adaptations")
    return any(before.get(k) != after.get(k) for k in keys)


def line(doc):
    """One line for the operator: 'demo-writer: precopy pass 3 (active), 120.5 MiB left, 110.2 MiB/s, 2.1 s'."""
    parts = ["%s: %s pass %s (%s)" % (doc.get("vm"), doc.get("method"), doc.get("pass"), doc.get("status")),
             "%.1f MiB left" % (doc.get("remaining_mib") or 0),
             "%.1f MiB/s" % (doc.get("throughput_mib_s") or 0),
             "%.1f s" % ((doc.get("t_ms") or 0) / 1000.0)]
    if doc.get("postcopy_requested_ms") is not None and doc.get("method") != "postcopy":
        parts.append("switched to post-copy at %.1f s" % (doc["postcopy_requested_ms"] / 1000.0))
    if doc.get("adaptations"):
        parts.append("adapted: " + ", ".join(doc["adaptations"]))
    return ", ".join(parts)


def write(path, doc):
    """Replace the document at `path` atomically (a reader never sees half of it); 0600 like the VM's record."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)


class Writer(object):
    """Writes one migration's progress document when it has news, or every PROGRESS_EVERY_S seconds.

    A failure to write (a full or read-only state directory) never stops the migration: the progress is a view,
    the migration's result is what counts."""

    def __init__(self, path, vm, method, every_s=PROGRESS_EVERY_S):
        self.path = path
        self.vm = vm
        self.method = method
        self.every_s = every_s
        self._last = None
        self._last_at = 0.0

    def update(self, snap, postcopy_requested_ms=None, adaptations=(), force=False):
        if not self.path:
            return None
        doc = document(self.vm, self.method, snap, postcopy_requested_ms, adaptations)
        if not (force or changed(self._last, doc) or doc["updated_at"] - self._last_at >= self.every_s):
            return None
        try:
            write(self.path, doc)
        except (IOError, OSError):
            return None
        self._last, self._last_at = doc, doc["updated_at"]
        return doc
