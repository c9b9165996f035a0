#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_vm_info
short_description: Report the WALM-managed QEMU VMs on this host and their recorded definitions
version_added: "0.1.0"
description:
  - Reads the VM records under O(state_dir) and asks each running VM's QEMU for its state over QMP.
  - The returned C(definition) is what M(walm.qemu.walm_vm) needs to start the same VM as a migration
    destination on another host.
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later on the host
  - qemu.qmp (Python library) on the host
options:
  name:
    description:
      - Report only this VM. Fails if it has no record and does not run on this host, unless O(missing_ok=true).
      - 1-64 letters, digits, V(.), V(_) or V(-), starting with a letter or digit; other names are refused, also
        with O(missing_ok=true).
    type: str
  missing_ok:
    description:
      - With O(name), return an empty RV(vms) instead of failing when the VM is not known on this host. Used to
        read both hosts of a migration, where the VM is expected on one of them.
    type: bool
    default: false
  state_dir:
    description:
      - Directory where M(walm.qemu.walm_vm) keeps the VMs' files on this host. Refused if group or others can
        write to it or another user owns it (fix with C(chmod 0700 STATE_DIR)), because its records are trusted.
    type: path
    default: /run/walm
extends_documentation_fragment:
  - walm.qemu.attributes
  - walm.qemu.attributes.action_group_walm
attributes:
  check_mode:
    support: full
    details:
      Read-only; check mode gives the same result.
notes:
  - Read-only; supports check mode.
seealso:
  - module: walm.qemu.walm_vm
"""

EXAMPLES = r"""
- name: Read vm1's definition on the source
  walm.qemu.walm_vm_info:
    name: vm1
  register: src_info

- name: Show it
  ansible.builtin.debug:
    var: src_info.vms[0].definition
"""

RETURN = r"""
vms:
  description: One entry per VM, sorted by name; same keys as the C(vm) return value of M(walm.qemu.walm_vm).
  returned: always
  type: list
  elements: dict
  sample:
    - name: vm1
      pid: 4242
      running: true
      status: running
      migration_status: completed
      role: source
      qmp_socket: /run/walm/vm1.qmp
      console_log: /run/walm/vm1.console.log
      qemu_version: QEMU emulator version 10.0.2
host_memory:
  description:
    - This host's memory in MiB, from C(/proc/meminfo) - C(total_mib) and C(available_mib) (MemAvailable, what new
      VMs may use without swapping); null for a figure the kernel does not report.
    - C(playbooks/evacuate_host.yml) takes a destination's capacity from it.
  returned: always
  type: dict
  version_added: "0.2.0"
  sample: {"total_mib": 24032, "available_mib": 21870}
draining:
  description:
    - The host's draining mark (C(draining.json) in O(state_dir), set by the role C(walm.qemu.maintain) while it
      empties the host for maintenance) - C(since) (seconds since the epoch) and C(reason); null when the host is in
      service. The role C(walm.qemu.evacuate) sends no VM to a draining host.
  returned: always
  type: dict
  version_added: "0.2.0"
  sample: {"since": 1796000000.5, "reason": "maintenance run of group hypervisors"}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.qmp import HAS_QMP, QMP_IMPORT_ERROR


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            state_dir=dict(type="path", default="/run/walm"),
            missing_ok=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not HAS_QMP:
        module.fail_json(msg=missing_required_lib("qemu.qmp"), exception=QMP_IMPORT_ERROR)

    from ansible_collections.walm.qemu.plugins.module_utils.draining import read_mark
    from ansible_collections.walm.qemu.plugins.module_utils.vm_service import list_vm_info
    from ansible_collections.walm.qemu.plugins.module_utils.procfs import host_memory

    try:
        vms = list_vm_info(module.params["state_dir"], module.params["name"], module.params["missing_ok"])
    except WalmError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    module.exit_json(changed=False, vms=vms, host_memory=host_memory(), draining=read_mark(module.params["state_dir"]))


if __name__ == "__main__":
    main()
