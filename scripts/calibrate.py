#!/usr/bin/env python3
"""Calibrate walm_decide on the lab: for each workload, probe it, ask walm_decide, then migrate it with every
method and record predicted against measured (TMT, downtime, post-copy page requests, guest slowdown).

Run from the repository root as root after scripts/install.sh (it sets the lab up itself):

    .venv/bin/python scripts/calibrate.py [--cases idle,cpu,...] [--methods precopy,postcopy,hybrid]
                                          [--repeats 1] [--out results/calibration]

Each run is written as JSON under --out as soon as it finishes (a crashed run loses nothing finished) and the
table is rewritten to --out/calibration.md after every run.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, ".collections"))

import lab  # noqa: E402
import walmlab  # noqa: E402  (the test helpers: playbooks and modules over SSH, console parsing)
from ansible_collections.walm.qemu.plugins.module_utils.decide_policy import decide  # noqa: E402

LINK_MIB_S = 114.0  # the lab link as measured: 119.7 MB/s (docs/lab.md)

# name: (workload, kernel args, progress key of the workload's console line, pre-copy timeout s)
CASES = {
    "idle": ("idle", {}, None),
    "cpu": ("cpu", {}, "eps"),
    "wset-light": ("wset", {"wset_mib": 128, "rate_mib_s": 10}, "rate_mib_s"),
    "wset-medium": ("wset", {"wset_mib": 256, "rate_mib_s": 40}, "rate_mib_s"),
    "wset-heavy": ("wset", {"wset_mib": 256, "rate_mib_s": 200}, "rate_mib_s"),
    "rset-large": ("rset", {"wset_mib": 384, "rate_mib_s": 256, "write_pct": 1}, "read_mib_s"),
    "net": ("net", {"net_rate_mbit": 100}, "rate_mbit"),
}
METHODS = ("precopy", "postcopy", "hybrid")


class ConsoleTail(threading.Thread):
    """Timestamps every WALM line of the VM's consoles on both hosts with the host clock as it appears."""

    def __init__(self, vm):
        super().__init__(daemon=True)
        self.paths = [walmlab.console_log(h, vm) for h in ("walm-src", "walm-dst")]
        self.offsets = {p: 0 for p in self.paths}
        self.lines = []  # (host time, line)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            now = time.time()
            for p in self.paths:
                try:
                    with open(p, errors="replace") as f:
                        f.seek(self.offsets[p])
                        data = f.read()
                        self.offsets[p] = f.tell()
                except (IOError, OSError):
                    continue
                for line in data.splitlines():
                    if line.startswith("WALM "):
                        self.lines.append((now, line))
            self.stop.wait(0.05)


def progress_rates(tail, key, workload, t_start, t_end):
    """Mean of the workload's per-interval rate before the migration and while it ran."""
    before, during = [], []
    for ts, line in tail.lines:
        rec = walmlab.parse_line(line)
        if not rec or rec["_kind"] != workload or key not in rec:
            continue
        value = float(rec[key])
        if ts < t_start:
            before.append(value)
        elif ts <= t_end:
            during.append(value)
    before = before[-5:]
    mean_before = sum(before) / len(before) if before else None
    # A guest that printed nothing while migrating made no visible progress then.
    mean_during = sum(during) / len(during) if during else 0.0
    slowdown = None
    if mean_before:
        slowdown = max(0.0, 100.0 * (1 - mean_during / mean_before))
    return mean_before, mean_during, slowdown


def probe_and_decide(vm):
    _, probe = walmlab.module("walm-src", "walm.qemu.walm_probe", {"name": vm,
                                                                   "state_dir": walmlab.state_dir("walm-src")})
    entry = probe["vms"][0]
    decisions = {}
    for objective in ("urgent", "balanced"):
        # walm_decide is pure computation: call its engine with the module's defaults.
        params = {"probe": entry, "link_bandwidth_mib_s": LINK_MIB_S, "link_latency_ms": 0.1,
                  "downtime_limit_ms": 300, "allow_postcopy": True, "objective": objective, "time_budget_s": None,
                  "safety_margin_pct": 10, "thresholds": {}, "rules": [], "max_passes": 30, "model": {}}
        d = decide(params)
        decisions[objective] = {k: d.get(k) for k in ("method", "reasons", "workload_class", "predictions",
                                                       "meets_goal")}
    return entry, decisions


def run_one(case, method, repeat, out_dir):
    workload, args, key = CASES[case]
    vm = "cal-%s" % case[:12]
    walmlab.stop_vm(vm)
    walmlab.start_vm(vm, workload, dict(args, disk=0))
    tail = ConsoleTail(vm)
    tail.start()
    time.sleep(6)  # let the workload settle before measuring
    t_probe = time.time()
    probe, decisions = probe_and_decide(vm)
    overhead_s = time.time() - t_probe
    time.sleep(2)
    proc, result = walmlab.migrate(vm, {"walm_method": method, "walm_timeout_s": 30, "walm_on_timeout": "abort",
                                        "walm_switch_after_passes":
                                            (decisions["balanced"]["predictions"]["hybrid"].get("switch_after_passes")
                                             or 2)}, check=False)
    time.sleep(3)
    tail.stop.set()
    tail.join()
    walmlab.stop_vm(vm)
    result = result or {"status": "error", "error": proc.stdout[-2000:]}
    rates = (None, None, None)
    if key and result.get("started_at"):
        rates = progress_rates(tail, key, workload, result["started_at"], result["finished_at"])
    record = {
        "case": case, "method": method, "repeat": repeat, "workload": workload, "workload_args": args,
        "status": result.get("status"), "error": result.get("error"),
        "total_time_ms": result.get("total_time_ms"), "downtime_ms": result.get("downtime_ms"),
        "transferred_bytes": result.get("transferred_bytes"), "passes": result.get("passes"),
        "postcopy_requests": result.get("postcopy_requests"), "ran_postcopy": result.get("ran_postcopy"),
        "switch_after_passes": result.get("switch_after_passes"), "qemu_version": result.get("qemu_version"),
        "progress_key": key, "progress_before": rates[0], "progress_during": rates[1], "slowdown_pct": rates[2],
        "probe": probe.get("workload"), "decisions": decisions, "probe_decide_overhead_s": round(overhead_s, 2),
    }
    with open(os.path.join(out_dir, "%s-%s-%d.json" % (case, method, repeat)), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return record


def fmt(v, digits=0):
    if v is None:
        return "-"
    return ("%." + str(digits) + "f") % v


def table(records):
    lines = ["| case | probe: dirty MiB/s, cpu %, net MiB/s | chosen (urgent / balanced) | method | predicted TMT ms "
             "| measured TMT ms | DT ms | pred. DT ms | passes | post-copy requests | guest slowdown % | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        w = r["probe"] or {}
        d = r["decisions"]
        pred = d["urgent"]["predictions"][r["method"]]
        lines.append("| %s | %s, %s, %s | %s / %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["case"], fmt(w.get("dirty_rate_mib_s"), 1), fmt(w.get("cpu_percent")),
            fmt((w.get("net_rx_mib_s") or 0) + (w.get("net_tx_mib_s") or 0), 1),
            d["urgent"]["method"], d["balanced"]["method"], r["method"],
            fmt(pred.get("total_time_ms")), "" if pred.get("converges", True) else " (no conv.)",
            fmt(r["total_time_ms"]), fmt(r["downtime_ms"]), fmt(pred.get("downtime_ms")), r["passes"],
            r["postcopy_requests"], fmt(r["slowdown_pct"]), r["status"]))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "calibration"))
    ap.add_argument("--no-setup", action="store_true", help="the lab is already up")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if not a.no_setup:
        lab.lab_setup()
    records = []
    for case in a.cases.split(","):
        for method in a.methods.split(","):
            for rep in range(a.repeats):
                path = os.path.join(a.out, "%s-%s-%d.json" % (case, method, rep))
                if os.path.exists(path):
                    records.append(json.load(open(path)))
                    continue
                r = run_one(case, method, rep, a.out)
                records.append(r)
                print("%-12s %-8s %s TMT %s ms DT %s ms requests %s slowdown %s %%" % (
                    case, method, r["status"], r["total_time_ms"], r["downtime_ms"], r["postcopy_requests"],
                    fmt(r["slowdown_pct"])), flush=True)
                with open(os.path.join(a.out, "calibration.md"), "w") as f:
                    f.write(table(records))
    with open(os.path.join(a.out, "calibration.md"), "w") as f:
        f.write(table(records))
    print(table(records))


if __name__ == "__main__":
    main()
