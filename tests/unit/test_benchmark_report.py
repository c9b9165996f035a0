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
    assert [line for _, line in tail.lines] == ["WALM wset rate_mib_s=40.0", "WALM wset rate_mib_s=39.0"]
