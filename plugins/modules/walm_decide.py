#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_decide
short_description: Choose pre-copy, post-copy or hybrid for one VM from its probed workload, with predictions
version_added: "0.1.0"
description:
  - Classifies the VM's workload from its probe result (CPU, memory, network intensive or idle; read- or
    write-intensive), predicts the total migration time, downtime, post-copy page faults, guest slowdown and time
    exposed in post-copy of pre-copy, post-copy and hybrid on the given link, and chooses the method that best
    meets the O(objective). Every choice comes with plain sentences (RV(reasons)) carrying the numbers.
  - O(objective=urgent) (the default; a failing host must be emptied) takes the VM off the host fastest within
    O(downtime_limit_ms); methods within C(tmt_tolerance_pct) of the fastest count as equally fast, and among them
    the least disruptive wins. O(objective=balanced) (planned maintenance) takes the least disruptive method that
    finishes within O(time_budget_s). Disruption is downtime plus guest time lost to slowdown plus the time spent
    in post-copy, where a link failure costs the VM unless recovered.
  - Post-copy cannot fall back to the source, so pre-copy is preferred whenever it is within O(safety_margin_pct)
    of the chosen method. When no method meets the goal the module says so (RV(meets_goal) false), chooses what
    comes closest and says what will happen.
  - Pure computation on the probe result; it touches nothing, runs anywhere (usually on the controller), and
    supports check mode. The model, its equations and its default thresholds are described in C(docs/decide.md).
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later
  - jmespath (Python library), only when O(rules) are given
options:
  probe:
    description:
      - The probe result of ONE VM (one entry of M(walm.qemu.walm_probe)'s result).
      - Required keys are C(vm.memory_mib) and C(workload.dirty_rate_mib_s). Optional keys (missing or null is
        fine) are C(vm.name), C(vm.vcpus), C(workload.cpu_percent) (total, 100 = one busy vCPU),
        C(workload.net_rx_mib_s), C(workload.net_tx_mib_s), C(workload.nonzero_mib) (guest RAM that is not all
        zeros, which a first pass sends in full; zero pages go as cheap headers), C(workload.rss_mib) (QEMU's
        resident memory, used when there is no C(nonzero_mib)), C(workload.working_set_mib) (the memory the guest
        writes, when known), C(workload.wws_mib) (what one probe window wrote, a lower bound) and
        C(workload.read_rate_mib_s).
      - Without C(nonzero_mib) and C(rss_mib) every page of RAM counts as non-zero; without C(working_set_mib) the
        guest may write anywhere in its non-zero memory. Both make the predictions conservative.
    type: dict
    required: true
  link_bandwidth_mib_s:
    description:
      - Bandwidth of the migration link in MiB/s (1 Gbit/s is about 119 MiB/s; the lab's shaped link measures
        about 114 MiB/s). The guest's own network traffic (C(net_tx_mib_s) + C(net_rx_mib_s)) is subtracted from
        it.
    type: float
    required: true
  link_latency_ms:
    description: One-way latency of the migration link; each post-copy page fault waits a round trip.
    type: float
    default: 0.1
  downtime_limit_ms:
    description: Longest acceptable downtime; pre-copy switches over only when its remainder fits it.
    type: int
    default: 300
  allow_postcopy:
    description: Whether post-copy and hybrid may be chosen. With V(false) only pre-copy remains.
    type: bool
    default: true
  objective:
    description:
      - V(urgent) - the VM off the host fastest within the downtime limit (host evacuation, a failing host).
      - V(balanced) - the least guest disruption within O(time_budget_s) (planned maintenance).
    type: str
    choices: [urgent, balanced]
    default: urgent
  time_budget_s:
    description:
      - Longest acceptable total migration time for O(objective=balanced).
      - When not set, the budget is C(balanced_budget_factor) (see O(thresholds)) times the fastest method's
        predicted time. Ignored by O(objective=urgent).
    type: float
  safety_margin_pct:
    description:
      - Choose pre-copy instead of the best method when pre-copy is within this share of it (its time for
        V(urgent), its disruption for V(balanced)), because post-copy cannot fall back to the source if something fails.
    type: float
    default: 10
  thresholds:
    description:
      - Overrides of the classification and policy thresholds (defaults in
        C(plugins/module_utils/decide_defaults.py) and C(docs/decide.md)). Keys - C(cpu_percent) (50),
        C(dirty_rate_mib_s) (8), C(network_mib_s) (4), C(write_share_pct) (50),
        C(precopy_max_dirty_pct_of_link) (90), C(tmt_tolerance_pct) (10), C(balanced_budget_factor) (3),
        C(postcopy_exposure_weight) (1). Unknown keys are refused.
    type: dict
    default: {}
  rules:
    description:
      - Operator rules, checked before anything is computed; the first whose C(when) is true decides.
      - Each rule is a dict with C(when) (a JMESPath expression over the probe result, which also holds the
        computed C(workload_class), C(predictions) and C(link)), C(method) (V(precopy), V(postcopy) or
        V(hybrid)), an optional C(reason) (quoted in RV(reasons)) and, for hybrid, an optional
        C(switch_after_passes).
      - A rule choosing post-copy or hybrid while O(allow_postcopy=false), an unknown method or an invalid
        expression fails the task with the rule's number.
    type: list
    elements: dict
    default: []
  max_passes:
    description:
      - Pre-copy needing more passes than this is treated as not converging (QEMU itself iterates without limit
        until C(walm_migrate)'s C(timeout_s)).
    type: int
    default: 30
  model:
    description:
      - Overrides of the performance model's constants (C(page_size_bytes), C(setup_ms), C(round_overhead_ms),
        C(switchover_overhead_ms), C(zero_page_scan_mib_s), C(postcopy_fault_service_ms), ...; the full list with
        defaults is in C(docs/decide.md)). Unknown keys are refused.
    type: dict
    default: {}
extends_documentation_fragment:
  - walm.qemu.attributes
attributes:
  check_mode:
    support: full
    details:
      Pure computation on the probe result; check mode gives the same result and changes nothing.
notes:
  - Check mode is supported and gives the same result; the module never changes anything.
  - The predictions are a model, calibrated on the lab (docs/decide.md); compare them with what
    M(walm.qemu.walm_migrate) measures.
seealso:
  - module: walm.qemu.walm_migrate
"""

EXAMPLES = r"""
- name: Decide how to migrate a probed VM off a failing host
  walm.qemu.walm_decide:
    probe: "{{ probe.vms[0] }}"
    link_bandwidth_mib_s: 119
  register: decision

- name: Planned maintenance - least disruption within a minute, databases always in pre-copy
  walm.qemu.walm_decide:
    probe: "{{ item }}"
    link_bandwidth_mib_s: 1190
    objective: balanced
    time_budget_s: 60
    downtime_limit_ms: 500
    rules:
      - when: "starts_with(vm.name, 'db-')"
        method: precopy
        reason: databases must be able to fall back to the source
    thresholds:
      dirty_rate_mib_s: 16
  loop: "{{ probe.vms }}"
  register: decisions

- name: Show the choice and why
  ansible.builtin.debug:
    msg: "{{ decision.method }}: {{ decision.reasons | join(' ') }}"
"""

RETURN = r"""
method:
  description: The chosen method, V(precopy), V(postcopy) or V(hybrid).
  returned: always
  type: str
  sample: postcopy
switch_after_passes:
  description: For V(hybrid), the number of pre-copy passes before switching to post-copy; null otherwise.
  returned: always
  type: int
  sample: 2
meets_goal:
  description:
    - Whether the chosen method meets the objective (completes, within the downtime limit and, for V(balanced),
      the time budget). When false, RV(reasons) starts with what cannot be met and what will happen.
  returned: always
  type: bool
objective:
  description: The objective applied, V(urgent) or V(balanced).
  returned: always
  type: str
reasons:
  description:
    - Plain sentences with the numbers - the decision first (or the rule that forced it), then the link, the
      workload class, the memory to send and each method's prediction.
  returned: always
  type: list
  elements: str
  sample:
    - "Objective urgent: post-copy is the fastest within the 300 ms downtime limit (2.47 s)."
    - "Dirty rate 120 MiB/s exceeds 90 % of the 114 MiB/s usable link and the 256 MiB working set does not fit
      in one 300 ms switchover (34.2 MiB): pre-copy cannot converge."
vm:
  description: The VM's name from the probe.
  returned: always
  type: str
workload_class:
  description: How the workload was classified.
  returned: always
  type: dict
  contains:
    intensity:
      description: The classes that apply, the dominant first - C(cpu), C(memory), C(network), or just C(idle).
      type: list
      elements: str
    dominant:
      description: The class furthest above its threshold, or C(idle).
      type: str
    access:
      description: C(read-intensive) or C(write-intensive).
      type: str
    scores:
      description: Each measurement divided by its threshold (1 or more means the class applies).
      type: dict
    write_share_pct:
      description: Writes as a share of page accesses, when the probe measured a read rate; else null.
      type: float
    thresholds_used:
      description: Every threshold in force (defaults with the O(thresholds) overrides).
      type: dict
predictions:
  description: The prediction of each method, keyed C(precopy), C(postcopy) and C(hybrid).
  returned: always
  type: dict
  contains:
    allowed:
      description: Whether the method may be chosen (post-copy and hybrid need O(allow_postcopy)).
      type: bool
    converges:
      description: Whether the method completes (pre-copy may not converge; post-copy and hybrid always complete).
      type: bool
    total_time_ms:
      description: Predicted total migration time; null when pre-copy does not converge.
      type: int
    downtime_ms:
      description: Predicted downtime; null when pre-copy does not converge.
      type: int
    meets_downtime_limit:
      description: Whether it completes within O(downtime_limit_ms).
      type: bool
    passes:
      description: Passes over memory including the final one (for hybrid, the pre-copy passes plus the post-copy
        one). QEMU's C(dirty-sync-count) also counts its setup sync.
      type: int
    transferred_mib:
      description: Predicted data sent for guest RAM.
      type: float
    postcopy_faults:
      description: Expected remote page faults (pages the guest waits for) in post-copy; 0 for pre-copy.
      type: int
    guest_slowdown_pct:
      description: Share of the guest's progress lost while it runs during the migration (post-copy faults,
        dirty logging); downtime is not included.
      type: float
    guest_lost_ms:
      description: Guest time lost - downtime plus slowdown; null when pre-copy does not converge.
      type: int
    postcopy_exposure_ms:
      description: Time spent in post-copy, when a link failure costs the VM unless recovered.
      type: int
    disruption_ms:
      description: What the objectives minimise - guest_lost_ms plus postcopy_exposure_weight times
        postcopy_exposure_ms.
      type: int
    why_not_converging:
      description: Pre-copy only - null, C(dirty_rate_near_link), C(stalled) or C(max_passes).
      type: str
    rounds:
      description: Pre-copy only - the predicted passes (C(pass), C(sent_mib), C(time_ms), C(dirtied_mib)).
      type: list
      elements: dict
    switch_after_passes:
      description: Hybrid only - pre-copy passes before post-copy, chosen by the model for the objective.
      type: int
    completes_as_precopy:
      description: Hybrid only - pre-copy converges before the switch, so the hybrid completes as pre-copy.
      type: bool
link:
  description: C(bandwidth_mib_s), C(usable_bandwidth_mib_s) (less the guest's traffic), C(guest_traffic_mib_s),
    C(latency_ms), C(floored) (the guest's traffic would leave less than C(min_usable_link_pct)).
  returned: always
  type: dict
model_inputs:
  description: What the model used and where it came from (C(nonzero_mib), C(working_set_mib),
    C(access_rate_mib_s), C(busy_vcpus), C(switchover_threshold_mib), each with its source).
  returned: always
  type: dict
policy:
  description: The objective, downtime limit, C(allow_postcopy), the time budget in force for V(balanced) (with
    its source; null for V(urgent)), safety margin and C(max_passes).
  returned: always
  type: dict
model:
  description: The model's constants in force (defaults with the O(model) overrides).
  returned: always
  type: dict
rule:
  description: The operator rule that decided (C(index), C(when), C(method), C(reason)), or null.
  returned: always
  type: dict
expectation:
  description:
    - What the chosen method is predicted to do, for M(walm.qemu.walm_migrate)'s
      O(walm.qemu.walm_migrate#module:expect), which checks the migration against it at every pass boundary.
    - C(method), C(converges), C(total_time_ms), C(downtime_ms) and C(passes) (null when it is not predicted to
      converge), C(dirty_rate_mib_s) and C(working_set_mib) the model assumed, C(link_bandwidth_mib_s) (usable),
      C(objective), and C(budget_ms) (the time budget of objective V(balanced); null under V(urgent)).
  returned: always
  type: dict
  sample: {method: precopy, converges: true, total_time_ms: 812, downtime_ms: 196, passes: 3,
           dirty_rate_mib_s: 0.4, working_set_mib: 86.0, link_bandwidth_mib_s: 114.0, objective: urgent,
           budget_ms: null}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.decide_defaults import OBJECTIVES
from ansible_collections.walm.qemu.plugins.module_utils.decide_policy import decide
from ansible_collections.walm.qemu.plugins.module_utils.decide_rules import HAS_JMESPATH


def main():
    module = AnsibleModule(
        argument_spec=dict(
            probe=dict(type="dict", required=True),
            link_bandwidth_mib_s=dict(type="float", required=True),
            link_latency_ms=dict(type="float", default=0.1),
            downtime_limit_ms=dict(type="int", default=300),
            allow_postcopy=dict(type="bool", default=True),
            objective=dict(type="str", default="urgent", choices=list(OBJECTIVES)),
            time_budget_s=dict(type="float"),
            safety_margin_pct=dict(type="float", default=10),
            thresholds=dict(type="dict", default={}),
            rules=dict(type="list", elements="dict", default=[]),
            max_passes=dict(type="int", default=30, no_log=False),
            model=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    if module.params["rules"] and not HAS_JMESPATH:
        module.fail_json(msg=missing_required_lib("jmespath (for rules)"))
    try:
        result = decide(module.params)
    except WalmError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
