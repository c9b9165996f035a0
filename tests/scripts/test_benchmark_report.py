"""scripts/benchmark.py's statistics and report, over small hand-made run records (no lab, no QEMU).

Expected values are derived by hand here (textbook t quantiles, sample standard deviations worked out in the
comments), never by calling the code under test a second time."""

import csv
import io
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import benchmark as bm  # noqa: E402


def rec(case, strategy, repeat, tmt, dt=100, status="completed", method=None, **extra):
    r = {"case": case, "strategy": strategy, "repeat": repeat, "method": method or strategy, "status": status,
         "success": status == "completed", "total_time_ms": tmt if status == "completed" else None,
         "downtime_ms": dt if status == "completed" else None, "transferred_bytes": 100 * 1048576,
         "passes": 3, "postcopy_requests": 0, "memory_mib": 512, "link_rate": "1gbit", "link_mib_s": 114.0,
         "qemu_version": "QEMU emulator version 10.0.2", "guest_visible_downtime_ms": None}
    r.update(extra)
    return r


# Student t, two-sided 95 % (p = 0.975), from any printed table.
@pytest.mark.parametrize("df,t", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045),
                                  (100, 1.984)])
def test_t_quantile_matches_the_table(df, t):
    assert bm.t_quantile(0.975, df) == pytest.approx(t, abs=0.0006)


def test_t_quantile_tends_to_the_normal():
    assert bm.t_quantile(0.975, 100000) == pytest.approx(1.95996, abs=1e-4)
    assert bm.t_quantile(0.995, 4) == pytest.approx(4.604, abs=0.001)


def test_mean_ci_with_t():
    # 1000, 1100, 1200: mean 1100, deviations -100, 0, 100 -> s^2 = 20000 / 2, s = 100;
    # half-width = t(0.975, 2) * s / sqrt(3) = 4.302653 * 100 / 1.7320508 = 248.414
    m, hw, n = bm.mean_ci([1000, 1100, None, 1200])
    assert (m, n) == (1100, 3)
    assert hw == pytest.approx(248.414, abs=0.01)


def test_mean_ci_degenerate():
    assert bm.mean_ci([]) == (None, None, 0)
    assert bm.mean_ci([None]) == (None, None, 0)
    assert bm.mean_ci([42]) == (42, None, 1)
    assert bm.mean_ci([5, 5, 5])[1] == 0.0


def test_cell_counts_only_completed_runs():
    runs = [rec("c", "precopy", 0, 2000, dt=300), rec("c", "precopy", 1, None, status="timeout"),
            rec("c", "precopy", 2, 3000, dt=100)]
    c = bm.cell_stats(runs)
    assert (c["runs"], c["ok"]) == (3, 2)
    assert c["success_ratio"] == pytest.approx(2 / 3)
    # 2000, 3000: mean 2500, s = sqrt(2 * 500^2 / 1) = 707.107; hw = 12.7062 * 707.107 / sqrt(2) = 6353.1
    assert c["tmt"] == 2500
    assert c["tmt_ci"] == pytest.approx(6353.1, abs=0.5)
    assert c["dt"] == 200
    assert c["mib"] == 100


def study():
    """One workload: pre-copy 1000/1200 (mean 1100), post-copy faster but one of two runs failed, hybrid 1150,
    WALM 1200/1210 (mean 1205), random 900/1500 (mean 1200), peer 2000/2200 (mean 2100)."""
    return [
        rec("idle", "precopy", 0, 1000), rec("idle", "precopy", 1, 1200),
        rec("idle", "postcopy", 0, 900, dt=2), rec("idle", "postcopy", 1, None, status="failed"),
        rec("idle", "hybrid", 0, 1150), rec("idle", "hybrid", 1, 1150),
        rec("idle", "walm", 0, 1200, method="precopy", chosen_method="precopy", overhead_s=3.0,
            predicted_total_time_ms=1000, predicted_downtime_ms=50),
        rec("idle", "walm", 1, 1210, method="precopy", chosen_method="precopy", overhead_s=4.0,
            predicted_total_time_ms=1100, predicted_downtime_ms=70),
        rec("idle", "random", 0, 900, method="postcopy", chosen_method="postcopy", seed=1),
        rec("idle", "random", 1, 1500, method="hybrid", chosen_method="hybrid", seed=1),
        rec("idle", "peer", 0, 2000, method="precopy"), rec("idle", "peer", 1, 2200, method="precopy"),
    ]


def test_oracle_is_the_fastest_method_that_always_completed():
    cells = bm.aggregate(study())["idle"]
    # post-copy's one completed run (900) is fastest, but it failed once: the oracle is pre-copy (1100 < 1150).
    assert bm.oracle(cells) == "precopy"
    # random and peer are policies, never the oracle, even when faster.
    fast_peer = study() + [rec("idle", "peer", 2, 10)]
    assert bm.oracle(bm.aggregate(fast_peer)["idle"]) == "precopy"


def test_oracle_none_when_every_method_failed_somewhere():
    runs = [rec("x", m, 0, None, status="failed") for m in bm.METHODS] + [rec("x", "walm", 0, 500)]
    w = bm.walm_ratios(bm.aggregate(runs)["x"])
    assert w["oracle"] is None and w["to_oracle"] is None and w["within"] is None


def test_walm_ratios():
    w = bm.walm_ratios(bm.aggregate(study())["idle"])
    assert w["oracle"] == "precopy"
    assert w["to_oracle"] == pytest.approx(1205 / 1100)  # 1.0955: within 10 %
    assert w["within"] is True
    assert w["to"]["precopy"] == pytest.approx(1205 / 1100)
    assert w["to"]["postcopy"] == pytest.approx(1205 / 900)  # over post-copy's completed run only
    assert w["to"]["hybrid"] == pytest.approx(1205 / 1150)
    assert w["to"]["random"] == pytest.approx(1205 / 1200)
    assert w["to"]["peer"] == pytest.approx(1205 / 2100)


def test_walm_not_within_when_slower_or_failing():
    slow = [r for r in study() if r["strategy"] != "walm"] + [rec("idle", "walm", 0, 1300)]
    w = bm.walm_ratios(bm.aggregate(slow)["idle"])
    assert w["to_oracle"] == pytest.approx(1300 / 1100) and w["within"] is False
    # Fast on its completed run but one run failed: not "within".
    flaky = [r for r in study() if r["strategy"] != "walm"] + [rec("idle", "walm", 0, 1000),
                                                               rec("idle", "walm", 1, None, status="failed")]
    w = bm.walm_ratios(bm.aggregate(flaky)["idle"])
    assert w["to_oracle"] == pytest.approx(1000 / 1100) and w["within"] is False


def test_csv_has_every_column_and_one_row_per_run():
    rows = list(csv.DictReader(io.StringIO(bm.csv_text(study()))))
    assert len(rows) == 12
    assert tuple(rows[0].keys()) == bm.CSV_COLUMNS
    for col in ("case", "strategy", "repeat", "method", "chosen_method", "status", "total_time_ms", "downtime_ms",
                "guest_visible_downtime_ms", "transferred_bytes", "passes", "postcopy_requests", "overhead_s",
                "predicted_total_time_ms", "predicted_downtime_ms", "progress_before", "progress_during",
                "progress_after", "slowdown_pct", "qemu_version", "seed"):
        assert col in bm.CSV_COLUMNS
    # Sorted by workload, then strategy in the documented order, then repeat.
    assert [r["strategy"] for r in rows[:4]] == ["precopy", "precopy", "postcopy", "postcopy"]
    failed = [r for r in rows if r["status"] == "failed"][0]
    assert failed["total_time_ms"] == "" and failed["guest_visible_downtime_ms"] == ""
    walm = [r for r in rows if r["strategy"] == "walm"]
    assert [r["chosen_method"] for r in walm] == ["precopy", "precopy"]


def test_report_rows():
    text = bm.report_md(study(), ["tmt.png"])
    # pre-copy: 1000, 1200 -> mean 1100, s = 141.42, hw = 12.7062 * 141.42 / sqrt(2) = 1270.6
    assert "| idle | precopy | precopy | 2/2 | 1100 ± 1271 | 100 ± 0 |" in text
    # post-copy: one completed run, no interval
    assert "| idle | postcopy | postcopy | 1/2 | 900 | 2 |" in text
    # random ran two methods, one each
    assert "| idle | random | hybrid 1, postcopy 1 | 2/2 | 1200 ± 3812 |" in text  # s = 424.26, hw = 3811.9
    # WALM against the oracle and each baseline
    assert "| idle | precopy | 1100 | precopy | 1205 | 1.10 | yes | 1.10 | 1.34 (1/2 ok) | 1.05 | 1.00 | 0.57 |" \
        in text
    assert "WALM within 10 % of the oracle: idle. Not within: none." in text
    # prediction: mean 1050 against 1205 measured -> -13 %; overhead mean 3.5 s
    assert "| idle | precopy | 1050 | 1205 | -13 % | 60 | 100 | 3.5 |" in text
    assert "![tmt](tmt.png)" in text


def test_report_says_what_ran():
    # The peer's pre-copy forced into post-copy at its timeout, and a hybrid that converged before its switch,
    # are reported as what they were, not as the method asked for.
    runs = [rec("h", "peer", 0, 16000, method="precopy", ran_postcopy=True),
            rec("h", "peer", 1, 4000, method="precopy", ran_postcopy=False),
            rec("h", "hybrid", 0, 1000, ran_postcopy=False), rec("h", "hybrid", 1, 5000, ran_postcopy=True),
            rec("h", "hybrid", 2, None, status="timeout", ran_postcopy=False)]
    text = bm.report_md(runs)
    assert "| h | peer | precopy 1, precopy>postcopy 1 | 2/2 |" in text
    assert "| h | hybrid | hybrid 2, hybrid (no switch) 1 | 2/3 |" in text


def test_report_names_a_failed_baseline():
    runs = [rec("h", "precopy", 0, None, status="timeout"), rec("h", "postcopy", 0, 3000),
            rec("h", "hybrid", 0, 6000), rec("h", "walm", 0, 3200, method="postcopy")]
    text = bm.report_md(runs)
    assert "| h | precopy | precopy | 0/1 | - | - |" in text
    assert "| h | postcopy | 3000 | postcopy | 3200 | 1.07 | yes | precopy failed | 1.07 | 0.53 | - | - |" in text


def test_random_method_is_seeded_per_run_and_uniform():
    assert bm.random_method(7, "idle", 3) == bm.random_method(7, "idle", 3)
    picks = [bm.random_method(1, "idle", r) for r in range(600)]
    for m in bm.METHODS:
        # Binomial(600, 1/3): mean 200, sd 11.5; 150..250 is over 4 sd either side.
        assert 150 <= picks.count(m) <= 250
    assert [bm.random_method(2, "idle", r) for r in range(20)] != picks[:20]


def test_peer_timeout_and_plans():
    assert bm.peer_timeout_s(512) == 15  # 30 s/GiB x 0.5 GiB
    assert bm.peer_timeout_s(8192) == 240
    assert bm.peer_timeout_s(128) == 10  # the floor
    assert bm.migration_plan("peer", memory_mib=512) == ("precopy", None, 15, "postcopy")
    assert bm.migration_plan("precopy", "precopy") == ("precopy", None, 30, "abort")
    assert bm.migration_plan("hybrid", "hybrid") == ("hybrid", 1, 120, "abort")
    assert bm.migration_plan("walm", "hybrid", 3) == ("hybrid", 3, 120, "abort")
    assert bm.migration_plan("random", "postcopy") == ("postcopy", None, 120, "abort")


def test_link_rates():
    assert bm.link_mib_s_of("1gbit") == pytest.approx(114.0)
    assert bm.link_mib_s_of("1Gbit") == pytest.approx(114.0)
    assert bm.link_mib_s_of("500mbit") == pytest.approx(57.0)
    assert bm.link_mib_s_of("125000kbps") == pytest.approx(114.0)  # bytes per second
    assert bm.link_mib_s_of("") is None


def test_timeline_takes_one_run_per_method():
    snaps = [{"t_ms": 0, "status": "setup", "pass": 0, "transferred_bytes": 0, "remaining_bytes": 0}]
    runs = [rec("c", "walm", 0, 900, method="postcopy", snapshots=snaps),
            rec("c", "postcopy", 1, 1000, snapshots=snaps), rec("c", "postcopy", 0, None, status="failed",
                                                                snapshots=snaps),
            rec("c", "precopy", 0, 1000, snapshots=snaps), rec("c", "hybrid", 0, 1000, snapshots=None)]
    picks = bm.timeline_runs(runs)
    assert [(r["strategy"], r["repeat"]) for r in picks] == [("precopy", 0), ("postcopy", 1)]


def test_plots_are_written(tmp_path):
    snaps = [{"t_ms": 2, "status": "setup", "pass": 0, "transferred_bytes": 0, "remaining_bytes": 0},
             {"t_ms": 100, "status": "active", "pass": 1, "transferred_bytes": 10 << 20, "remaining_bytes": 400 << 20}]
    runs = [dict(r, snapshots=snaps, progress_series=[[-1.0, 10.0], [0.5, 4.0], [2.0, 10.0]],
                 progress_key="rate_mib_s") for r in study()]
    names = bm.plot_all(runs, str(tmp_path))
    assert names == ["tmt.png", "downtime.png", "timeline-idle.png"]
    for n in names:
        data = (tmp_path / n).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_console_tail_follows_rotation(tmp_path, monkeypatch):
    """The destination's log of the previous run is skipped; after walm_vm rotates it (rename to .prev, new file),
    the new file is read from its beginning even though it is shorter than the old one."""
    import time
    import calibrate
    paths = {"walm-src": tmp_path / "src.log", "walm-dst": tmp_path / "dst.log"}
    monkeypatch.setattr(calibrate.walmlab, "console_log", lambda host, vm: str(paths[host]))
    paths["walm-src"].write_text("WALM wset rate_mib_s=40.0\n")
    paths["walm-dst"].write_text("WALM wset rate_mib_s=1.0\n" * 50)  # the previous run's, long
    tail = bm.ConsoleTail("vm")
    tail.start()
    time.sleep(0.3)
    os.rename(str(paths["walm-dst"]), str(paths["walm-dst"]) + ".prev")
    paths["walm-dst"].write_text("WALM wset rate_mib_s=39.0\n")
    time.sleep(0.3)
    tail.stop.set()
    tail.join()
    assert [line for _read_at, line in tail.lines] == ["WALM wset rate_mib_s=40.0", "WALM wset rate_mib_s=39.0"]


# ---------------------------------------------------------------------------------------------------------------
# The adversarial workloads, WALM with and without run-time adaptation, downtime limits

def test_adversarial_cases_follow_the_calibrations_seven():
    import calibrate
    assert list(bm.CASES)[:7] == list(calibrate.CASES)
    assert list(bm.CASES)[7:] == ["wset-same", "late-heavy", "bursty"]
    assert bm.CASES["wset-same"] == ("wset", {"wset_mib": 256, "rate_mib_s": 200, "wset_same": 1}, "rate_mib_s")
    late = bm.CASES["late-heavy"][1]
    assert late["wset_start_after_s"] == bm.LATE_HEAVY_START_AFTER_S
    # Idle through the settle time and the probe (which ends ~8 s after the ready line, 9.2 s at the latest).
    assert late["wset_start_after_s"] > bm.SETTLE_S + 3
    bursty = bm.CASES["bursty"][1]
    assert (bursty["wset_burst_ms"], bursty["wset_quiet_ms"]) == (1500, 3000)
    # The quiet phase is longer than walm_probe's default measurement (1 s): it can fit in one.
    assert bursty["wset_quiet_ms"] > 1000
    assert bm.order_cases(["bursty", "idle", "late-heavy", "wset-same", "net"]) == [
        "idle", "net", "wset-same", "late-heavy", "bursty"]


@pytest.mark.parametrize("strategy,adapt,expect", [
    ("precopy", False, False), ("postcopy", False, False), ("hybrid", False, False), ("random", False, False),
    ("peer", False, False), ("walm", True, True), ("walm-static", False, True), ("walm-balanced", True, True)])
def test_migrate_vars_adapt_only_walm_and_walm_balanced(strategy, adapt, expect):
    expectation = {"method": "precopy", "converges": True, "total_time_ms": 1000}
    ev = bm.migrate_vars(strategy, "precopy", None, 30, "abort", expectation, max_downtime_limit_ms=900)
    assert ev["walm_adapt"] is adapt
    assert ("walm_expect" in ev) is expect
    if expect:
        assert ev["walm_expect"] == expectation
    # The operator's ceiling for the downtime action matters only where the run adapts.
    assert ev.get("walm_max_downtime_limit_ms") == (900 if adapt else None)
    assert (ev["walm_method"], ev["walm_switch_after_passes"], ev["walm_timeout_s"], ev["walm_on_timeout"],
            ev["walm_downtime_limit_ms"]) == ("precopy", 1, 30, "abort", 300)


def test_walm_strategies_objectives():
    assert bm.WALM_STRATEGIES == {"walm": ("urgent", True), "walm-static": ("urgent", False),
                                  "walm-balanced": ("balanced", True)}
    assert set(bm.WALM_STRATEGIES) < set(bm.STRATEGIES)
    assert not set(bm.WALM_STRATEGIES) & set(bm.BASELINES)


def adapted(t_ms, pass_, action="postcopy", reason="remainder stopped shrinking"):
    return {"t_ms": t_ms, "pass": pass_, "action": action, "reason": reason,
            "measured": {"dirty_rate_mib_s": 180.0, "throughput_mib_s": 110.0, "remaining_mib": 240.0,
                         "shrink_ratio": 0.95},
            "predicted": {"dirty_rate_mib_s": 0.4, "total_time_ms": 3200, "passes": 3, "budget_ms": None}}


def late_study():
    """late-heavy: hybrid 5000/5200 (mean 5100), post-copy 3000/3200 (3100), pre-copy never completes; WALM
    adapted both runs to post-copy, 4000/4400 (4200); walm-static completed one run of two (6000); walm-balanced
    5000/5400 (5200), no adaptation."""
    return [
        rec("late-heavy", "hybrid", 0, 5000, adapt=False, adaptations=[]),
        rec("late-heavy", "hybrid", 1, 5200, adapt=False, adaptations=[]),
        rec("late-heavy", "postcopy", 0, 3000, dt=2, adapt=False, adaptations=[]),
        rec("late-heavy", "postcopy", 1, 3200, dt=2, adapt=False, adaptations=[]),
        rec("late-heavy", "precopy", 0, None, status="timeout", adapt=False, adaptations=[]),
        rec("late-heavy", "precopy", 1, None, status="timeout", adapt=False, adaptations=[]),
        rec("late-heavy", "walm", 0, 4000, dt=2, method="precopy", chosen_method="precopy", adapt=True,
            ran_postcopy=True, adaptations=[adapted(1200, 1)], writer_onset_s=-1.5, probe_end_s=-4.8,
            downtime_within_limit=True, probe={"dirty_rate_mib_s": 0.3}),
        rec("late-heavy", "walm", 1, 4400, dt=2, method="precopy", chosen_method="precopy", adapt=True,
            ran_postcopy=True, adaptations=[adapted(2400, 2)], writer_onset_s=0.8, probe_end_s=-4.0),
        rec("late-heavy", "walm-static", 0, None, status="timeout", method="precopy", chosen_method="precopy",
            adapt=False, adaptations=[], writer_onset_s=-5.0, probe_end_s=-4.5),
        rec("late-heavy", "walm-static", 1, 6000, method="hybrid", chosen_method="hybrid", adapt=False,
            adaptations=[]),
        rec("late-heavy", "walm-balanced", 0, 5000, method="hybrid", adapt=True, adaptations=[]),
        rec("late-heavy", "walm-balanced", 1, 5400, method="hybrid", adapt=True, adaptations=[]),
    ]


def test_adaptation_ratios():
    a = bm.adaptation_ratios(bm.aggregate(late_study())["late-heavy"])
    # pre-copy never completed and hybrid (5100) is slower than post-copy (3100): the fastest fixed is post-copy.
    assert a["fastest"] == "postcopy"
    assert a["to_hybrid"] == pytest.approx(4200 / 5100)  # 0.82
    assert a["to_fastest"] == pytest.approx(4200 / 3100)  # 1.35
    assert a["to_static"] == pytest.approx(4200 / 6000)  # 0.70, over walm-static's one completed run
    assert a["balanced_to_hybrid"] == pytest.approx(5200 / 5100)  # 1.02
    assert a["balanced_to_fastest"] == pytest.approx(5200 / 3100)  # 1.68


def test_adaptation_ratios_without_walm_or_a_fixed_method():
    only_fixed = [r for r in late_study() if r["strategy"] in bm.METHODS]
    a = bm.adaptation_ratios(bm.aggregate(only_fixed)["late-heavy"])
    assert a == {"fastest": "postcopy", "to_hybrid": None, "to_fastest": None, "to_static": None,
                 "balanced_to_hybrid": None, "balanced_to_fastest": None}
    every_fixed_failed = [r for r in late_study() if r["strategy"] not in ("hybrid", "postcopy")]
    a = bm.adaptation_ratios(bm.aggregate(every_fixed_failed)["late-heavy"])
    assert a["fastest"] is None and a["to_fastest"] is None and a["to_hybrid"] is None
    assert a["to_static"] == pytest.approx(0.7)


def test_report_adaptation_table():
    text = bm.report_md(late_study())
    assert ("| late-heavy | 2/2 | 4200 | 5100 | 0.82 | postcopy | 1.35 | 1/2 | 6000 | 0.70 | 2/2 | 5200 | 1.02 "
            "| 1.68 |") in text
    # The cells' table names the pre-copy WALM switched to post-copy for what it was.
    assert "| late-heavy | walm | precopy>postcopy | 2/2 | 4200 ± 2541 |" in text  # s = 282.84, hw = 2541.2


@pytest.mark.parametrize("extra,over", [
    (dict(guest_visible_downtime_ms=310.4, downtime_ms=250), True),  # guest-visible counts, not QEMU's
    (dict(guest_visible_downtime_ms=290.0, downtime_ms=400), False),
    (dict(guest_visible_downtime_ms=None, downtime_ms=350), True),  # QEMU's where the guest-visible is missing
    (dict(guest_visible_downtime_ms=300.0, downtime_ms=100), False),  # at the limit is within it
    (dict(guest_visible_downtime_ms=500.0, downtime_limit_ms=600), False),  # a downtime adaptation raised it
    (dict(guest_visible_downtime_ms=700.0, downtime_limit_ms=600), True),
    (dict(guest_visible_downtime_ms=None, downtime_ms=None), None),
])
def test_over_downtime_limit(extra, over):
    r = rec("c", "walm", 0, 1000)
    r.update(extra)
    assert bm.over_downtime_limit(r) is over


def test_over_downtime_limit_only_for_completed_runs():
    r = rec("c", "precopy", 0, None, status="timeout", guest_visible_downtime_ms=900)
    assert bm.over_downtime_limit(r) is None


def downtime_study():
    return [
        # The result's own check agrees on the first and third; the second predates it (none).
        rec("wset-light", "walm", 0, 1000, dt=250, guest_visible_downtime_ms=310.4, downtime_within_limit=False),
        rec("wset-light", "walm", 1, 1000, dt=350),
        rec("wset-light", "walm", 2, 1000, dt=400, guest_visible_downtime_ms=290.0, downtime_within_limit=True),
        rec("wset-light", "walm-balanced", 0, 1000, guest_visible_downtime_ms=500.0, downtime_limit_ms=600),
        rec("wset-light", "precopy", 0, None, status="timeout"),
        rec("wset-light", "precopy", 1, 1000, dt=290, guest_visible_downtime_ms=300.0),
    ]


def test_downtime_limit_counts_and_report():
    counts = bm.downtime_limit_counts(downtime_study())
    assert counts["walm"]["completed"] == 3
    assert [bm.run_name(r) for r in counts["walm"]["over"]] == ["wset-light-walm-0", "wset-light-walm-1"]
    assert counts["walm"]["result_over"] == 1
    assert (counts["precopy"]["completed"], counts["precopy"]["over"]) == (1, [])
    assert (counts["walm-balanced"]["completed"], counts["walm-balanced"]["over"]) == (1, [])
    text = bm.report_md(downtime_study())
    assert "| walm | 3 | 2 | 1 | wset-light-walm-0 (310.4 / 300), wset-light-walm-1 (350.0 / 300) |" in text
    assert "| precopy | 1 | 0 | 0 | - |" in text
    assert "| walm-balanced | 1 | 0 | 0 | - |" in text
    assert "Over the limit: 2 of 5 completed runs." in text


def trigger_study():
    return [
        rec("wset-light", "walm", 0, 2100, adapt=True, adaptations=[adapted(900, 2, reason="pass 2 shrank 3 %")]),
        rec("wset-light", "walm", 1, 2000, adapt=True, adaptations=[]),
        rec("idle", "walm-balanced", 0, 1000, adapt=True,
            adaptations=[adapted(500, 1, "downtime", "r1"), adapted(700, 2, "postcopy", "r2")]),
        # Adaptation off: not checked, even had it adapted.
        rec("wset-light", "walm-static", 0, 2200, adapt=False, adaptations=[adapted(800, 1)]),
        # An adversarial workload: adaptation is expected there.
        rec("late-heavy", "walm", 0, 4000, adapt=True, adaptations=[adapted(1200, 1)]),
        # A record of benchmark version 1: no adaptations recorded, not checked.
        rec("net", "walm", 0, 1000),
    ]


def test_false_triggers():
    checked, hits = bm.false_triggers(trigger_study())
    assert [bm.run_name(r) for r in checked] == ["idle-walm-balanced-0", "wset-light-walm-0", "wset-light-walm-1"]
    assert [(bm.run_name(r), a["action"], a["t_ms"]) for r, a in hits] == [
        ("idle-walm-balanced-0", "downtime", 500), ("idle-walm-balanced-0", "postcopy", 700),
        ("wset-light-walm-0", "postcopy", 900)]
    text = bm.report_md(trigger_study())
    assert "3 adaptations in 2 of 3 runs checked:" in text
    assert "- idle-walm-balanced-0: downtime at 500 ms after pass 1 (r1); completed, TMT 1000 ms" in text
    assert "- wset-light-walm-0: postcopy at 900 ms after pass 2 (pass 2 shrank 3 %); completed, TMT 2100 ms" in text
    assert "wset-light-walm-static-0:" not in text and "late-heavy-walm-0:" not in text


def test_no_false_triggers_and_old_records():
    checked, hits = bm.false_triggers([r for r in trigger_study() if r["case"] == "wset-light"][1:2])
    assert (len(checked), hits) == (1, [])
    assert "0 adaptations in 0 of 1 runs checked." in bm.report_md(trigger_study()[1:2])
    # A version 1 study (the study of record): nothing to check, said so.
    text = bm.report_md(study())
    assert "No run with adaptation on recorded its adaptations here." in text


@pytest.mark.parametrize("onset,t_ms,since", [
    (-1.5, 1200, 1200),  # heavy before the migration started: from the start
    (0.8, 2400, 1600),  # heavy 0.8 s into it: from then
    (None, 1200, None),  # no onset recorded (not late-heavy)
])
def test_since_heavy(onset, t_ms, since):
    r = rec("late-heavy", "walm", 0, 1000, writer_onset_s=onset)
    assert bm.since_heavy_ms(r, {"t_ms": t_ms}) == since


def test_detection_summary_and_rows():
    s = bm.detection_summary(late_study())
    w = s[("late-heavy", "walm")]
    assert (w["checked"], w["adapted"], w["actions"]) == (2, 2, {"postcopy": 2})
    assert w["t_ms"] == 1800 and w["t_ms_range"] == (1200, 2400) and w["passes"] == 1.5
    assert w["since_heavy_ms"] == 1400  # (1200 + 1600) / 2
    b = s[("late-heavy", "walm-balanced")]
    assert (b["checked"], b["adapted"], b["t_ms"], b["t_ms_range"]) == (2, 0, None, None)
    assert ("late-heavy", "walm-static") not in s and ("late-heavy", "hybrid") not in s  # adaptation off
    rows = bm.detection_rows(late_study())
    assert [(x["run"], x["action"], x["t_ms"], x["pass"], x["since_heavy_ms"]) for x in rows] == [
        ("late-heavy-walm-0", "postcopy", 1200, 1, 1200), ("late-heavy-walm-1", "postcopy", 2400, 2, 1600)]
    assert rows[0]["probe_dirty_mib_s"] == 0.3 and rows[0]["measured_dirty_mib_s"] == 180.0


def test_report_detection_sections():
    text = bm.report_md(late_study())
    assert "| late-heavy | walm | 2 | 2 | postcopy 2 | 1800 | 1200-2400 | 1.5 | 1400 |" in text
    assert "| late-heavy | walm-balanced | 2 | 0 | - | - | - | - | - |" in text
    # onsets -1.5, 0.8, -5.0 (mean -1.9); probe ends -4.8, -4.0, -4.5 (mean -4.43)
    assert ("late-heavy: the writer began -1.9 s (-5.0 to 0.8) and the probe ended -4.4 s (-4.8 to -4.0) relative "
            "to the migration's start, over 3 runs; the writer began before the probe ended in: "
            "late-heavy-walm-static-0.") in text
    assert ("| late-heavy-walm-0 | 0.3 | precopy | postcopy | 1200 | 1 | 0.4 / 180.0 | 240 | 1200 | completed, TMT "
            "4000 ms | remainder stopped shrinking |") in text


def test_csv_adaptation_and_limit_columns():
    rows = list(csv.DictReader(io.StringIO(bm.csv_text(late_study() + [rec("net", "walm", 0, 1000)]))))
    assert tuple(rows[0].keys()) == bm.CSV_COLUMNS
    by = dict(((r["case"], r["strategy"], r["repeat"]), r) for r in rows)
    w = by[("late-heavy", "walm", "0")]
    assert (w["adapt"], w["adaptation_count"], w["first_adaptation"], w["first_adaptation_t_ms"],
            w["first_adaptation_pass"], w["downtime_within_limit"], w["over_downtime_limit"],
            w["writer_onset_s"]) == ("True", "1", "postcopy", "1200", "1", "True", "False", "-1.5")
    h = by[("late-heavy", "hybrid", "0")]
    assert (h["adapt"], h["adaptation_count"], h["first_adaptation"]) == ("False", "0", "")
    old = by[("net", "walm", "0")]  # version 1: nothing recorded, not zero
    assert (old["adaptation_count"], old["first_adaptation"], old["downtime_within_limit"]) == ("", "", "")
    # The seven before the adversarial workloads.
    assert rows[0]["case"] == "net" and rows[-1]["case"] == "late-heavy"


def test_writer_onset_from_the_guest_clock():
    # The ready line (guest 5.000 s) read at host 1000.30; the idle lines at guest 6 and 7 s read at 1001.25 and
    # 1002.40: host - guest = 995.30, 995.25, 995.40 -> 995.25 (the line read soonest). The writer starts at guest
    # 5 + 12 = 17 s = host 1012.25; the migration started at host 1011.0 -> +1.25 s. Lines read after the start
    # (here 2 s late) and other kinds are not used.
    lines = [(999.0, "WALM boot t_ms=3000 workload=wset"),
             (1000.30, "WALM wset state=ready t_ms=5000 seq=0 mib=256 touch_ms=950"),
             (1001.25, "WALM wset t_ms=6000 seq=1 mib=256 target_mib_s=200.0 rate_mib_s=0.00 phase=idle"),
             (1002.40, "WALM wset t_ms=7000 seq=2 mib=256 target_mib_s=200.0 rate_mib_s=0.00 phase=idle"),
             (1013.0, "WALM wset t_ms=16000 seq=11 mib=256 target_mib_s=200.0 rate_mib_s=0.00 phase=idle")]
    assert bm.writer_onset_s(lines, "wset", 12, 1011.0) == pytest.approx(1.25)
    assert bm.writer_onset_s(lines[2:], "wset", 12, 1011.0) is None  # no ready line


def test_timeline_adds_a_run_that_adapted(tmp_path):
    snaps = [{"t_ms": 2, "status": "setup", "pass": 0, "transferred_bytes": 0, "remaining_bytes": 0},
             {"t_ms": 100, "status": "active", "pass": 1, "transferred_bytes": 10 << 20, "remaining_bytes": 400 << 20}]
    runs = [dict(r, snapshots=snaps) for r in late_study()]
    picks = bm.timeline_runs(runs)
    assert [(r["strategy"], r["repeat"]) for r in picks] == [("precopy", 0), ("postcopy", 0), ("hybrid", 0),
                                                             ("walm", 0)]
    assert "timeline-late-heavy.png" in bm.plot_all(runs, str(tmp_path))
