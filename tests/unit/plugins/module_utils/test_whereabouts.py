"""Where the VM is and what may be done to it (module_utils/whereabouts.py): every combination of the source's run
state and migration state, the destination's, and whether this run tried a migration, against the one action
allowed. The rule that matters most: a source that completed an outgoing migration is never resumed."""

import itertools

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.whereabouts import ACTIONS, locate


def side(status, migration=None, role="source", pid=42):
    if status is None:
        return None
    return {"name": "vm1", "pid": pid, "running": True, "status": status, "migration_status": migration,
            "role": role}


NONE = None
# (case, source (status, migration), destination (status, migration), attempted, started_destination,
#  expected action, expected where, remove_destination, resume_source)
TABLE = [
    ("fresh start", ("running", None), (None, None), False, False, "migrate", "source", False, False),
    ("paused source may be migrated", ("paused", None), (None, None), False, False, "migrate", "source", False,
     False),
    ("leftover waiting destination is reused", ("running", None), ("inmigrate", "setup"), False, False, "migrate",
     "source", False, False),
    ("a failed destination left by an earlier run is removed first", ("running", "failed"),
     ("inmigrate", "failed"), False, False, "migrate", "source", True, False),
    ("a failed destination not ours is removed in a rollback", ("running", "failed"), ("inmigrate", "failed"), True,
     False, "rollback", "source", True, False),
    ("earlier run failed, source running", ("running", "failed"), (None, None), False, False, "migrate", "source",
     False, False),
    ("pre-copy under way", ("running", "active"), ("inmigrate", "active"), False, False, "wait", "source", False,
     False),
    ("pre-copy setting up", ("running", "setup"), ("inmigrate", "setup"), False, False, "wait", "source", False,
     False),
    ("switchover under way", ("finish-migrate", "device"), ("inmigrate", "active"), False, False, "wait",
     "source", False, False),
    ("post-copy under way", ("postmigrate", "postcopy-active"), ("running", "postcopy-active"), False, False,
     "wait", "destination", False, False),
    ("post-copy under way, seen after a failure", ("postmigrate", "postcopy-active"),
     ("running", "postcopy-active"), True, True, "wait", "destination", False, False),
    ("controller killed, migration completed by itself", ("postmigrate", "completed"), ("running", "completed"),
     False, False, "finish", "destination", False, False),
    ("completed, then a later step failed", ("postmigrate", "completed"), ("running", "completed"), True, True,
     "finish", "destination", False, False),
    ("completed, destination still loading", ("postmigrate", "completed"), ("inmigrate", "active"), False, False,
     "wait", "destination", False, False),
    ("completed, destination gone: never resume the stale copy", ("postmigrate", "completed"), (None, None),
     False, False, "refuse", "none", False, False),
    ("completed, destination gone, after a failure", ("postmigrate", "completed"), (None, None), True, True,
     "refuse", "none", False, False),
    ("completed, destination paused", ("postmigrate", "completed"), ("paused", "completed"), True, True,
     "refuse", "none", False, False),
    ("post-copy failed: never resume", ("postmigrate", "failed"), ("running", "failed"), True, True, "refuse",
     "destination", False, False),
    ("post-copy failed, destination gone: never resume", ("postmigrate", "failed"), (None, None), True, True,
     "refuse", "none", False, False),
    ("post-copy link broke", ("postmigrate", "postcopy-paused"), ("running", "postcopy-paused"), True, True,
     "recover", "destination", False, False),
    ("post-copy link broke, seen by a rerun", ("postmigrate", "postcopy-paused"), ("running", "postcopy-paused"),
     False, False, "recover", "destination", False, False),
    ("post-copy recovering", ("postmigrate", "postcopy-recover"), ("running", "postcopy-recover"), False, False,
     "wait", "destination", False, False),
    ("destination paused, source still active", ("postmigrate", "postcopy-active"),
     ("running", "postcopy-paused"), False, False, "wait", "destination", False, False),
    ("source gone during post-copy: guest lost", (None, None), ("running", "postcopy-paused"), False, False,
     "refuse", "none", False, False),
    ("rerun after a completed run", (None, None), ("running", "completed"), False, False, "done", "destination",
     False, False),
    ("rerun after a completed run, seen after failure", (None, None), ("running", None), True, False, "done",
     "destination", False, False),
    ("nowhere", (None, None), (None, None), False, False, "refuse", "none", False, False),
    ("only a waiting destination", (None, None), ("inmigrate", "setup"), False, False, "refuse", "none", False,
     False),
    ("source stopped during our run", (None, None), ("inmigrate", "setup"), True, True, "refuse", "none", False,
     False),
    ("two running copies", ("running", None), ("running", None), False, False, "refuse", "both", False, False),
    ("source resumed after it completed: two copies", ("running", "completed"), ("running", "completed"), False,
     False, "refuse", "both", False, False),
    ("two running copies after a failure", ("running", "failed"), ("running", "completed"), True, True, "refuse",
     "both", False, False),
    ("paused source, destination runs", ("paused", None), ("running", None), False, False, "refuse",
     "destination", False, False),
    ("stale postmigrate copy on the destination", ("running", None), ("postmigrate", "completed"), False, False,
     "refuse", "source", False, False),
    ("pre-copy failed, our destination waits: remove it", ("running", "failed"), ("inmigrate", "failed"), True,
     True, "rollback", "source", True, False),
    ("pre-copy cancelled, destination not ours: leave it", ("running", "cancelled"), ("inmigrate", "setup"), True,
     False, "rollback", "source", False, False),
    ("pre-copy failed at switchover, source left paused", ("paused", "failed"), ("inmigrate", "failed"), True,
     True, "rollback", "source", True, True),
    ("pre-copy failed at switchover, finish-migrate", ("finish-migrate", "failed"), (None, None), True, False,
     "rollback", "source", False, True),
    ("failure before migrate started, destination gone", ("running", None), (None, None), True, True, "rollback",
     "source", False, False),
    ("source busy: a migration holds its monitor", ("busy: walm_migrate (pid 7) holds the VM", None),
     ("inmigrate", "active"), False, False, "wait", "unknown", False, False),
    ("source busy, seen after a failure", ("busy: walm_migrate (pid 7) holds the VM", None), (None, None), True,
     True, "wait", "unknown", False, False),
    ("source unreachable", ("unreachable: no QMP greeting", None), ("inmigrate", "setup"), True, True, "refuse",
     "unknown", False, False),
    ("destination unreachable", ("postmigrate", "postcopy-paused"), ("unreachable: no reply", None), True, True,
     "refuse", "unknown", False, False),
    ("source is itself a waiting destination", ("inmigrate", "setup"), (None, None), False, False, "refuse", "none",
     False, False),
    ("source crashed (guest-panicked)", ("guest-panicked", None), (None, None), True, True, "refuse", "source",
     False, False),
]


@pytest.mark.parametrize("case,src,dst,attempted,started,action,where,remove,resume", TABLE,
                         ids=[t[0] for t in TABLE])
def test_locate(case, src, dst, attempted, started, action, where, remove, resume):
    d = locate(side(*src), side(dst[0], dst[1], role="incoming", pid=43), "walm-src", "walm-dst",
               attempted=attempted, started_destination=started)
    assert (d["action"], d["where"], d["remove_destination"], d["resume_source"]) == (action, where, remove, resume)
    assert d["action"] in ACTIONS
    # The message names both hosts' states, so the operator sees exactly what was read.
    assert "walm-src:" in d["message"] and "walm-dst:" in d["message"]
    if action == "refuse":
        assert d["next_step"]


SOURCE_STATES = [None, "running", "paused", "finish-migrate", "postmigrate", "inmigrate", "unreachable: x",
                 "busy: walm_migrate"]
DEST_STATES = [None, "running", "paused", "inmigrate", "postmigrate", "unreachable: x"]
MIGRATIONS = [None, "setup", "active", "device", "completed", "failed", "cancelled", "postcopy-active",
              "postcopy-paused", "postcopy-recover"]


@pytest.mark.parametrize("attempted,started", [(False, False), (True, False), (True, True)])
def test_never_resume_or_stop_a_copy_that_may_hold_the_newest_state(attempted, started):
    """Every combination: a postmigrate source is never resumed, a running destination is never removed, and a
    source is resumed only when QEMU left it paused before a switchover and no migration moves it."""
    for s, sm, d, dm in itertools.product(SOURCE_STATES, MIGRATIONS, DEST_STATES, MIGRATIONS):
        dec = locate(side(s, sm), side(d, dm, role="incoming", pid=43), attempted=attempted,
                     started_destination=started)
        assert dec["action"] in ACTIONS
        if dec["resume_source"]:
            assert s in ("paused", "finish-migrate") and dec["action"] == "rollback", (s, sm, d, dm, dec)
            assert sm not in ("postcopy-active", "postcopy-paused", "postcopy-recover", "completed")
        if dec["remove_destination"]:
            assert d == "inmigrate" and (started or dm == "failed"), (s, sm, d, dm, dec)
            assert dec["action"] in ("rollback", "migrate"), (s, sm, d, dm, dec)
        if s == "postmigrate":
            assert dec["action"] in ("finish", "wait", "recover", "refuse"), (sm, d, dm, dec)
        stale = s == "postmigrate" or (sm == "completed" and s != "running")
        if s is not None and d == "running" and not stale:
            assert dec["action"] in ("refuse", "wait", "recover"), (s, sm, dm, dec)
        if dec["action"] in ("migrate", "rollback"):
            assert s in ("running", "paused", "finish-migrate") and d in (None, "inmigrate")
