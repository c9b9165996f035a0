"""How an evacuation went: the plan's table and the summary of its outcomes against the plan (module_utils/
evacuation_summary.py), on plans made from hand-made decisions."""

import json

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.evacuation_plan import plan
from ansible_collections.walm.qemu.plugins.module_utils.evacuation_summary import plan_table, summarize
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_evacuation_plan import decision, info, params, stubborn


def test_check_mode_table_and_summary_name_the_vm_without_room():
    vms = [info("small"), info("big", memory_mib=4096)]
    p = plan(params(vms=vms, decisions=[decision("small", "precopy", 900), decision("big", "precopy", 1000)],
                    destinations=[{"name": "walm-dst", "free_mib": 2048}]))
    table = plan_table(p)
    assert [x.split()[1] for x in table[3:4]] == ["small"]
    assert any(x.startswith("No room for big: it needs 4096 MiB") for x in table)
    s = summarize(p, [result("small", finished_at=104.0)], started_at=100.0)
    t = s["totals"]
    assert t["unplaced"] == ["big"] and t["completed"] == ["small"] and t["failed"] == []
    assert t["host_empty"] is False and t["time_to_empty_s"] is None and t["vms"] == 2
    assert s["table"][0].startswith("Evacuation of walm-src (policy walm): 1 of 2 VMs moved, host NOT empty")
    assert s["table"][-1] == "big: not moved, " + p["unplaced"][0]["reason"] + "."
    # Nothing placed, nothing run: the head still says the host is not empty.
    none = plan(params(vms=[info("big", memory_mib=4096)], decisions=[],
                       destinations=[{"name": "walm-dst", "free_mib": 2048}]))
    assert summarize(none, [])["table"][0].startswith("Evacuation of walm-src (policy walm): 0 of 1 VMs moved, "
                                                      "host NOT empty;")


def test_plan_table_lists_every_vm_with_its_why():
    lines = plan_table(plan(params()))
    assert lines[0] == "Evacuation plan for walm-src (policy walm, concurrency 1, run waves):"
    assert lines[1].split() == ["#", "VM", "class", "method", "destination", "pred", "TMT", "pred", "DT", "ms",
                                "wave", "why"]
    assert lines[3].split()[:6] == ["1", "ev-idle", "idle", "precopy", "walm-dst", "1.00"]
    assert "Objective urgent: postcopy is the fastest" in lines[5]
    naive = plan_table(plan(params(policy="naive")))
    assert "Pre-copy is predicted not to converge" in [x for x in naive if "ev-heavy" in x][0]


def result(vm, status="completed", tmt=1000, dt=200, finished_at=110.0, **extra):
    r = {"vm": vm, "status": status, "total_time_ms": tmt, "downtime_ms": dt, "error": None,
         "finished_at": finished_at}
    r.update(extra)
    return r


def test_summary_of_an_emptied_host():
    p = plan(params())
    s = summarize(p, [result("ev-idle", tmt=990, finished_at=103.0), result("ev-cpu", tmt=1010, finished_at=106.0),
                      result("ev-heavy", tmt=3086, dt=2, finished_at=112.5, ran_postcopy=True)], started_at=100.0)
    t = s["totals"]
    assert t["host_empty"] is True and t["completed"] == ["ev-idle", "ev-cpu", "ev-heavy"] and t["failed"] == []
    assert t["time_to_empty_s"] == 12.5 and t["measured_migration_time_s"] == pytest.approx(5.086)
    assert s["table"][0].startswith("Evacuation of walm-src (policy walm): 3 of 3 VMs moved, host empty after 12.5 s")
    row = s["rows"][2]
    assert (row["vm"], row["method"], row["total_time_ms"], row["predicted_total_time_ms"], row["vm_is_on"]) == \
        ("ev-heavy", "postcopy", 3086, 3100, "destination")
    json.dumps(s)  # goes to the results file as is


def test_the_summary_takes_back_the_plan_as_it_came_through_json():
    """evacuate_host.yml hands walm_plan the plan it returned before (through Ansible, i.e. JSON) instead of planning
    again: the summary is the same as from the plan itself."""
    for policy in ("walm", "naive"):
        p = plan(params(policy=policy))
        results = [result("ev-idle", finished_at=103.0), result("ev-heavy", status="timeout", tmt=None, dt=None,
                                                                wall_time_ms=60100, finished_at=170.0)]
        assert summarize(json.loads(json.dumps(p)), results, started_at=100.0) == summarize(p, results,
                                                                                            started_at=100.0)


def test_summary_names_the_vm_that_stayed():
    p = plan(params(policy="naive"))
    s = summarize(p, [result("ev-cpu"), result("ev-heavy", status="timeout", tmt=None, dt=None, wall_time_ms=60100,
                                               error="pre-copy did not converge; cancelled",
                                               source_status_after="running"),
                      result("ev-idle")], started_at=100.0)
    t = s["totals"]
    assert t["host_empty"] is False and t["failed"] == ["ev-heavy"] and t["time_to_empty_s"] is None
    assert t["time_until_last_finished_s"] == 10.0
    assert "host NOT empty" in s["table"][0]
    assert "ev-heavy: pre-copy did not converge; cancelled; the VM is on source (running)." in s["table"]
    # A cancelled pre-copy has no TMT; how long it held the link is shown in parentheses and counted.
    assert "(60.1 s)" in [x for x in s["table"] if x.startswith("2  ev-heavy")][0]
    assert t["measured_migration_time_s"] == pytest.approx(62.1)


def test_summary_of_a_postcopy_left_for_recovery_and_a_vm_not_run():
    p = plan(params())
    s = summarize(p, [result("ev-idle"), result("ev-heavy", status="postcopy-paused", rolled_back=False,
                                                error="link down")])
    rows = dict((r["vm"], r) for r in s["rows"])
    assert rows["ev-heavy"]["vm_is_on"].startswith("split between source and destination")
    assert rows["ev-cpu"]["status"] == "not run" and rows["ev-cpu"]["vm_is_on"] == "source (not run)"
    assert s["totals"]["time_to_empty_s"] is None and s["totals"]["time_until_last_finished_s"] is None


@pytest.mark.parametrize("results, message", [
    ([{"status": "completed"}], "must be a dict naming its VM"),
    ([result("ghost")], "VM ghost, which is not in the plan"),
])
def test_summary_bad_results(results, message):
    with pytest.raises(WalmError) as exc:
        summarize(plan(params()), results)
    assert message in str(exc.value)


def test_summary_shows_the_adaptations_and_downtimes_over_the_limit():
    p = plan(params(vms=[info("idle"), info("rw")], decisions=[decision("idle", "precopy", 1000), stubborn()]))
    switched = {"t_ms": 2412, "pass": 1, "action": "postcopy",
                "reason": "pass 1 shrank the remainder only to 97 % (250.0 MiB dirtied while 258.0 MiB were sent)"}
    s = summarize(p, [result("idle", dt=350, guest_visible_downtime_ms=372.5, downtime_limit_ms=300,
                             downtime_within_limit=False, adaptations=[]),
                      result("rw", tmt=6100, dt=25, downtime_limit_ms=300, downtime_within_limit=True,
                             adaptations=[switched, dict(switched, action="abort", t_ms=5000)])],
                  started_at=100.0)
    rows = dict((r["vm"], r) for r in s["rows"])
    assert rows["rw"]["adaptation"] == ("adapted: postcopy at 2.41 s (pass 1: pass 1 shrank the remainder only to "
                                        "97 % (250.0 MiB dirtied while 258.0 MiB were sent)), then abort at 5.00 s")
    assert rows["rw"]["predicted_outcome"] == "adapt-postcopy" and rows["idle"]["adaptation"] == ""
    assert s["totals"]["adapted"] == ["rw"] and s["totals"]["downtime_over_limit"] == ["idle"]
    assert "rw: " + rows["rw"]["adaptation"] + "." in s["table"]
    assert "idle: downtime 372 ms (guest-visible) over the 300 ms limit." in s["table"]
    json.dumps(s)
