"""The run-time check of a pre-copy (module_utils/adaptation.py): table tests on synthetic query-migrate snapshots,
and the migration engine carrying out an abort against a scripted monitor (an error path real QEMU cannot be
made to take on demand)."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import adaptation, migration
from ansible_collections.walm.qemu.plugins.module_utils.adaptation import Monitor
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError

MIB = 1024 * 1024


def snap(t_ms, sync, sent_mib, remaining_mib, status="active", dirty_pages_rate=0):
    return {"t_ms": t_ms, "status": status, "pass": sync, "transferred_bytes": int(sent_mib * MIB),
            "remaining_bytes": int(remaining_mib * MIB), "dirty_pages_rate": dirty_pages_rate, "page_size": 4096}


def run(monitor, snaps):
    """Feed snapshots; returns [(index, action)] for every action returned."""
    out = []
    for i, s in enumerate(snaps):
        for a in monitor.observe(s):
            out.append((i, a["action"]))
    return out


# Pass 1 of a 512 MiB guest at ~114 MiB/s: (t_ms, dirty-sync-count, MiB sent so far, MiB remaining).
IDLE = [snap(100, 1, 10, 500), snap(800, 1, 80, 20), snap(900, 2, 86, 1)]
# A writer of ~100 MiB/s over 256 MiB: each pass dirties most of what it sends.
HEAVY = [snap(100, 1, 10, 500), snap(2400, 2, 280, 240), snap(4500, 3, 520, 235), snap(6600, 4, 760, 236),
         snap(8700, 5, 1000, 236)]
# A writer of ~35 MiB/s: every pass sends a third of the last.
MEDIUM = [snap(100, 1, 10, 500), snap(2400, 2, 280, 85), snap(3200, 3, 371, 28), snap(3450, 4, 400, 9)]
PRE_IDLE = {"method": "precopy", "converges": True, "total_time_ms": 850, "passes": 2, "dirty_rate_mib_s": 0.1}
PRE_MEDIUM = {"method": "precopy", "converges": True, "total_time_ms": 3300, "passes": 4, "dirty_rate_mib_s": 35}


@pytest.mark.parametrize("name, method, expect, kw, snaps, want", [
    ("idle converges: nothing to do", "precopy", PRE_IDLE, {"postcopy_possible": True}, IDLE, []),
    ("medium writer as predicted: no false trigger", "precopy", PRE_MEDIUM, {"postcopy_possible": True}, MEDIUM,
     []),
    ("medium writer without a prediction: it shrinks, no action", "precopy", None, {"postcopy_possible": True},
     MEDIUM, []),
    ("probe read ~0 (same-value rewrites): projected past the budget after pass 1, switch", "precopy", PRE_IDLE,
     {"postcopy_possible": True}, HEAVY, [(1, "postcopy")]),
    ("no prediction: pass 1 still shrank 14 %, pass 2 did not: switch at the second boundary", "precopy", None,
     {"postcopy_possible": True}, HEAVY, [(2, "postcopy")]),
    ("post-copy not negotiated, no ceiling, no throttle: abort", "precopy", PRE_IDLE, {}, HEAVY, [(1, "abort")]),
    ("ceiling above the limit: raised to the ceiling, still not enough: abort at the next boundary", "precopy",
     PRE_IDLE, {"max_downtime_limit_ms": 1200, "actions": ("downtime", "abort")}, HEAVY,
     [(1, "downtime"), (2, "abort")]),
    ("a raise that lets the remainder go in one switchover: no further action", "precopy", PRE_IDLE,
     {"max_downtime_limit_ms": 5000, "actions": ("downtime", "abort")},
     HEAVY[:2] + [snap(4700, 3, 520, 0, status="completed")], [(1, "downtime")]),
    ("throttle gets its passes, then abort", "precopy", PRE_IDLE,
     {"throttle_possible": True, "throttle_passes": 2}, HEAVY, [(1, "throttle"), (3, "abort")]),
    ("actions in the operator's order: abort first", "precopy", PRE_IDLE,
     {"postcopy_possible": True, "actions": ("abort", "postcopy")}, HEAVY, [(1, "abort")]),
    ("no usable action (post-copy not negotiated, only postcopy listed): timeout_s stays the bound", "precopy",
     PRE_IDLE, {"actions": ("postcopy",)}, HEAVY, []),
    ("hybrid switches early when a pass stops shrinking", "hybrid", None, {"postcopy_possible": True}, HEAVY,
     [(2, "postcopy")]),
    ("post-copy has no pre-copy to check", "postcopy", PRE_IDLE, {"postcopy_possible": True}, HEAVY, []),
])
def test_monitor_actions(name, method, expect, kw, snaps, want):
    assert run(Monitor(method, expect, **kw), snaps) == want, name


def test_actions_stop_after_postcopy_or_abort():
    m = Monitor("precopy", PRE_IDLE, postcopy_possible=True)
    assert run(m, HEAVY) == [(1, "postcopy")]
    assert m.observe(snap(9000, 6, 1200, 236)) == [] and len(m.adaptations) == 1


def test_adaptation_record_says_measured_against_predicted():
    m = Monitor("precopy", PRE_IDLE, postcopy_possible=True)
    run(m, HEAVY[:2])
    (entry,) = m.adaptations
    assert entry["pass"] == 1 and entry["t_ms"] == 2400 and entry["action"] == "postcopy"
    assert entry["measured"]["remaining_mib"] == 240.0
    assert entry["measured"]["dirty_rate_mib_s"] == pytest.approx(240 / 2.4, abs=0.1)
    assert entry["measured"]["throughput_mib_s"] == pytest.approx(280 / 2.4, abs=0.1)
    assert entry["predicted"] == {"dirty_rate_mib_s": 0.1, "total_time_ms": 850.0, "passes": 2.0,
                                  "budget_ms": 2850}
    assert "budget" in entry["reason"]


def test_raised_downtime_is_what_the_remainder_needs_capped_at_the_ceiling():
    m = Monitor("precopy", PRE_IDLE, actions=("downtime",), downtime_limit_ms=300, max_downtime_limit_ms=5000)
    (act,) = m.observe(HEAVY[0]) + m.observe(HEAVY[1])
    # 240 MiB at 280/2.4 MiB/s is 2057 ms of switchover; QEMU gets the headroom taken off again.
    assert act["downtime_limit_ms"] == 2572 and act["qemu_downtime_limit_ms"] == 2057
    m2 = Monitor("precopy", PRE_IDLE, actions=("downtime",), downtime_limit_ms=300, max_downtime_limit_ms=1000)
    (act2,) = m2.observe(HEAVY[0]) + m2.observe(HEAVY[1])
    assert act2["downtime_limit_ms"] == 1000
    # The result's adaptations say which limit each step set.
    assert m.adaptations[-1]["downtime_limit_ms"] == 2572 and m2.adaptations[-1]["downtime_limit_ms"] == 1000


def test_skipped_passes_and_tiny_passes_are_measured_together_or_not_at_all():
    m = Monitor("precopy", PRE_IDLE, postcopy_possible=True)
    assert m.observe(snap(50, 2, 0.5, 0.1)) == []  # less than a MiB sent: no information
    assert m.passes == []
    m = Monitor("precopy", None, postcopy_possible=True)
    # The first snapshot already at sync 4: three passes measured as one.
    assert m.observe(snap(3000, 4, 600, 250)) == []
    assert m.passes[0]["pass"] == 3


def test_qemu_gets_the_limit_less_the_headroom():
    assert adaptation.qemu_downtime_limit_ms(300) == 240
    assert adaptation.qemu_downtime_limit_ms(300, 0) == 300
    assert adaptation.qemu_downtime_limit_ms(1) == 1


@pytest.mark.parametrize("expect, want", [
    (None, None),
    ({"total_time_ms": 850, "converges": True}, 2850),
    ({"total_time_ms": 10000, "converges": True}, 15000),
    ({"total_time_ms": 850, "converges": True, "budget_ms": 9000}, 9000),
    ({"total_time_ms": None, "converges": False}, None),
])
def test_budget(expect, want):
    assert adaptation.budget_ms(adaptation.check_expectation(expect)) == want


@pytest.mark.parametrize("actions, msg", [
    (["postcopy", "sideways"], "adaptation_actions must list each of postcopy, downtime, throttle, abort"),
    (["abort", "abort"], "at most once"),
])
def test_bad_actions_refused(actions, msg):
    with pytest.raises(WalmError, match=msg):
        adaptation.check_actions(actions)


def test_actions_from_a_comma_list():
    assert adaptation.check_actions("downtime, abort") == ("downtime", "abort")
    assert adaptation.check_actions(None) == adaptation.ACTIONS


@pytest.mark.parametrize("expect, msg", [
    ("fast", "expect must be a dictionary"),
    ({"total_time_ms": "soon"}, "expect.total_time_ms must be a number"),
    ({"passes": -1}, "expect.passes must be a finite number >= 0"),
])
def test_bad_expectation_refused(expect, msg):
    with pytest.raises(WalmError, match=msg):
        adaptation.check_expectation(expect)


def test_max_downtime_below_the_limit_refused_before_anything():
    with pytest.raises(WalmError, match="max_downtime_limit_ms must be an integer from downtime_limit_ms"):
        migration.Migration("vm1", "/nonexistent", "tcp:127.0.0.1:4444", downtime_limit_ms=300,
                            max_downtime_limit_ms=200)


class ScriptedQMP(object):
    """Answers query-migrate from a script and records the commands the engine sends."""

    def __init__(self, infos):
        self.infos = list(infos)
        self.sent = []
        self.cancelled = False
        self.vm = "vm1"

    def events(self):
        return []

    def execute(self, cmd, args=None):
        self.sent.append(cmd)
        if cmd == "query-migrate":
            if self.cancelled:
                return {"status": "cancelled"}
            return self.infos.pop(0) if len(self.infos) > 1 else self.infos[0]
        if cmd == "migrate_cancel":
            self.cancelled = True
            return {}
        if cmd == "query-status":
            return {"status": "running"}
        return {}


def info(sync, sent_mib, remaining_mib):
    return {"status": "active", "ram": {"dirty-sync-count": sync, "transferred": int(sent_mib * MIB),
                                        "remaining": int(remaining_mib * MIB), "page-size": 4096}}


def test_engine_aborts_a_diverged_precopy_and_leaves_the_vm_on_the_source(monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr(migration.time, "time", lambda: clock["t"])
    monkeypatch.setattr(migration.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + 0.5))
    mig = migration.Migration("vm1", "/nonexistent", "tcp:127.0.0.1:4444", expect=PRE_IDLE, timeout_s=600)
    mig.monitor = mig._make_monitor({"postcopy-ram": False}, throttle=False)
    qmp = ScriptedQMP([info(1, 10, 500), info(1, 100, 400), info(1, 200, 300), info(1, 270, 250),
                       info(1, 275, 245), info(2, 280, 240), info(2, 300, 230)])
    result = mig._migrate(qmp)
    assert result["status"] == "aborted" and "would not converge" in result["error"]
    assert "migrate_cancel" in qmp.sent and "migrate-start-postcopy" not in qmp.sent
    assert result["source_status"] == "running"
    assert [a["action"] for a in result["adaptations"]] == ["abort"]
    assert result["adaptations"][0]["pass"] == 1


def test_engine_switches_to_postcopy_where_negotiated(monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr(migration.time, "time", lambda: clock["t"])
    monkeypatch.setattr(migration.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + 0.5))
    mig = migration.Migration("vm1", "/nonexistent", "tcp:127.0.0.1:4444", expect=PRE_IDLE, allow_postcopy=True)
    mig.monitor = mig._make_monitor({"postcopy-ram": True}, throttle=False)
    qmp = ScriptedQMP([info(1, 10, 500), info(1, 150, 350), info(1, 270, 250), info(2, 280, 240),
                       {"status": "completed", "downtime": 120, "total-time": 2600,
                        "ram": {"dirty-sync-count": 3, "transferred": 520 * MIB, "remaining": 0}}])
    result = mig._migrate(qmp)
    assert qmp.sent.count("migrate-start-postcopy") == 1
    assert result["postcopy_reason"].startswith("adaptation: ")
    assert result["downtime_within_limit"] is True and result["downtime_limit_ms"] == 300
