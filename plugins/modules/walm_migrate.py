#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_migrate
short_description: Live-migrate a QEMU VM from this host to a prepared destination, and report how it went
version_added: "0.1.0"
description:
  - Runs on the source host. Sets the migration capabilities and parameters on the source QEMU through QMP,
    starts C(migrate) to O(destination_uri) (a destination prepared with M(walm.qemu.walm_vm)
    O(walm.qemu.walm_vm#module:state=incoming)), polls C(query-migrate) every O(poll_interval_ms) and keeps one
    progress snapshot per pass, until the migration completes, fails or exceeds O(timeout_s).
  - A migration that fails or times out is cancelled and the VM keeps running on the source (resumed with C(cont)
    if QEMU left it paused); the module then fails with the reason and the VM's state.
  - After success the source QEMU is left in state C(postmigrate) (not running, nothing lost). Check that the VM
    runs on the destination (M(walm.qemu.walm_vm) O(walm.qemu.walm_vm#module:state=started) with
    O(walm.qemu.walm_vm#module:wait_running_s)), then stop the source copy (M(walm.qemu.walm_vm)
    O(walm.qemu.walm_vm#module:state=stopped)). C(playbooks/migrate_vm.yml) does this.
  - If the link breaks during post-copy, both QEMUs pause (C(postcopy-paused)); the module then returns
    RV(status=postcopy-paused) (failing the task) without cancelling anything, so the guest can be recovered.
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later on the host
  - qemu.qmp (Python library) on the host
  - QEMU 7.2 or later on both hosts
options:
  name:
    description:
      - The VM to migrate (as started by M(walm.qemu.walm_vm) on this host).
      - 1-64 letters, digits, V(.), V(_) or V(-), starting with a letter or digit; other names are refused.
    type: str
    required: true
  state_dir:
    description: Where M(walm.qemu.walm_vm) keeps the VM's files on this host.
    type: path
    default: /run/walm
  destination_uri:
    description:
      - Migration URI of the prepared destination, as returned by M(walm.qemu.walm_vm) O(walm.qemu.walm_vm#module:state=incoming)
        (or C(recover_uri) of O(walm.qemu.walm_vm#module:state=recover) with O(resume=true)).
      - Required, except in check mode, where the destination is only validated and does not listen yet.
      - Must be V(tcp:HOST:PORT) (an IPv6 address in brackets, for example V(tcp:[fd00::2]:49152)), unless
        O(allow_unsafe_uri=true). It is checked before the module connects to QEMU.
    type: str
  allow_unsafe_uri:
    description:
      - Pass a O(destination_uri) of another scheme than V(tcp:) to QEMU as it is.
      - Off by default because QEMU runs an V(exec:) URI as a shell command, as the user QEMU runs as (root), on
        this host, and V(file:), V(unix:) or V(fd:) URIs reach this host's files; a wrong or planted URI would act
        here instead of migrating. Turn it on only for a URI you wrote yourself.
    type: bool
    default: false
  method:
    description:
      - V(precopy) sends memory in passes until the remainder fits O(downtime_limit_ms); the source keeps the VM
        until the end, so a failure costs nothing.
      - V(postcopy) switches to post-copy as soon as the first pass has started; the guest then runs on the
        destination and pulls missing pages over the link (fastest for write-heavy guests; the source can no
        longer take over).
      - V(hybrid) switches after O(switch_after_passes) complete pre-copy passes. A pre-copy that converges before
        the switch completes as pre-copy.
      - The destination must have been prepared for the same method (M(walm.qemu.walm_vm)
        O(walm.qemu.walm_vm#module:state=incoming)).
    type: str
    choices: [precopy, postcopy, hybrid]
    default: precopy
  switch_after_passes:
    description:
      - With O(method=hybrid), the complete pre-copy passes before the switch to post-copy; 1 to 1000.
      - V(0) is refused, whatever the method, rather than read as a default; to switch during the first pass use
        O(method=postcopy).
    type: int
    default: 2
  on_timeout:
    description:
      - What to do when pre-copy has not completed after O(timeout_s). V(abort) cancels, and the VM keeps running
        on the source (the safe default for planned maintenance). V(postcopy) switches to post-copy so the VM
        leaves the host whatever it does (for a failing host); the destination must have been prepared with the
        same O(on_timeout).
      - Once in post-copy a migration is never cancelled.
    type: str
    choices: [abort, postcopy]
    default: abort
  max_postcopy_bandwidth_mib_s:
    description: Bandwidth cap in post-copy (where O(max_bandwidth_mib_s) does not apply); V(0) means no cap;
      at most 1048576 (1 TiB/s).
    type: float
    default: 0
  expected_definition_sha256:
    description:
      - C(definition_sha256) returned by M(walm.qemu.walm_vm) O(walm.qemu.walm_vm#module:state=incoming) on the
        destination. If given and it differs from this VM's recorded definition, the module fails before anything
        is touched, because the destination would build a different machine.
    type: str
  resume:
    description:
      - Resume a post-copy migration that a broken link paused (C(postcopy-paused) on both sides) to
        O(destination_uri), where the destination listens again (M(walm.qemu.walm_vm) O(walm.qemu.walm_vm#module:state=recover)).
        Capabilities and parameters are left as they are.
      - A migration left in C(postcopy-recover) by an earlier resume that never got through is paused again first.
    type: bool
    default: false
  resume_timeout_s:
    description:
      - With O(resume=true), how long the destination may take to take up the resumed migration (status
        C(postcopy-recover-setup) or C(postcopy-recover)). Past it the migration is paused again (C(migrate-pause))
        and RV(status) is C(postcopy-paused), so the caller can recover again; nothing is cancelled.
    type: float
    default: 60
  tls_dir:
    description:
      - This host's directory of migration certificates, as the role C(walm.qemu.migration_tls) installs it
        (C(ca-cert.pem), C(client-cert.pem) and C(client-key.pem) are read). The stream is then encrypted, and
        the destination's certificate must be signed by the same CA and carry O(tls_hostname). The destination
        must have been prepared with TLS too (M(walm.qemu.walm_vm) O(walm.qemu.walm_vm#module:tls_dir)); a
        mismatch fails the migration at once and the VM keeps running here.
      - A missing or unreadable file fails the task before anything is changed, naming the file; check mode
        checks the files too.
      - Unset migrates in clear, and first removes TLS settings an earlier migration left on this QEMU (a VM that
        arrived here by TLS keeps its destination's settings).
      - With O(resume=true) the interrupted migration's channel is used again and this option is ignored.
    type: path
  tls_hostname:
    description:
      - With O(tls_dir), the name or address the destination's certificate must carry (subjectAltName).
      - Unset, the host of O(destination_uri) is checked, the destination's migration address, which
        C(walm.qemu.migration_tls) puts in every host's certificate.
    type: str
  capabilities:
    description:
      - The capabilities the destination was prepared with (C(capabilities) returned by M(walm.qemu.walm_vm)
        O(walm.qemu.walm_vm#module:state=incoming)); the source sets the same. Unset computes them from O(method),
        O(on_timeout) and this host's QEMU, which assumes both sides run the same QEMU version.
    type: dict
  max_bandwidth_mib_s:
    description: Bandwidth cap for the migration stream in MiB/s; V(0) means no cap (the link is the limit); at
      most 1048576 (1 TiB/s).
    type: float
    default: 0
  downtime_limit_ms:
    description:
      - Longest pause the guest may see at the switchover; 1 to 2000000 (QEMU's limit).
      - QEMU is given this less O(downtime_headroom_pct) as its C(downtime-limit), because QEMU's switchover
        estimate leaves out the data already in flight; RV(downtime_within_limit) checks the outcome.
    type: int
    default: 300
  downtime_headroom_pct:
    description:
      - Share of O(downtime_limit_ms) kept back from QEMU's C(downtime-limit) for the data in flight and the
        switchover itself; 0 to 90. V(0) gives QEMU the limit as it is.
    type: float
    default: 20
  allow_postcopy:
    description:
      - Whether the run-time adaptation may switch a pre-copy that will not converge to post-copy.
      - When O(capabilities) is not given, V(true) negotiates C(postcopy-ram) on the source for any method (the
        destination must have been prepared with M(walm.qemu.walm_vm) O(walm.qemu.walm_vm#module:allow_postcopy=true)).
        When O(capabilities) is given, post-copy is possible exactly when it includes C(postcopy-ram).
    type: bool
    default: false
  adapt:
    description:
      - Check a pre-copy (and the pre-copy phase of a hybrid) against O(expect) at every pass boundary and act
        on O(adaptation_actions) when it will not converge in time (see C(docs/decide.md), "Run-time
        adaptation").
      - A pass that no longer shrinks the remainder by 10 %, or a projection of the remaining passes that ends
        past the budget (the predicted total time plus 50 % or 2 s, whichever is more, or the objective's time
        budget), counts as divergence. A hybrid then switches early. O(timeout_s) stays the last bound.
      - V(false) runs the method as given (the fixed methods of the benchmark).
    type: bool
    default: true
  expect:
    description:
      - What the decision predicted for this migration, as M(walm.qemu.walm_decide) returns it in
        RV(walm.qemu.walm_decide#module:expectation) (C(method), C(converges), C(total_time_ms), C(passes),
        C(dirty_rate_mib_s), C(budget_ms), ...). Without it only the "remainder stopped shrinking" rule applies.
    type: dict
  adaptation_actions:
    description:
      - What to do, in this order, when a pre-copy diverges; each action is used once it applies.
      - V(postcopy) switches to post-copy (only where C(postcopy-ram) was negotiated; see O(allow_postcopy)).
      - V(downtime) raises the downtime limit to what would let the remainder go in one switchover, at least
        doubling it, up to O(max_downtime_limit_ms).
      - V(throttle) relies on QEMU's auto-converge, which is then set before the start (QEMU takes no capability
        during a migration) and slows the vCPUs while passes do not shrink; it is given 3 passes.
      - V(abort) cancels the migration; the VM keeps running on the source.
    type: list
    elements: str
    choices: [postcopy, downtime, throttle, abort]
    default: [postcopy, downtime, throttle, abort]
  max_downtime_limit_ms:
    description:
      - The operator's ceiling for the V(downtime) action; at least O(downtime_limit_ms). Unset means
        O(downtime_limit_ms) (the limit is never raised).
    type: int
  timeout_s:
    description:
      - Give up when the migration has not completed after this many seconds; the migration is cancelled and
        the VM keeps running on the source. Pre-copy does not converge when the guest dirties memory about as
        fast as the link carries it.
      - Above 0 and at most 86400 (a day).
    type: float
    default: 600
  poll_interval_ms:
    description: How often C(query-migrate) is polled for progress.
    type: int
    default: 100
extends_documentation_fragment:
  - walm.qemu.attributes
  - walm.qemu.attributes.action_group_walm
attributes:
  check_mode:
    support: partial
    details:
      Checks the request and the source VM over QMP (running, not already migrating, capabilities supported) and
      returns RV(status=would-migrate) (or V(would-resume)) with C(changed=true), touching nothing;
      O(destination_uri) may be left out. Nothing is migrated, so there are no measurements (times, downtime,
      passes, adaptations).
notes:
  - O(name) and every migration parameter are checked (names, ranges, URI scheme) before anything on the host is
    read or touched; a value out of range fails the task, it is never replaced by a default.
  - Check mode connects to the source QEMU and checks it can be migrated (running, not already migrating,
    capabilities supported), touching nothing.
  - Statistics come from the source (the destination's C(query-migrate) reports status only on QEMU 7.2).
  - While a migration runs, its progress (status, pass, remaining and transferred MiB, throughput, a switch to
    post-copy, the adaptations so far) is kept in C(STATE_DIR/NAME.progress.json), rewritten at every pass
    boundary, status change, switch or adaptation and at least every second. Run as an async task, it is what
    M(walm.qemu.walm_migration_wait) prints; C(walm_vm state=stopped) removes it.
seealso:
  - module: walm.qemu.walm_vm
  - module: walm.qemu.walm_migration_wait
"""

EXAMPLES = r"""
- name: Migrate vm1 to the destination prepared earlier
  walm.qemu.walm_migrate:
    name: vm1
    destination_uri: "{{ incoming.incoming_uri }}"
    downtime_limit_ms: 300
    timeout_s: 300
  register: migration

- name: Report
  ansible.builtin.debug:
    msg: "TMT {{ migration.total_time_ms }} ms, downtime {{ migration.downtime_ms }} ms"
"""

RETURN = r"""
status:
  description: V(completed); V(failed), V(timeout), V(aborted) (the adaptation cancelled a pre-copy that would not
    converge; the VM runs on the source) or V(postcopy-paused) (these also fail the task); a resumed post-copy the
    destination did not take up in time reports the state QEMU was left in (V(postcopy-paused), or
    V(postcopy-recover-setup) or V(postcopy-recover) when it could not be paused again); V(would-migrate), or
    V(would-resume) for a resume, in check mode.
  returned: always
  type: str
method:
  description: The method used.
  returned: always
  type: str
total_time_ms:
  description: Total migration time as QEMU reports it (from C(migrate) to completion).
  returned: always
  type: int
  sample: 1843
downtime_ms:
  description: Time the guest was stopped for the switchover, as QEMU reports it.
  returned: always
  type: int
  sample: 41
setup_time_ms:
  description: Time QEMU spent setting up before sending memory.
  returned: always
  type: int
transferred_bytes:
  description: Bytes sent for guest RAM.
  returned: always
  type: int
passes:
  description: Passes over guest memory (QEMU's C(dirty-sync-count), which includes the final one).
  returned: always
  type: int
postcopy_requests:
  description: Pages the destination requested during post-copy (0 for pre-copy).
  returned: always
  type: int
wall_time_ms:
  description: Time this module spent from C(migrate) to the final state.
  returned: always
  type: int
ran_postcopy:
  description: Whether the migration ran in post-copy (a hybrid or timed-out pre-copy may converge first).
  returned: when completed
  type: bool
postcopy_requested_ms:
  description: When C(migrate-start-postcopy) was issued, in ms after C(migrate); null if never.
  returned: when completed
  type: int
postcopy_reason:
  description: Why post-copy was started (method, pass count, or timeout).
  returned: when completed
  type: str
postcopy_started_ms:
  description: When the source first reported a post-copy state, in ms after C(migrate); null if never.
  returned: when completed
  type: int
switch_after_passes:
  description: Complete pre-copy passes before the switch (0 for post-copy, null for pre-copy).
  returned: always
  type: int
started_at:
  description: When C(migrate) was issued (seconds since the epoch, this host's clock).
  returned: unless check mode
  type: float
finished_at:
  description: When the migration reached its final state (seconds since the epoch, this host's clock).
  returned: unless check mode
  type: float
source_stop_time:
  description: When the source stopped the guest (QMP STOP event, seconds since the epoch, host clock). The
    destination's RV(walm.qemu.walm_vm#module:vm.resumed_at) less this is the guest-visible downtime;
    C(playbooks/migrate_vm.yml) reports it as C(guest_visible_downtime_ms).
  returned: when completed
  type: float
source_status:
  description: The VM's run state on the source afterwards (C(postmigrate) after success, C(running) after a
    failure).
  returned: always
  type: str
snapshots:
  description: One progress snapshot per pass (C(t_ms), C(status), C(pass), C(transferred_bytes),
    C(remaining_bytes), C(dirty_pages_rate), C(mbps), C(postcopy_requests), C(page_size), C(cpu_throttle_pct)).
  returned: always
  type: list
  elements: dict
capabilities:
  description: Migration capabilities set on the source.
  returned: always
  type: dict
parameters:
  description: Migration parameters set on the source (C(max-bandwidth) in bytes/s, C(downtime-limit) in ms).
  returned: always
  type: dict
tls:
  description: The channel's TLS on this side (C(endpoint) V(client), C(dir), C(hostname); a null C(hostname) means
    the host of O(destination_uri)), or null when the stream went in clear.
  returned: unless resume
  type: dict
error:
  description: Why the migration failed, or null.
  returned: always
  type: str
adapt:
  description: Whether the run-time check ran (O(adapt) and a method with a pre-copy phase).
  returned: unless resume
  type: bool
expectation:
  description: O(expect) as the check read it (numbers or null), or null without a prediction.
  returned: unless resume
  type: dict
adaptations:
  description:
    - What the run-time check did, one entry per action - C(t_ms) (into the migration), C(pass) (complete
      passes), C(action) (V(postcopy), V(downtime), V(throttle), V(abort)), C(reason), C(measured)
      (C(dirty_rate_mib_s), C(throughput_mib_s), C(remaining_mib), C(shrink_ratio)) and C(predicted)
      (C(dirty_rate_mib_s), C(total_time_ms), C(passes), C(budget_ms)); a V(downtime) entry also gives the
      C(downtime_limit_ms) it set and the C(qemu_downtime_limit_ms) handed to QEMU.
    - Empty when the migration went as predicted.
  returned: unless check mode or resume
  type: list
  elements: dict
pass_measurements:
  description: Every pass the check measured (C(pass), C(t_ms), C(pass_ms), C(sent_mib), C(remaining_mib),
    C(throughput_mib_s), C(dirty_rate_mib_s), C(shrink_ratio), C(switchover_threshold_mib),
    C(projected_total_ms), C(projected_passes)).
  returned: unless check mode or resume
  type: list
  elements: dict
downtime_limit_ms:
  description: The downtime limit in effect at the end (O(downtime_limit_ms), or what the V(downtime) action
    raised it to).
  returned: unless check mode or resume
  type: int
qemu_downtime_limit_ms:
  description: QEMU's C(downtime-limit) at the end (RV(downtime_limit_ms) less O(downtime_headroom_pct)).
  returned: unless check mode or resume
  type: int
downtime_within_limit:
  description: Whether QEMU's measured downtime kept RV(downtime_limit_ms); null unless completed.
    C(playbooks/migrate_vm.yml) checks the guest-visible downtime as well.
  returned: unless check mode or resume
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.migration_service import SHARED_OPTIONS, SUCCEEDED, failure_message, migrate_vm
from ansible_collections.walm.qemu.plugins.module_utils.qmp import HAS_QMP, QMP_IMPORT_ERROR


def main():
    module = AnsibleModule(
        argument_spec=dict(
            SHARED_OPTIONS,
            name=dict(type="str", required=True),
            destination_uri=dict(type="str"),
            capabilities=dict(type="dict"),
            resume=dict(type="bool", default=False),
            resume_timeout_s=dict(type="float", default=60),
            tls_dir=dict(type="path"),
            tls_hostname=dict(type="str"),
            expected_definition_sha256=dict(type="str"),
            expect=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    if not HAS_QMP:
        module.fail_json(msg=missing_required_lib("qemu.qmp"), exception=QMP_IMPORT_ERROR)

    try:
        result = migrate_vm(module.params, check_mode=module.check_mode)
    except WalmError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    if result["status"] not in SUCCEEDED:
        module.fail_json(msg=failure_message(module.params["name"], result), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
