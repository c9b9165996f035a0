# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""One VM, one change at a time on each host: a per-VM lock in the state directory.

Two runs that migrate, prepare, stop or recover the same VM on the same host must not interleave (one run's
rollback resuming a copy the other run just migrated). Each such step holds an exclusive flock on
<state_dir>/<name>.lock for as long as it changes the VM; a migration holds it until the migration ends. The kernel
releases the lock when the holder exits, so a killed run never leaves it behind. The file names its holder so the
refusal can say who is busy with the VM.
"""

from __future__ import absolute_import, division, print_function

import contextlib
import errno
import fcntl
import json
import os
import time

from .errors import WalmError
from .vmdef import HostPaths


def lock_path(state_dir, name):
    return HostPaths(state_dir, name).lock


def _holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        return json.loads(data.decode("utf-8")) if data else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def hold(state_dir, name, what, wait_s=0.0, poll_s=0.1):
    """Hold the VM's lock while the block runs; raise WalmError naming the holder if it stays taken for wait_s.

    Without a state directory there is nothing on this host to protect (no VM was ever started here), so no
    lock is taken."""
    if not os.path.isdir(state_dir):
        yield None
        return
    path = lock_path(state_dir, name)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise WalmError("VM '%s': cannot open its lock file %s: %s" % (name, path, exc))
    try:
        deadline = time.time() + max(0.0, float(wait_s))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise WalmError("VM '%s': cannot lock %s: %s" % (name, path, exc))
                if time.time() >= deadline:
                    h = _holder(fd)
                    raise WalmError(
                        "VM '%s' is busy on this host: %s (pid %s, since %s) holds its lock %s. Two changes to one "
                        "VM must not interleave; wait for that one to end, then run again."
                        % (name, h.get("what", "another WALM step"), h.get("pid", "?"),
                           time.strftime("%H:%M:%S", time.localtime(h["since"])) if h.get("since") else "?",
                           path), lock=path, lock_holder=h)
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode("utf-8"))
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def holder(state_dir, name):
    """Who holds the VM's lock now ({'pid', 'what', 'since'}), or None when nobody does. Takes nothing."""
    path = lock_path(state_dir, name)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except (IOError, OSError):
            return _holder(fd) or {"what": "another WALM step"}
        return None
    finally:
        os.close(fd)
