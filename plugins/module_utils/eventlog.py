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
import socket
import subprocess
import sys
import time

from .errors import WalmError
from .qmp import event_time_s

# Started as `python -c LOGGER SOCKET LOG CONTROL`; writes {"walm": "connected"} once events flow, then the events.
# It also serves CONTROL, a unix socket through which walm_vm sends out-of-band commands (exec-oob) on this already
# negotiated monitor: one JSON line {"exec-oob": ..., "arguments": ...} in, QEMU's reply line out.
LOGGER = r"""
import json, os, socket, sys, threading, time
sock_path, log_path = sys.argv[1], sys.argv[2]
ctl_path = sys.argv[3] if len(sys.argv) > 3 else None
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
greeting = json.loads(f.readline() or b"{}")
oob = "oob" in greeting.get("QMP", {}).get("capabilities", [])
f.write(json.dumps({"execute": "qmp_capabilities",
                    "arguments": {"enable": ["oob"]} if oob else {}}).encode() + b"\n")
write_lock = threading.Lock()
pending = {}


def serve(conn, n):
    try:
        conn.settimeout(5)
        req = json.loads(conn.makefile("rb").readline() or b"{}")
        wait_s = float(req.pop("walm_timeout_s", 10))
        if "exec-oob" not in req:
            raise ValueError("only exec-oob commands are served here")
        ident = "walm-ctl-%d" % n
        req["id"] = ident
        box = pending[ident] = [threading.Event(), None]
        with write_lock:
            f.write(json.dumps(req).encode() + b"\n")
        if box[0].wait(wait_s):
            conn.sendall(box[1].rstrip(b"\r\n") + b"\n")
        else:
            conn.sendall(b'{"walm": "no reply"}\n')
    except Exception as exc:
        try:
            conn.sendall(json.dumps({"walm": "error", "desc": str(exc)}).encode() + b"\n")
        except Exception:
            pass
    finally:
        conn.close()


def control():
    try:
        os.unlink(ctl_path)
    except OSError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(ctl_path)
    os.chmod(ctl_path, 0o600)
    srv.listen(4)
    n = 0
    while True:
        conn, _ = srv.accept()
        n += 1
        threading.Thread(target=serve, args=(conn, n), daemon=True).start()


connected = False
with open(log_path, "ab", buffering=0) as log:
    for line in f:
        if not connected and line.startswith(b'{"return"'):
            connected = True
            log.write(json.dumps({"walm": "connected", "time": time.time(), "oob": oob}).encode() + b"\n")
            if ctl_path and oob:
                threading.Thread(target=control, daemon=True).start()
        elif b'"event"' in line:
            log.write(line.rstrip(b"\r\n") + b"\n")
        elif b'"id"' in line:
            try:
                ident = json.loads(line).get("id")
            except ValueError:
                continue
            box = pending.pop(ident, None)
            if box:
                box[1] = line
                box[0].set()
if ctl_path:
    try:
        os.unlink(ctl_path)
    except OSError:
        pass
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
        subprocess.Popen([sys.executable or "python3", "-c", LOGGER, paths.events_socket, paths.event_log,
                          paths.control_socket],
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


def last_migration_status(paths):
    """The status of the last MIGRATION event this QEMU sent (None when none was logged): the migration's state
    without asking QEMU, whose main loop may be blocked."""
    status = None
    for e in read(paths):
        if e.get("event") == "MIGRATION":
            status = (e.get("data") or {}).get("status", status)
    return status


def control_ready(paths):
    """Whether the logger serves out-of-band commands (QEMU offered 'oob' and the control socket exists)."""
    return os.path.exists(paths.control_socket) and any(e.get("walm") == "connected" and e.get("oob")
                                                        for e in read(paths))


def execute_oob(paths, command, arguments=None, timeout_s=10.0):
    """Run an out-of-band QMP command through the logger's control socket; returns QEMU's 'return' value.

    Out-of-band commands run in the monitor's own thread, so they are answered even while QEMU's main loop is
    blocked (a destination whose main thread waits for a guest page that a broken post-copy will not deliver)."""
    req = {"exec-oob": command, "walm_timeout_s": timeout_s}
    if arguments:
        req["arguments"] = arguments
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s + 5)
    try:
        s.connect(paths.control_socket)
        s.sendall(json.dumps(req).encode() + b"\n")
        line = s.makefile("rb").readline()
    except (OSError, IOError) as exc:
        raise WalmError("VM '%s': out-of-band %s through %s failed: %s" % (paths.name, command,
                                                                           paths.control_socket, exc))
    finally:
        s.close()
    try:
        reply = json.loads(line or b"{}")
    except ValueError:
        reply = {}
    if "return" in reply:
        return reply["return"]
    if "error" in reply:
        raise WalmError("VM '%s': QEMU refused out-of-band %s: %s" % (paths.name, command,
                                                                      reply["error"].get("desc")))
    raise WalmError("VM '%s': no reply to out-of-band %s within %.0f s (%s)" % (paths.name, command, timeout_s,
                                                                                reply or "connection closed"))


def remove(paths):
    for f in (paths.event_log, paths.events_socket, paths.control_socket):
        if os.path.exists(f):
            os.unlink(f)
