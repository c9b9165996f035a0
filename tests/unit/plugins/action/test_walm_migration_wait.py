"""How the wait action (plugins/action/walm_migration_wait.py) finds the VM of each async job, the VMs of a
walm_migrate_waves job and their results."""

import pytest

from ansible.errors import AnsibleActionFail
from ansible_collections.walm.qemu.plugins.action.walm_migration_wait import job_vm, job_vms, results_of


@pytest.mark.parametrize("job,vm", [
    ({"vm": "a", "ansible_job_id": "1"}, "a"),
    ({"ansible_job_id": "1", "item": "b"}, "b"),
    ({"ansible_job_id": "1", "ansible_loop_var": "walm_evac_vm", "walm_evac_vm": {"name": "c", "wave": 1}}, "c"),
    ({"ansible_job_id": "1", "ansible_loop_var": "x", "x": {"vm": "d"}}, "d"),
])
def test_the_vm_of_a_job(job, vm):
    assert job_vm(job) == vm


def test_a_job_without_a_vm_is_refused_naming_the_fix():
    with pytest.raises(AnsibleActionFail, match="give each job a 'vm'"):
        job_vm({"ansible_job_id": "1", "item": {"wave": 1}})


# -- a walm_migrate_waves job -----------------------------------------------------------------------------------------

def test_a_batch_job_names_its_vms():
    assert job_vms({"ansible_job_id": "1", "vms": ["a", "b"]}) == ["a", "b"]
    assert job_vms({"ansible_job_id": "1", "vm": "a"}) == ["a"]
    with pytest.raises(AnsibleActionFail, match="a job's vms must be a list of VM names"):
        job_vms({"ansible_job_id": "1", "vms": "a"})


def test_a_batch_jobs_results_are_its_migrations():
    job = {"finished": 1, "failed": True, "msg": "1 of 2 migrations completed",
           "migrations": {"a": {"status": "completed"}, "b": {"status": "timeout", "failed": True}}}
    assert results_of(job, ["a", "b"]) == {"a": {"status": "completed"}, "b": {"status": "timeout", "failed": True}}
    # A batch refused before it ran has no migrations: every VM gets its message.
    refused = results_of({"failed": True, "msg": "waves leave out b", "migrations": {}}, ["a", "b"])
    assert refused["b"] == {"failed": True, "status": "failed", "msg": "waves leave out b"}
    # One walm_migrate job: its own keys are the migration's result.
    assert results_of({"status": "completed", "total_time_ms": 3, "invocation": {}}, ["a"]) == {
        "a": {"status": "completed", "total_time_ms": 3}}
