"""scripts/compare_evacuation.py's figures, table and timeline from an evacuation's results file (no lab)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import compare_evacuation as ce  # noqa: E402


def report(empty=20.0, migrations=8.0, nonzero=(57.0, 57.0), completed=("a", "b")):
    order = [{"name": n, "memory_mib": 256, "nonzero_mib": z, "wave": i + 1, "position": i + 1}
             for i, (n, z) in enumerate(zip(("a", "b"), nonzero))]
    results = [
        {"vm": "a", "started_at": 1006.0, "finished_at": 1009.0, "prepare_started_at": 1005.0,
         "prepared_at": 1005.5, "total_time_ms": 2000, "downtime_ms": 200},
        {"vm": "b", "started_at": 1010.0, "finished_at": 1013.0, "prepare_started_at": None, "prepared_at": None,
         "total_time_ms": 1000, "downtime_ms": 0},
    ]
    return {"started_at": 1000.0, "migrations_started_at": 1004.0, "plan": {"order": order}, "results": results,
            "totals": {"time_to_empty_s": empty, "measured_migration_time_s": migrations, "vms": 2,
                       "completed": list(completed)}}


def run(rep, checks=None):
    return {"policy": "walm", "concurrency": 1, "repeat": 1, "report": rep,
            "guest_checks": checks if checks is not None else {"a": [], "b": []}}


def test_figures_against_the_physical_limit():
    f = ce.figures(run(report()))
    assert f["physical_limit_s"] == pytest.approx(114.0 / ce.LINK_MIB_S, abs=0.01)
    assert f["empty_over_limit"] == pytest.approx(20.0 / f["physical_limit_s"], abs=0.01)
    assert f["bound_s"] == pytest.approx(1.5 * f["physical_limit_s"] + 5, abs=0.01)
    assert f["overhead_per_vm_s"] == 6.0 and f["probe_plan_s"] == 4.0
    assert f["moved"] == 2 and f["intact"] == 2 and f["nonzero_estimated"] is False


def test_a_vm_without_a_nonzero_reading_counts_with_its_whole_memory_and_says_so():
    f = ce.figures(run(report(nonzero=(57.0, None))))
    assert f["physical_limit_s"] == pytest.approx((57.0 + 256) / ce.LINK_MIB_S, abs=0.01)
    assert f["nonzero_estimated"] is True


def test_a_host_not_emptied_has_no_ratio():
    f = ce.figures(run(report(empty=None, completed=("a",)), {"a": [], "b": ce.NOT_MOVED}))
    assert f["empty_over_limit"] is None and f["overhead_per_vm_s"] is None and f["intact"] == 1


def test_the_timeline_phases_follow_the_results():
    rows = dict(ce.segments(report()))
    a = dict((p, (round(s, 2), round(n, 2))) for p, s, n in rows["a"])
    assert a == {"probe": (0.0, 4.0), "prepare": (5.0, 0.5), "migrate": (6.0, 1.8), "switchover": (7.8, 0.2),
                 "cleanup": (8.0, 1.0)}
    b = dict((p, (round(s, 2), round(n, 2))) for p, s, n in rows["b"])
    assert "prepare" not in b and b["switchover"] == (11.0, 0.0) and b["cleanup"] == (11.0, 2.0)


def test_the_table_has_one_row_per_run():
    text = ce.table([ce.figures(run(report())), ce.figures(run(report(empty=30.0)))])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| policy | conc | moved | intact | host empty s")
    assert "| walm | 1 | 2/2 | 2/2 | 30.0 |" in lines[3]


def test_the_script_runs_as_documented():
    """Started as its docstring says (the venv's python, no PYTHONPATH), it finds the collection by itself."""
    import subprocess
    env = dict((k, v) for k, v in os.environ.items() if k != "PYTHONPATH")
    proc = subprocess.run([sys.executable, os.path.join("scripts", "compare_evacuation.py"), "--help"], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and "--policies" in proc.stdout, proc.stdout[-2000:]
