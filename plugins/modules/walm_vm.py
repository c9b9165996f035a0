#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_vm
short_description: Start, prepare as a migration destination, or stop a QEMU VM on this host
version_added: "0.1.0"
description:
  - Starts a QEMU VM from a small definition (memory, vCPUs, accelerator, disks on shared storage, tap NICs,
    direct kernel boot), daemonized, with a QMP unix socket, a pidfile and a serial console log under
    O(state_dir), all mode 0600, and records the definition so the destination of a migration can start an
    identical QEMU.
  - With O(state=incoming), starts the VM as a migration destination from the source's recorded definition
    (C(-incoming defer)), sets the migration capabilities of O(migration_method), O(on_timeout) and
    O(allow_postcopy) and listens with C(migrate-incoming); returns the URI the source must migrate to.
  - With O(state=started) on a destination that is receiving a migration, waits up to O(wait_running_s) for the
    guest to run there.
  - With O(state=stopped), stops QEMU (QMP C(quit), then SIGTERM, then SIGKILL), deletes the VM's tap devices and
    its record.
  - New qcow2 disks are created with preallocated metadata, and a sparse qcow2 opened through QEMU's C(nfs://)
    driver is refused, because live migration silently loses data written to such an image.
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later on the host
  - qemu.qmp (Python library) on the host
  - QEMU 7.2 or later (qemu-system-x86_64, qemu-img), iproute2
options:
  name:
    description:
      - The VM's name; names its files under O(state_dir) and the QEMU process (C(-name guest=NAME)).
      - 1-64 letters, digits, V(.), V(_) or V(-), starting with a letter or digit. Any other name (a path, a name
        with spaces or shell characters, an empty one) is refused in every O(state) before anything is read or
        changed.
    type: str
    required: true
  state:
    description:
      - V(started) ensures the VM runs here (starting it from O(definition) if it does not run; resuming it if
        paused).
      - V(incoming) starts it as the destination of a migration.
      - V(stopped) ensures it does not run here.
      - V(recover) makes a destination whose post-copy migration broke (C(postcopy-paused)) listen again with
        C(migrate-recover), so the source can resume the migration (M(walm.qemu.walm_migrate) O(walm.qemu.walm_migrate#module:resume=true)).
        Returns O(listen_address)'s URI in C(recover_uri).
    type: str
    choices: [started, incoming, stopped, recover]
    default: started
  definition:
    description:
      - The VM definition. Required to start a VM that does not run yet, and for O(state=incoming) (pass the
        C(definition) that M(walm.qemu.walm_vm_info) returns on the source; it carries the versioned machine type).
    type: dict
    suboptions:
      name:
        description: Must equal O(name) if given.
        type: str
      memory_mib:
        description: Guest RAM in MiB.
        type: int
        default: 512
      vcpus:
        description: Number of vCPUs.
        type: int
        default: 1
      accel:
        description: Accelerator. Real hosts use V(kvm); V(tcg) is for hosts without usable KVM (the lab).
        type: str
        choices: [kvm, tcg]
        default: kvm
      cpu_model:
        description: QEMU CPU model (C(-cpu)); unset uses QEMU's default. V(host) needs O(definition.accel=kvm).
        type: str
      machine:
        description: Machine type; an alias such as V(q35) is resolved to the versioned type when the VM starts.
        type: str
        default: q35
      kernel:
        description: Kernel image for direct kernel boot.
        type: path
      initrd:
        description: Initramfs for direct kernel boot.
        type: path
      append:
        description: Kernel command line for direct kernel boot.
        type: str
      disks:
        description: Virtio disks, opened with the same path or URL on source and destination (shared storage).
        type: list
        elements: dict
        default: []
        suboptions:
          file:
            description: Image path or C(nfs://SERVER/EXPORT/FILE) URL.
            type: str
            required: true
          format:
            description: Image format.
            type: str
            choices: [qcow2, raw]
            default: qcow2
          cache:
            description: QEMU cache mode; shared storage for migration wants V(none).
            type: str
            default: none
          size_mib:
            description: Size when the image is created.
            type: int
          create:
            description: Create the image (qcow2 with preallocated metadata) if it does not exist.
            type: bool
            default: false
      nics:
        description:
          - Virtio NICs on tap devices. The MAC, the bridge and the device model are the guest's and stay the same
            on every host; the tap name is the host's.
          - Starting a VM (O(state=started)), the module fails before anything is created or started if a NIC's tap
            is held open by another process on this host (a tap takes one QEMU), naming that VM.
          - With O(state=incoming), a NIC whose tap is held open by another process on this host gets a tap name of
            this host's own (C(wt) and a digest of the VM's name, stable for the VM); the recorded definition, and so
            RV(vm.definition), name the tap the VM uses here, and RV(actions) says which NIC was renamed and why.
          - On every host, a MAC already on another QEMU's command line here fails the module, naming that VM.
        type: list
        elements: dict
        default: []
        suboptions:
          tap:
            description: Tap device name; created (vnet_hdr) if missing.
            type: str
            required: true
          mac:
            description: Fixed guest MAC address.
            type: str
            required: true
          bridge:
            description: Bridge the tap is attached to.
            type: str
      extra_args:
        description: Further QEMU arguments, appended verbatim on both hosts.
        type: list
        elements: str
        default: []
  state_dir:
    description:
      - Directory for the VM's QMP socket, pidfile, console log and record on this host; an absolute path.
      - Made mode 0700 if missing. An existing one must belong to the user the module runs as and not be writable
        by group or others, else the module fails naming the fix (C(chmod 0700 STATE_DIR)).
    type: path
    default: /run/walm
  listen_address:
    description: With O(state=incoming) or O(state=recover), the address of this host the source connects to.
    type: str
  listen_port:
    description: With O(state=incoming) or O(state=recover), the TCP port to listen on; V(0) picks a free port.
    type: int
    default: 0
  migration_method:
    description: With O(state=incoming), the method the source will use; decides the capabilities set here.
    type: str
    choices: [precopy, postcopy, hybrid]
    default: precopy
  on_timeout:
    description:
      - With O(state=incoming), what the source will do if pre-copy does not finish in time. V(postcopy) needs
        the post-copy capability on both sides, so it is set here too.
    type: str
    choices: [abort, postcopy]
    default: abort
  allow_postcopy:
    description:
      - With O(state=incoming), whether the source may switch a pre-copy to post-copy while it runs (the run-time
        adaptation of M(walm.qemu.walm_migrate), its O(walm.qemu.walm_migrate#module:allow_postcopy)). QEMU takes
        capabilities only before the migration starts, so C(postcopy-ram) (and C(postcopy-preempt) where both
        QEMUs have it) is set here even for O(migration_method=precopy).
      - Give the source the same value, or pass it these RV(capabilities), so that both sides agree. A destination
        that already waits for the VM with other capabilities is refused (stop it and prepare it again).
    type: bool
    default: false
  source_qemu_version:
    description:
      - With O(state=incoming), the source QEMU's version as C([major, minor, micro]) (C(qemu_version_tuple) of
        M(walm.qemu.walm_vm_info) on the source). Capabilities that need both sides' support, such as
        C(postcopy-preempt) (QEMU 8.0+), are only set when both QEMUs have them. Unset assumes the same version as
        this host.
    type: list
    elements: int
  tls_dir:
    description:
      - With O(state=incoming), this host's directory of migration certificates, as the role
        C(walm.qemu.migration_tls) installs it (C(ca-cert.pem), C(server-cert.pem) and C(server-key.pem) are
        read). The destination then accepts only a TLS connection from a peer whose certificate the same CA
        signed (and, with O(tls_allowed_clients), whose name is listed); the source must migrate with
        M(walm.qemu.walm_migrate) O(walm.qemu.walm_migrate#module:tls_dir) set.
      - A peer that fails the handshake or the certificate check is refused and logged, and the destination goes
        on waiting for the real source. Without TLS the destination takes the first TCP connection, whatever it
        sends.
      - A missing or unreadable file fails the task before QEMU is started, naming the file; check mode checks the
        files too.
      - Unset (the default) listens in clear. The role C(walm.qemu.incoming_destination) sets it when the inventory
        gives the destination a C(walm_tls_dir).
    type: path
  tls_allowed_clients:
    description:
      - With O(tls_dir), the client certificates' distinguished names that may migrate into this VM, as QEMU
        reads them (RFC 4514, for example V(CN=hv1) for the certificate C(walm.qemu.migration_tls) issued to
        inventory host V(hv1)); any other certificate is refused even if the CA signed it (QEMU C(tls-authz)).
      - Unset or empty admits any certificate the CA signed.
    type: list
    elements: str
  wait_running_s:
    description: With O(state=started), how long to wait for a VM that is receiving a migration to run.
    type: float
    default: 0
  force_resume:
    description:
      - Resume a VM that completed an outgoing migration (QEMU state C(postmigrate)). Only safe when the
        destination copy is gone, because two running copies corrupt the shared disk.
    type: bool
    default: false
  lock_wait_s:
    description:
      - How long to wait for another WALM step that changes this VM on this host (a migration holds the VM's lock
        in O(state_dir) until it ends) before failing with the holder's name.
    type: float
    default: 30
  qemu_binary:
    description: QEMU system emulator to run.
    type: str
    default: qemu-system-x86_64
extends_documentation_fragment:
  - walm.qemu.attributes
  - walm.qemu.attributes.action_group_walm
attributes:
  check_mode:
    support: full
    details:
      RV(actions) lists what would be done and C(changed) predicts it; no QEMU is started, prepared or stopped, so
      with O(state=incoming) nothing listens and RV(incoming_uri) is null.
notes:
  - Check mode reports what would be done and touches nothing.
  - With O(state=incoming) on QEMU 9.1 and later, C(migrate-incoming) runs with C(exit-on-error) off. A peer
    refused at the TLS handshake never reaches the migration stream, so the destination goes on waiting either way;
    a stream that fails to load leaves the destination QEMU alive with the reason in C(query-migrate), but no
    longer listening, and O(state=incoming) then refuses to reuse it (stop it and prepare it again). On older QEMU
    such a destination exits.
  - Records are written to a new file and renamed into place, never through a symlink. A QEMU killed without
    cleaning up (SIGKILL, a crash) leaves its pidfile and QMP sockets; they are removed when the VM is next started,
    prepared or stopped here. Starting is refused while a QEMU of this VM still runs, even one whose pidfile is
    gone.
  - The lab (playbooks/lab_setup.yml) sets O(state_dir) per host through the inventory variable C(walm_state_dir).
seealso:
  - module: walm.qemu.walm_vm_info
  - module: walm.qemu.walm_migrate
"""

EXAMPLES = r"""
- name: Start a VM with its disk on NFS
  walm.qemu.walm_vm:
    name: vm1
    definition:
      memory_mib: 1024
      vcpus: 2
      disks:
        - file: nfs://10.0.0.2/vms/vm1.qcow2
          size_mib: 4096
          create: true
      nics:
        - tap: tap-vm1
          mac: "52:54:00:00:00:01"
          bridge: br0

- name: Prepare the destination from the source's record
  walm.qemu.walm_vm:
    name: vm1
    state: incoming
    definition: "{{ src_info.vms[0].definition }}"
    listen_address: 10.0.0.2
  register: incoming

- name: Stop the VM
  walm.qemu.walm_vm:
    name: vm1
    state: stopped
"""

RETURN = r"""
actions:
  description: What was done (or, in check mode, would be done).
  returned: always
  type: list
  elements: str
incoming_uri:
  description: With O(state=incoming), the URI the source must migrate to.
  returned: when state is incoming
  type: str
  sample: tcp:10.77.0.2:40233
definition_sha256:
  description: With O(state=incoming), the fingerprint of the definition the destination was started from (the
    machine's, without the tap names, which are each host's); pass it to M(walm.qemu.walm_migrate)
    (O(walm.qemu.walm_migrate#module:expected_definition_sha256)).
  returned: when state is incoming
  type: str
recover_uri:
  description: With O(state=recover), the URI the source must resume the migration to.
  returned: when state is recover
  type: str
out_of_band:
  description:
    - With O(state=recover), whether C(migrate-recover) went through the event logger's out-of-band monitor
      (QMP C(exec-oob)), which answers even while the destination QEMU's main loop is blocked on a missing guest
      page. False where QEMU offered no out-of-band support; the in-band monitor was used, with a 10 s bound.
  returned: when state is recover and a recovery was started
  type: bool
capabilities:
  description: With O(state=incoming), the migration capabilities set here; pass them to M(walm.qemu.walm_migrate)
    so both sides agree.
  returned: when state is incoming
  type: dict
  sample: {"events": true, "return-path": true, "postcopy-ram": true, "postcopy-preempt": true}
tls:
  description: With O(state=incoming), the channel's TLS here (C(endpoint) V(server), C(dir), C(allowed_clients)),
    or null when the destination listens in clear. It is kept in the VM's record.
  returned: when state is incoming
  type: dict
  sample: {"endpoint": "server", "dir": "/etc/walm/tls", "allowed_clients": ["CN=hv1"]}
vm:
  description: The VM as this host sees it afterwards.
  returned: always
  type: dict
  contains:
    name: {description: VM name, type: str, returned: always}
    pid: {description: "QEMU process id, or null if not running", type: int, returned: always}
    running: {description: Whether a QEMU process for the VM runs here, type: bool, returned: always}
    status: {description: "QMP run state (running, paused, inmigrate, postmigrate, ...); when the monitor does not
             answer within 5 s, V(busy: ...) if another WALM step holds the VM (a migration holds its lock and its
             one QMP connection), else V(unreachable: ...)", type: str, returned: always}
    migration_status: {description: "Status of this QEMU's migration (query-migrate): null when none, else e.g.
                       V(setup), V(active), V(completed), V(failed), V(postcopy-active), V(postcopy-paused)",
                       type: str, returned: always}
    qmp_socket: {description: Path of the QMP socket, type: str, returned: always}
    console_log: {description: Path of the serial console log, type: str, returned: always}
    definition: {description: The recorded definition (machine type resolved), type: dict, returned: when recorded}
    role: {description: "V(source) when started here, V(incoming) when started as a destination", type: str,
           returned: when recorded}
    qemu_version: {description: QEMU version line of the binary that runs the VM, type: str,
                   returned: when recorded}
    qemu_version_tuple: {description: "QEMU version as [major, minor, micro]", type: list, elements: int,
                         returned: when recorded}
    capabilities: {description: Migration capabilities set on an incoming VM, type: dict,
                   returned: when recorded as incoming}
    argv: {description: The QEMU command line, type: list, elements: str, returned: when recorded}
    resumed_at: {description: "When the migrated guest first ran here (the incoming QEMU's first QMP RESUME event,
                  seconds since the epoch, this host's clock); null while it has not resumed or when the event log
                  could not be kept (see event_log_note). Less the source's
                  RV(walm.qemu.walm_migrate#module:source_stop_time) it is the guest-visible downtime (hosts'
                  clocks must agree, e.g. NTP)", type: float, returned: when recorded as incoming}
    event_log_note: {description: "Why the incoming QEMU's events are not logged (null when they are)", type: str,
                     returned: when recorded as incoming}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.qmp import HAS_QMP, QMP_IMPORT_ERROR
from ansible_collections.walm.qemu.plugins.module_utils.vm_service import HOST_OPTIONS, VMService, apply


def main():
    module = AnsibleModule(
        argument_spec=dict(
            HOST_OPTIONS,
            name=dict(type="str", required=True),
            state=dict(type="str", default="started", choices=["started", "incoming", "stopped", "recover"]),
            definition=dict(type="dict"),
            wait_running_s=dict(type="float", default=0),
            force_resume=dict(type="bool", default=False),
        ),
        required_if=[("state", "incoming", ("definition", "listen_address")),
                     ("state", "recover", ("listen_address",))],
        supports_check_mode=True,
    )
    if not HAS_QMP:
        module.fail_json(msg=missing_required_lib("qemu.qmp"), exception=QMP_IMPORT_ERROR)

    p = module.params
    service = None
    try:
        service = VMService(p["name"], p["state_dir"], check_mode=module.check_mode, qemu_binary=p["qemu_binary"])
        result = apply(service, p)
    except WalmError as exc:
        module.fail_json(msg=str(exc), actions=service.actions if service else [], **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
