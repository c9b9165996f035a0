# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Several outgoing migrations from this host in one step (walm_migrate_waves): the plan's waves in turn, the
migrations of one wave side by side.

An evacuation of many small VMs spends more time in Ansible's per-task round trips than on the link when every VM's
migration is a task of its own (an async task costs about 1.9 s to start on a loaded host, a plain one 0.5 s). Here
one module run carries them all: every request is checked first (nothing starts when one is wrong), then each wave
starts its migrations at once, each on its own thread with its own QMP connection, and the next wave starts when
the last migration of this one has ended. A migration's result has the shape walm_migrate returns, with the times
the wave and the migration started and ended; a migration that fails is its own result, never the others'.
"""

from __future__ import absolute_import, division, print_function

import time

from .batch import requests as batch_requests, side_by_side
from .errors import WalmError
from .migration_service import SUCCEEDED, build_migration, failure_message, migrate_vm

__metaclass__ = type

# Per-migration keys; any other key of walm_migrate's is shared by the whole batch.
PER_MIGRATION = ("name", "destination_uri", "method", "switch_after_passes", "on_timeout", "capabilities",
                 "expected_definition_sha256", "tls_dir", "tls_hostname", "allow_postcopy", "adapt", "expect")


def requests(shared, migrations, waves=None):
    """The batch as waves of walm_migrate parameter dicts: each migration's own keys over the shared ones (a key
    left out or null takes the shared value). `waves` lists the names of each wave, every migration once; None runs
    them one at a time in the given order. Raises WalmError naming the fix for a duplicate name, a wave that names
    an unknown VM or leaves one out, or an empty batch."""
    by_name = dict((p["name"], p) for p in batch_requests(
        shared, migrations, PER_MIGRATION, "migrations", "migration",
        "give at least one migration (name and destination_uri)"))
    if waves is None:
        waves = [[name] for name in by_name]
    seen = []
    for wave in waves:
        if not wave:
            raise WalmError("waves holds an empty wave: every wave names at least one VM")
        for name in wave:
            if name not in by_name:
                raise WalmError("waves names %s, which is not in migrations (%s)" % (name, ", ".join(by_name)))
            if name in seen:
                raise WalmError("waves names %s twice: each VM migrates once" % name)
            seen.append(name)
    left_out = [n for n in by_name if n not in seen]
    if left_out:
        raise WalmError("waves leave out %s: name every migration in one wave" % ", ".join(left_out))
    return [[by_name[n] for n in wave] for wave in waves]


def failure(params, exc):
    """The result of a migration that could not run (or raised): walm_migrate's failure keys, VM left as it was."""
    return {"vm": params["name"], "status": "failed", "failed": True, "changed": False, "error": str(exc),
            "msg": "VM '%s': %s" % (params["name"], exc), "method": params.get("method"),
            "source_status": getattr(exc, "details", {}).get("status")}


def _one(params, migration, check_mode, out):
    started = time.time()
    try:
        result = migrate_vm(params, check_mode=check_mode, migration=migration)
        result.setdefault("failed", result.get("status") not in SUCCEEDED)
        if result["failed"] and "msg" not in result:
            result["msg"] = failure_message(params["name"], result)
    except WalmError as exc:
        result = failure(params, exc)
    except Exception as exc:  # pylint: disable=broad-except  # one migration's crash is its result, not the batch's
        result = failure(params, "unexpected error: %r" % (exc,))
    result["migration_started_at"] = started
    result["migration_finished_at"] = time.time()
    out[params["name"]] = result


def run(waves, check_mode=False):
    """Run the waves (from requests()) in turn, the migrations of a wave side by side; returns {VM: result}.

    Every request is turned into a Migration (all its parameters checked) before the first migration starts, so a
    wrong one fails the batch with nothing touched."""
    built = [[(p, build_migration(p, check_mode)) for p in wave] for wave in waves]
    results = {}
    for index, wave in enumerate(built):
        wave_started = time.time()
        migrations = dict((p["name"], m) for p, m in wave)
        side_by_side(lambda p: _one(p, migrations[p["name"]], check_mode, results), [p for p, _m in wave])
        for p, _m in wave:
            results[p["name"]].update(wave=index + 1, wave_started_at=wave_started)
    return results


def summary(results):
    """completed and not_completed VM names (in the order they ran), and the message for the task."""
    done = [n for n, r in results.items() if r.get("status") in SUCCEEDED]
    not_done = [n for n in results if n not in done]
    msg = "%d of %d migrations completed" % (len(done), len(results))
    if not_done:
        msg += "; not completed: %s" % ", ".join("%s (%s)" % (n, results[n].get("status")) for n in not_done)
    return done, not_done, msg
