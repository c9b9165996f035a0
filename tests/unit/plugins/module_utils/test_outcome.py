"""One migration's outcome (plugins/module_utils/outcome.py): the result document and the operator's sentence that
the role walm.qemu.migrate (roles/migrate/tasks/main.yml) leaves, from what its steps returned."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.outcome import migrated, not_migrated

MIGRATE = {"action": "migrate", "message": "vm1 runs on hv1."}
MIGRATION = {"status": "completed", "method": "precopy", "total_time_ms": 1004, "downtime_ms": 210,
             "transferred_bytes": 118889166, "passes": 3, "source_stop_time": 100.0, "downtime_limit_ms": 300,
             "qemu_version": "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)"}
DST_VM = {"changed": False, "vm": {"status": "running", "resumed_at": 100.2121}}
SKIPPED = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
RAISED = {"adaptations": [{"t_ms": 3046, "pass": 1, "action": "downtime", "reason": "pass 1 shrank nothing",
                           "downtime_limit_ms": 2400}], "downtime_limit_ms": 2400}


def ok(**kw):
    args = dict(vm="vm1", source="hv1", destination="hv2", where=MIGRATE, migration=MIGRATION, dst_vm=DST_VM)
    args.update(kw)
    return migrated(**args)


@pytest.mark.parametrize("kw, status, gvd, limit, within, message", [
    ({}, "completed", 212.1, 300, True,
     "vm1: completed precopy hv1 -> hv2 in 1004 ms (TMT), downtime 210 ms (guest-visible 212.1 ms), 113.4 MiB sent "
     "in 3 passes, QEMU 10.0.2"),
    # The guest saw a longer pause than the limit: said in the message and the result.
    ({"dst_vm": {"vm": {"status": "running", "resumed_at": 100.4}}}, "completed", 400.0, 300, False,
     "vm1: completed precopy hv1 -> hv2 in 1004 ms (TMT), downtime 210 ms (guest-visible 400.0 ms), over the 300 "
     "ms limit, 113.4 MiB sent in 3 passes, QEMU 10.0.2"),
    # No resume time from the destination: QEMU's downtime is judged instead.
    ({"dst_vm": {"vm": {"status": "running", "resumed_at": None}}}, "completed", None, 300, True,
     "vm1: completed precopy hv1 -> hv2 in 1004 ms (TMT), downtime 210 ms, 113.4 MiB sent in 3 passes, QEMU "
     "10.0.2"),
    # A raised limit is the one in effect; the adaptation is told.
    ({"dst_vm": {"vm": {"status": "running", "resumed_at": 101.9}}, "migration": dict(MIGRATION, **RAISED)},
     "completed", 1900.0, 2400, True,
     "vm1: completed precopy hv1 -> hv2 in 1004 ms (TMT), downtime 210 ms (guest-visible 1900.0 ms), 113.4 MiB sent "
     "in 3 passes, QEMU 10.0.2; adapted: downtime at 3.05 s (pass 1: pass 1 shrank nothing)"),
    # What the check did before a post-copy recovery comes from `adaptation` (a resume reports only itself).
    ({"migration": dict(MIGRATION, downtime_limit_ms=300), "adaptation": RAISED,
      "dst_vm": {"vm": {"status": "running", "resumed_at": 101.9}}}, "completed", 1900.0, 2400, True, None),
    # Nothing asked for a limit and nothing reports one: the default 300 ms.
    ({"migration": dict(MIGRATION, downtime_limit_ms=None)}, "completed", 212.1, 300, True, None),
    ({"migration": dict(MIGRATION, downtime_limit_ms=None), "downtime_limit_ms": 150}, "completed", 212.1, 150, False,
     None),
    ({"where": {"action": "done", "message": "x"}, "migration": SKIPPED, "dst_vm": SKIPPED}, "completed", None, 300,
     None, "vm1 already runs on hv2 and nowhere else: nothing to do."),
    # An earlier run completed the migration: no stop time of this run, so no downtime to judge.
    ({"where": {"action": "finish", "message": "x"}, "migration": SKIPPED}, "completed", None, 300, None, None),
])
def test_migrated(kw, status, gvd, limit, within, message):
    out = ok(**kw)
    r = out["result"]
    assert (r["status"], r["guest_visible_downtime_ms"], r["downtime_limit_ms"], r["downtime_within_limit"]) == (
        status, gvd, limit, within)
    assert r["vm"] == "vm1" and r["source"] == "hv1" and r["destination"] == "hv2" and r["rolled_back"] is False
    if message is not None:
        assert out["message"] == message


def test_finish_and_done_say_what_an_earlier_run_did():
    out = ok(where={"action": "finish", "message": "x"}, migration=SKIPPED)
    assert out["message"] == ("vm1: an earlier run's migration to hv2 had completed; the VM runs there and the stale "
                              "copy on hv1 was stopped.")
    # A skipped walm_migrate leaves none of its keys in the result; status completed, changed.
    assert "skipped" not in out["result"] and out["result"]["changed"] is True
    assert ok(where={"action": "done"}, migration=SKIPPED)["result"]["changed"] is False


@pytest.mark.parametrize("where, message, status", [
    (MIGRATE, "vm1: would migrate from hv1 to hv2 by hybrid", "completed"),
    ({"action": "finish", "message": "It completed earlier."}, "vm1: would finish: It completed earlier.",
     "would-finish"),
])
def test_check_mode(where, message, status):
    out = ok(where=where, check_mode=True, method="hybrid", migration={"status": "completed"} if where is MIGRATE
             else SKIPPED, dst_vm=SKIPPED)
    assert out["message"] == message and out["result"]["status"] == status
    # Nothing ran: no destination status, no downtime judged.
    assert out["result"]["destination_status"] is None and out["result"]["downtime_within_limit"] is None


ROLLBACK = {"action": "rollback", "where": "source", "status": "rolled-back", "message": "It runs on hv1.",
            "next_step": None, "remove_destination": True, "resume_source": True, "source_status": "paused"}
RESUMED = {"changed": True, "vm": {"status": "running"}}
FAILED_STEP = {"failed": True, "msg": "ssh: connection refused"}


def ko(**kw):
    args = dict(vm="vm1", source="hv1", destination="hv2", error="migration failed: socket closed",
                untouched=False, after=ROLLBACK, migration={"failed": True, "status": "failed", "msg": "x"},
                dst_removed={"changed": True}, src_after=RESUMED)
    args.update(kw)
    return not_migrated(**args)


@pytest.mark.parametrize("kw, status, rolled_back, source_after, message", [
    ({}, "failed", True, "running",
     "Migration of vm1 from hv1 to hv2 failed: migration failed: socket closed. It runs on hv1. The destination copy "
     "this run started was removed. The source copy was resumed: it is running. The VM keeps running on hv1."),
    # An error that ends with a full stop keeps one.
    ({"error": "It broke.  "}, "failed", True, "running",
     "Migration of vm1 from hv1 to hv2 failed: It broke. It runs on hv1. The destination copy this run started was "
     "removed. The source copy was resumed: it is running. The VM keeps running on hv1."),
    ({"dst_removed": FAILED_STEP}, "failed", False, "running",
     "Migration of vm1 from hv1 to hv2 failed: migration failed: socket closed. It runs on hv1. The destination copy "
     "could not be removed (ssh: connection refused): stop it on hv2. The source copy was resumed: it is running. "
     "The VM keeps running on hv1."),
    ({"src_after": FAILED_STEP}, "failed", False, "paused",
     "Migration of vm1 from hv1 to hv2 failed: migration failed: socket closed. It runs on hv1. The destination copy "
     "this run started was removed. The source copy could not be resumed (ssh: connection refused). The VM keeps "
     "running on hv1."),
    # Nothing to undo on either side.
    ({"after": dict(ROLLBACK, remove_destination=False, resume_source=False, source_status="running"),
      "dst_removed": SKIPPED, "src_after": SKIPPED}, "failed", True, "running",
     "Migration of vm1 from hv1 to hv2 failed: migration failed: socket closed. It runs on hv1. The VM keeps running "
     "on hv1."),
    # Past the switchover: never rolled back; the next step is said.
    ({"after": {"action": "recover", "where": "split", "status": "postcopy-paused", "message": "Post-copy broke.",
                "next_step": "Recover it with walm_vm state=recover.", "source_status": "postmigrate"},
      "migration": {"failed": True, "status": "postcopy-paused"}, "dst_removed": SKIPPED, "src_after": SKIPPED},
     "postcopy-paused", False, "postmigrate",
     "Migration of vm1 from hv1 to hv2 failed: migration failed: socket closed. Post-copy broke. Recover it with "
     "walm_vm state=recover."),
    # walm_migrate completed but the VM was not seen running on the destination.
    ({"after": {"action": "finish", "where": "destination", "status": "completed", "message": "It completed.",
                "next_step": None, "source_status": "postmigrate"},
      "migration": dict(MIGRATION, downtime_within_limit=True), "dst_removed": SKIPPED, "src_after": SKIPPED},
     "unverified", False, "postmigrate",
     "Migration of vm1 from hv1 to hv2 failed: migration failed: socket closed. It completed."),
    # walm_migrate never ran (the destination could not be prepared): the whereabouts' status.
    ({"migration": SKIPPED, "after": dict(ROLLBACK, resume_source=False, source_status="running"),
      "src_after": SKIPPED}, "rolled-back", True, "running", None),
])
def test_not_migrated(kw, status, rolled_back, source_after, message):
    out = ko(**kw)
    r = out["result"]
    assert (r["status"], r["rolled_back"], r["source_status_after"]) == (status, rolled_back, source_after)
    assert r["error"] == kw.get("error", "migration failed: socket closed")
    if message is not None:
        assert out["message"] == message
    assert r["downtime_within_limit"] is (True if status == "unverified" else None)


def test_refused_before_anything_names_only_the_fix():
    err = ("Task failed: The filter plugin 'walm.qemu.migration_request' failed: Migration parameters refused before "
           "anything was started: method must be one of precopy, postcopy, hybrid")
    where = {"action": "refuse", "where": "unknown", "status": "refused", "message": "Nothing was read or started.",
             "next_step": None, "remove_destination": False, "resume_source": False, "source_status": None}
    out = ko(error=err, untouched=True, after=where, migration={}, dst_removed=SKIPPED, src_after=SKIPPED)
    assert out["message"] == ("vm1: nothing was done. Migration parameters refused before anything was started: "
                              "method must be one of precopy, postcopy, hybrid")
    assert out["result"]["status"] == "refused" and out["result"]["rolled_back"] is False
