# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""What walm_vms and walm_migrate_waves share: turning a list of per-VM entries into one request per VM over the
options the whole batch shares, and running one step per VM side by side."""

from __future__ import absolute_import, division, print_function

import threading

from .errors import WalmError

__metaclass__ = type


def requests(shared, entries, own_keys, option, noun, hint):
    """One request per entry: the entry's own keys (own_keys; a key left out or null takes the shared value) over
    the shared options. An entry may be a VM name alone. Refuses, naming the fix, an empty list (hint says what to
    give), a nameless entry or a VM named twice. option: the module option (e.g. vms); noun: what an entry is
    called in the messages (e.g. migration)."""
    if not entries:
        raise WalmError("%s is empty: %s" % (option, hint))
    out, seen = [], set()
    for entry in entries:
        entry = {"name": entry} if isinstance(entry, str) else dict(entry or {})
        if not entry.get("name"):
            raise WalmError("every %s needs a name (the VM); got %r" % (noun, entry))
        if entry["name"] in seen:
            raise WalmError("VM %s is in %s twice: one %s per VM" % (entry["name"], option, noun.split()[0]))
        seen.add(entry["name"])
        params = dict(shared)
        params.update((k, v) for k, v in entry.items() if k in own_keys and v is not None)
        out.append(params)
    return out


def side_by_side(step, requests_):
    """step(request) for every request at once, each on a thread of its own; returns when all have returned."""
    threads = [threading.Thread(target=step, args=(r,), name="walm-" + r["name"]) for r in requests_]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
