# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Action walm.qemu.walm_migration_wait: wait for migrations started as async walm_migrate tasks, printing each
migration's progress (pass, remainder, throughput, method, adaptations) as it changes; returns every migration's
result. Runs on the controller; reads the jobs (async_status) and the progress documents (slurp) on the task's host,
the migrations' source. Documentation: plugins/modules/walm_migration_wait.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.walm.qemu.plugins.module_utils import progress
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths

display = Display()

ARGS = {
    "jobs": {"type": "list", "elements": "dict", "required": True},
    "state_dir": {"type": "path", "default": "/run/walm"},
    "poll_s": {"type": "float", "default": 1.0},
    "timeout_s": {"type": "float", "default": 3600.0},
    "show_progress": {"type": "bool", "default": True},
}
# async_status's own keys, not the migration's.
ASYNC_KEYS = ("ansible_job_id", "started", "finished", "results_file", "stdout", "stderr", "stdout_lines",
              "stderr_lines", "erased")


def finished(job):
    """A migration's result from a finished job: the module's keys, without the loop's and async_status's."""
    loop_var = job.get("ansible_loop_var") or "item"
    return dict((k, v) for k, v in job.items()
                if k not in ASYNC_KEYS and k not in (loop_var, "item", "ansible_loop_var", "ansible_index_var",
                                                     "invocation", "failed_when_result")
                and not k.startswith("_ansible"))


def job_vm(job):
    """The VM an async walm_migrate job migrates: `vm`, or the loop item (a name, or a dict with `name`)."""
    if job.get("vm"):
        return job["vm"]
    item = job.get(job.get("ansible_loop_var") or "item")
    if isinstance(item, dict):
        item = item.get("name") or item.get("vm")
    if not item:
        raise AnsibleActionFail("walm_migration_wait: job %s names no VM: give each job a 'vm' (or 'vms' for a "
                                "walm_migrate_waves job), or pass the registered results of a loop over VM names (or "
                                "dicts with 'name')" % job.get("ansible_job_id"))
    return item


def job_vms(job):
    """The VMs of one job: `vms` for a walm_migrate_waves job (several migrations), else the one of job_vm()."""
    if job.get("vms") is not None:
        if not isinstance(job["vms"], list) or not all(isinstance(v, str) and v for v in job["vms"]):
            raise AnsibleActionFail("walm_migration_wait: a job's vms must be a list of VM names, got %r"
                                    % (job["vms"],))
        return list(job["vms"])
    return [job_vm(job)]


def results_of(job, vms):
    """Each VM's result from a finished job: a walm_migrate_waves job (vms given) carries them in `migrations`; a
    VM it has no result for (the batch failed before it ran) gets the job's failure."""
    if len(vms) == 1 and "migrations" not in job:
        return {vms[0]: finished(job)}
    per_vm = job.get("migrations") or {}
    return dict((vm, per_vm.get(vm) or {"failed": True, "status": "failed", "msg": job.get("msg") or (
        "the batch returned no result for %s" % vm)}) for vm in vms)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = True

    def _async_dir(self):
        return self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))

    def _status(self, jid, task_vars, mode="status"):
        return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                    module_args={"jid": jid, "mode": mode, "_async_dir": self._async_dir()})

    def _progress(self, state_dir, vm, task_vars):
        res = self._execute_module(module_name="ansible.legacy.slurp", task_vars=task_vars,
                                   module_args={"src": HostPaths(state_dir, vm).progress})
        if res.get("failed") or not res.get("content"):
            return None  # not written yet (the migration is still starting) or already removed
        try:
            return json.loads(base64.b64decode(res["content"]))
        except ValueError:
            return None  # written by an older walm_migrate, or torn: the next poll reads it again

    def _show(self, state_dir, vms, host, started, shown, task_vars):
        """Print a line for each of a job's migrations whose progress changed. A batch's VMs are read in the
        order they run: reading stops at the first that has not started (its later waves have not either), and
        one whose document says it has ended is not read again."""
        for vm in vms:
            if (shown.get(vm) or {}).get("status") in progress.ENDED:
                continue
            doc = self._progress(state_dir, vm, task_vars)
            if not doc or doc.get("updated_at", 0) < started - 1:
                if len(vms) > 1:
                    break
                continue
            if progress.changed(shown.get(vm), doc):
                shown[vm] = doc
                display.display("[%s] %s" % (host, progress.line(doc)))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGS)
        if args["poll_s"] <= 0 or args["timeout_s"] <= 0:
            raise AnsibleActionFail("walm_migration_wait: poll_s and timeout_s must be above 0 (got %s and %s)"
                                    % (args["poll_s"], args["timeout_s"]))
        jobs = {}  # job id: the VMs it migrates
        skipped = []
        results = {}
        for job in args["jobs"]:
            vms = job_vms(job)
            for vm in vms:
                if vm in skipped or vm in results or any(vm in v for v in jobs.values()):
                    raise AnsibleActionFail("walm_migration_wait: VM %s has two jobs; one migration per VM" % vm)
            if job.get("skipped"):
                skipped.extend(vms)  # never started (its destination was not prepared): nothing to wait for
            elif job.get("ansible_job_id"):
                jobs[job["ansible_job_id"]] = vms
            else:
                results.update(results_of(job, vms))  # ran without async: its results are already here
        host = task_vars.get("inventory_hostname", "")
        started = time.time()
        shown = {}
        while any(vm not in results for vms in jobs.values() for vm in vms):
            round_started = time.time()
            for jid, vms in sorted(jobs.items()):
                if all(vm in results for vm in vms):
                    continue
                status = self._status(jid, task_vars)
                if status.get("finished"):
                    done = results_of(status, vms)
                    results.update(done)
                    self._status(jid, task_vars, mode="cleanup")
                    if args["show_progress"]:
                        for vm in vms:
                            display.display("[%s] %s: %s" % (host, vm, done[vm].get("status") or (
                                "failed" if done[vm].get("failed") else "finished")))
                    continue
                if status.get("failed"):
                    # async_status could not read the job (its file is gone): the migrations' end is unknown here.
                    results.update((vm, {"failed": True, "status": "unknown",
                                         "msg": "the migration job %s could not be followed: %s"
                                                % (jid, status.get("msg", "no job file"))}) for vm in vms)
                    continue
                if args["show_progress"]:
                    self._show(args["state_dir"], vms, host, started, shown, task_vars)
            if all(vm in results for vms in jobs.values() for vm in vms):
                break
            if time.time() - started > args["timeout_s"]:
                for jid, vms in jobs.items():
                    for vm in vms:
                        results.setdefault(vm, {"failed": True, "status": "unknown", "msg": (
                            "still running after the wait's timeout_s=%d s (job %s); walm_migrate's own timeout_s "
                            "ends it: read the VM with walm_vm_info" % (args["timeout_s"], jid))})
                break
            time.sleep(max(0.0, args["poll_s"] - (time.time() - round_started)))
        result.update(changed=False, migrations=results, not_started=skipped,
                      elapsed_s=round(time.time() - started, 2))
        return result
