# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A destination QEMU's QMP events, kept in a file: when did the migrated guest resume there?

The guest-visible downtime of a migration is the destination's RESUME less the source's STOP. walm_migrate sees
the source's STOP on its own QMP connection; nobody holds a connection to the destination QEMU while the
migration runs (each host's QEMU is driven on its own host, by separate module calls). So an incoming QEMU gets a
second QMP monitor (HostPaths.events_socket) and a small detached logger that takes it at once and appends every
event QEMU sends, with QEMU's own timestamp, as one JSON line to HostPaths.event_log. The logger is plain Python
with the standard library only (it outlives the module run, so it cannot use the module's payload) and ends
when QEMU closes the monitor, i.e. when QEMU exits.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import subprocess
import sys
import time

from .qmp import event_time_s

# Started as `python -c LOGGER SOCKET LOG`; writes {"walm": "connected"} once events flow, then the events.
LOGGER = r"""
import json, socket, sys, time
sock_path, log_path = sys.argv[1], sys.argv[2]
deadline = time.time() + 30
while True:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock_path)
        break
    except OSError:
        s.close()
        if time.time() > deadline:
            sys.exit(1)
        time.sleep(0.02)
f = s.makefile("rwb", buffering=0)
f.readline()
f.write(b'{"execute": "qmp_capabilities"}\n')
with open(log_path, "ab", buffering=0) as log:
    for line in f:
        if line.startswith(b'{"return"'):
            log.write(json.dumps({"walm": "connected", "time": time.time()}).encode() + b"\n")
        elif b'"event"' in line:
            log.write(line.rstrip(b"\r\n") + b"\n")
"""


def start(paths, timeout_s=10.0):
    """Start the logger for a QEMU just started with paths.events_socket; wait until it receives events.

    Returns None when it runs, else the reason it does not (the migration goes on without a guest-visible
    downtime figure: this is a measurement, not a precondition)."""
    if os.path.lexists(paths.event_log):
        os.unlink(paths.event_log)
    # Made here, 0600, so the logger appends to a file only its owner reads, whatever umask it runs with.
    os.close(os.open(paths.event_log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    old_umask = os.umask(0o077)
    try:
        subprocess.Popen([sys.executable or "python3", "-c", LOGGER, paths.events_socket, paths.event_log],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         close_fds=True, start_new_session=True)
    except OSError as exc:
        return "cannot start the QMP event logger: %s" % exc
    finally:
        os.umask(old_umask)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if any(e.get("walm") == "connected" for e in read(paths)):
            return None
        time.sleep(0.02)
    return "the QMP event logger did not connect to %s within %d s" % (paths.events_socket, timeout_s)


def read(paths):
    """Every record of the event log (none when there is no log)."""
    out = []
    try:
        with open(paths.event_log) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a crash
    except (IOError, OSError):
        pass
    return out


def first_event_time(records, name):
    """QEMU's timestamp (seconds since the epoch) of the first event `name`, or None."""
    for e in records:
        if e.get("event") == name:
            return event_time_s(e)
    return None


def resumed_at(paths):
    """When the guest first ran on this host (the incoming QEMU's first RESUME), or None."""
    return first_event_time(read(paths), "RESUME")


def remove(paths):
    for f in (paths.event_log, paths.events_socket):
        if os.path.exists(f):
            os.unlink(f)
