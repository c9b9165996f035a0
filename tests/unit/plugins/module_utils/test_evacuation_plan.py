"""Host evacuation planning (module_utils/evacuation_plan.py and walm_plan), table-driven.

Decisions are hand-made in walm_decide's shape so each case states exactly what the planner sees; one case runs the
real walm_decide on the lab's workloads to check that the two fit together.
"""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.decide_policy import decide
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.evacuation_plan import plan
from ansible_collections.walm.qemu.plugins.module_utils.evacuation_summary import plan_table

IDLE_CLASS = {"intensity": ["idle"], "dominant": "idle", "access": "read-intensive"}
CPU_CLASS = {"intensity": ["cpu"], "dominant": "cpu", "access": "read-intensive"}
WRITE_CLASS = {"intensity": ["memory", "cpu"], "dominant": "memory", "access": "write-intensive"}


def info(name, running=True, status="running", memory_mib=512, role="source"):
    return {"name": name, "running": running, "status": status if running else None, "role": role,
            "definition": {"name": name, "memory_mib": memory_mib}}


def decision(vm, method, tmt, dt=200, cls=None, precopy_tmt="same", switch=None):
    """A walm_decide result: the chosen method's prediction, and pre-copy's (None = does not converge); cls defaults
    to IDLE_CLASS."""
    cls = IDLE_CLASS if cls is None else cls
    pre = tmt if precopy_tmt == "same" else precopy_tmt
    preds = {"precopy": {"converges": pre is not None, "total_time_ms": pre, "downtime_ms": dt if pre else None,
                         "why_not_converging": None if pre else "dirty_rate_near_link"},
             "postcopy": {"converges": True, "total_time_ms": tmt if method == "postcopy" else 3000,
                          "downtime_ms": 20},
             "hybrid": {"converges": True, "total_time_ms": tmt if method == "hybrid" else 3500, "downtime_ms": 25}}
    return {"vm": vm, "method": method, "switch_after_passes": switch, "meets_goal": True, "workload_class": cls,
            "predictions": preds, "reasons": ["Objective urgent: %s is the fastest (%s ms)." % (method, tmt)]}


DST = [{"name": "walm-dst", "free_mib": 20000, "capacity_source": "MemAvailable"}]

# The acceptance setup: idle, cpu and a heavy writer that pre-copy cannot move.
THREE_VMS = [info("ev-cpu"), info("ev-heavy"), info("ev-idle")]
THREE_DECISIONS = [decision("ev-idle", "precopy", 1000), decision("ev-cpu", "precopy", 1020, cls=CPU_CLASS),
                   decision("ev-heavy", "postcopy", 3100, dt=20, cls=WRITE_CLASS, precopy_tmt=None)]


def params(**over):
    p = {"source": "walm-src", "vms": THREE_VMS, "probes": [], "probe_failures": [], "decisions": THREE_DECISIONS,
         "destinations": DST, "policy": "walm", "concurrency": 1, "on_timeout": "abort", "timeout_s": 60}
    p.update(over)
    return p


def names(p):
    return [c["name"] for c in p["order"]]


@pytest.mark.parametrize("over, order, methods", [
    # walm: shortest predicted TMT first, methods as decided.
    ({}, ["ev-idle", "ev-cpu", "ev-heavy"], ["precopy", "precopy", "postcopy"]),
    # naive: listing order, everything pre-copy.
    ({"policy": "naive"}, ["ev-cpu", "ev-heavy", "ev-idle"], ["precopy", "precopy", "precopy"]),
    # Equal TMT: the smaller VM first, then listing order.
    ({"vms": [info("a", memory_mib=1024), info("b"), info("c")],
      "decisions": [decision("a", "precopy", 900), decision("b", "precopy", 900), decision("c", "precopy", 900)]},
     ["b", "c", "a"], ["precopy"] * 3),
    # A VM without a decision goes last, by pre-copy.
    ({"decisions": THREE_DECISIONS[1:]}, ["ev-cpu", "ev-heavy", "ev-idle"], ["precopy", "postcopy", "precopy"]),
    # A failed decision too.
    ({"decisions": THREE_DECISIONS[1:] + [{"vm": "ev-idle", "failed": True, "msg": "dirty rate unknown"}]},
     ["ev-cpu", "ev-heavy", "ev-idle"], ["precopy", "postcopy", "precopy"]),
    # hybrid keeps its switch point.
    ({"vms": [info("h")], "decisions": [decision("h", "hybrid", 2000, switch=2)]}, ["h"], ["hybrid"]),
])
def test_order_and_methods(over, order, methods):
    p = plan(params(**over))
    assert names(p) == order
    assert [c["method"] for c in p["order"]] == methods
    assert [c["position"] for c in p["order"]] == list(range(1, len(order) + 1))
    assert p["execution"] == "waves"


def test_walm_plan_reasons_and_predictions():
    p = plan(params())
    first = p["order"][0]
    assert first["reasons"][0].startswith("Position 1 of 3: predicted TMT 1.00 s by pre-copy")
    assert first["decision_reasons"] == ["Objective urgent: precopy is the fastest (1000 ms)."]
    assert p["predicted_migration_time_s"] == pytest.approx(5.12)
    # Mean wait: shortest first (1.0, 2.02, 5.12 -> 2.713 s) beats listing order (1.02, 4.12, 5.12 -> 3.42 s).
    assert p["predicted_mean_wait_s"] == pytest.approx(2.713, abs=0.001)
    assert any("sum of the TMTs" in r for r in p["reasons"])
    assert any("Mean time until a VM is off the host: predicted 2.71 s in this order, 3.42 s in listing order"
               in r for r in p["reasons"])
    assert p["predicted_empties_host"] is True and p["predicted_stay_on_source"] == []
    heavy = p["order"][2]
    assert heavy["class"] == "memory+cpu write-intensive" and heavy["heavy"] is True
    assert heavy["predicted_downtime_ms"] == 20 and heavy["predicted_outcome"] == "completed"


@pytest.mark.parametrize("on_timeout, outcome, tmt, empties", [
    ("abort", "timeout-abort", 60000, False),
    ("postcopy", "timeout-postcopy", 63100, True),  # the timeout, then post-copy
])
def test_naive_precopy_that_cannot_converge(on_timeout, outcome, tmt, empties):
    p = plan(params(policy="naive", on_timeout=on_timeout))
    heavy = [c for c in p["order"] if c["name"] == "ev-heavy"][0]
    assert heavy["method"] == "precopy" and heavy["predicted_outcome"] == outcome
    assert heavy["predicted_total_time_ms"] == tmt
    assert p["predicted_empties_host"] is empties
    assert any(r.startswith("Pre-copy is predicted not to converge (dirty_rate_near_link): after timeout_s=60")
               for r in heavy["reasons"])
    if not empties:
        assert p["predicted_stay_on_source"] == ["ev-heavy"]
        assert any("will not be empty" in r for r in p["reasons"])


@pytest.mark.parametrize("concurrency, waves", [
    (1, [["ev-idle"], ["ev-cpu"], ["ev-heavy"]]),
    (2, [["ev-idle", "ev-cpu"], ["ev-heavy"]]),
    (3, [["ev-idle", "ev-cpu", "ev-heavy"]]),
])
def test_waves(concurrency, waves):
    p = plan(params(concurrency=concurrency))
    assert p["waves"] == waves and p["concurrency"] == concurrency
    text = " ".join(p["reasons"])
    if concurrency == 1:
        assert "Concurrency 1: the source has one migration link" in text
    else:
        assert "The migrations of a wave run side by side" in text


def test_never_two_heavy_migrations_in_one_wave():
    vms = [info("w1"), info("w2"), info("i1")]
    decisions = [decision("w1", "postcopy", 3000, cls=WRITE_CLASS), decision("w2", "postcopy", 3100, cls=WRITE_CLASS),
                 decision("i1", "precopy", 1000)]
    p = plan(params(vms=vms, decisions=decisions, concurrency=4))
    assert p["waves"] == [["i1", "w1"], ["w2"]]


@pytest.mark.parametrize("dests, memory, expect", [
    # One destination takes them all.
    ([{"name": "d1", "free_mib": 2000}], [512, 512, 512], ["d1", "d1", "d1"]),
    # Spread by free memory left: the roomier host first, then whichever has more left.
    ([{"name": "d1", "free_mib": 1000}, {"name": "d2", "free_mib": 1500}], [512, 512, 512], ["d2", "d1", "d2"]),
    # Ties go to the first listed destination.
    ([{"name": "d1", "free_mib": 1024}, {"name": "d2", "free_mib": 1024}], [512, 512, 512], ["d1", "d2", "d1"]),
    # The big VM first takes most of d2; the small ones follow the memory left.
    ([{"name": "d1", "free_mib": 600}, {"name": "d2", "free_mib": 4096}], [3000, 512, 512], ["d2", "d2", "d1"]),
    # A preferred destination (already maintained) takes the VMs while it has room, however roomier the other.
    ([{"name": "d1", "free_mib": 8192}, {"name": "d2", "free_mib": 1100, "preferred": True}], [512, 512, 512],
     ["d2", "d2", "d1"]),
    # Among preferred destinations, the most free memory left.
    ([{"name": "d1", "free_mib": 600, "preferred": True}, {"name": "d2", "free_mib": 1100, "preferred": True},
      {"name": "d3", "free_mib": 8192}], [512, 512, 512], ["d2", "d1", "d2"]),
])
def test_destinations_by_free_capacity(dests, memory, expect):
    vms = [info("v%d" % i, memory_mib=m) for i, m in enumerate(memory)]
    decisions = [decision("v%d" % i, "precopy", 1000 + i) for i in range(len(memory))]
    p = plan(params(vms=vms, decisions=decisions, destinations=dests))
    assert [c["destination"] for c in p["order"]] == expect
    left = dict((d["name"], d["free_mib_left"]) for d in p["destinations"])
    for d in dests:
        assert left[d["name"]] == d["free_mib"] - sum(m for m, e in zip(memory, expect) if e == d["name"])


ROOM_HINT = ("add a destination to walm_destinations, free memory on one, or set walm_capacity_mib on a destination "
             "whose free memory is under-reported")


@pytest.mark.parametrize("memory, dests, placed, unplaced", [
    # Everything fits: nothing unplaced.
    ([512, 512, 512], [{"name": "d1", "free_mib": 2000}], {"v0": "d1", "v1": "d1", "v2": "d1"}, {}),
    # One VM larger than any destination: it stays, the VMs before and after it go.
    ([512, 4096, 512], [{"name": "d1", "free_mib": 2048, "capacity_source": "MemAvailable"}],
     {"v0": "d1", "v2": "d1"},
     {"v1": "it needs 4096 MiB and no destination has that much free memory: d1 has 2048 MiB free (MemAvailable), "
            "1536 MiB left after v0. It stays on walm-src; " + ROOM_HINT}),
    # Room runs out part-way: the VMs placed before it took the memory it would have had.
    ([512, 512, 512], [{"name": "d1", "free_mib": 1000}], {"v0": "d1"},
     {"v1": "it needs 512 MiB and no destination has that much left after the VMs placed before it in the plan: "
            "d1 has 1000 MiB free (given), 488 MiB left after v0. It stays on walm-src; " + ROOM_HINT,
      "v2": "it needs 512 MiB and no destination has that much left after the VMs placed before it in the plan: "
            "d1 has 1000 MiB free (given), 488 MiB left after v0. It stays on walm-src; " + ROOM_HINT}),
    # A big VM early in the plan does not fit; the smaller ones after it still do.
    ([3000, 512, 512], [{"name": "d1", "free_mib": 1024}, {"name": "d2", "free_mib": 600}],
     {"v1": "d1", "v2": "d2"},
     {"v0": "it needs 3000 MiB and no destination has that much free memory: d1 has 1024 MiB free (given); d2 has "
            "600 MiB free (given). It stays on walm-src; " + ROOM_HINT}),
    # Nothing fits anywhere: every VM is named, none is placed.
    ([4096, 4096], [{"name": "d1", "free_mib": 1024}, {"name": "d2", "free_mib": 2048}], {},
     {"v0": "it needs 4096 MiB and no destination has that much free memory: d1 has 1024 MiB free (given); d2 has "
            "2048 MiB free (given). It stays on walm-src; " + ROOM_HINT,
      "v1": "it needs 4096 MiB and no destination has that much free memory: d1 has 1024 MiB free (given); d2 has "
            "2048 MiB free (given). It stays on walm-src; " + ROOM_HINT}),
])
def test_vms_that_fit_are_placed_and_the_others_named_with_why(memory, dests, placed, unplaced):
    vms = [info("v%d" % i, memory_mib=m) for i, m in enumerate(memory)]
    decisions = [decision("v%d" % i, "precopy", 1000 + i) for i in range(len(memory))]
    p = plan(params(vms=vms, decisions=decisions, destinations=dests))
    assert dict((c["name"], c["destination"]) for c in p["order"]) == placed
    assert dict((u["name"], u["reason"]) for u in p["unplaced"]) == unplaced
    assert [c["position"] for c in p["order"]] == list(range(1, len(placed) + 1))
    assert sum(p["waves"], []) == [c["name"] for c in p["order"]]
    assert p["predicted_empties_host"] is not unplaced
    for u in p["unplaced"]:
        assert u["memory_mib"] == memory[int(u["name"][1:])]
        assert [d["name"] for d in u["destinations"]] == [d["name"] for d in dests]
        assert any(r.startswith("No room for %s: %s. The VMs that fit still go" % (u["name"], u["reason"]))
                   for r in p["reasons"])
    if not placed:
        assert "No VM runs on the source: nothing to do." not in p["reasons"]


def test_probe_memory_wins_over_the_recorded_definition():
    probes = [{"vm": {"name": "ev-idle", "memory_mib": 2048, "pid": 1}, "workload": {}}]
    p = plan(params(probes=probes, destinations=[{"name": "d", "free_mib": 4000}]))
    assert [c["memory_mib"] for c in p["order"]] == [2048, 512, 512]


@pytest.mark.parametrize("over, message", [
    ({"destinations": []}, "set walm_destinations"),
    ({"destinations": [{"name": "walm-src", "free_mib": 1}]}, "is the source host itself"),
    ({"destinations": [{"name": "d", "free_mib": 9000}, {"name": "d", "free_mib": 9000}]}, "listed twice"),
    ({"destinations": [{"name": "d"}]}, "set walm_capacity_mib"),
    ({"destinations": [{"name": "d", "free_mib": -1}]}, "at least 0"),
    ({"concurrency": 0}, "concurrency (walm_concurrency) must be at least 1"),
    ({"policy": "fast"}, "walm_evacuate_policy"),
    ({"on_timeout": "retry"}, "walm_on_timeout"),
    ({"source": ""}, "walm_source"),
    ({"vms": None}, "walm_vm_info"),
    ({"vms": [{"running": True}]}, "vms[0] has no VM name"),
    ({"decisions": [decision("ghost", "precopy", 1)]}, "VM ghost, which walm_vm_info does not list"),
    ({"decisions": [dict(decision("ev-idle", "precopy", 1), method="teleport")]}, "method 'teleport'"),
    ({"vms": [{"name": "x", "running": True}], "decisions": []}, "VM x: its memory size is unknown"),
])
def test_bad_input_names_the_fix(over, message):
    with pytest.raises(WalmError) as exc:
        plan(params(**over))
    assert message in str(exc.value)


def test_skipped_and_not_evacuable():
    vms = THREE_VMS + [info("stopped", running=False), info("waiting", status="inmigrate", role="incoming"),
                       info("left", status="postmigrate")]
    probes = [{"vm": {"name": "foreign", "pid": 4242, "memory_mib": 256, "managed": False}, "workload": {}}]
    p = plan(params(vms=vms, probes=probes))
    assert names(p) == ["ev-idle", "ev-cpu", "ev-heavy"]
    assert p["skipped"] == [{"name": "stopped", "reason": "recorded on walm-src but not running: nothing to migrate"}]
    assert [v["name"] for v in p["not_evacuable"]] == ["waiting", "left", "foreign"]
    assert "not started by walm.qemu.walm_vm" in p["not_evacuable"][2]["reason"]
    assert p["predicted_empties_host"] is False


def test_a_vm_that_arrived_by_migration_can_leave_again():
    p = plan(params(vms=[info("ev-idle", role="incoming")], decisions=[decision("ev-idle", "precopy", 1000)]))
    assert names(p) == ["ev-idle"] and p["not_evacuable"] == []


def test_probe_failure_becomes_the_reason():
    p = plan(params(decisions=THREE_DECISIONS[1:],
                    probe_failures=[{"name": "ev-idle", "error": "VM 'ev-idle' is migrating"}]))
    idle = p["order"][-1]
    assert idle["name"] == "ev-idle" and not idle["decided"]
    assert "No prediction (VM 'ev-idle' is migrating)" in idle["reasons"][1]
    assert p["predicted_unknown"] == ["ev-idle"] and p["predicted_mean_wait_s"] is None


def test_nothing_to_do():
    p = plan(params(vms=[], decisions=[]))
    assert p["order"] == [] and p["predicted_empties_host"] is True
    assert "No VM runs on the source: nothing to do." in p["reasons"]


def _probe(name, dirty, cpu, rss, wws):
    return {"vm": {"name": name, "memory_mib": 512, "vcpus": 1},
            "workload": {"dirty_rate_mib_s": dirty, "cpu_percent": cpu, "net_rx_mib_s": 0.0, "net_tx_mib_s": 0.0,
                         "rss_mib": rss, "wws_mib": wws}}


def test_with_real_decisions_the_heavy_writer_goes_last_by_postcopy():
    probes = [_probe("ev-cpu", 0.5, 100, 100, 16), _probe("ev-heavy", 160, 100, 276, 256),
              _probe("ev-idle", 0.2, 2, 86, 8)]
    decisions = [decide({"probe": pr, "link_bandwidth_mib_s": 114.0}) for pr in probes]
    p = plan(params(probes=probes, decisions=decisions))
    assert p["order"][-1]["name"] == "ev-heavy" and p["order"][-1]["method"] in ("postcopy", "hybrid")
    assert all(c["method"] == "precopy" for c in p["order"][:2])
    naive = plan(params(probes=probes, decisions=decisions, policy="naive"))
    assert names(naive) == ["ev-cpu", "ev-heavy", "ev-idle"]
    assert naive["predicted_stay_on_source"] == ["ev-heavy"]


def test_decided_inside_the_plan_as_by_one_walm_decide_per_vm():
    """walm_plan's decide option: the same plan as from one walm_decide result per VM, in one step."""
    probes = [_probe("ev-cpu", 0.5, 100, 100, 16), _probe("ev-heavy", 160, 100, 276, 256),
              _probe("ev-idle", 0.2, 2, 86, 8),
              _probe("not-walms", 0.1, 1, 50, 4)]  # a QEMU walm_vm_info does not list: not decided
    opts = {"link_bandwidth_mib_s": 114.0, "objective": "balanced", "allow_postcopy": True}
    by_task = [decide(dict(opts, probe=pr)) for pr in probes[:3]]
    inside = plan(params(probes=probes, decisions=[], decide=opts))
    assert inside == plan(params(probes=probes, decisions=by_task))
    assert [c["decided"] for c in inside["order"]] == [True, True, True]


@pytest.mark.parametrize("opts, message", [
    ({"link_bandwidth_mib_s": 114.0, "objective": "fastest"}, "unknown objective 'fastest'"),
    ({"objective": "urgent"}, "link_bandwidth_mib_s is required"),
    ({"link_bandwidth_mib_s": 114.0, "thresholds": {"cpu": 1}}, "cpu"),
    ({"link_bandwidth_mib_s": 114.0, "probe": {}}, "must not hold a probe"),
])
def test_bad_decide_options_fail_the_plan_before_any_vm(opts, message):
    probes = [_probe("ev-idle", 0.2, 2, 86, 8)]
    with pytest.raises(WalmError, match=message):
        plan(params(probes=probes, decisions=[], decide=opts))


def test_a_vm_the_model_cannot_decide_goes_last_by_precopy_and_the_others_are_decided():
    broken = _probe("ev-cpu", 0.5, 100, 100, 16)
    del broken["vm"]["memory_mib"]  # walm_decide needs it
    probes = [broken, _probe("ev-heavy", 160, 100, 276, 256), _probe("ev-idle", 0.2, 2, 86, 8)]
    p = plan(params(probes=probes, decisions=[], decide={"link_bandwidth_mib_s": 114.0}))
    assert names(p)[-1] == "ev-cpu" and p["order"][-1]["method"] == "precopy"
    assert any("walm_decide failed for it" in r and "memory_mib" in r for r in p["order"][-1]["reasons"])
    assert [c["decided"] for c in p["order"]][:2] == [True, True]


# -- run-time adaptation ----------------------------------------------------------------------------------------

def stubborn(vm="rw", rounds_ms=(2500, 1500)):
    """An operator rule forced pre-copy on a writer it cannot move: the model gave up after these passes."""
    d = decision(vm, "precopy", None, cls=WRITE_CLASS)
    d["predictions"]["precopy"]["rounds"] = [{"pass": i + 1, "time_ms": t, "sent_mib": 100.0, "dirtied_mib": 95.0}
                                             for i, t in enumerate(rounds_ms)]
    d["expectation"] = {"method": "precopy", "converges": False, "total_time_ms": None, "downtime_ms": None,
                        "passes": None, "dirty_rate_mib_s": 160.0, "working_set_mib": 256.0,
                        "link_bandwidth_mib_s": 114.0, "objective": "urgent", "budget_ms": None}
    return d


@pytest.mark.parametrize("over, outcome, tmt, dt, stays", [
    # Post-copy allowed: switched at the boundary where pre-copy stops converging (after the model's 2 passes,
    # 4 s), then at most a whole post-copy (3 s).
    ({}, "adapt-postcopy", 7000, 20, False),
    # Auto-converge first: its 3 passes (as long as the last one) are counted before the switch.
    ({"adaptation_actions": ["throttle", "postcopy", "abort"]}, "adapt-postcopy", 11500, 20, False),
    # A higher downtime limit first: may still let it converge, not counted.
    ({"adaptation_actions": ["downtime", "postcopy"]}, "adapt-postcopy", 7000, 20, False),
    # Post-copy not allowed: auto-converge is given its 3 passes, then it is cancelled (long before timeout_s) and
    # stays on the source.
    ({"allow_postcopy": False}, "adapt-abort", 8500, None, True),
    ({"allow_postcopy": False, "adaptation_actions": ["abort"]}, "adapt-abort", 4000, None, True),
    # ... unless the timeout action is post-copy: postcopy-ram is negotiated for it anyway.
    ({"allow_postcopy": False, "on_timeout": "postcopy"}, "adapt-postcopy", 7000, 20, False),
    # Neither post-copy nor abort among the actions: timeout_s ends it, as without adaptation.
    ({"adaptation_actions": ["downtime", "throttle"]}, "timeout-abort", 60000, None, True),
    # Adaptation off: timeout_s ends it.
    ({"adapt": False}, "timeout-abort", 60000, None, True),
    ({"adapt": False, "on_timeout": "postcopy"}, "timeout-postcopy", 63000, 20, False),
    # Passes longer than timeout_s: the timeout comes first.
    ({"timeout_s": 3}, "timeout-abort", 3000, None, True),
])
def test_a_precopy_that_does_not_converge_under_adaptation(over, outcome, tmt, dt, stays):
    p = plan(params(vms=[info("idle"), info("rw")], decisions=[decision("idle", "precopy", 1000), stubborn()],
                    **over))
    rw = [c for c in p["order"] if c["name"] == "rw"][0]
    assert (rw["method"], rw["predicted_outcome"], rw["predicted_total_time_ms"], rw["predicted_downtime_ms"]) == \
        ("precopy", outcome, tmt, dt)
    assert rw["adapt"] is over.get("adapt", True) and rw["heavy"] is True
    assert rw["expectation"]["method"] == "precopy"
    assert (p["predicted_stay_on_source"] == ["rw"]) is stays and p["predicted_empties_host"] is not stays
    assert p["predicted_adapt_postcopy"] == (["rw"] if outcome == "adapt-postcopy" else [])
    why = [r for r in rw["reasons"] if r.startswith("Pre-copy is predicted not to converge (dirty_rate_near_link)")]
    assert len(why) == 1
    if outcome == "adapt-postcopy":
        assert "switches it to post-copy" in why[0] and "predicted after pass 2 (4.00 s into the migration)" in why[0]
        assert "at most %s" % ("%.2f s" % (tmt / 1000.0) if tmt < 10000 else "%.1f s" % (tmt / 1000.0)) in why[0]
        assert any("switched to post-copy counted as its passes plus a whole post-copy" in r for r in p["reasons"])
    elif outcome == "adapt-abort":
        assert "cancels it" in why[0] and "stays on the source" in why[0]
        assert ("First a higher downtime limit (up to walm_max_downtime_limit_ms, where set) and auto-converge for 3 "
                "passes (counted: 4.50 s) are tried; they may still let it converge." in why[0]) is (tmt == 8500)
    # The table's why is what happens to it, not the rule that chose pre-copy.
    assert why[0] in [x for x in plan_table(p) if " rw " in x][0]


def test_expectation_and_adapt_follow_the_policy():
    decisions = [dict(decision("ev-idle", "precopy", 1000), expectation={"method": "precopy", "converges": True}),
                 decision("ev-cpu", "precopy", 1020, cls=CPU_CLASS),
                 dict(THREE_DECISIONS[2], expectation={"method": "postcopy", "converges": True})]
    walm = dict((c["name"], c) for c in plan(params(decisions=decisions))["order"])
    assert walm["ev-idle"]["expectation"] == {"method": "precopy", "converges": True}
    assert walm["ev-cpu"]["expectation"] is None  # the decision carried none
    assert walm["ev-heavy"]["expectation"]["method"] == "postcopy"
    assert all(c["adapt"] for c in walm.values())
    p = plan(params(decisions=decisions, policy="naive"))
    naive = dict((c["name"], c) for c in p["order"])
    # The baseline: no run-time check, and no expectation of a method it does not run.
    assert not any(c["adapt"] for c in naive.values()) and p["adapt"] is False
    assert naive["ev-idle"]["expectation"]["method"] == "precopy" and naive["ev-heavy"]["expectation"] is None
    assert any(r.startswith("No run-time adaptation (naive is the baseline)") for r in p["reasons"])
    off = plan(params(decisions=decisions, adapt=False))
    assert not any(c["adapt"] for c in off["order"]) and any("walm_adapt false" in r for r in off["reasons"])


@pytest.mark.parametrize("over, message", [
    ({"adaptation_actions": ["postcopy", "teleport"]}, "adaptation_actions must list each of"),
    ({"adapt": "yes"}, "adapt (walm_adapt) must be true or false"),
    ({"allow_postcopy": 1}, "allow_postcopy (walm_allow_postcopy) must be true or false"),
])
def test_bad_adaptation_input_names_the_variable(over, message):
    with pytest.raises(WalmError) as exc:
        plan(params(**over))
    assert message in str(exc.value)
