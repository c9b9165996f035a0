#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_migration_wait
short_description: Wait for migrations started as async walm_migrate or walm_migrate_waves tasks, printing their progress
version_added: "0.2.0"
description:
  - Follows migrations that M(walm.qemu.walm_migrate) runs as async tasks (C(async) and C(poll=0)) on the task's
    host, the source, until each has ended, and returns every migration's result as walm_migrate returns it.
  - "While they run it reads, every O(poll_s) seconds, the progress document walm_migrate writes on the source
    (C(STATE_DIR/NAME.progress.json)) and prints one line per migration whenever something changes - the pass, the
    status, a switch to post-copy, an adaptation - for example
    '[walm-src] demo-writer: precopy pass 3 (active), 120.5 MiB left, 110.2 MiB/s, 2.1 s'."
  - This is how C(playbooks/evacuate_host.yml) runs a wave of migrations at once and still shows the operator
    what each one does, instead of one silent task per migration.
  - An action plugin; it runs on the controller and executes C(ansible.builtin.async_status) and
    C(ansible.builtin.slurp) on the task's host.
options:
  jobs:
    description:
      - The async jobs, as the registered C(results) of a loop of async walm_migrate tasks (each has
        C(ansible_job_id) and its loop item - a VM name, or a dict with C(name)), or dicts with C(vm) and
        C(ansible_job_id).
      - A M(walm.qemu.walm_migrate_waves) job runs several migrations. Give it with C(vms), the names of its VMs in
        the order they run (for example its registered result combined with a dict that sets C(vms)); each
        VM's result is taken from the job's RV(walm.qemu.walm_migrate_waves#module:migrations).
      - A skipped item (no job) is listed in RV(not_started) and not waited for; an item that ran without C(async)
        (no C(ansible_job_id)) is a migration that has already ended, and its result is taken as it is.
    type: list
    elements: dict
    required: true
  state_dir:
    description: The state directory the migrations' walm_migrate used (where the progress documents are).
    type: path
    default: /run/walm
  poll_s:
    description: Seconds between two reads of the jobs and their progress.
    type: float
    default: 1.0
  timeout_s:
    description:
      - Seconds after which the wait gives up on jobs still running; they are reported with C(status=unknown).
        walm_migrate's own O(walm.qemu.walm_migrate#module:timeout_s) ends each migration before that when this is
        longer.
    type: float
    default: 3600.0
  show_progress:
    description: Print the progress lines (the results are returned either way).
    type: bool
    default: true
extends_documentation_fragment:
  - walm.qemu.attributes
  - walm.qemu.attributes.action_group_walm
attributes:
  check_mode:
    support: none
    details: Async tasks do not run in check mode, so there is nothing to wait for.
notes:
  - The task reports C(changed=false); the migrations' own results say what they changed.
  - A migration that fails does not fail this task; its result (C(failed), C(msg), C(status)) is in
    RV(migrations) for the caller to act on, as C(evacuate_host.yml) does.
  - Each job's async result file is removed once its result is read.
author: WALM developers (@walm-project)
"""

EXAMPLES = r"""
- name: Start the migrations of a wave
  walm.qemu.walm_migrate:
    name: "{{ item }}"
    destination_uri: "{{ uris[item] }}"
  loop: [vm1, vm2]
  async: 900
  poll: 0
  register: launched

- name: Wait for them, printing their progress
  walm.qemu.walm_migration_wait:
    jobs: "{{ launched.results }}"
  register: wave

- name: What happened to vm1
  ansible.builtin.debug:
    msg: "{{ wave.migrations.vm1.status }} in {{ wave.migrations.vm1.total_time_ms }} ms"
"""

RETURN = r"""
migrations:
  description: Per VM name, walm_migrate's result (see M(walm.qemu.walm_migrate)), or C(failed), C(status=unknown)
    and C(msg) when the job could not be followed.
  returned: always
  type: dict
  sample: {"vm1": {"status": "completed", "total_time_ms": 3110, "downtime_ms": 2, "method": "postcopy"}}
not_started:
  description: VMs whose loop item was skipped, so no migration was started.
  returned: always
  type: list
  elements: str
elapsed_s:
  description: Seconds the wait took.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            jobs=dict(type="list", elements="dict", required=True),
            state_dir=dict(type="path", default="/run/walm"),
            poll_s=dict(type="float", default=1.0),
            timeout_s=dict(type="float", default=3600.0),
            show_progress=dict(type="bool", default=True),
        ),
    )
    module.fail_json(msg="walm.qemu.walm_migration_wait runs on the controller as an action plugin; "
                         "call it as a task, not as a module on its own")


if __name__ == "__main__":
    main()
