# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A host's draining mark: a file in its state directory, set while a rolling maintenance empties the host (the
role walm.qemu.maintain). An evacuation sends no VM to a host that has one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

MARK_NAME = "draining.json"


def mark_path(state_dir):
    return os.path.join(state_dir, MARK_NAME)


def read_mark(state_dir):
    """The mark as written ({"since": seconds, "reason": text}), or None when the host is in service. A mark that
    cannot be parsed still marks the host draining: its reason says so."""
    try:
        with open(mark_path(state_dir)) as f:
            text = f.read()
    except (IOError, OSError):
        return None
    try:
        mark = json.loads(text)
    except ValueError:
        mark = None
    if not isinstance(mark, dict):
        return {"since": None, "reason": "unreadable mark %s" % mark_path(state_dir)}
    return mark
