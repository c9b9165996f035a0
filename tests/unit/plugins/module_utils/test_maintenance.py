"""module_utils/maintenance.py: a rolling maintenance run's plan, resume point, record and summary (pure)."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import maintenance
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError


def vm(name, memory_mib=256, status="running", running=True):
    return {"name": name, "running": running, "status": status, "definition": {"memory_mib": memory_mib}}


HOSTS = ["hv1", "hv2", "hv3"]


def moves(plan):
    return dict((s["host"], [(m["vm"], m["destination"]) for m in s["vms"]]) for s in plan["steps"])


# (what, reads, free MiB, done, expected moves per host, planned migrations, least possible)
PLANS = [
    ("each host's VMs go where they need not move again: hv1's wherever there is most room (both are maintained "
     "later), hv2's and hv3's to the hosts maintained before them",
     {"hv1": [vm("a")], "hv2": [vm("b")], "hv3": [vm("c")]}, {"hv1": 4096, "hv2": 4096, "hv3": 8192}, [],
     {"hv1": [("a", "hv3")], "hv2": [("b", "hv1")], "hv3": [("c", "hv2"), ("a", "hv1")]}, 4, 4),
    ("a maintained host without room: the VM goes to one maintained later and moves again",
     {"hv1": [vm("a", 1024)], "hv2": [vm("b", 1024)], "hv3": []}, {"hv1": 512, "hv2": 4096, "hv3": 4096}, [],
     {"hv1": [("a", "hv2")], "hv2": [("b", "hv1"), ("a", "hv3")], "hv3": [("a", "hv2")]}, 4, 3),
    ("resumed: hv1 done before; hv2's VMs prefer it over hv3",
     {"hv1": [vm("a")], "hv2": [vm("b"), vm("c")], "hv3": []}, {"hv1": 2048, "hv2": 2048, "hv3": 8192}, ["hv1"],
     {"hv2": [("b", "hv1"), ("c", "hv1")], "hv3": []}, 2, 2),
    ("a VM seen on two hosts (an interrupted migration) counts where it runs as a guest; an incoming copy alone "
     "is no guest",
     {"hv1": [vm("a", status="postmigrate")], "hv2": [vm("a")], "hv3": [vm("x", status="inmigrate")]},
     {"hv1": 4096, "hv2": 4096, "hv3": 4096}, ["hv1"],
     {"hv2": [("a", "hv1")], "hv3": []}, 1, 1),
    ("stopped VMs do not move", {"hv1": [vm("a", running=False)], "hv2": [], "hv3": []},
     {"hv1": 4096, "hv2": 4096, "hv3": 4096}, [], {"hv1": [], "hv2": [], "hv3": []}, 0, 0),
]


@pytest.mark.parametrize("what,reads,free,done,expected,planned,least", PLANS, ids=[p[0][:40] for p in PLANS])
def test_plan(what, reads, free, done, expected, planned, least):
    plan = maintenance.plan_run(HOSTS, reads, free, 100.0, done=done, overhead_per_vm_s=5, maintenance_s=10)
    assert moves(plan) == expected, what
    assert (plan["migrations"], plan["minimum_migrations"]) == (planned, least), what


def test_predicted_time():
    plan = maintenance.plan_run(["hv1", "hv2"], {"hv1": [vm("a", 500), vm("b", 300)], "hv2": []},
                                {"hv1": 4096, "hv2": 4096}, 100.0, overhead_per_vm_s=5, maintenance_s=10)
    # hv1: 800 MiB over 100 MiB/s + 2 x 5 s overhead + 10 s maintenance; hv2: both back, 8 s + 10 s + 10 s.
    assert [s["predicted_total_s"] for s in plan["steps"]] == [28.0, 28.0]
    assert plan["predicted_s"] == 56.0
    # Both VMs start on hv1, whose only other host is maintained after it: each moves twice.
    assert "Migrations planned: 4 (least possible: 4)" in plan_text(plan)


def plan_text(plan):
    return "\n".join(maintenance.plan_table(plan))


@pytest.mark.parametrize("reads,free,order,message", [
    ({"hv1": [vm("a", 8192)], "hv2": []}, {"hv1": 4096, "hv2": 4096}, ["hv1", "hv2"],
     "VM a (8192 MiB) on hv1 fits on no other host at hv1's turn (free: hv2 4096 MiB)"),
    ({"hv1": []}, {"hv1": 4096}, ["hv1"], "at least two hosts"),
    ({"hv1": [], "hv2": []}, {"hv1": 4096}, ["hv1", "hv2"], "No reading of hv2"),
    ({"hv1": [{"name": "foreign", "running": True, "status": "running"}], "hv2": []}, {"hv1": 1, "hv2": 1},
     ["hv1", "hv2"], "VM foreign has no recorded memory size"),
])
def test_plan_refuses(reads, free, order, message):
    with pytest.raises(WalmError) as err:
        maintenance.plan_run(order, reads, free, 100.0)
    assert message in str(err.value)


# (record, group, expected done, expected interrupted)
RESUMES = [
    (None, "g", [], {}),
    ({"state": "finished", "group": "g", "hosts": {"hv1": {"status": "done"}}}, "g", [], {}),
    ({"state": "running", "group": "other", "hosts": {"hv1": {"status": "done"}}}, "g", [], {}),
    ({"state": "running", "group": "g", "hosts": {"hv1": {"status": "done"}, "hv2": {"status": "draining"},
                                                  "hv3": {"status": "pending"}}}, "g", ["hv1"], {"hv2": "draining"}),
]


@pytest.mark.parametrize("record,group,done,interrupted", RESUMES)
def test_resume_point(record, group, done, interrupted):
    assert maintenance.resume_point(record, group) == (done, interrupted)


def test_record_and_summary():
    plan = maintenance.plan_run(["hv1", "hv2"], {"hv1": [vm("a")], "hv2": []}, {"hv1": 4096, "hv2": 4096}, 100.0,
                                overhead_per_vm_s=5, maintenance_s=10)
    record = {"group": "g", "state": "running", "started_at": 1000.0, "plan": plan, "hosts": {}}
    for status, t in (("draining", 1000.0), ("maintaining", 1012.5), ("checking", 1030.0), ("done", 1031.0)):
        record = maintenance.record_step(record, "hv1", status, t, vms_moved=1, host_empty_s=12.0)
    assert record["hosts"]["hv1"]["evacuation_s"] == 12.5
    assert record["hosts"]["hv1"]["maintenance_s"] == 17.5
    assert record["hosts"]["hv1"]["total_s"] == 31.0
    record["finished_at"] = 1060.0
    s = maintenance.summary(record)
    assert [r["status"] for r in s["rows"]] == ["done", "pending"]
    assert (s["migrations"], s["planned_migrations"], s["measured_s"]) == (1, 2, 60.0)
    assert "Migrations: 1 (planned 2, least possible 2); run time 60.0 s" in "\n".join(
        maintenance.summary_table(record))
    with pytest.raises(WalmError):
        maintenance.record_step(record, "hv1", "rebooting", 1.0)


def test_resumed_plan_keeps_the_hosts_done():
    first = maintenance.plan_run(HOSTS, {"hv1": [vm("a")], "hv2": [vm("b")], "hv3": []},
                                 dict((h, 4096) for h in HOSTS), 100.0)
    again = maintenance.plan_run(HOSTS, {"hv1": [], "hv2": [vm("b")], "hv3": [vm("a")]},
                                 dict((h, 4096) for h in HOSTS), 100.0, done=["hv1"])
    merged = maintenance.resumed_plan(first, again)
    assert [s["host"] for s in merged["steps"]] == HOSTS
    assert merged["minimum_migrations"] == first["minimum_migrations"]
    assert merged["migrations"] == 1 + again["migrations"]
