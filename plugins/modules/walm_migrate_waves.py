#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_migrate_waves
short_description: Live-migrate several VMs from this host in one step, wave by wave
version_added: "0.2.0"
description:
  - Runs on the source host. Runs the migrations in O(migrations) as M(walm.qemu.walm_migrate) runs one, in the
    waves given by O(waves) - the migrations of a wave side by side, the next wave when the last of this one has
    ended - and returns each migration's result in RV(migrations).
  - Every migration's parameters are checked before the first one starts; a wrong one fails the task with nothing
    touched. A migration that fails or times out is cancelled as walm_migrate cancels it (the VM keeps running on
    the source; a broken post-copy is left paused for recovery) and does not stop the others.
  - This is how C(playbooks/evacuate_host.yml) migrates a whole plan in one task instead of one task per VM, whose
    round trips cost more than the migrations of small VMs. Run it as an async task and follow it with
    M(walm.qemu.walm_migration_wait) to print each migration's progress while it runs.
  - After a migration completed, the source QEMU is left in state C(postmigrate). Check the VM runs on its
    destination, then stop the source copy (M(walm.qemu.walm_vm) O(walm.qemu.walm_vm#module:state=stopped)).
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later on the host
  - qemu.qmp (Python library) on the host
  - QEMU 7.2 or later on both hosts
options:
  migrations:
    description:
      - One entry per VM. C(name) and C(destination_uri) are required; any other key left out (or null) takes
        this module's option of the same name.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The VM to migrate (as started by M(walm.qemu.walm_vm) on this host).
        type: str
        required: true
      destination_uri:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:destination_uri).
        type: str
      method:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:method).
        type: str
        choices: [precopy, postcopy, hybrid]
      switch_after_passes:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:switch_after_passes).
        type: int
      on_timeout:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:on_timeout).
        type: str
        choices: [abort, postcopy]
      capabilities:
        description: The capabilities the destination was prepared with (M(walm.qemu.walm_vm) RV(walm.qemu.walm_vm#module:capabilities)).
        type: dict
      expected_definition_sha256:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:expected_definition_sha256).
        type: str
      tls_dir:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:tls_dir).
        type: path
      tls_hostname:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:tls_hostname).
        type: str
      allow_postcopy:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:allow_postcopy).
        type: bool
      adapt:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:adapt).
        type: bool
      expect:
        description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:expect).
        type: dict
  waves:
    description:
      - The names of the VMs of each wave, every VM of O(migrations) in exactly one wave (the plan's
        C(waves) from M(walm.qemu.walm_plan)).
      - Unset runs the migrations one at a time in the order of O(migrations).
    type: list
    elements: list
  state_dir:
    description: Where M(walm.qemu.walm_vm) keeps the VMs' files on this host.
    type: path
    default: /run/walm
  method:
    description: The method of a migration that does not give its own.
    type: str
    choices: [precopy, postcopy, hybrid]
    default: precopy
  switch_after_passes:
    description: The hybrid switch point of a migration that does not give its own; 1 to 1000.
    type: int
    default: 2
  on_timeout:
    description: What a migration that does not give its own does at O(timeout_s).
    type: str
    choices: [abort, postcopy]
    default: abort
  allow_postcopy:
    description: Whether the run-time adaptation of a migration that does not say may switch it to post-copy.
    type: bool
    default: false
  adapt:
    description: Whether a migration that does not say is checked against its expectation at run time.
    type: bool
    default: true
  allow_unsafe_uri:
    description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:allow_unsafe_uri), for every migration.
    type: bool
    default: false
  max_bandwidth_mib_s:
    description: Bandwidth cap of each migration stream in MiB/s; V(0) means no cap.
    type: float
    default: 0
  max_postcopy_bandwidth_mib_s:
    description: Bandwidth cap of each stream in post-copy, in MiB/s; V(0) means no cap.
    type: float
    default: 0
  downtime_limit_ms:
    description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:downtime_limit_ms), for every migration.
    type: int
    default: 300
  downtime_headroom_pct:
    description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:downtime_headroom_pct).
    type: float
    default: 20
  adaptation_actions:
    description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:adaptation_actions).
    type: list
    elements: str
    choices: [postcopy, downtime, throttle, abort]
    default: [postcopy, downtime, throttle, abort]
  max_downtime_limit_ms:
    description: As M(walm.qemu.walm_migrate)'s O(walm.qemu.walm_migrate#module:max_downtime_limit_ms).
    type: int
  timeout_s:
    description: The bound of each migration, from its own start; above 0 and at most 86400.
    type: float
    default: 600
  poll_interval_ms:
    description: How often each migration's C(query-migrate) is polled.
    type: int
    default: 100
extends_documentation_fragment:
  - walm.qemu.attributes
  - walm.qemu.attributes.action_group_walm
attributes:
  check_mode:
    support: partial
    details:
      Checks every request and each source VM over QMP, one wave after the other, and returns
      C(status=would-migrate) per VM, touching nothing.
notes:
  - The migrations of a wave share this host's link; the waves of M(walm.qemu.walm_plan) never put two heavy
    writers on one link.
  - Each migration keeps its progress document (C(STATE_DIR/NAME.progress.json)) as walm_migrate does.
  - The task fails when a migration did not complete (its result says why); the others' results are returned with
    it, so C(failed_when) can take the batch's outcome VM by VM.
seealso:
  - module: walm.qemu.walm_migrate
  - module: walm.qemu.walm_migration_wait
  - module: walm.qemu.walm_plan
"""

EXAMPLES = r"""
- name: Migrate the plan's waves
  walm.qemu.walm_migrate_waves:
    migrations:
      - name: vm1
        destination_uri: "{{ prepared.vm1.incoming_uri }}"
      - name: vm2
        destination_uri: "{{ prepared.vm2.incoming_uri }}"
        method: postcopy
    waves: [[vm1, vm2]]
    downtime_limit_ms: 300
  async: 1200
  poll: 0
  register: batch

- name: Wait for them, printing their progress
  walm.qemu.walm_migration_wait:
    jobs: ["{{ batch | combine({'vms': ['vm1', 'vm2']}) }}"]
  register: waited
"""

RETURN = r"""
migrations:
  description:
    - Each VM's result, as M(walm.qemu.walm_migrate) returns it (RV(walm.qemu.walm_migrate#module:status),
      times, downtime, passes, adaptations, ...), with C(failed) and C(msg) when it did not complete, and
      C(wave) (1 for the first), C(wave_started_at), C(migration_started_at) and C(migration_finished_at) (Unix
      times).
  returned: always
  type: dict
  sample: {"vm1": {"status": "completed", "total_time_ms": 988, "downtime_ms": 186, "wave": 1}}
completed:
  description: The VMs whose migration completed (V(would-migrate) in check mode).
  returned: always
  type: list
  elements: str
not_completed:
  description: The VMs whose migration did not complete.
  returned: always
  type: list
  elements: str
elapsed_s:
  description: Seconds from the first wave's start to the last wave's end.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.walm.qemu.plugins.module_utils import migration_batch
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.methods import METHODS, ON_TIMEOUT
from ansible_collections.walm.qemu.plugins.module_utils.migration_service import SHARED_OPTIONS
from ansible_collections.walm.qemu.plugins.module_utils.qmp import HAS_QMP, QMP_IMPORT_ERROR


def main():
    module = AnsibleModule(
        argument_spec=dict(
            SHARED_OPTIONS,
            migrations=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                destination_uri=dict(type="str"),
                method=dict(type="str", choices=list(METHODS)),
                switch_after_passes=dict(type="int", no_log=False),
                on_timeout=dict(type="str", choices=list(ON_TIMEOUT)),
                capabilities=dict(type="dict"),
                expected_definition_sha256=dict(type="str"),
                tls_dir=dict(type="path"),
                tls_hostname=dict(type="str"),
                allow_postcopy=dict(type="bool"),
                adapt=dict(type="bool"),
                expect=dict(type="dict"),
            )),
            waves=dict(type="list", elements="list"),
        ),
        supports_check_mode=True,
    )
    if not HAS_QMP:
        module.fail_json(msg=missing_required_lib("qemu.qmp"), exception=QMP_IMPORT_ERROR)

    p = module.params
    shared = dict((k, v) for k, v in p.items() if k not in ("migrations", "waves"))
    started = time.time()
    try:
        waves = migration_batch.requests(shared, p["migrations"], p["waves"])
        results = migration_batch.run(waves, check_mode=module.check_mode)
    except WalmError as exc:
        module.fail_json(msg=str(exc), migrations={}, completed=[], not_completed=[], **exc.details)
    completed, not_completed, msg = migration_batch.summary(results)
    out = dict(changed=bool(completed) or any(r.get("changed") for r in results.values()), migrations=results,
               completed=completed, not_completed=not_completed, elapsed_s=round(time.time() - started, 2), msg=msg)
    if not_completed:
        module.fail_json(**out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
