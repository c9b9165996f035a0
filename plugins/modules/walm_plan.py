#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_plan
short_description: Plan the evacuation of a host (order, method, destination and concurrency per VM) and summarise it
version_added: "0.1.0"
description:
  - Plans how to empty one source host from what M(walm.qemu.walm_vm_info), M(walm.qemu.walm_probe) and
    M(walm.qemu.walm_decide) report about its VMs, and the free memory of the destination hosts. Every VM gets a
    position, a method, a destination, its predicted total migration time (TMT) and downtime, and plain-sentence
    reasons. C(playbooks/evacuate_host.yml) runs it.
  - "O(policy=walm) orders by the shortest predicted TMT first, each VM by the method walm_decide chose. On one
    shared migration link the migrations run one after another, so the host is empty after about the sum of the
    TMTs whatever the order; shortest first gets the most VMs off the host earliest (it minimises the mean time a
    VM waits). VMs without a prediction go last, by pre-copy."
  - O(policy=naive) is the listing order with every VM by pre-copy, as Nova, KubeVirt, oVirt and Proxmox evacuate;
    it is there to measure the walm policy against.
  - Each VM in plan order goes to the destination with the most free memory left that fits it. A VM that fits on
    none is not placed - it is listed in RV(plan.unplaced) with a plain-sentence reason (its memory, the free
    memory of each destination, the fix) - and the VMs that fit are still placed, so the host is not emptied.
  - O(concurrency) groups the order into waves of up to that many VMs, never two write-heavy or post-copy
    migrations in one wave. C(evacuate_host.yml) runs the waves in order and the migrations of a wave side by side
    (RV(plan.execution) is V(waves)); with one shared link a wave takes about as long as its migrations one after
    another, because parallel migrations only split its bandwidth.
  - "Under O(policy=walm) each VM carries its decision's expectation (RV(plan.order[].expectation)) for
    M(walm.qemu.walm_migrate)'s run-time adaptation (O(adapt)), which checks a pre-copy against it at every pass
    boundary. A pre-copy predicted not to converge then does not run until O(timeout_s): with post-copy allowed
    (O(allow_postcopy)) it is predicted to be switched to post-copy at the boundary where it stops converging
    (RV(plan.order[].predicted_outcome) V(adapt-postcopy)), else cancelled there with the VM left on the source
    (V(adapt-abort)). O(policy=naive) is the baseline without adaptation."
  - With O(results), also summarises the evacuation (RV(summary)) - measured against predicted TMT and downtime,
    where each VM is now, what the run-time adaptation did, whether each downtime kept its limit, and the time
    until the host was empty.
  - Pure computation; touches nothing, runs anywhere (usually on the controller), supports check mode. See
    C(docs/evacuate.md).
author: WALM developers (@walm-project)
requirements:
  - Python 3.8 or later
options:
  source:
    description: Inventory name of the host to empty.
    type: str
    required: true
  vms:
    description:
      - The VMs recorded on the source, C(vms) of M(walm.qemu.walm_vm_info) run there without a name, in its listing
        order (by name). Running ones are planned; stopped ones are skipped; a destination of an incoming
        migration or a copy that already migrated away cannot be moved and is listed in C(not_evacuable).
      - Required unless O(plan) is given.
    type: list
    elements: dict
  probes:
    description:
      - C(vms) of M(walm.qemu.walm_probe) run on the source without a name (every QEMU there). A probed QEMU that
        walm_vm_info does not list was not started by M(walm.qemu.walm_vm) and cannot be moved by WALM; it is
        listed in C(not_evacuable).
    type: list
    elements: dict
    default: []
  probe_failures:
    description: C(failed_vms) of the same walm_probe run; the error becomes the VM's reason.
    type: list
    elements: dict
    default: []
  decisions:
    description:
      - One M(walm.qemu.walm_decide) result per VM (each names its VM in C(vm)), for example the C(results) of a
        loop over the probe's C(vms). A failed decision (C(failed) true) or a VM without one is planned last, by
        pre-copy.
    type: list
    elements: dict
    default: []
  decide:
    description:
      - Decide here instead of passing O(decisions) - M(walm.qemu.walm_decide)'s options other than C(probe), applied
        to every probed VM that O(vms) lists, as a library call (one step for the whole host, not one task per VM).
        Options left out take walm_decide's defaults. Bad options fail the module before any VM is decided; a VM the
        model cannot decide is planned last, by pre-copy, as a failed entry of O(decisions) is.
      - Ignored when O(decisions) is given.
    type: dict
    suboptions:
      link_bandwidth_mib_s:
        description: O(walm.qemu.walm_decide#module:link_bandwidth_mib_s).
        type: float
        required: true
      link_latency_ms:
        description: O(walm.qemu.walm_decide#module:link_latency_ms) (default 0.1).
        type: float
      downtime_limit_ms:
        description: O(walm.qemu.walm_decide#module:downtime_limit_ms) (default 300).
        type: int
      allow_postcopy:
        description: O(walm.qemu.walm_decide#module:allow_postcopy) (default true).
        type: bool
      objective:
        description: O(walm.qemu.walm_decide#module:objective) (default V(urgent)).
        type: str
        choices: [urgent, balanced]
      time_budget_s:
        description: O(walm.qemu.walm_decide#module:time_budget_s).
        type: float
      safety_margin_pct:
        description: O(walm.qemu.walm_decide#module:safety_margin_pct) (default 10).
        type: float
      thresholds:
        description: O(walm.qemu.walm_decide#module:thresholds).
        type: dict
      rules:
        description: O(walm.qemu.walm_decide#module:rules) (needs the C(jmespath) library on the host that runs this module).
        type: list
        elements: dict
      max_passes:
        description: O(walm.qemu.walm_decide#module:max_passes) (default 30).
        type: int
      model:
        description: O(walm.qemu.walm_decide#module:model).
        type: dict
  destinations:
    description:
      - The destination hosts, each a dict with C(name) (inventory host), C(free_mib) (memory available for
        migrated VMs, MiB) and optionally C(capacity_source) (where the figure came from, for the reasons) and
        C(preferred) (true - a VM goes there before any destination not preferred that has room, e.g. a host a
        rolling maintenance has already maintained; among equals the most free memory left wins).
      - Required unless O(plan) is given.
    type: list
    elements: dict
  policy:
    description: V(walm) (shortest predicted TMT first, methods as decided) or V(naive) (listing order, all pre-copy).
    type: str
    choices: [walm, naive]
    default: walm
  concurrency:
    description:
      - Migrations at once on the source's migration link - the plan groups the VMs into waves of up to this many,
        and the role C(walm.qemu.evacuate) runs each wave's migrations side by side. A wave never holds two write-heavy
        or post-copy migrations.
    type: int
    default: 1
  on_timeout:
    description:
      - What walm_migrate will do when pre-copy has not converged after O(timeout_s) (V(abort) - the VM stays on the
        source; V(postcopy) - it switches). Used for the predictions of pre-copies that do not converge.
    type: str
    choices: [abort, postcopy]
    default: abort
  timeout_s:
    description: walm_migrate's O(walm.qemu.walm_migrate#module:timeout_s); a pre-copy that does not converge is predicted to take this long.
    type: float
    default: 600
  adapt:
    description:
      - Whether the migrations run with M(walm.qemu.walm_migrate)'s run-time adaptation
        (O(walm.qemu.walm_migrate#module:adapt)). Applies to O(policy=walm) only; O(policy=naive) never adapts.
        Sets RV(plan.order[].adapt) and the predictions of pre-copies that do not converge.
    type: bool
    default: true
  allow_postcopy:
    description:
      - Whether the migrations may switch a pre-copy to post-copy at run time (walm_migrate's and the destination's
        C(allow_postcopy); C(evacuate_host.yml) gives walm_decide the same value). With V(false) (and O(on_timeout)
        V(abort)) the adaptation can only cancel a pre-copy that does not converge.
    type: bool
    default: true
  adaptation_actions:
    description:
      - walm_migrate's O(walm.qemu.walm_migrate#module:adaptation_actions), when the migrations are given other
        than its default; the first of V(postcopy) (where allowed) and V(abort) decides the prediction of a
        pre-copy that does not converge. V(downtime) and V(throttle) before it may still let it converge (the model
        cannot say); the plan counts auto-converge's passes.
    type: list
    elements: str
  plan:
    description:
      - RV(plan) as this module returned it before the migrations. With O(results), the summary is made of that plan
        (the one the migrations followed) instead of planning again from the same inputs; O(vms), O(probes),
        O(decisions) and O(destinations) are then not needed and not read.
    type: dict
  results:
    description:
      - The per-VM outcomes of the evacuation (C(migrate_result) of the role C(walm.qemu.migrate), each with
        C(vm), C(status), C(total_time_ms), C(downtime_ms), C(error) and C(finished_at)). When given, the module
        also returns RV(summary).
    type: list
    elements: dict
  started_at:
    description:
      - When the evacuation started (seconds since the epoch, the clock of the results' C(finished_at)); gives
        C(time_to_empty_s) in RV(summary.totals).
    type: float
  migrations_started_at:
    description:
      - When the first migration was started (same clock), after discovery, probing and planning; gives
        C(migration_phase_s) in RV(summary.totals).
    type: float
extends_documentation_fragment:
  - walm.qemu.attributes
attributes:
  check_mode:
    support: full
    details:
      Pure computation; check mode gives the same plan and summary and changes nothing.
notes:
  - Check mode is supported and gives the same result; the module never changes anything.
seealso:
  - module: walm.qemu.walm_decide
  - module: walm.qemu.walm_probe
  - module: walm.qemu.walm_vm_info
"""

EXAMPLES = r"""
- name: Plan the evacuation of hv1 to hv2 and hv3
  walm.qemu.walm_plan:
    source: hv1
    vms: "{{ source_info.vms }}"
    probes: "{{ probe.vms }}"
    probe_failures: "{{ probe.failed_vms }}"
    decisions: "{{ decisions.results }}"
    destinations:
      - name: hv2
        free_mib: 65536
        capacity_source: MemAvailable
      - name: hv3
        free_mib: 32768
        capacity_source: walm_capacity_mib
  delegate_to: localhost
  register: evacuation

- name: Show it
  ansible.builtin.debug:
    msg: "{{ evacuation.table }}"

- name: Summarise the outcomes
  walm.qemu.walm_plan:
    source: hv1
    vms: "{{ source_info.vms }}"
    probes: "{{ probe.vms }}"
    decisions: "{{ decisions.results }}"
    destinations: "{{ destinations }}"
    results: "{{ outcomes }}"
    started_at: "{{ started_at }}"
  delegate_to: localhost
  register: summary
"""

RETURN = r"""
plan:
  description: The plan.
  returned: always
  type: dict
  contains:
    source: {description: The host to empty, type: str}
    policy: {description: The policy applied, type: str}
    concurrency: {description: Migrations at once on the link the plan allows, type: int}
    execution:
      description: How evacuate_host.yml runs the plan - V(waves) (RV(plan.waves) in order, the migrations of a
        wave side by side; a wave of one VM is one migration at a time).
      type: str
    waves: {description: "VM names grouped by wave (one VM per wave at concurrency 1)", type: list, elements: list}
    order:
      description: The VMs to move, in order.
      type: list
      elements: dict
      contains:
        position: {description: 1 for the first VM, type: int}
        name: {description: The VM, type: str}
        memory_mib: {description: Guest RAM, type: int}
        nonzero_mib:
          description: Guest RAM that is not all zero bytes, from the probe (null when not measured) - what the
            migration must send at least.
          type: float
        class: {description: "Workload class in a few words (idle, cpu, memory write-intensive, unknown)", type: str}
        workload_class: {description: walm_decide's workload_class, type: dict}
        method: {description: "precopy, postcopy or hybrid", type: str}
        switch_after_passes: {description: "For hybrid, else null", type: int}
        on_timeout: {description: walm_migrate's on_timeout for it, type: str}
        destination: {description: Inventory host it goes to, type: str}
        wave: {description: Its wave, type: int}
        heavy: {description: "Write-heavy or post-copy - never two in one wave", type: bool}
        decided: {description: walm_decide made a decision for it, type: bool}
        meets_goal: {description: walm_decide's meets_goal, type: bool}
        predicted_total_time_ms:
          description:
            - Predicted TMT of its method; null when unknown.
            - "For a pre-copy that does not converge: with V(adapt-postcopy) an upper bound - the model's pre-copy
              passes up to the one where it stops converging (plus auto-converge's passes where the throttle action
              comes first), plus post-copy's own prediction, which moves all of the memory where only what the
              passes left is still to send; with V(adapt-abort) those passes; otherwise timeout_s (plus post-copy
              with on_timeout V(postcopy))."
          type: int
        predicted_downtime_ms: {description: Predicted downtime, type: int}
        predicted_outcome:
          description:
            - "V(completed); V(adapt-postcopy) (a pre-copy that does not converge, switched to post-copy at run
              time); V(adapt-abort) (one cancelled at run time: it stays on the source); V(timeout-abort) (cancelled
              after timeout_s: it stays on the source); V(timeout-postcopy); or V(unknown)."
          type: str
        adapt: {description: "Whether its migration runs with walm_migrate's run-time adaptation (false under the
                naive policy)", type: bool}
        expectation:
          description: walm_decide's RV(walm.qemu.walm_decide#module:expectation) for its method, passed to
            walm_migrate's O(walm.qemu.walm_migrate#module:expect); null without a decision or when the method run
            is not the one decided (naive).
          type: dict
        reasons: {description: "The plan's sentences for this VM (position, destination)", type: list, elements: str}
        decision_reasons: {description: walm_decide's reasons, type: list, elements: str}
    destinations:
      description: "Each destination - name, free_mib, free_mib_left after the plan, capacity_source, vms"
      type: list
      elements: dict
    skipped: {description: "VMs not running (name, reason)", type: list, elements: dict}
    not_evacuable: {description: "VMs WALM cannot move (name, reason); the host is not empty while they run",
                    type: list, elements: dict}
    unplaced:
      description:
        - "Running VMs that fit on no destination, in plan order - name, memory_mib, class, reason (a sentence
          naming its memory, each destination's free memory and the fix), destinations (name, free_mib and
          free_mib_left when it was its turn). They are not in RV(plan.order) and stay on the source; the
          host is not empty while they run."
      type: list
      elements: dict
    predicted_migration_time_s: {description: "Sum of the predicted TMTs - about the time to empty the host on one
                                 link, without destination preparation", type: float}
    predicted_mean_wait_s: {description: "Mean predicted time until a VM is off the host in this order (null if a
                            VM has no prediction)", type: float}
    predicted_stay_on_source: {description: "VMs predicted to stay on the source (pre-copy cancelled at timeout_s
                               or by the run-time adaptation)", type: list, elements: str}
    predicted_adapt_postcopy: {description: VMs whose pre-copy is predicted to be switched to post-copy at run time,
                               type: list, elements: str}
    adapt: {description: Whether the migrations run with the run-time adaptation (O(adapt) and not naive), type: bool}
    allow_postcopy: {description: O(allow_postcopy), type: bool}
    adaptation_actions: {description: "The adaptation's actions in order, as the plan assumed them", type: list,
                         elements: str}
    predicted_unknown: {description: VMs without a prediction, type: list, elements: str}
    predicted_empties_host: {description: Whether the plan is predicted to empty the host, type: bool}
    reasons: {description: "The plan's sentences (order rule, concurrency, destinations, what is left)", type: list,
              elements: str}
table:
  description: The plan, or with O(results) the summary, as lines of text to print.
  returned: always
  type: list
  elements: str
summary:
  description: With O(results) - one row per planned VM and the totals.
  returned: when results are given
  type: dict
  contains:
    rows:
      description: "position, vm, class, method, destination, reasons, predicted_total_time_ms,
        predicted_downtime_ms, predicted_outcome, total_time_ms, downtime_ms (measured), guest_visible_downtime_ms,
        downtime_limit_ms (in effect at the end), downtime_within_limit (the guest-visible downtime, else QEMU's,
        within it; null unless completed), elapsed_ms (how long a migration that did not complete ran), adapt,
        adaptations (walm_migrate's), adaptation (them in a phrase, empty when none), status, vm_is_on, error,
        finished_at"
      type: list
      elements: dict
    totals:
      description: "vms (planned and unplaced), completed, failed, not_evacuable and unplaced (names), host_empty,
        time_to_empty_s (null unless the host is empty), time_until_last_finished_s (from started_at), migration_phase_s (from migrations_started_at),
        measured_migration_time_s (sum of the measured TMTs), predicted_migration_time_s, adapted (VMs whose
        migration the run-time adaptation changed), downtime_over_limit (VMs whose downtime exceeded the limit)"
      type: dict
    table: {description: The same lines as RV(table), type: list, elements: str}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.walm.qemu.plugins.module_utils.decide_defaults import OBJECTIVES
from ansible_collections.walm.qemu.plugins.module_utils.decide_rules import HAS_JMESPATH
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.evacuation_plan import POLICIES, plan
from ansible_collections.walm.qemu.plugins.module_utils.evacuation_summary import plan_table, summarize
from ansible_collections.walm.qemu.plugins.module_utils.methods import ON_TIMEOUT


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type="str", required=True),
            vms=dict(type="list", elements="dict"),
            probes=dict(type="list", elements="dict", default=[]),
            probe_failures=dict(type="list", elements="dict", default=[]),
            decisions=dict(type="list", elements="dict", default=[]),
            decide=dict(type="dict", options=dict(
                link_bandwidth_mib_s=dict(type="float", required=True),
                link_latency_ms=dict(type="float"),
                downtime_limit_ms=dict(type="int"),
                allow_postcopy=dict(type="bool"),
                objective=dict(type="str", choices=list(OBJECTIVES)),
                time_budget_s=dict(type="float"),
                safety_margin_pct=dict(type="float"),
                thresholds=dict(type="dict"),
                rules=dict(type="list", elements="dict"),
                max_passes=dict(type="int", no_log=False),
                model=dict(type="dict"),
            )),
            destinations=dict(type="list", elements="dict"),
            policy=dict(type="str", default="walm", choices=list(POLICIES)),
            concurrency=dict(type="int", default=1),
            on_timeout=dict(type="str", default="abort", choices=list(ON_TIMEOUT)),
            timeout_s=dict(type="float", default=600),
            adapt=dict(type="bool", default=True),
            allow_postcopy=dict(type="bool", default=True),
            adaptation_actions=dict(type="list", elements="str"),
            plan=dict(type="dict"),
            results=dict(type="list", elements="dict"),
            started_at=dict(type="float"),
            migrations_started_at=dict(type="float"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["decide"] is not None and p["decide"].get("rules") and not p["decisions"] and not HAS_JMESPATH:
        module.fail_json(msg=missing_required_lib("jmespath (for decide.rules)"))
    if p["plan"] is None and (p["vms"] is None or p["destinations"] is None):
        module.fail_json(msg="walm_plan needs vms and destinations to plan an evacuation (or plan, the plan it "
                             "returned before, to summarise one)")
    try:
        result = {"plan": p["plan"] if p["plan"] is not None else plan(p)}
        if p["results"] is not None:
            result["summary"] = summarize(result["plan"], p["results"], p["started_at"],
                                          p["migrations_started_at"])
            result["table"] = result["summary"]["table"]
        else:
            result["table"] = plan_table(result["plan"])
    except WalmError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
