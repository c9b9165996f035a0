#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_probe
short_description: Measure the workload of running QEMU VMs on this host (dirty rate, CPU, network, memory)
version_added: "0.1.0"
description:
  - WALM's resource tracker. For one VM (O(name) or O(qmp_socket)) or every QEMU VM on this host, measures over
    O(duration_s), split into O(samples) windows measured side by side for all VMs, the page-dirtying rate (QMP
    C(calc-dirty-rate)), the CPU use of each vCPU thread (thread ids from QMP C(query-cpus-fast), times from
    C(/proc)), the traffic of the VM's tap devices, and once the QEMU process's resident memory and, with a
    balloon device, the guest's own memory use. It also reports the VM's shape (memory, vCPUs, machine type,
    accelerator, taps, QEMU command line).
  - Without O(name) and O(qmp_socket), probes every running C(qemu-system-*) process in this network namespace,
    including VMs not started by WALM; their QMP sockets come from the command line (C(-qmp unix:PATH),
    C(-chardev socket,path=...) with C(-mon mode=control), or an inherited socket fd). A VM that cannot be probed
    is listed in RV(failed_vms) with the reason and the others are still measured.
  - Read-only; C(changed) is always false. It refuses to measure a VM that is migrating (or is the destination
    of an incoming migration), because the measurement would compete with the migration for the dirty log.
  - It refuses to measure a VM whose QEMU status is not C(running) (C(paused), C(postmigrate), C(inmigrate),
    C(prelaunch), ...), before measuring and again after; a stopped guest dirties no memory and uses no vCPU,
    so its reading would pass for an idle workload. The error names the status.
  - Every reading lists in C(limits) what its measurements cannot see. See C(docs/probe.md) for the method, its
    accuracy in the lab and the periodic tracking design (O(persist) and O(max_age_s)).
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later on the host
  - qemu.qmp (Python library) on the host
  - QEMU 7.2 or later (QEMU 5.2 to 7.1 work with page-sampling only; before 5.2 there is no dirty-rate
    measurement and the probe fails)
  - Linux /proc (schedstat for precise vCPU times; stat is the fallback)
options:
  name:
    description:
      - The VM to probe, either a VM started by M(walm.qemu.walm_vm) (its record in O(state_dir)), or any QEMU started
        with C(-name NAME) or C(-name guest=NAME).
      - Fails if no such VM runs on this host.
      - 1-64 letters, digits, V(.), V(_) or V(-), starting with a letter or digit (it names files in O(state_dir));
        other names, the empty one included, are refused before anything is read. Probe a QEMU named otherwise by
        O(qmp_socket), or with every VM.
    type: str
  qmp_socket:
    description: Probe the VM behind this QMP unix socket instead of naming it.
    type: path
  state_dir:
    description:
      - Where M(walm.qemu.walm_vm) keeps the VMs' files on this host; readings are stored under
        C(STATE_DIR/probe/) with O(persist).
    type: path
    default: /run/walm
  duration_s:
    description:
      - Total measuring time per VM, split into O(samples) windows of O(duration_s)/O(samples) each (at least
        50 ms; QEMU before 8.2 measures whole seconds and the window is rounded up).
    type: float
    default: 1.0
  samples:
    description: Number of windows; their mean, spread and each window are returned, so a bursty workload shows.
    type: int
    default: 2
  dirty_rate_mode:
    description:
      - How QEMU measures the dirty rate. V(auto) uses V(dirty-ring) when KVM runs with a dirty ring
        (C(-accel kvm,dirty-ring-size=N)), V(dirty-bitmap) on other KVM VMs and V(page-sampling) otherwise (TCG).
      - V(dirty-bitmap) and V(dirty-ring) need KVM and are refused otherwise; V(dirty-bitmap) under TCG crashes
        QEMU 7.2.
      - The mode used is returned in C(workload.dirty_rate_mode).
    type: str
    choices: [auto, page-sampling, dirty-bitmap, dirty-ring]
    default: auto
  sample_pages:
    description:
      - Page-sampling only, pages hashed per GiB of guest RAM (QEMU's range 128 to 16384; QEMU's own default is
        512).
      - Unset chooses about 8192 pages in all (16384 per GiB for a 512 MiB VM, 512 per GiB from 16 GiB up), because
        QEMU's default samples so few pages of a small VM that a 20 MiB/s writer reads +-45 % per window.
    type: int
  nonzero_samples:
    description:
      - Guest pages sampled to estimate the non-zero guest memory (C(workload.nonzero_mib)) from the host. Each
        sample is a C(/proc/PID/pagemap) lookup and, for a backed page, one 4 KiB read of C(/proc/PID/mem); 8192
        take about 40 ms and give about +-4 % (95 %) for a guest with a quarter of its RAM in use.
      - V(0) skips the estimate (C(nonzero_mib) is then null and walm_decide falls back to C(rss_mib)).
    type: int
    default: 8192
  persist:
    description:
      - Store each reading as the VM's latest (plus a short history) in C(STATE_DIR/probe/NAME.json), so a later
        task can reuse it with O(max_age_s). Not done in check mode. The VMs are not changed.
    type: bool
    default: false
  max_age_s:
    description:
      - Return a VM's stored reading instead of measuring when it is at most this old and was taken of the same
        QEMU process (C(cached) true, C(age_s) its age). V(0) always measures.
    type: float
    default: 0
  all_netns:
    description:
      - Without O(name) or O(qmp_socket), also probe QEMU processes in other network namespaces. On a real host
        all VMs share one; in the lab each host is a network namespace of one machine.
    type: bool
    default: false
  qmp_timeout_s:
    description: Timeout of each QMP call, the connection included (a monitor held by another client times out).
    type: float
    default: 5
extends_documentation_fragment:
  - walm.qemu.attributes
  - walm.qemu.attributes.action_group_walm
attributes:
  check_mode:
    support: full
    details:
      Measures as in a normal run (measuring changes nothing, C(changed) is always false) but stores no reading
      (O(persist) is not done).
notes:
  - Supports check mode, in which it measures too (measuring changes nothing) but stores no reading.
  - Network rates are from the guest's point of view (C(rx) is traffic to the guest), in MiB/s, Mbit/s (10^6
    bit) and packets/s, counting whole Ethernet frames.
seealso:
  - module: walm.qemu.walm_vm_info
  - module: walm.qemu.walm_migrate
"""

EXAMPLES = r"""
- name: Measure vm1
  walm.qemu.walm_probe:
    name: vm1
  register: probe

- name: Show its dirty rate and CPU use
  ansible.builtin.debug:
    msg: "{{ probe.vms[0].workload.dirty_rate_mib_s }} MiB/s dirtied, {{ probe.vms[0].workload.cpu_percent }} % CPU"

- name: Every VM on the host, 4 windows over 2 s, stored as the latest readings
  walm.qemu.walm_probe:
    duration_s: 2
    samples: 4
    persist: true

- name: At decision time, reuse a reading up to a minute old (measure only VMs without one)
  walm.qemu.walm_probe:
    max_age_s: 60
    persist: true
  register: workloads
"""

RETURN = r"""
vms:
  description: One reading per VM probed (or reused), sorted by VM name.
  returned: always
  type: list
  elements: dict
  contains:
    vm:
      description: The VM.
      type: dict
      contains:
        name: {description: "WALM name, C(-name) of the QEMU, or qemu-PID", type: str}
        pid: {description: QEMU process id, type: int}
        qmp_socket: {description: QMP socket used, type: str}
        memory_mib: {description: Guest RAM (base plus hot-plugged), type: int}
        vcpus: {description: Number of vCPUs, type: int}
        taps: {description: Tap devices the QEMU holds, type: list, elements: str}
        macs: {description: Guest NIC MAC addresses (virtio-net), type: list, elements: str}
        machine: {description: "Machine type (e.g. pc-q35-10.0)", type: str}
        accel: {description: "Accelerator (kvm, tcg)", type: str}
        argv: {description: QEMU command line, type: list, elements: str}
        status: {description: "QMP run state (running, paused, ...)", type: str}
        qemu_version: {description: QEMU version, type: str}
        managed: {description: Started by walm_vm (has a record in state_dir), type: bool}
        vcpu_thread_ids: {description: Host thread id of each vCPU, type: list, elements: int}
        process_start_ticks: {description: Process start time (identifies this QEMU process with the pid), type: int}
    workload:
      description: Means over the windows (scalars), the working-set estimate and memory use.
      type: dict
      contains:
        dirty_rate_mib_s: {description: "Page-dirtying rate, MiB/s (null if QEMU could not measure it)",
                           type: float}
        dirty_rate_mode: {description: Mode used, type: str}
        dirty_rate_sample_pages_per_gib: {description: Page-sampling pages per GiB (null in other modes), type: int}
        dirty_rate_rel_error_pct: {description: "Page-sampling: estimated relative standard error of the mean rate",
                                   type: float, returned: page-sampling with a non-zero rate}
        dirty_rate_per_vcpu_mib_s: {description: "Per vCPU (dirty-ring only)", type: list, returned: dirty-ring}
        cpu_percent: {description: "vCPU threads' host CPU use in total (100 = one busy vCPU)", type: float}
        cpu_percent_per_vcpu: {description: "Per vCPU, in vCPU order", type: list, elements: float}
        qemu_cpu_percent: {description: "Whole QEMU process (vCPUs, I/O threads, emulation)", type: float}
        net_rx_mib_s: {description: "Traffic to the guest over all taps, MiB/s", type: float}
        net_tx_mib_s: {description: "Traffic from the guest over all taps, MiB/s", type: float}
        net_rx_pps: {description: Frames to the guest per second, type: float}
        net_tx_pps: {description: Frames from the guest per second, type: float}
        net_rx_mbit_s: {description: "Traffic to the guest, Mbit/s (10^6 bit)", type: float}
        net_tx_mbit_s: {description: "Traffic from the guest, Mbit/s", type: float}
        net_per_tap: {description: "Per tap: rx/tx _mib_s, _pps, _mbit_s, _dropped (null if the tap is not
                       visible)", type: dict}
        wws_mib: {description: "Working-set estimate: distinct memory changed within one window (largest over the
                   windows), MiB", type: float}
        wws_window_ms: {description: Window length wws_mib refers to, type: int}
        rss_mib: {description: "QEMU's resident memory (VmRSS), MiB", type: float}
        guest_memory_used_mib: {description: "Guest memory in use from balloon statistics, MiB; null without a
                                 balloon device reporting statistics (never a guess)", type: float}
        nonzero_mib: {description: "Guest RAM that is not all zero bytes, sampled from the host (what a first
                       pre-copy pass sends in full), MiB; null when it cannot be read (see limits)", type: float}
        nonzero_rel_error_pct: {description: "95 % half-width of nonzero_mib relative to it", type: float}
    samples:
      description: "Each window: t_offset_s, window_ms, cpu_window_ms and the workload's per-window metrics."
      type: list
      elements: dict
    stats:
      description: Per metric over the windows, C(mean), C(stdev) (population), C(min), C(max), C(n).
      type: dict
    settings:
      description: "duration_s, samples, window_ms, dirty_rate_mode_requested, dirty_rate_mode,
                    sample_pages_per_gib, cpu_source (schedstat or stat)"
      type: dict
    probed_at: {description: "When the reading was finished, seconds since the epoch (UTC)", type: float}
    probed_at_iso: {description: The same as ISO 8601 UTC, type: str}
    cached: {description: The reading was reused from state_dir (see max_age_s), type: bool}
    age_s: {description: Age of a reused reading (0 when measured now), type: float}
    limits: {description: "What the measurements cannot see, in plain sentences", type: list, elements: str}
failed_vms:
  description: VMs found but not measured (probing every VM), with the reason; also emitted as warnings.
  returned: always
  type: list
  elements: dict
  sample: [{name: vm2, pid: 4242, qmp_socket: /run/walm/vm2.qmp, error: "VM 'vm2' is migrating (...)"}]
persisted:
  description: Reading files written (persist).
  returned: always
  type: list
  elements: str
probe_wall_time_s:
  description: Wall time of the whole probe, seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.qmp import HAS_QMP, QMP_IMPORT_ERROR


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            qmp_socket=dict(type="path"),
            state_dir=dict(type="path", default="/run/walm"),
            duration_s=dict(type="float", default=1.0),
            samples=dict(type="int", default=2),
            dirty_rate_mode=dict(type="str", default="auto",
                                 choices=["auto", "page-sampling", "dirty-bitmap", "dirty-ring"]),
            sample_pages=dict(type="int"),
            nonzero_samples=dict(type="int", default=8192),
            persist=dict(type="bool", default=False),
            max_age_s=dict(type="float", default=0),
            all_netns=dict(type="bool", default=False),
            qmp_timeout_s=dict(type="float", default=5),
        ),
        mutually_exclusive=[("name", "qmp_socket")],
        supports_check_mode=True,
    )
    if not HAS_QMP:
        module.fail_json(msg=missing_required_lib("qemu.qmp"), exception=QMP_IMPORT_ERROR)

    from ansible_collections.walm.qemu.plugins.module_utils.probe import run

    p = module.params
    try:
        result = run(p, check_mode=module.check_mode)
    except WalmError as exc:
        module.fail_json(msg=str(exc), changed=False, **exc.details)
    if p["name"] or p["qmp_socket"]:
        if result["failed_vms"]:
            f = result["failed_vms"][0]
            module.fail_json(msg=f["error"], changed=False, failed_vms=result["failed_vms"], vms=[])
    for f in result["failed_vms"]:
        module.warn("VM '%s' was not probed: %s" % (f["name"], f["error"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
