"""Benchmark WALM against fixed methods and policies on the lab: workloads x strategies x repeats, with TMT,
downtime, guest slowdown, predicted against measured, mean +- 95 % CI per cell and plots (issue 7).

Run as root after scripts/install.sh, or through scripts/benchmark.sh, which installs first (it sets the lab up
itself unless --no-setup):

    .venv/bin/python scripts/benchmark.py                      # quick run: every workload x strategy, 1 repeat
    .venv/bin/python scripts/benchmark.py --repeats 3          # the study (10 workloads x 8 strategies x 3)
    .venv/bin/python scripts/benchmark.py --report --out DIR   # rewrite report, CSV and plots from DIR/runs

Every run is written to OUT/runs/CASE-STRATEGY-REPEAT.json as soon as it finishes; running the same command again
skips the finished runs (resumable). OUT/runs.csv and OUT/report.md are rewritten after every run, the plots
(OUT/*.png) at the end. docs/benchmark.md describes the strategies, the figures and the statistics.
"""

import argparse
import csv
import io
import json
import math
import os
import random
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, ".collections"))

# The calibration's workloads, the console tail, the guest's progress rates, the lab link and the downtime limit.
from calibrate import CASES as CALIBRATION_CASES  # noqa: E402
from calibrate import DOWNTIME_LIMIT_MS, LINK_MIB_S, REPORT_INTERVAL_S, ConsoleTail, progress_rates  # noqa: E402
from ansible_collections.walm.qemu.plugins.module_utils.methods import (  # noqa: E402
    METHOD_BY_NAME, METHODS, ON_TIMEOUT_BY_NAME)

BENCHMARK_VERSION = 2
# Every method run as it is (a strategy of its own), then the policies.
STRATEGIES = METHODS + ("random", "peer", "walm", "walm-static", "walm-balanced")
BASELINES = METHODS + ("random", "peer")
# WALM's strategies: walm_decide's objective, and whether walm_migrate checks the run against the decision's
# expectation and adapts it (switch to post-copy, raise the downtime limit, throttle, abort) when it diverges.
# walm-static is walm's decision run as decided: walm / walm-static is what the adaptation buys. Every other
# strategy runs its method as given (adaptation off).
WALM_STRATEGIES = {
    "walm": ("urgent", True),
    "walm-static": ("urgent", False),
    "walm-balanced": ("balanced", True),
}

SETTLE_S = 6  # the workload runs this long before the probe (as in the calibration)
GAP_S = 2  # probe -> migrate
AFTER_S = 3  # keep reading the console after the migration (the guest's progress afterwards)
WITHIN_PCT = 10  # "WALM is as good as the oracle": mean TMT within this many % of it

# late-heavy: walm-wset idles this many seconds after its ready line (which follows the touch of its set, ~1 s
# under TCG), then writes. Where a run stands then, from the version-1 study of record (2026-11-25, in git history):
# cpu's and net's first progress line (1 s after their start, no set to touch) came 12.8 s (fixed strategies;
# 11.5-14.2) or 13.8 s (WALM, whose walm_decide adds ~1 s; 12.4-14.9) before the migration started, the 256 MiB
# writers' ~1 s later than that. Counted from the ready line, vm_start's boot wait and the console tail's start
# (<= 1.2 s), SETTLE_S and the probe (probe_s 1.9-2.8 s, its two 0.5 s windows at its end) end the probe at about
# 8 s, 9.2 s at the latest; GAP_S and migrate_vm.yml's steps before walm_migrate (~2.7 s) start the migration at
# about 12.8 s (fixed; 11.5-14.2) or 13.5 s (WALM; 12.3-15). Writing from 12 s on leaves the probe at least 2.8 s
# of idleness and has the writer at full rate when a WALM migration starts; a fixed strategy's migration starts at
# most ~0.5 s before the first write. Each run records where the writes began (writer_onset_s) and where the probe
# ended (probe_end_s), in seconds relative to the migration's start.
LATE_HEAVY_START_AFTER_S = 12
# bursty: 1.5 s of writing at 200 MiB/s (over the link's 114 MiB/s), 3 s of nothing, repeating from the ready line
# (mean 67 MiB/s). walm_probe's default measurement is 1 s (two 0.5 s windows) ending about 8 s after the ready
# line (above), i.e. 2.3-3.3 s into a 4.5 s cycle, inside the 3 s quiet phase: with the runs' +-0.6 s of jitter
# the probe reads the guest as idle most of the time and catches the edge of a burst otherwise. The migration
# starts near the end of a quiet phase and its first pass meets a burst.
BURST_MS, QUIET_MS = 1500, 3000

# The benchmark's workloads: the calibration's seven (CASES in scripts/calibrate.py), then three the probe before
# the migration misreads -- run-time adaptation's test. name: (workload, kernel args, progress key).
ADVERSARIAL_CASES = {
    # Rewrites its pages with the values they hold: QEMU's dirty log sees 200 MiB/s, page sampling (which hashes
    # page contents) ~0.
    "wset-same": ("wset", {"wset_mib": 256, "rate_mib_s": 200, "wset_same": 1}, "rate_mib_s"),
    # Idle while probed, a heavy writer from about when the migration starts.
    "late-heavy": ("wset", {"wset_mib": 256, "rate_mib_s": 200, "wset_start_after_s": LATE_HEAVY_START_AFTER_S},
                   "rate_mib_s"),
    # Writes in bursts; the probe tends to land in a quiet moment.
    "bursty": ("wset", {"wset_mib": 256, "rate_mib_s": 200, "wset_burst_ms": BURST_MS, "wset_quiet_ms": QUIET_MS},
               "rate_mib_s"),
}
CASES = dict(CALIBRATION_CASES)
CASES.update(ADVERSARIAL_CASES)  # reported after the seven

# Vanilla hybrid: one pre-copy pass, then post-copy (the research's hybrid; QEMU switches at the next pass).
HYBRID_SWITCH_AFTER_PASSES = 1
# Pre-copy that has not converged after this long is cancelled (the VM keeps running on the source): a failure.
PRECOPY_TIMEOUT_S = 30
# Methods that switch to post-copy: only a guard (the timeout applies before the switch; none needs it in the lab).
POSTCOPY_TIMEOUT_S = 120
# Peer policy (Nova / KubeVirt): pre-copy, forced into post-copy after a completion timeout that scales with RAM.
# Nova: live_migration_completion_timeout 800 s per GiB; KubeVirt: completionTimeoutPerGiB 150 s. The lab uses
# 30 s per GiB (15 s for a 512 MiB guest): over 3x the slowest pre-copy that converges in the calibration (4.3 s),
# so every converging workload still completes as pre-copy, and the heavy writer does not spend 75 s (KubeVirt)
# or 400 s (Nova) in pre-copy before the switch.
PEER_TIMEOUT_S_PER_GIB = 30
PEER_MIN_TIMEOUT_S = 10

CSV_COLUMNS = (
    "case", "strategy", "repeat", "method", "chosen_method", "switch_after_passes", "status", "success",
    "total_time_ms", "downtime_ms", "guest_visible_downtime_ms", "transferred_bytes", "passes", "postcopy_requests",
    "ran_postcopy", "postcopy_started_ms", "timeout_s", "on_timeout", "probe_s", "decide_s", "overhead_s",
    "predicted_total_time_ms", "predicted_downtime_ms", "predicted_converges", "walm_choice", "objective", "adapt",
    "adaptation_count", "first_adaptation", "first_adaptation_t_ms", "first_adaptation_pass", "downtime_limit_ms",
    "qemu_downtime_limit_ms", "downtime_within_limit", "over_downtime_limit", "probe_end_s", "writer_onset_s",
    "progress_key", "progress_before", "progress_during", "progress_after", "slowdown_pct", "memory_mib",
    "link_rate", "link_mib_s", "seed", "qemu_version", "wall_s", "error",
)


# ---------------------------------------------------------------------------------------------------------------
# Statistics (no SciPy: Student's t from the regularized incomplete beta function)

def _betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betai(a, b, x):
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1.0 - x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """The t with P(T <= t) = p (0.5 < p < 1), by bisection on t_cdf."""
    lo, hi = 0.0, 1e4
    for _step in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def mean_ci(values, confidence=0.95):
    """(mean, half-width of the two-sided Student-t confidence interval, n) of the non-null values; the
    half-width is None below two values, everything None without values."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if not n:
        return None, None, 0
    m = sum(xs) / n
    if n < 2:
        return m, None, n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n), n


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# ---------------------------------------------------------------------------------------------------------------
# Aggregation

def _mean(values):
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def ran_label(r):
    """What a run's migration did, not only the method asked for: a pre-copy forced into post-copy at its
    timeout (the peer policy) reads `precopy>postcopy`; a completed hybrid that converged before its switch point
    reads `hybrid (no switch)` (it was a pre-copy)."""
    m = r.get("method")
    if m == "precopy" and r.get("ran_postcopy"):
        return "precopy>postcopy"
    if m == "hybrid" and r.get("status") == "completed" and r.get("ran_postcopy") is False:
        return "hybrid (no switch)"
    return m


def cell_stats(runs):
    """One workload x strategy cell: success ratio and, over its completed runs, mean +- CI of TMT and DT and the
    means of the other figures."""
    ok = [r for r in runs if r.get("status") == "completed"]
    methods = {}
    for r in runs:
        label = ran_label(r)
        methods[label] = methods.get(label, 0) + 1
    tmt = mean_ci([r.get("total_time_ms") for r in ok])
    dt = mean_ci([r.get("downtime_ms") for r in ok])
    return {
        "runs": len(runs), "ok": len(ok), "success_ratio": len(ok) / len(runs) if runs else None,
        "methods": methods,
        "tmt": tmt[0], "tmt_ci": tmt[1], "dt": dt[0], "dt_ci": dt[1],
        "gvdt": _mean([r.get("guest_visible_downtime_ms") for r in ok]),
        "mib": _mean([r["transferred_bytes"] / 1048576.0 for r in ok if r.get("transferred_bytes") is not None]),
        "passes": _mean([r.get("passes") for r in ok]),
        "requests": _mean([r.get("postcopy_requests") for r in ok]),
        "slowdown": _mean([r.get("slowdown_pct") for r in ok]),
        "overhead": _mean([r.get("overhead_s") for r in runs]),
        "pred_tmt": _mean([r.get("predicted_total_time_ms") for r in ok]),
        "pred_dt": _mean([r.get("predicted_downtime_ms") for r in ok]),
    }


def aggregate(records):
    """{case: {strategy: cell_stats}}."""
    by = {}
    for r in records:
        by.setdefault(r["case"], {}).setdefault(r["strategy"], []).append(r)
    return dict((case, dict((s, cell_stats(runs)) for s, runs in strategies.items()))
                for case, strategies in by.items())


def oracle(cells):
    """The best fixed method of one workload: the fastest of pre-copy, post-copy and hybrid by mean TMT among
    those whose every run completed; None when none did."""
    done = [(cells[m]["tmt"], m) for m in METHODS
            if m in cells and cells[m]["runs"] and cells[m]["ok"] == cells[m]["runs"]]
    return min(done)[1] if done else None


def walm_ratios(cells):
    """WALM's mean TMT over the oracle's and over each baseline's (None where either has no completed run)."""
    w = cells.get("walm")
    best = oracle(cells)
    out = {"oracle": best, "to_oracle": None, "within": None, "to": {}}
    if not w or w["tmt"] is None:
        return out
    if best:
        out["to_oracle"] = ratio(w["tmt"], cells[best]["tmt"])
        out["within"] = w["ok"] == w["runs"] and out["to_oracle"] <= 1 + WITHIN_PCT / 100.0
    for b in BASELINES:
        if b in cells:
            out["to"][b] = ratio(w["tmt"], cells[b]["tmt"])
    return out


def order_cases(cases):
    known = [c for c in CASES if c in cases]
    return known + sorted(c for c in cases if c not in CASES)


def order_strategies(strategies):
    known = [s for s in STRATEGIES if s in strategies]
    return known + sorted(s for s in strategies if s not in STRATEGIES)


# ---------------------------------------------------------------------------------------------------------------
# Run-time adaptation and downtime limits

def adapts(r):
    """Whether walm_migrate was asked to check this run against the decision and adapt it (version 1 records:
    never)."""
    return bool(r.get("adapt"))


def adaptations_of(r):
    """The run's adaptations as walm_migrate returned them; None when the record has none (version 1, or a
    migration that failed before reporting)."""
    a = r.get("adaptations")
    return list(a) if isinstance(a, list) else None


def adaptation_count(r):
    a = adaptations_of(r)
    return None if a is None else len(a)


def first_adaptation(r):
    a = adaptations_of(r)
    return a[0] if a else None


def downtime_limit_of(r):
    """The downtime limit in effect at the run's end (a `downtime` adaptation may have raised it)."""
    return r.get("downtime_limit_ms") or DOWNTIME_LIMIT_MS


def seen_downtime_ms(r):
    """The downtime the guest saw: guest-visible where reported, else QEMU's."""
    g = r.get("guest_visible_downtime_ms")
    return g if g is not None else r.get("downtime_ms")


def over_downtime_limit(r):
    """Whether a completed run's downtime (guest-visible, else QEMU's) exceeded its downtime limit; None when the
    run did not complete or reported no downtime."""
    dt = seen_downtime_ms(r)
    if r.get("status") != "completed" or dt is None:
        return None
    return dt > downtime_limit_of(r)


def downtime_limit_counts(records):
    """Per strategy: completed runs, those over their downtime limit (as records) and those the migration's result
    itself says were over it (downtime_within_limit false: migrate_vm.yml's check, which should agree)."""
    out = {}
    for r in sorted(records, key=_run_key):
        if r.get("status") != "completed":
            continue
        c = out.setdefault(r["strategy"], {"completed": 0, "over": [], "result_over": 0})
        c["completed"] += 1
        if over_downtime_limit(r):
            c["over"].append(r)
        if r.get("downtime_within_limit") is False:
            c["result_over"] += 1
    return out


def adaptation_ratios(cells):
    """WALM's (objective urgent, adapting) mean TMT over the fixed hybrid's (switch after 1 pass), over the
    fastest fixed method's (the oracle: the fastest of the three among those that completed every run) and over
    its own decision run without adaptation (walm-static); walm-balanced's over the hybrid's and the fastest's."""
    fastest = oracle(cells)

    def tmt(s):
        c = cells.get(s)
        return c["tmt"] if c else None

    return {"fastest": fastest,
            "to_hybrid": ratio(tmt("walm"), tmt("hybrid")),
            "to_fastest": ratio(tmt("walm"), tmt(fastest)) if fastest else None,
            "to_static": ratio(tmt("walm"), tmt("walm-static")),
            "balanced_to_hybrid": ratio(tmt("walm-balanced"), tmt("hybrid")),
            "balanced_to_fastest": ratio(tmt("walm-balanced"), tmt(fastest)) if fastest else None}


def false_triggers(records):
    """Adaptations in the adapting runs of the calibration's seven workloads, whose probes read them right: there
    every adaptation is a false trigger. Returns (the runs checked, [(run, adaptation)]); a run that recorded no
    adaptations list is not checked."""
    checked = sorted((r for r in records if r["case"] in CALIBRATION_CASES and adapts(r)
                      and adaptations_of(r) is not None), key=_run_key)
    return checked, [(r, a) for r in checked for a in adaptations_of(r)]


def since_heavy_ms(r, a):
    """How long after the migration met a heavy writer an adaptation fired: its time into the migration less the
    writer's onset when that came after the start (late-heavy; writer_onset_s is relative to the start); None for a
    run that does not record an onset."""
    onset, t = r.get("writer_onset_s"), a.get("t_ms")
    if onset is None or t is None:
        return None
    return t - 1000.0 * max(0.0, onset)


def detection_rows(records):
    """One row per adaptation of every run, in run order: when it fired (ms into the migration, complete passes),
    what it did and measured, and for late-heavy how long after the writer turned heavy."""
    rows = []
    for r in sorted(records, key=_run_key):
        for a in adaptations_of(r) or []:
            measured, predicted = a.get("measured") or {}, a.get("predicted") or {}
            rows.append({
                "run": run_name(r), "case": r["case"], "strategy": r["strategy"], "action": a.get("action"),
                "t_ms": a.get("t_ms"), "pass": a.get("pass"), "reason": a.get("reason"),
                "probe_dirty_mib_s": (r.get("probe") or {}).get("dirty_rate_mib_s"),
                "predicted_dirty_mib_s": predicted.get("dirty_rate_mib_s"),
                "measured_dirty_mib_s": measured.get("dirty_rate_mib_s"),
                "remaining_mib": measured.get("remaining_mib"), "chose": r.get("chosen_method"),
                "writer_onset_s": r.get("writer_onset_s"), "since_heavy_ms": since_heavy_ms(r, a),
                "status": r.get("status"), "total_time_ms": r.get("total_time_ms")})
    return rows


def detection_summary(records):
    """Per workload and adapting strategy: runs checked, runs that adapted, their first actions, the first
    adaptation's mean time into the migration (and range) and pass, and the mean time since the writer turned
    heavy (late-heavy)."""
    out = {}
    for r in sorted(records, key=_run_key):
        if not adapts(r) or adaptations_of(r) is None:
            continue
        c = out.setdefault((r["case"], r["strategy"]), {"checked": 0, "adapted": 0, "actions": {}, "t_ms": [],
                                                        "passes": [], "since_heavy_ms": []})
        c["checked"] += 1
        a = first_adaptation(r)
        if not a:
            continue
        c["adapted"] += 1
        c["actions"][a.get("action")] = c["actions"].get(a.get("action"), 0) + 1
        c["t_ms"].append(a.get("t_ms"))
        c["passes"].append(a.get("pass"))
        c["since_heavy_ms"].append(since_heavy_ms(r, a))
    for c in out.values():
        ts = [t for t in c["t_ms"] if t is not None]
        c["t_ms_range"] = (min(ts), max(ts)) if ts else None
        for k in ("t_ms", "passes", "since_heavy_ms"):
            c[k] = _mean(c[k])
    return out


def onset_summary(records):
    """Per workload whose runs record the writer's onset (late-heavy): the onset and the probe's end relative to
    the migration's start (mean, min, max over all strategies) and the runs whose writer began before the probe
    ended (the probe saw the writer: the case did not test what it means to)."""
    out = {}
    for r in sorted(records, key=_run_key):
        if r.get("writer_onset_s") is None:
            continue
        c = out.setdefault(r["case"], {"onset": [], "probe_end": [], "early": []})
        c["onset"].append(r["writer_onset_s"])
        if r.get("probe_end_s") is not None:
            c["probe_end"].append(r["probe_end_s"])
            if r["writer_onset_s"] < r["probe_end_s"]:
                c["early"].append(run_name(r))
    return out


def run_name(r):
    return "%s-%s-%s" % (r["case"], r["strategy"], r.get("repeat", 0))


# ---------------------------------------------------------------------------------------------------------------
# Outputs: CSV, report, plots

def csv_text(records):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in sorted(records, key=_run_key):
        w.writerow(csv_row(r))
    return buf.getvalue()


def csv_row(r):
    """A run's CSV row: its scalar keys and the figures derived from its adaptations and downtime."""
    first = first_adaptation(r) or {}
    row = dict(r, adaptation_count=adaptation_count(r), first_adaptation=first.get("action"),
               first_adaptation_t_ms=first.get("t_ms"), first_adaptation_pass=first.get("pass"),
               over_downtime_limit=over_downtime_limit(r))
    return dict((k, "" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS)


def _run_key(r):
    cases, strategies = list(CASES), list(STRATEGIES)
    return (cases.index(r["case"]) if r["case"] in cases else len(cases), r["case"],
            strategies.index(r["strategy"]) if r["strategy"] in strategies else len(strategies), r["strategy"],
            r.get("repeat", 0))


def fmt(v, digits=0):
    if v is None:
        return "-"
    return ("%." + str(digits) + "f") % v


def fmt_ci(m, hw, digits=0):
    if m is None:
        return "-"
    if hw is None:
        return fmt(m, digits)
    return "%s ± %s" % (fmt(m, digits), fmt(hw, digits))


def fmt_ratio(x):
    return "-" if x is None else "%.2f" % x


def _methods_cell(c):
    return ", ".join("%s %d" % (m, n) if len(c["methods"]) > 1 else str(m)
                     for m, n in sorted(c["methods"].items(), key=lambda kv: (-kv[1], str(kv[0]))))


def report_md(records, plots=()):
    """The markdown report: per cell TMT and DT (mean ± 95 % CI), WALM against the oracle and the baselines,
    WALM's predictions against the measurements."""
    agg = aggregate(records)
    cases = order_cases(agg)
    versions = sorted(set(r.get("qemu_version") or "?" for r in records))
    memory = sorted(set(str(r.get("memory_mib")) for r in records))
    links = sorted(set("%s (%s MiB/s)" % (r.get("link_rate"), fmt(r.get("link_mib_s"))) for r in records))
    repeats = sorted(set(r.get("repeat", 0) for r in records))
    seeds = sorted(set(str(r.get("seed")) for r in records if r.get("strategy") == "random"))
    lines = [
        "# WALM benchmark",
        "",
        "%d runs; %d workloads; repeats per cell up to %d; guest RAM %s MiB; link %s; %s; random strategy seed %s. "
        "Produced by `scripts/benchmark.py` (docs/benchmark.md)." % (
            len(records), len(cases), len(repeats), ", ".join(memory), ", ".join(links), "; ".join(versions),
            ", ".join(seeds) or "-"),
        "",
        "TMT and DT: mean ± half-width of the 95 % confidence interval (Student t, n−1 degrees of freedom) over the "
        "cell's completed runs; a single run has no interval. DT is QEMU's downtime; guest-visible DT is the "
        "destination's resume less the source's stop (blank where not reported). Slowdown: the drop of the guest's "
        "own progress rate during the migration against the 5 s before.",
        "",
        "## TMT and downtime per workload and strategy",
        "",
        "| workload | strategy | method run | completed | TMT ms | DT ms | guest-visible DT ms | MiB sent | passes "
        "| post-copy requests | guest slowdown % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for s in order_strategies(agg[case]):
            c = agg[case][s]
            lines.append("| %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s |" % (
                case, s, _methods_cell(c), c["ok"], c["runs"], fmt_ci(c["tmt"], c["tmt_ci"]),
                fmt_ci(c["dt"], c["dt_ci"]), fmt(c["gvdt"]), fmt(c["mib"]), fmt(c["passes"], 1),
                fmt(c["requests"]), fmt(c["slowdown"])))
    lines += [
        "",
        "## WALM against the oracle and the baselines (TMT ratio, lower is better)",
        "",
        "Oracle: the fastest of pre-copy, post-copy and hybrid by mean TMT among those whose every run completed "
        "in this workload. Ratio = WALM's mean TMT / the other's mean TMT (completed runs). Within %d %%: WALM "
        "completed every run and its mean TMT is at most %d %% above the oracle's." % (WITHIN_PCT, WITHIN_PCT),
        "",
        "| workload | oracle | oracle TMT ms | WALM chose | WALM TMT ms | WALM / oracle | within %d %% | %s |" % (
            WITHIN_PCT, " | ".join("/ " + b for b in BASELINES)),
        "|---|---|---|---|---|---|---|%s" % ("---|" * len(BASELINES)),
    ]
    within, missed = [], []
    for case in cases:
        cells = agg[case]
        if "walm" not in cells:
            continue
        w = walm_ratios(cells)
        best = w["oracle"]
        if w["within"] is not None:
            (within if w["within"] else missed).append(case)
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            case, best or "-", fmt(cells[best]["tmt"]) if best else "-", _methods_cell(cells["walm"]),
            fmt(cells["walm"]["tmt"]), fmt_ratio(w["to_oracle"]),
            "-" if w["within"] is None else ("yes" if w["within"] else "no"),
            " | ".join(_baseline_ratio(w, cells, b) for b in BASELINES)))
    lines += ["", "WALM within %d %% of the oracle: %s. Not within: %s." % (
        WITHIN_PCT, ", ".join(within) or "none", ", ".join(missed) or "none")]
    lines += _adaptation_sections(records, agg, cases)
    lines += [
        "",
        "## WALM's prediction against the measurement",
        "",
        "Predicted by walm_decide (objective urgent) from the probe taken just before the migration, for the "
        "method it chose; overhead = walm_probe + walm_decide wall time (Ansible included).",
        "",
        "| workload | WALM chose | predicted TMT ms | measured TMT ms | error | predicted DT ms | measured DT ms "
        "| probe + decide s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        c = agg[case].get("walm")
        if not c:
            continue
        err = None
        if c["pred_tmt"] is not None and c["tmt"]:
            err = 100.0 * (c["pred_tmt"] - c["tmt"]) / c["tmt"]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            case, _methods_cell(c), fmt(c["pred_tmt"]), fmt(c["tmt"]), "-" if err is None else "%+d %%" % round(err),
            fmt(c["pred_dt"]), fmt(c["dt"]), fmt(c["overhead"], 1)))
    if plots:
        lines += ["", "## Plots", ""] + ["![%s](%s)" % (os.path.splitext(p)[0], p) for p in plots]
    return "\n".join(lines) + "\n"


def _ok(c):
    return "%d/%d" % (c["ok"], c["runs"]) if c else "-"


def _cell_tmt(cells, s):
    return fmt(cells[s]["tmt"]) if s in cells else "-"


def _adaptation_sections(records, agg, cases):
    """The report's sections on run-time adaptation and downtime limits."""
    lines = [
        "",
        "## Run-time adaptation: WALM against the fixed hybrid, the fastest fixed method and itself without it",
        "",
        "`walm`: walm_decide (objective urgent), then walm_migrate checks the migration against the decision's "
        "expectation at every pass boundary and adapts it when it diverges. `walm-static`: the same decision run "
        "as decided (adaptation off), so WALM / walm-static is what the adaptation buys. `walm-balanced`: objective "
        "balanced, adaptation on. Hybrid: the fixed hybrid (switch after %d pass). Fastest fixed: the oracle above "
        "(the fastest of the three methods among those that completed every run). Ratios of mean TMT over "
        "completed runs (lower is better)." % HYBRID_SWITCH_AFTER_PASSES,
        "",
        "| workload | WALM completed | WALM TMT ms | hybrid TMT ms | WALM / hybrid | fastest fixed | WALM / fastest "
        "fixed | walm-static completed | walm-static TMT ms | WALM / walm-static | walm-balanced completed "
        "| walm-balanced TMT ms | walm-balanced / hybrid | walm-balanced / fastest fixed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        cells = agg[case]
        if not any(s in cells for s in WALM_STRATEGIES):
            continue
        a = adaptation_ratios(cells)
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            case, _ok(cells.get("walm")), _cell_tmt(cells, "walm"), _cell_tmt(cells, "hybrid"),
            fmt_ratio(a["to_hybrid"]), a["fastest"] or "-", fmt_ratio(a["to_fastest"]), _ok(cells.get("walm-static")),
            _cell_tmt(cells, "walm-static"), fmt_ratio(a["to_static"]), _ok(cells.get("walm-balanced")),
            _cell_tmt(cells, "walm-balanced"), fmt_ratio(a["balanced_to_hybrid"]),
            fmt_ratio(a["balanced_to_fastest"])))

    counts = downtime_limit_counts(records)
    lines += [
        "",
        "## Downtime against the run's limit",
        "",
        "Completed runs whose guest-visible downtime (QEMU's where the guest-visible one is not reported) exceeded "
        "the downtime limit in effect at the end of the run (%d ms unless a `downtime` adaptation raised it). "
        "Result says over: the migration result's own `downtime_within_limit` is false (migrate_vm.yml's check of "
        "the same figures; records from before it have none)." % DOWNTIME_LIMIT_MS,
        "",
        "| strategy | completed | over the limit | result says over | runs over the limit (downtime / limit ms) |",
        "|---|---|---|---|---|",
    ]
    for s in order_strategies(counts):
        c = counts[s]
        lines.append("| %s | %d | %d | %d | %s |" % (
            s, c["completed"], len(c["over"]), c["result_over"],
            ", ".join("%s (%s / %s)" % (run_name(r), fmt(seen_downtime_ms(r), 1), fmt(downtime_limit_of(r)))
                      for r in c["over"]) or "-"))
    lines += ["", "Over the limit: %d of %d completed runs." % (
        sum(len(c["over"]) for c in counts.values()), sum(c["completed"] for c in counts.values()))]

    checked, hits = false_triggers(records)
    adapted = sorted(set(run_name(r) for r, _trigger in hits))
    lines += [
        "",
        "## False triggers: adaptations on the calibration's seven workloads",
        "",
        "The probe reads these workloads right, so a run with adaptation on (%s) should go as predicted there: "
        "every adaptation is a false trigger. Runs that recorded no adaptations list (older records) are not "
        "counted." % ", ".join(s for s, (_objective, on) in WALM_STRATEGIES.items() if on),
        "",
        "%d adaptations in %d of %d runs checked%s" % (len(hits), len(adapted), len(checked),
                                                       ":" if hits else ".")
        if checked else "No run with adaptation on recorded its adaptations here.",
    ]
    if hits:
        lines.append("")
    for r, a in hits:
        lines.append("- %s: %s at %s ms after pass %s (%s); %s, TMT %s ms" % (
            run_name(r), a.get("action"), fmt(a.get("t_ms")), a.get("pass"), a.get("reason") or "no reason given",
            r.get("status"), fmt(r.get("total_time_ms"))))

    summary = detection_summary(records)
    lines += [
        "",
        "## Adaptation: when it fired",
        "",
        "Per workload and adapting strategy, the first adaptation of each run: its time into the migration (ms, "
        "mean and range) and the passes complete by then. Since heavy (late-heavy): the time from the later of the "
        "migration's start and the writer's first write to the adaptation.",
        "",
    ]
    if summary:
        lines += ["| workload | strategy | runs checked | adapted | first action | at ms (mean) | range ms "
                  "| after pass (mean) | since heavy ms (mean) |",
                  "|---|---|---|---|---|---|---|---|---|"]
    else:
        lines.append("No run with adaptation on recorded its adaptations here.")
    for case in cases:
        for s in order_strategies(set(k[1] for k in summary if k[0] == case)):
            c = summary[(case, s)]
            lines.append("| %s | %s | %d | %d | %s | %s | %s | %s | %s |" % (
                case, s, c["checked"], c["adapted"],
                ", ".join("%s %d" % kv for kv in sorted(c["actions"].items(), key=lambda kv: (-kv[1], kv[0])))
                or "-", fmt(c["t_ms"]), "%s-%s" % tuple(fmt(t) for t in c["t_ms_range"]) if c["t_ms_range"] else "-",
                fmt(c["passes"], 1), fmt(c["since_heavy_ms"])))
    onsets = onset_summary(records)
    for case in order_cases(onsets):
        o = onsets[case]
        lines += ["", "%s: the writer began %s s (%s to %s) and the probe ended %s s (%s to %s) relative to the "
                  "migration's start, over %d runs; the writer began before the probe ended in: %s." % (
                      case, fmt(_mean(o["onset"]), 1), fmt(min(o["onset"]), 1), fmt(max(o["onset"]), 1),
                      fmt(_mean(o["probe_end"]), 1), fmt(min(o["probe_end"]), 1) if o["probe_end"] else "-",
                      fmt(max(o["probe_end"]), 1) if o["probe_end"] else "-", len(o["onset"]),
                      ", ".join(o["early"]) or "none")]
    rows = detection_rows(records)
    if rows:
        lines += [
            "",
            "Every adaptation:",
            "",
            "| run | probe dirty MiB/s | chose | action | at ms | after pass | dirty MiB/s predicted / measured "
            "| remaining MiB | since heavy ms | outcome | reason |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for x in rows:
            lines.append("| %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s, TMT %s ms | %s |" % (
                x["run"], fmt(x["probe_dirty_mib_s"], 1), x["chose"] or "-", x["action"], fmt(x["t_ms"]),
                "-" if x["pass"] is None else x["pass"], fmt(x["predicted_dirty_mib_s"], 1),
                fmt(x["measured_dirty_mib_s"], 1), fmt(x["remaining_mib"]), fmt(x["since_heavy_ms"]), x["status"],
                fmt(x["total_time_ms"]), (x["reason"] or "-").replace("|", "/")))
    return lines


def _baseline_ratio(w, cells, b):
    x = w["to"].get(b)
    if b not in cells:
        return "-"
    c = cells[b]
    if c["ok"] == 0:
        return "%s failed" % b
    mark = "" if c["ok"] == c["runs"] else " (%d/%d ok)" % (c["ok"], c["runs"])
    return fmt_ratio(x) + mark


def plot_all(records, out_dir):
    """TMT and DT bars per workload and strategy with CI error bars; one progress timeline per workload with one
    migration per method. Returns the file names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(records)
    cases = order_cases(agg)
    strategies = order_strategies(set(s for c in agg.values() for s in c))
    written = []
    for metric, ci, label, name, log in (("tmt", "tmt_ci", "total migration time (ms)", "tmt.png", False),
                                         ("dt", "dt_ci", "downtime (ms, log scale)", "downtime.png", True)):
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases) + 2), 4.5))
        width = 0.8 / max(1, len(strategies))
        for i, s in enumerate(strategies):
            xs, ys, es, failed = [], [], [], []
            for j, case in enumerate(cases):
                c = agg[case].get(s)
                x = j - 0.4 + width * (i + 0.5)
                if not c:
                    continue
                if c[metric] is None:
                    failed.append(x)
                    continue
                xs.append(x)
                ys.append(max(c[metric], 0.5) if log else c[metric])
                es.append(c[ci] or 0.0)
            bars = ax.bar(xs, ys, width, yerr=es, capsize=2, label=s)
            if failed:
                ax.plot(failed, [1.0 if log else 0.0] * len(failed), "x", color=bars.patches[0].get_facecolor()
                        if bars.patches else "k", markersize=8)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=20)
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.set_title("%s per workload and strategy (mean, 95 %% CI; x = no completed run)" % label.split(" (", maxsplit=1)[0])
        ax.legend(fontsize="small", ncol=min(6, len(strategies)))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=100)
        plt.close(fig)
        written.append(name)
    for case in cases:
        picks = timeline_runs([r for r in records if r["case"] == case])
        if not picks:
            continue
        fig, axes = plt.subplots(len(picks), 1, figsize=(8, 2.4 * len(picks) + 0.6), sharex=True, squeeze=False)
        for ax, r in zip(axes[:, 0], picks):
            _plot_timeline(ax, r)
        axes[-1, 0].set_xlabel("time since migrate (s)")
        fig.suptitle("%s: one migration per method%s" % (
            case, " and one that adapted" if any(adaptations_of(r) for r in picks) else ""))
        fig.tight_layout()
        name = "timeline-%s.png" % case
        fig.savefig(os.path.join(out_dir, name), dpi=100)
        plt.close(fig)
        written.append(name)
    return written


def timeline_runs(records):
    """One run per method for the timeline: the fixed strategy of that method first, the first completed repeat
    first; else any strategy that ran the method. Then the first run that adapted (walm first), if any."""
    picks = []
    for m in METHODS:
        runs = [r for r in records if r.get("method") == m and r.get("snapshots")]
        runs.sort(key=lambda r: (r["strategy"] != m, r.get("status") != "completed", r.get("repeat", 0)))
        if runs:
            picks.append(runs[0])
    adapted = [r for r in records if adaptations_of(r) and r.get("snapshots")]
    adapted.sort(key=lambda r: (r["strategy"] != "walm", r.get("status") != "completed", _run_key(r)))
    if adapted and adapted[0] not in picks:
        picks.append(adapted[0])
    return picks


def _plot_timeline(ax, r):
    # The setup snapshot has no remaining bytes yet (QEMU reports 0 before the first pass): leave it out.
    snaps = [s for s in r.get("snapshots") or [] if s.get("status") != "setup"]
    t = [s["t_ms"] / 1000.0 for s in snaps]
    sent = [s["transferred_bytes"] / 1048576.0 for s in snaps]
    left = [s["remaining_bytes"] / 1048576.0 for s in snaps]
    if r.get("status") == "completed" and r.get("total_time_ms") is not None:
        t.append(r["total_time_ms"] / 1000.0)
        sent.append((r.get("transferred_bytes") or 0) / 1048576.0)
        left.append(0.0)
    ax.plot(t, sent, "o-", label="transferred MiB")
    ax.plot(t, left, "s--", label="remaining MiB")
    if r.get("postcopy_started_ms") is not None:
        ax.axvline(r["postcopy_started_ms"] / 1000.0, color="grey", linestyle=":", label="post-copy")
    for i, a in enumerate(adaptations_of(r) or []):
        if a.get("t_ms") is not None:
            ax.axvline(a["t_ms"] / 1000.0, color="tab:red", linestyle="-.", alpha=0.7,
                       label="adaptation" if i == 0 else None)
            ax.annotate(a.get("action") or "?", (a["t_ms"] / 1000.0, 0), xytext=(2, 2), textcoords="offset points",
                        fontsize="x-small", color="tab:red")
    if r.get("writer_onset_s") is not None:
        ax.axvline(r["writer_onset_s"], color="tab:purple", linestyle="--", alpha=0.7, label="writer starts")
    ax.set_ylabel("MiB")
    ax.set_title("%s (strategy %s, repeat %s): %s, TMT %s ms, DT %s ms" % (
        ran_label(r), r.get("strategy"), r.get("repeat"), r.get("status"), fmt(r.get("total_time_ms")),
        fmt(r.get("downtime_ms"))), fontsize="small")
    handles, labels = ax.get_legend_handles_labels()
    series = r.get("progress_series") or []
    if series:
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in series], [p[1] for p in series], "^-", color="tab:green", alpha=0.7,
                 label="guest %s" % r.get("progress_key"))
        ax2.set_ylabel("guest %s" % r.get("progress_key"), fontsize="small")
        ax2.set_ylim(bottom=0)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize="x-small", loc="upper right")
    ax.grid(alpha=0.3)


def write_outputs(records, out_dir, plots=False):
    names = plot_all(records, out_dir) if plots else sorted(
        f for f in os.listdir(out_dir) if f.endswith(".png"))
    _atomic_write(os.path.join(out_dir, "runs.csv"), csv_text(records))
    text = report_md(records, names)
    _atomic_write(os.path.join(out_dir, "report.md"), text)
    return text


def _atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_runs(out_dir):
    d = os.path.join(out_dir, "runs")
    if not os.path.isdir(d):
        return []
    return [json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.endswith(".json")]


# ---------------------------------------------------------------------------------------------------------------
# Running on the lab

def link_mib_s_of(rate):
    """The usable bandwidth of a tbf rate in MiB/s, scaled from the lab's measured 1gbit link (LINK_MIB_S)."""
    m = re.match(r"^\s*([0-9.]+)\s*([kmgt]?)(bit|bps)?\s*$", rate or "", re.I)
    if not m:
        return None
    bits = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m.group(2).lower()]
    if (m.group(3) or "bit").lower() == "bps":
        bits *= 8
    return LINK_MIB_S * bits / 1e9


def lab_link_rate():
    """The tbf rate on the lab link as tc shows it (e.g. '1Gbit'), or None."""
    try:
        out = subprocess.run(["ip", "netns", "exec", "walm-src", "tc", "qdisc", "show", "dev", "link0"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\btbf\b.*?\brate (\S+)", out)
    return m.group(1) if m else None


def random_method(seed, case, repeat):
    """The random strategy's method for one run: uniform over the three, from the seed, the case and the repeat
    (the same run gets the same method however the benchmark is interrupted and resumed)."""
    return random.Random("%s/%s/%d" % (seed, case, repeat)).choice(METHODS)


def peer_timeout_s(memory_mib, per_gib=PEER_TIMEOUT_S_PER_GIB):
    return max(PEER_MIN_TIMEOUT_S, int(math.ceil(per_gib * memory_mib / 1024.0)))


def migration_plan(strategy, method=None, switch=None, memory_mib=512, peer_per_gib=PEER_TIMEOUT_S_PER_GIB):
    """walm_migrate's settings for one run: (method, switch_after_passes, timeout_s, on_timeout)."""
    if strategy == "peer":
        return "precopy", None, peer_timeout_s(memory_mib, peer_per_gib), "postcopy"
    m = METHOD_BY_NAME[method]
    return (method, (switch or HYBRID_SWITCH_AFTER_PASSES) if m.switch_point else None,
            POSTCOPY_TIMEOUT_S if m.postcopy else PRECOPY_TIMEOUT_S, "abort")


def migrate_vars(strategy, method, switch, timeout_s, on_timeout, expectation=None, max_downtime_limit_ms=None):
    """migrate_vm.yml's extra vars for one run. Only `walm` and `walm-balanced` adapt; the WALM strategies pass the
    decision's expectation (walm-static too, so that it differs from walm by walm_adapt alone)."""
    adapt = WALM_STRATEGIES.get(strategy, (None, False))[1]
    ev = {"walm_method": method, "walm_switch_after_passes": switch or HYBRID_SWITCH_AFTER_PASSES,
          "walm_timeout_s": timeout_s, "walm_on_timeout": on_timeout, "walm_downtime_limit_ms": DOWNTIME_LIMIT_MS,
          "walm_adapt": adapt}
    if strategy in WALM_STRATEGIES and expectation is not None:
        ev["walm_expect"] = expectation
    if not adapt and not METHOD_BY_NAME[method].postcopy and not ON_TIMEOUT_BY_NAME[on_timeout].postcopy:
        ev["walm_allow_postcopy"] = False  # a fixed pre-copy negotiates no post-copy it cannot use, as before
    if adapt and max_downtime_limit_ms:
        ev["walm_max_downtime_limit_ms"] = max_downtime_limit_ms
    return ev


def writer_onset_s(lines, workload, start_after_s, t_start):
    """When a writer started late (wset_start_after_s) began to write, in seconds relative to the migration's
    start (negative: before it): its ready line's guest clock (t_ms) plus start_after_s, on the host clock. The
    guest clock maps to the host's by the smallest host-minus-guest offset of the lines read before the migration
    (the line read soonest after it was printed; the tail polls every 50 ms). None without a ready line."""
    import walmlab
    ready, offsets = None, []
    for ts, line in lines:
        rec = walmlab.parse_line(line)
        if not rec or rec["_kind"] != workload or "t_ms" not in rec:
            continue
        if rec.get("state") == "ready" and ready is None:
            ready = rec["t_ms"] / 1000.0
        if ts < t_start:
            offsets.append(ts - rec["t_ms"] / 1000.0)
    if ready is None or not offsets:
        return None
    return round(ready + start_after_s + min(offsets) - t_start, 3)


def _decide_params(entry, link_mib_s, objective="urgent", rules=()):
    return {"probe": entry, "link_bandwidth_mib_s": link_mib_s, "link_latency_ms": 0.1,
            "downtime_limit_ms": DOWNTIME_LIMIT_MS, "allow_postcopy": True, "objective": objective,
            "time_budget_s": None, "safety_margin_pct": 10, "thresholds": {}, "rules": list(rules),
            "max_passes": 30, "model": {}}


def predictions_for(entry, link_mib_s):
    """walm_decide's engine (objective urgent) on one probe: what WALM would choose, every method's prediction."""
    from ansible_collections.walm.qemu.plugins.module_utils.decide_policy import decide
    d = decide(_decide_params(entry, link_mib_s))
    preds = dict((m, dict((k, p.get(k)) for k in ("total_time_ms", "downtime_ms", "converges", "passes",
                                                  "postcopy_faults", "guest_slowdown_pct", "switch_after_passes")))
                 for m, p in d["predictions"].items())
    return {"method": d["method"], "switch_after_passes": d.get("switch_after_passes"), "predictions": preds}


def predicted_run(entry, link_mib_s, method, switch):
    """The model's prediction of the method (and hybrid switch point) a run used."""
    from ansible_collections.walm.qemu.plugins.module_utils.decide_policy import decide
    rule = {"when": "`true`", "method": method}
    if method == "hybrid" and switch:
        rule["switch_after_passes"] = switch
    return decide(_decide_params(entry, link_mib_s, rules=[rule]))["predictions"][method]


def progress_after_and_series(tail, key, workload, t_start, t_end):
    """The guest's mean progress rate after the migration (lines later than the one covering its end) and every
    progress line as (seconds since migrate, value)."""
    import walmlab
    after, series = [], []
    for ts, line in tail.lines:
        rec = walmlab.parse_line(line)
        if not rec or rec["_kind"] != workload or key not in rec:
            continue
        series.append([round(ts - t_start, 3), float(rec[key])])
        if ts > t_end + REPORT_INTERVAL_S:
            after.append(float(rec[key]))
    return (sum(after) / len(after) if after else None), series


def run_one(case, strategy, repeat, opts):
    """One migration of one workload by one strategy; returns its record (None when the lab failed before the
    migration: nothing was measured)."""
    import walmlab
    workload, args, key = CASES[case]
    objective, _counted = WALM_STRATEGIES.get(strategy, (None, False))
    vm = "bm-%s" % case[:12]
    t_run = time.time()
    walmlab.stop_vm(vm)
    tail = None
    try:
        walmlab.start_vm(vm, workload, dict(args, disk=0), memory_mib=opts.memory_mib)
        tail = ConsoleTail(vm)
        tail.start()
        time.sleep(SETTLE_S)
        t0 = time.time()
        _ok, probe = walmlab.module("walm-src", "walm.qemu.walm_probe",
                                    {"name": vm, "state_dir": walmlab.state_dir("walm-src")})
        t_probe_end = time.time()
        probe_s = t_probe_end - t0
        entry = {"vm": probe["vms"][0]["vm"], "workload": probe["vms"][0]["workload"]}
        offline = predictions_for(entry, opts.link_mib_s)
        chosen, decide_s, decision, switch = None, None, None, None
        if objective:
            t0 = time.time()
            _ok, decision = walmlab.module("localhost", "walm.qemu.walm_decide", {
                "probe": entry, "link_bandwidth_mib_s": opts.link_mib_s, "objective": objective,
                "downtime_limit_ms": DOWNTIME_LIMIT_MS})
            decide_s = time.time() - t0
            chosen, switch = decision["method"], decision.get("switch_after_passes")
        elif strategy == "random":
            chosen = random_method(opts.seed, case, repeat)
        method, switch, timeout_s, on_timeout = migration_plan(
            strategy, chosen or strategy, switch, opts.memory_mib, opts.peer_timeout_per_gib)
        extra = migrate_vars(strategy, method, switch, timeout_s, on_timeout,
                             (decision or {}).get("expectation"), opts.max_downtime_limit_ms)
        time.sleep(GAP_S)
        proc, result = walmlab.migrate(vm, extra, check=False)
        time.sleep(AFTER_S)
    finally:
        if tail:
            tail.stop.set()
            tail.join()
        walmlab.stop_vm(vm)
    result = result or {"status": "error", "error": proc.stdout[-2000:]}
    rates, after, series, onset = (None, None, None), None, [], None
    if key and result.get("started_at"):
        t_end = result.get("finished_at") or result["started_at"]
        rates = progress_rates(tail, key, workload, result["started_at"], t_end)
        after, series = progress_after_and_series(tail, key, workload, result["started_at"], t_end)
        if args.get("wset_start_after_s"):
            onset = writer_onset_s(tail.lines, workload, args["wset_start_after_s"], result["started_at"])
    if decision:
        p = decision["predictions"][method]
    elif strategy == "peer" and not offline["predictions"]["precopy"]["converges"]:
        p = {}  # the model does not predict a pre-copy forced into post-copy at a timeout
    else:
        p = predicted_run(entry, opts.link_mib_s, method, switch)
    record = {
        "benchmark_version": BENCHMARK_VERSION, "case": case, "strategy": strategy, "repeat": repeat,
        "workload": workload, "workload_args": args, "vm": vm, "memory_mib": opts.memory_mib,
        "link_rate": opts.link_rate, "link_mib_s": opts.link_mib_s, "seed": opts.seed if strategy == "random" else None,
        "method": method, "chosen_method": chosen, "switch_after_passes": switch, "timeout_s": timeout_s,
        "on_timeout": on_timeout, "objective": objective, "adapt": extra["walm_adapt"],
        "requested_downtime_limit_ms": DOWNTIME_LIMIT_MS, "max_downtime_limit_ms": extra.get(
            "walm_max_downtime_limit_ms"),
        # The limit in effect at the end (a `downtime` adaptation raises it), QEMU's downtime-limit (less the
        # headroom walm_migrate keeps) and walm_migrate's check of the downtime against the limit.
        "downtime_limit_ms": result.get("downtime_limit_ms") or DOWNTIME_LIMIT_MS,
        "qemu_downtime_limit_ms": result.get("qemu_downtime_limit_ms"),
        "downtime_within_limit": result.get("downtime_within_limit"),
        "adaptations": result.get("adaptations"), "pass_measurements": result.get("pass_measurements"),
        "expectation": result.get("expectation") or (decision or {}).get("expectation"),
        "status": result.get("status"), "success": result.get("status") == "completed", "error": result.get("error"),
        "total_time_ms": result.get("total_time_ms"), "downtime_ms": result.get("downtime_ms"),
        "guest_visible_downtime_ms": result.get("guest_visible_downtime_ms"),
        "transferred_bytes": result.get("transferred_bytes"), "passes": result.get("passes"),
        "postcopy_requests": result.get("postcopy_requests"), "ran_postcopy": result.get("ran_postcopy"),
        "postcopy_started_ms": result.get("postcopy_started_ms"), "setup_time_ms": result.get("setup_time_ms"),
        "qemu_version": result.get("qemu_version"), "started_at": result.get("started_at"),
        "finished_at": result.get("finished_at"), "snapshots": result.get("snapshots"),
        "probe_s": round(probe_s, 2), "decide_s": None if decide_s is None else round(decide_s, 2),
        "overhead_s": None if decide_s is None else round(probe_s + decide_s, 2),
        "probe_end_s": (round(t_probe_end - result["started_at"], 3) if result.get("started_at") else None),
        "writer_onset_s": onset,
        "predicted_total_time_ms": p.get("total_time_ms") if p.get("converges", True) else None,
        "predicted_downtime_ms": p.get("downtime_ms") if p.get("converges", True) else None,
        "predicted_converges": p.get("converges"),
        "walm_choice": offline["method"] + ("/%s" % offline["switch_after_passes"]
                                            if offline["method"] == "hybrid" else ""),
        "predictions": offline["predictions"], "reasons": decision.get("reasons") if decision else None,
        "probe": entry["workload"],
        "progress_key": key, "progress_before": rates[0], "progress_during": rates[1], "progress_after": after,
        "slowdown_pct": rates[2], "progress_series": series, "wall_s": round(time.time() - t_run, 1),
    }
    return record


def run_path(out_dir, case, strategy, repeat):
    return os.path.join(out_dir, "runs", "%s-%s-%d.json" % (case, strategy, repeat))


def progress_line(i, total, r):
    adapted = ", ".join("%s@%s ms/pass %s" % (a.get("action"), fmt(a.get("t_ms")), a.get("pass"))
                        for a in adaptations_of(r) or [])
    return ("[%d/%d] %-11s %-13s rep %d -> %-8s %-9s TMT %s ms DT %s ms gvDT %s ms %s MiB passes %s req %s "
            "slowdown %s %% pred %s ms%s%s (%.0f s)" % (
                i, total, r["case"], r["strategy"], r["repeat"], ran_label(r), r["status"], fmt(r["total_time_ms"]),
                fmt(r["downtime_ms"]), fmt(r["guest_visible_downtime_ms"]),
                fmt((r["transferred_bytes"] or 0) / 1048576.0), fmt(r["passes"]), fmt(r["postcopy_requests"]),
                fmt(r["slowdown_pct"]), fmt(r["predicted_total_time_ms"]),
                " overhead %.1f s" % r["overhead_s"] if r.get("overhead_s") is not None else "",
                " adapted: %s" % adapted if adapted else "", r["wall_s"]))


def _csv_list(text, known, what):
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in known]
    if bad:
        raise SystemExit("unknown %s: %s (known: %s)" % (what, ", ".join(bad), ", ".join(known)))
    return items


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help="workloads (default: all of %(default)s)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="default: %(default)s")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per cell (default 1: the quick run; 3 for the study, 10 for the research's 10+)")
    ap.add_argument("--out", help="output directory (default "
                    "results/benchmark/v<version>-r<repeats>-<memory>mib-<link-rate>)")
    ap.add_argument("--no-setup", action="store_true", help="the lab is already up: do not run lab_setup.yml")
    ap.add_argument("--memory-mib", type=int, default=512, help="guest RAM (default 512)")
    ap.add_argument("--link-rate", default="1gbit",
                    help="tbf rate of the lab link, passed to lab_setup.yml as lab_link_rate (default 1gbit)")
    ap.add_argument("--link-mib-s", type=float,
                    help="link bandwidth given to walm_decide (default: %.0f MiB/s per gbit of --link-rate, as "
                         "measured in the lab)" % LINK_MIB_S)
    ap.add_argument("--peer-timeout-per-gib", type=float, default=PEER_TIMEOUT_S_PER_GIB,
                    help="peer policy's completion timeout per GiB of RAM (default %(default)s s)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random strategy (default 1)")
    ap.add_argument("--max-downtime-limit-ms", type=int,
                    help="ceiling for the `downtime` adaptation of walm and walm-balanced (walm_max_downtime_limit_ms;"
                         " default unset: the %d ms limit is never raised)" % DOWNTIME_LIMIT_MS)
    ap.add_argument("--report", action="store_true",
                    help="run nothing: rewrite runs.csv, report.md and the plots from OUT/runs/*.json")
    a = ap.parse_args(argv)
    if not a.out:
        a.out = os.path.join(ROOT, "results", "benchmark", "v%d-r%d-%dmib-%s" % (
            BENCHMARK_VERSION, a.repeats, a.memory_mib, a.link_rate or "unshaped"))
    os.makedirs(os.path.join(a.out, "runs"), exist_ok=True)
    if a.report:
        records = load_runs(a.out)
        if not records:
            raise SystemExit("no runs under %s" % os.path.join(a.out, "runs"))
        print(write_outputs(records, a.out, plots=True))
        return 0
    cases = _csv_list(a.cases, list(CASES), "case")
    strategies = _csv_list(a.strategies, list(STRATEGIES), "strategy")
    a.link_mib_s = a.link_mib_s or link_mib_s_of(a.link_rate) or LINK_MIB_S
    if not a.no_setup:
        import lab
        t0 = time.time()
        lab.lab_setup({"lab_link_rate": a.link_rate})
        print("lab set up (link %s) in %.0f s" % (a.link_rate, time.time() - t0), flush=True)
    seen = lab_link_rate()
    if seen and link_mib_s_of(seen) and abs(link_mib_s_of(seen) - (link_mib_s_of(a.link_rate) or 0)) > 1:
        print("warning: the lab link is shaped to %s, not %s (--no-setup?)" % (seen, a.link_rate), flush=True)
    # Repeats outermost: an interrupted study still covers every cell once before the second repeat.
    older = sorted(set(r.get("benchmark_version") for r in load_runs(a.out)) - {BENCHMARK_VERSION})
    if older:
        print("warning: %s holds runs of benchmark version %s (this is %d): they are kept and not rerun; "
              "use another --out for a study of this version" % (a.out, ", ".join(map(str, older)),
                                                                 BENCHMARK_VERSION), flush=True)
    plan = [(rep, case, s) for rep in range(a.repeats) for case in cases for s in strategies]
    todo = [p for p in plan if not os.path.exists(run_path(a.out, p[1], p[2], p[0]))]
    print("%d runs planned, %d already done, %d to run -> %s" % (len(plan), len(plan) - len(todo), len(todo),
                                                                 a.out), flush=True)
    failures = 0
    for i, (rep, case, strategy) in enumerate(todo, 1):
        try:
            r = run_one(case, strategy, rep, a)
        except Exception as e:  # the lab failed before the migration: nothing measured, nothing recorded
            failures += 1
            print("[%d/%d] %s %s rep %d: lab error, not recorded: %s" % (i, len(todo), case, strategy, rep,
                                                                         str(e)[-500:]), flush=True)
            if failures >= 3:
                raise SystemExit("three runs in a row failed before migrating: is the lab up?")
            continue
        failures = 0
        _atomic_write(run_path(a.out, case, strategy, rep), json.dumps(r, indent=2, sort_keys=True))
        print(progress_line(i, len(todo), r), flush=True)
        write_outputs(load_runs(a.out), a.out)
    print(write_outputs(load_runs(a.out), a.out, plots=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
