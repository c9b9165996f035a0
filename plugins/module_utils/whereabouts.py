# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Where is the VM, and what may be done to it? One decision from both hosts' views, before and after a migration.

A migration leaves two QEMUs that may each hold the guest. Resuming or stopping the wrong one loses the guest's
newest state or runs two copies on one disk. So before anything resumes, rolls back or stops a copy, both hosts are
read (walm_vm_info: QEMU pid, run state, migration state, role) and this pure function decides. Its rules, in order:

- a copy that does not answer, or a state no rule expects, is never touched: refuse and name both states;
- a migration still under way (on either side) is waited for, never interrupted;
- a post-copy whose stream broke is recovered, never rolled back;
- a source copy that completed an outgoing migration (`postmigrate`) is never resumed: the guest's newest state is
  on the destination (finish the migration when the destination runs it, else refuse);
- two running copies are never "fixed" automatically: refuse;
- otherwise the VM runs on the source: migrate it (before) or remove the destination copy this run started and
  resume the source if QEMU left it paused (after a failure).

`locate(source, destination, attempted=False, started_destination=False)` returns a dict: `action` (one of
ACTIONS), `where` (source, destination, both, none, unknown), `status` (for the migration result), `message` (one
sentence for the operator, naming both states), `next_step` (what the operator should do, or None), the two
one-line `source` / `destination` descriptions, the states read, and for a rollback `remove_destination` (only a
copy this run started) and `resume_source` (only a source QEMU left paused).
"""

from __future__ import absolute_import, division, print_function

from .migration_status import ACTIVE_STATES

# What the caller does for each action.
ACTIONS = {
    "migrate": "start (or continue with) the migration",
    "wait": "a migration of this VM is under way: wait for it to end, then read both hosts again",
    "finish": "the migration completed: check that the destination runs the VM, then stop the source copy",
    "done": "the VM already runs on the destination only: nothing to do",
    "recover": "the post-copy stream broke: recover it (migrate-recover on the destination, resume on the source)",
    "rollback": "the migration failed before the switchover: remove the destination copy this run started and "
                "keep the VM running on the source",
    "refuse": "touch nothing: the state needs the operator",
}

PAUSED_POSTCOPY = "postcopy-paused"
# query-migrate states of a migration still moving (postcopy-paused is apart: it waits for recovery).
MOVING = tuple(s for s in ACTIVE_STATES if s != PAUSED_POSTCOPY)
# Run states of a QEMU whose guest executes (the copy that owns the guest now).
RUNNING = ("running",)
# Run states of a source that stopped its guest for a switchover that did not happen: safe to resume.
STOPPED_BEFORE_SWITCHOVER = ("paused", "finish-migrate")


def _view(side):
    """Normalise one host's walm_vm_info entry (or None) to (present, status, migration)."""
    if not side or not (side.get("running") or side.get("pid")):
        return False, None, None
    status = side.get("status")
    if status is not None and not isinstance(status, str):
        status = str(status)
    return True, status, side.get("migration_status")


def describe(host, side):
    """One line: 'walm-src: running (QEMU pid 42), migration completed' or 'walm-dst: no copy'."""
    present, status, migration = _view(side)
    if not present:
        recorded = " (recorded, not running)" if side and side.get("definition") else ""
        return "%s: no copy%s" % (host, recorded)
    return "%s: %s (QEMU pid %s), migration %s" % (host, status or "unknown", side.get("pid"),
                                                   migration or "none")


def _answers(status):
    return status is not None and not status.startswith("unreachable")


def locate(source, destination, source_host="source", destination_host="destination", attempted=False,
           started_destination=False):
    """Decide what may be done to the VM given both hosts' views (see the module docstring)."""
    s_present, s_status, s_mig = _view(source)
    d_present, d_status, d_mig = _view(destination)
    src = describe(source_host, source)
    dst = describe(destination_host, destination)

    def out(action, where, status, message, next_step=None, remove_destination=False, resume_source=False):
        return {"action": action, "where": where, "status": status,
                "message": "%s Now %s; %s." % (message, src, dst), "next_step": next_step,
                "source": src, "destination": dst,
                "source_status": s_status, "destination_status": d_status,
                "source_migration_status": s_mig, "destination_migration_status": d_mig,
                "remove_destination": remove_destination, "resume_source": resume_source}

    refuse_step = ("Check both copies (walm.qemu.walm_vm_info on %s and %s) and their consoles; keep the one that "
                   "runs the guest and stop the other with walm.qemu.walm_vm state=stopped." % (source_host,
                                                                                                destination_host))
    busy = [h for h, present, st in ((source_host, s_present, s_status), (destination_host, d_present, d_status))
            if present and (st or "").startswith("busy")]
    if busy:
        return out("wait", "unknown", "migrating",
                   "Another WALM step is working on the VM on %s (it holds the VM's lock and QMP monitor: a "
                   "migration under way, or one whose controller was interrupted)." % " and ".join(busy),
                   "Wait for it to end, then run again.")
    if (s_present and not _answers(s_status)) or (d_present and not _answers(d_status)):
        return out("refuse", "unknown", "unknown",
                   "A copy of the VM does not answer QMP, so where the guest runs cannot be read; nothing was "
                   "touched.", "Wait for the QEMU that does not answer (or look at why it hangs), then run "
                   "again. " + refuse_step)
    s_running = s_present and s_status in RUNNING
    d_running = d_present and d_status in RUNNING
    if s_present and s_status == "inmigrate":
        return out("refuse", "none", "unknown", "The copy on %s is itself waiting for an incoming migration: it "
                   "is not a source." % source_host, refuse_step)
    if s_mig == PAUSED_POSTCOPY:
        return out("recover", "destination", "postcopy-paused",
                   "The post-copy migration's stream broke: the guest runs on %s with part of its memory still "
                   "on %s. Neither copy may be stopped or resumed." % (destination_host, source_host),
                   "Recover it: walm.qemu.walm_vm state=recover on %s, then walm.qemu.walm_migrate resume=true "
                   "on %s (the playbooks do this by themselves)." % (destination_host, source_host))
    # A waiting destination reports 'setup' until a source connects: that is not a migration under way.
    d_moving = d_present and d_mig in MOVING and d_mig != "setup"
    if s_mig in MOVING or (d_moving and s_present):
        past_switchover = (s_mig or "").startswith("postcopy") or s_mig == "completed"
        return out("wait", "destination" if past_switchover else "source",
                   "migrating", "A migration of this VM is under way (another run, or one whose controller was "
                   "interrupted, is moving it).", "Wait for it to end, then run again.")
    if d_present and (d_mig or "").startswith("postcopy") and not s_present:
        return out("refuse", "none", "lost",
                   "The destination's post-copy migration is %s but the source QEMU, which held the rest of the "
                   "guest's memory, is gone: the guest cannot be completed." % d_mig,
                   "Restart the VM from its disk (the guest's memory is lost); stop the copy on %s first."
                   % destination_host)
    if s_present and (s_status == "postmigrate" or (s_mig == "completed" and not s_running)):
        if s_mig == "completed" and d_running:
            return out("finish", "destination", "completed",
                       "The migration completed: the guest runs on %s and the copy on %s is stale."
                       % (destination_host, source_host),
                       "Run the migration again: it checks the copy on %s and stops the stale one on %s."
                       % (destination_host, source_host))
        if s_mig == "completed" and d_present and d_status == "inmigrate":
            # The destination still loads the last device state: give it a moment.
            return out("wait", "destination", "migrating", "The migration completed on %s and %s is still "
                       "loading the guest." % (source_host, destination_host), "Wait, then run again.")
        if d_running:
            return out("refuse", "destination", "failed",
                       "The migration ended %s after the switchover: the copy on %s is stale and is not resumed; "
                       "the copy on %s runs but may lack part of the guest's memory."
                       % (s_mig or "without a state", source_host, destination_host), refuse_step)
        return out("refuse", "none", "unknown",
                   "The copy on %s went past the switchover of an outgoing migration, so it is stale, but no copy "
                   "runs the guest on %s. The stale copy is not resumed: the guest may have run and written to "
                   "its disk on %s after it left." % (source_host, destination_host, destination_host),
                   "Find out where the guest ran last (the consoles); resume the stale copy only if you are sure "
                   "the guest never ran on %s (walm.qemu.walm_vm state=started force_resume=true on %s)."
                   % (destination_host, source_host))
    if s_present and d_running:
        if s_running:
            return out("refuse", "both", "conflict", "Two copies of the VM are running, on %s and on %s: they "
                       "share one disk and one MAC, and one of them must go." % (source_host, destination_host),
                       refuse_step)
        return out("refuse", "destination", "conflict",
                   "The VM runs on %s while a %s copy that did not complete a migration is on %s."
                   % (destination_host, s_status, source_host), refuse_step)
    if not s_present:
        if d_running:
            return out("done", "destination", "completed", "The VM already runs on %s and nowhere else."
                       % destination_host)
        if d_present and d_status == "inmigrate" and attempted and started_destination:
            # Our own waiting destination, for a source that went away during this run.
            return out("refuse", "none", "failed",
                       "The VM stopped on %s during the migration; the copy this run prepared on %s still "
                       "waits for it and was left as it is." % (source_host, destination_host),
                       "Look at the source's console for why it stopped; stop the waiting copy on %s with "
                       "walm.qemu.walm_vm state=stopped before you start the VM again." % destination_host)
        return out("refuse", "none", "not-found",
                   "The VM runs neither on %s nor on %s." % (source_host, destination_host),
                   "Start it where it belongs (walm.qemu.walm_vm state=started with its definition); a copy "
                   "waiting in incoming mode has no source and can be stopped.")
    # The source holds the guest (running or paused) and no migration moves it; the destination does not run it.
    if d_present and d_status != "inmigrate":
        return out("refuse", "source", "conflict",
                   "%s has a %s copy of the VM that is not waiting for a migration; it is not this run's to "
                   "remove." % (destination_host, d_status), "Stop that copy on %s (walm.qemu.walm_vm "
                   "state=stopped) if it is a leftover, then run again." % destination_host)
    if s_status not in RUNNING + STOPPED_BEFORE_SWITCHOVER:
        return out("refuse", "source", "unknown", "The source copy is %s: it can be neither migrated nor "
                   "resumed." % s_status, refuse_step)
    # A destination copy whose incoming migration failed never ran the guest and no longer listens: removing it
    # is always safe, whoever started it.
    deaf = bool(d_present and d_mig == "failed")
    if not attempted:
        return out("migrate", "source", "migrating", "The VM runs on %s: it can be migrated.%s"
                   % (source_host, " The copy on %s whose incoming migration failed is removed first."
                      % destination_host if deaf else ""), remove_destination=deaf)
    remove = bool(d_present and (started_destination or deaf))
    resume = s_status in STOPPED_BEFORE_SWITCHOVER
    kept = ("" if remove or not d_present else " The copy waiting on %s was not started by this run and is left "
            "waiting." % destination_host)
    return out("rollback", "source", "failed",
               "The migration failed before the switchover: the guest's newest state is on %s.%s"
               % (source_host, kept), remove_destination=remove, resume_source=resume)
