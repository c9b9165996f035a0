#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_vms
short_description: Start the migration destinations of several VMs on this host, or stop several VMs, in one step
version_added: "0.2.0"
description:
  - Does for each VM in O(vms) what M(walm.qemu.walm_vm) does for one, with O(state=incoming) or O(state=stopped),
    the VMs side by side, and returns each VM's result in RV(vms).
  - With O(state=incoming) each VM's QEMU is started in incoming mode from the source's definition, exactly as
    M(walm.qemu.walm_vm) O(walm.qemu.walm_vm#module:state=incoming) starts it (versioned machine type, disks on the
    shared storage, a tap name free on this host with the MAC and bridge kept, the capabilities of the method,
    listening on O(listen_address)); a QEMU that cannot be finished is stopped again.
  - With O(state=stopped) each VM's QEMU is stopped and its files removed, as M(walm.qemu.walm_vm)
    O(walm.qemu.walm_vm#module:state=stopped) does (an evacuation's source copies after their migration).
  - This is how C(playbooks/evacuate_host.yml) prepares all the destinations of one host and removes all the stale
    source copies in one task each, instead of one task per VM.
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later on the host
  - qemu.qmp (Python library) on the host
  - QEMU 7.2 or later
options:
  state:
    description: What to do with every VM of O(vms).
    type: str
    choices: [incoming, stopped]
    required: true
  vms:
    description:
      - The VMs. With O(state=stopped) a name is enough (a string, or a dict with C(name)).
      - With O(state=incoming) each entry has C(name) and C(definition) (the source's record, as
        M(walm.qemu.walm_vm_info) returns it) and may give C(migration_method), C(on_timeout), C(allow_postcopy)
        and C(source_qemu_version), which otherwise take this module's options of the same name.
    type: list
    elements: raw
    required: true
  state_dir:
    description: Where M(walm.qemu.walm_vm) keeps the VMs' files on this host.
    type: path
    default: /run/walm
  listen_address:
    description: With O(state=incoming), the address of this host the sources connect to. Required then.
    type: str
  listen_port:
    description: With O(state=incoming), the port to listen on; V(0) lets QEMU choose a free port per VM.
    type: int
    default: 0
  migration_method:
    description: The method of a VM that does not give its own (the capabilities set on this side).
    type: str
    choices: [precopy, postcopy, hybrid]
    default: precopy
  on_timeout:
    description: The O(walm.qemu.walm_migrate#module:on_timeout) of a VM that does not give its own.
    type: str
    choices: [abort, postcopy]
    default: abort
  allow_postcopy:
    description: Negotiate post-copy for a VM that does not say, whatever its method (the run-time adaptation).
    type: bool
    default: false
  source_qemu_version:
    description: The source QEMU's version, for a VM that does not give its own (capabilities both need).
    type: list
    elements: int
  tls_dir:
    description: As M(walm.qemu.walm_vm)'s O(walm.qemu.walm_vm#module:tls_dir), for every VM.
    type: path
  tls_allowed_clients:
    description: As M(walm.qemu.walm_vm)'s O(walm.qemu.walm_vm#module:tls_allowed_clients), for every VM.
    type: list
    elements: str
  lock_wait_s:
    description: How long to wait for each VM's lock (held by a migration of it, say).
    type: float
    default: 30
  qemu_binary:
    description: The QEMU system emulator to run.
    type: str
    default: qemu-system-x86_64
extends_documentation_fragment:
  - walm.qemu.attributes
  - walm.qemu.attributes.action_group_walm
attributes:
  check_mode:
    support: full
    details: Checks each VM as M(walm.qemu.walm_vm) does in check mode and reports what would be done.
notes:
  - The task fails when any VM could not be brought to the state; RV(vms) holds every VM's result and RV(failed_vms)
    names the ones that failed, so C(failed_when) can take the outcome VM by VM.
seealso:
  - module: walm.qemu.walm_vm
  - module: walm.qemu.walm_migrate_waves
"""

EXAMPLES = r"""
- name: Start the destinations of two VMs on hv2
  walm.qemu.walm_vms:
    state: incoming
    listen_address: 10.0.0.2
    vms:
      - name: vm1
        definition: "{{ src.vms[0].definition }}"
      - name: vm2
        definition: "{{ src.vms[1].definition }}"
        migration_method: postcopy
  delegate_to: hv2
  register: prepared

- name: Stop the source copies after their migrations
  walm.qemu.walm_vms:
    state: stopped
    vms: [vm1, vm2]
"""

RETURN = r"""
vms:
  description:
    - Per VM name, what M(walm.qemu.walm_vm) returns for it (C(changed), C(actions), C(vm); with
      O(state=incoming) C(incoming_uri), C(capabilities), C(definition_sha256), C(tls)), with C(failed), and
      C(msg) when it failed.
  returned: always
  type: dict
  sample: {"vm1": {"failed": false, "changed": true, "incoming_uri": "tcp:10.0.0.2:41237"}}
failed_vms:
  description: The VMs that could not be brought to the state.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.walm.qemu.plugins.module_utils import vm_batch
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.qmp import HAS_QMP, QMP_IMPORT_ERROR
from ansible_collections.walm.qemu.plugins.module_utils.vm_service import HOST_OPTIONS


def main():
    module = AnsibleModule(
        argument_spec=dict(
            HOST_OPTIONS,
            state=dict(type="str", required=True, choices=["incoming", "stopped"]),
            vms=dict(type="list", elements="raw", required=True),
        ),
        required_if=[("state", "incoming", ("listen_address",))],
        supports_check_mode=True,
    )
    if not HAS_QMP:
        module.fail_json(msg=missing_required_lib("qemu.qmp"), exception=QMP_IMPORT_ERROR)
    p = module.params
    shared = dict((k, v) for k, v in p.items() if k not in ("state", "vms"))
    try:
        results = vm_batch.run(p["state"], vm_batch.requests(p["state"], shared, p["vms"]),
                               check_mode=module.check_mode)
    except WalmError as exc:
        module.fail_json(msg=str(exc), vms={}, failed_vms=[], **exc.details)
    failed = [n for n, r in results.items() if r.get("failed")]
    out = dict(changed=any(r.get("changed") for r in results.values()), vms=results, failed_vms=failed)
    if failed:
        module.fail_json(msg="%d of %d VMs failed: %s" % (len(failed), len(results), "; ".join(
            results[n].get("msg") or n for n in failed)), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
