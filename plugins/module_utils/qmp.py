# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A small synchronous QMP client on top of qemu.qmp.

Every call has a timeout, and every failure -- socket missing, permission denied, nothing listening, QEMU error,
disconnect, timeout -- is raised as one QMPFailure whose message names the VM and the command, so modules can hand it
straight to fail_json.
"""

from __future__ import absolute_import, division, print_function

import asyncio
import errno
import os
import stat
import traceback

try:
    from qemu.qmp import QMPClient, ConnectError, ExecuteError, QMPError, StateError
    from qemu.qmp.protocol import Runstate

    HAS_QMP = True
    QMP_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised on hosts without the library
    HAS_QMP = False
    QMP_IMPORT_ERROR = traceback.format_exc()

from .errors import WalmError

DEFAULT_TIMEOUT_S = 10.0


class QMPFailure(WalmError):
    """A QMP call failed; the message is meant for the operator."""

    def __init__(self, message, vm=None, command=None, error_class=None):
        super(QMPFailure, self).__init__(message)
        self.vm = vm
        self.command = command
        #: QEMU's error class (e.g. "GenericError") when QEMU itself refused the command
        self.error_class = error_class


def _describe_os_error(exc, socket_path):
    err = getattr(exc, "errno", None)
    if err == errno.ENOENT:
        return "QMP socket %s does not exist (is the VM running on this host?)" % socket_path
    if err in (errno.EACCES, errno.EPERM):
        return "permission denied on QMP socket %s (run as root or as the user that owns the VM)" % socket_path
    if err == errno.ECONNREFUSED:
        return ("nothing is listening on QMP socket %s (QEMU has exited and left a stale socket, or another "
                "client holds the monitor)" % socket_path)
    return "cannot open QMP socket %s: %s" % (socket_path, exc)


class QMP(object):
    """Synchronous QMP connection to one VM.

    Use as a context manager::

        with QMP("vm1", "/run/walm/vm1.qmp") as qmp:
            status = qmp.execute("query-status")["status"]
    """

    def __init__(self, vm, socket_path, timeout_s=DEFAULT_TIMEOUT_S):
        if not HAS_QMP:
            raise WalmError("the Python library qemu.qmp is required on this host (pip install qemu.qmp)")
        self.vm = vm
        self.socket_path = socket_path
        self.timeout_s = float(timeout_s)
        # A private loop: modules are synchronous and must not depend on a global loop's state.
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(vm)
        self._connected = False

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _fail(self, command, detail, error_class=None):
        raise QMPFailure("VM '%s': QMP %s failed: %s" % (self.vm, command, detail), vm=self.vm,
                         command=command, error_class=error_class)

    def _run(self, coro, timeout_s):
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout=timeout_s))

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- public API -------------------------------------------------------------------------------------------

    def connect(self):
        """Connect and negotiate capabilities. Raises QMPFailure with a specific reason."""
        what = "connect"
        path = self.socket_path
        # Check the obvious cases first: qemu.qmp wraps them in a generic ConnectError.
        try:
            st = os.stat(path)
        except OSError as exc:
            self._fail(what, _describe_os_error(exc, path))
        if not stat.S_ISSOCK(st.st_mode):
            self._fail(what, "%s is not a unix socket" % path)
        try:
            self._run(self._client.connect(path), self.timeout_s)
        except asyncio.TimeoutError:
            self._abort()
            self._fail(what, "no QMP greeting on %s within %.1f s (QEMU hung, or another client holds the "
                             "monitor)" % (path, self.timeout_s))
        except ConnectError as exc:
            self._abort()
            cause = getattr(exc, "exc", None)
            if isinstance(cause, OSError):
                self._fail(what, _describe_os_error(cause, path))
            self._fail(what, "cannot connect to %s: %s" % (path, exc))
        except (OSError, QMPError) as exc:
            self._abort()
            self._fail(what, "cannot connect to %s: %s" % (path, exc))
        self._connected = True
        return self

    def execute(self, command, arguments=None, timeout_s=None):
        """Run one QMP command and return its result. Any failure raises QMPFailure."""
        if not self._connected:
            self._fail("'%s'" % command, "not connected")
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        what = "command '%s'" % command
        try:
            return self._run(self._client.execute(command, arguments), timeout)
        except asyncio.TimeoutError:
            self._fail(what, "no reply within %.1f s" % timeout)
        except ExecuteError as exc:
            self._fail(what, "QEMU refused it: %s: %s" % (exc.error_class, exc),
                       error_class=exc.error_class)
        except StateError as exc:
            self._connected = False
            self._fail(what, "QEMU closed the QMP connection (did QEMU exit?): %s" % exc)
        except (OSError, EOFError, QMPError) as exc:
            self._connected = False
            self._fail(what, "connection lost (did QEMU exit?): %s" % (exc or exc.__class__.__name__))

    def events(self, wait_s=0.0):
        """Return (and clear) the events QEMU has sent so far, waiting up to wait_s for the first one."""
        out = []
        try:
            # Give the reader task a chance to run so queued events are delivered.
            self._run(asyncio.sleep(0), self.timeout_s)
            if self._client.events.empty() and wait_s > 0:
                try:
                    out.append(self._run(self._client.events.get(), wait_s))
                except asyncio.TimeoutError:
                    pass
            out.extend(self._client.events.clear())
        except (OSError, QMPError) as exc:
            self._fail("events", "connection lost: %s" % exc)
        return [dict(e) for e in out]

    def _abort(self):
        try:
            self._run(self._client.disconnect(), 5.0)
        except Exception:  # noqa: BLE001 - best effort on an already failed connection
            pass

    def close(self):
        """Disconnect; never raises (QEMU may already be gone, e.g. after 'quit')."""
        try:
            if self._client.runstate != Runstate.IDLE:
                self._run(self._client.disconnect(), 5.0)
        except Exception:  # noqa: BLE001 - disconnect errors after quit are expected
            pass
        finally:
            self._connected = False
            try:
                self._loop.close()
            except Exception:  # noqa: BLE001
                pass


def event_time_s(event):
    """QMP event timestamp as float seconds since the epoch (QEMU's host clock)."""
    ts = event.get("timestamp") or {}
    return ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6
