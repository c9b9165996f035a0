# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The state directory: kept private to the user running the VMs, each VM's record in it, and files written
atomically."""

from __future__ import absolute_import, division, print_function

import json
import os
import stat

from .errors import WalmError
from .vmdef import name_problem


def read_record(paths):
    check_state_dir(paths.state_dir)
    try:
        with open(paths.record) as f:
            return json.load(f)
    except (IOError, OSError):
        return None
    except ValueError as exc:
        raise WalmError("VM record %s is corrupt: %s" % (paths.record, exc))


def write_record(paths, record):
    check_state_dir(paths.state_dir)
    write_file_atomic(paths.record, json.dumps(record, indent=2, sort_keys=True))


def write_file_atomic(path, text):
    """Replace `path` by a file of mode 0600 holding `text`, never following a symlink.

    The text goes to a new temporary file beside it (O_EXCL | O_NOFOLLOW: a symlink planted there is refused, not
    written through), then rename() replaces `path` itself, also when `path` is a symlink.
    """
    tmp = path + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)  # left by an interrupted write; unlink removes a symlink, not its target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    except Exception:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def list_vms(state_dir):
    """Names of the VMs that have a record in state_dir (files whose names no VM can have are not VMs)."""
    if not os.path.isdir(state_dir):
        return []
    return sorted(f[:-5] for f in os.listdir(state_dir) if f.endswith(".json") and not name_problem(f[:-5]))


def check_state_dir(state_dir):
    """Refuse an existing state dir that another user could write to: WALM reads records there that name the
    tap devices it deletes, and the QMP sockets there command root's QEMU."""
    try:
        st = os.stat(state_dir)
    except OSError:
        return  # not made yet: ensure_state_dir makes it 0700
    if not stat.S_ISDIR(st.st_mode):
        raise WalmError("state_dir %s is not a directory: remove it, or choose another state_dir" % state_dir)
    if st.st_uid != os.geteuid():
        raise WalmError("state_dir %s belongs to uid %d, not to this user (uid %d), who runs the VMs: fix it with "
                        "'chown %d %s && chmod 0700 %s', or choose another state_dir"
                        % (state_dir, st.st_uid, os.geteuid(), os.geteuid(), state_dir, state_dir))
    if st.st_mode & 0o022:
        raise WalmError("state_dir %s is writable by group or others (mode %04o): another user could plant files "
                        "there that WALM reads and removes; fix it with 'chmod 0700 %s'"
                        % (state_dir, stat.S_IMODE(st.st_mode), state_dir))


def ensure_state_dir(state_dir):
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, 0o700)
        return True
    check_state_dir(state_dir)
    return False
