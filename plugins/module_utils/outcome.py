# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The outcome of one VM's migration as the role walm.qemu.migrate (roles/migrate/tasks/main.yml) reports it: the result document (walm_migrate's
return plus where the VM is, its status, whether it was rolled back) and one sentence for the operator.

Pure functions of what the playbook's steps returned; the playbook only gathers those and calls them (filters
walm.qemu.migration_outcome and walm.qemu.migration_failure). `migrated` is the block's end (the VM runs on the
destination, or check mode, or nothing had to be done); `not_migrated` is the rescue's (after both hosts were read
again and the destination copy removed or the source resumed as the whereabouts allowed).
"""

from __future__ import absolute_import, division, print_function

import re

from .evacuation_summary import adaptation_text

DEFAULT_DOWNTIME_LIMIT_MS = 300
# The prefix Ansible puts before a filter's own message: an operator needs only the message.
_FILTER_PREFIX = re.compile(r"^.*The filter plugin .walm.qemu.migration_request. failed: ")
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")


def _failed(registered):
    return bool(isinstance(registered, dict) and registered.get("failed"))


def _vm_status(registered):
    vm = (registered or {}).get("vm") if isinstance(registered, dict) else None
    return vm.get("status") if isinstance(vm, dict) else None


def _sentence(text):
    """The text trimmed and ending with one full stop."""
    text = (text or "").strip()
    return text if text.endswith(".") else text + "."


def _base(migration, adaptation):
    """walm_migrate's return (when the task ran) with what the run-time check did before a post-copy recovery."""
    out = dict(migration) if isinstance(migration, dict) and "status" in migration else {}
    out.update(adaptation or {})
    return out


def guest_visible_downtime_ms(migration, dst_vm):
    """The destination's RESUME less the source's STOP, in ms (one decimal), or None when either is unknown."""
    resumed = ((dst_vm or {}).get("vm") or {}).get("resumed_at") if isinstance(dst_vm, dict) else None
    stopped = (migration or {}).get("source_stop_time")
    if resumed is None or stopped is None:
        return None
    return round((float(resumed) - float(stopped)) * 1000.0, 1)


def migrated(vm, source, destination, where, migration, adaptation=None, dst_vm=None, check_mode=False,
             method="precopy", downtime_limit_ms=None):
    """The block's outcome. where: the whereabouts decision (action migrate, recover, finish or done, and its
    message); migration: walm_migrate's registered result (or {} when it did not run); adaptation: what the run-time
    check did before a post-copy recovery; dst_vm: walm_vm's result on the destination (state started);
    downtime_limit_ms: the limit asked for. Returns {"result": ..., "message": ...}."""
    migration = migration if isinstance(migration, dict) else {}
    adaptation = adaptation or {}
    action = where["action"]
    if action in ("migrate", "recover"):
        status = migration.get("status") or "completed"
    else:
        status = "would-" + action if check_mode else "completed"
    gvd = guest_visible_downtime_ms(migration, dst_vm)
    seen = gvd if gvd is not None else migration.get("downtime_ms")
    # The limit in effect at the end: the adaptation may have raised it.
    limit = int(adaptation.get("downtime_limit_ms") or migration.get("downtime_limit_ms") or downtime_limit_ms
                or DEFAULT_DOWNTIME_LIMIT_MS)
    within = (float(seen) <= limit) if status == "completed" and seen is not None else None
    result = _base(migration, adaptation)
    result.update({
        "vm": vm, "source": source, "destination": destination, "status": status, "whereabouts": action,
        "changed": action != "done", "destination_status": _vm_status(dst_vm),
        "destination_resumed_at": ((dst_vm or {}).get("vm") or {}).get("resumed_at") if isinstance(dst_vm, dict)
        else None,
        "guest_visible_downtime_ms": gvd, "downtime_limit_ms": limit, "downtime_within_limit": within,
        "rolled_back": False})
    if check_mode:
        if action == "migrate":
            message = "%s: would migrate from %s to %s by %s" % (vm, source, destination, method)
        else:
            message = "%s: would %s: %s" % (vm, action, where.get("message") or "")
    elif action == "done":
        message = "%s already runs on %s and nowhere else: nothing to do." % (vm, destination)
    elif action == "finish":
        message = ("%s: an earlier run's migration to %s had completed; the VM runs there and the stale copy on %s "
                   "was stopped." % (vm, destination, source))
    else:
        message = "%s: %s %s %s -> %s in %s ms (TMT), downtime %s ms" % (
            vm, migration.get("status"), migration.get("method"), source, destination,
            migration.get("total_time_ms"), migration.get("downtime_ms"))
        if gvd is not None:
            message += " (guest-visible %s ms)" % gvd
        if within is False:
            message += ", over the %d ms limit" % limit
        version = _VERSION.search(migration.get("qemu_version") or "")
        message += ", %s MiB sent in %s passes, QEMU %s" % (
            round((migration.get("transferred_bytes") or 0) / 1048576.0, 1), migration.get("passes"),
            version.group(0) if version else "(version unknown)")
        adapted = adaptation_text(result)
        if adapted:
            message += "; " + adapted
    return {"result": result, "message": message}


def not_migrated(vm, source, destination, error, untouched, after, migration=None, adaptation=None,
                 dst_removed=None, src_after=None):
    """The rescue's outcome. error: the failed task's message; untouched: the request was refused before anything
    was read or started; after: the whereabouts decision made from both hosts read again (action, where, status,
    message, next_step, remove_destination, resume_source, source_status); dst_removed and src_after: the
    registered results of removing the destination copy and resuming the source copy (skipped or {} when not
    done). Returns {"result": ..., "message": ...}."""
    migration = migration if isinstance(migration, dict) else {}
    m_status = migration.get("status") or ""
    if m_status and m_status != "completed":
        status = m_status
    elif m_status == "completed" or after.get("action") == "finish":
        # The migration completed but the VM was not seen running on the destination afterwards.
        status = "unverified"
    else:
        status = after.get("status")
    rolled_back = after.get("action") == "rollback" and not _failed(dst_removed) and not _failed(src_after)
    result = _base(migration, adaptation)
    result.update({
        "vm": vm, "source": source, "destination": destination, "status": status, "error": error,
        "whereabouts": after.get("action"), "where": after.get("where"), "next_step": after.get("next_step"),
        "rolled_back": rolled_back,
        "source_status_after": _vm_status(src_after) or after.get("source_status"),
        "downtime_within_limit": migration.get("downtime_within_limit") if m_status == "completed" else None})
    if untouched:
        message = "%s: nothing was done. %s" % (vm, _FILTER_PREFIX.sub("", error or "", count=1))
        return {"result": result, "message": message}
    message = "Migration of %s from %s to %s failed: %s %s" % (vm, source, destination, _sentence(error),
                                                               after.get("message") or "")
    if after.get("action") == "rollback":
        if _failed(dst_removed):
            message += (" The destination copy could not be removed (%s): stop it on %s."
                        % (dst_removed.get("msg") or "", destination))
        elif after.get("remove_destination"):
            message += " The destination copy this run started was removed."
        if _failed(src_after):
            message += " The source copy could not be resumed (%s)." % (src_after.get("msg") or "")
        elif after.get("resume_source"):
            message += " The source copy was resumed: it is %s." % (_vm_status(src_after) or "?")
        message += " The VM keeps running on %s." % source
    elif after.get("next_step"):
        message += " " + after["next_step"]
    return {"result": result, "message": message}
