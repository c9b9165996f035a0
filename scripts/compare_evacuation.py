#!/usr/bin/env python3
"""Time-to-empty of walm-src under the walm plan and the naive plan (listing order, all pre-copy), same VMs.

For each policy: three fresh guests on walm-src (idle, cpu, and a 256 MiB writer at 200 MiB/s; the integration
test's set, tests/integration/walmlab.py EVACUATION_VMS), evacuated to walm-dst with playbooks/evacuate_host.yml,
then stopped. Run from the repository root as root after scripts/install.sh; it sets the lab up itself:

    .venv/bin/python scripts/compare_evacuation.py [--policies naive,walm] [--timeout-s 60] \\
        [--out results/evacuation] [--teardown]

Writes OUT/POLICY.json (evacuate_host.yml's results file) and OUT/comparison.md.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import lab  # noqa: E402
import walmlab  # noqa: E402


def fresh_vms():
    for vm in sorted(walmlab.EVACUATION_VMS):
        walmlab.stop_vm(vm)
        for host in ("walm-src", "walm-dst"):
            path = walmlab.console_log(host, vm)
            if os.path.exists(path):
                os.remove(path)
    names = walmlab.start_evacuation_vms("walm-src")
    for vm in names:
        walmlab.wait_until(lambda: (walmlab.progress("walm-src", vm)[0] or 0) >= 5, 120, "%s progress" % vm)
    return names


def run(policy, timeout_s, out):
    names = fresh_vms()
    t0 = time.time()
    proc, report = walmlab.evacuate({"walm_evacuate_policy": policy, "walm_timeout_s": timeout_s}, check=False)
    wall_s = time.time() - t0
    where = dict((vm, "walm-dst" if walmlab.pid_running("walm-dst", vm) else
                  "walm-src" if walmlab.pid_running("walm-src", vm) else "gone") for vm in names)
    trouble = dict((vm, walmlab.kernel_trouble(walmlab.console_log(h, vm))) for vm in names
                   for h in ("walm-src", "walm-dst") if walmlab.kernel_trouble(walmlab.console_log(h, vm)))
    for vm in names:
        walmlab.stop_vm(vm)
    if report is None:
        raise SystemExit("%s: no results file; playbook output:\n%s" % (policy, proc.stdout[-4000:]))
    report.update(playbook_rc=proc.returncode, playbook_wall_s=round(wall_s, 1), vm_is_on_after=where,
                  kernel_trouble=trouble)
    with open(os.path.join(out, policy + ".json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    print("\n".join(report["table"]))
    return report


def _s(ms):
    return "-" if ms is None else "%.2f" % (ms / 1000.0)


def markdown(reports, timeout_s):
    lines = ["# Evacuation of walm-src: walm plan against naive plan", "",
             "Three fresh guests per policy on walm-src (idle; cpu; wset 256 MiB at 200 MiB/s), evacuated to "
             "walm-dst by `playbooks/evacuate_host.yml` over the lab's 1 Gbit/s link (~114 MiB/s), TCG, "
             "walm_timeout_s=%s with on_timeout abort. Produced by `scripts/compare_evacuation.py`." % timeout_s, "",
             "Times from the start of the playbook (discovery, probe, decisions and planning included); the "
             "migrations phase starts at the first migration. A timed-out pre-copy counts with how long it ran.", "",
             "| policy | time to empty s | last VM done s | migrations phase s | playbook wall s | sum of migration "
             "times s | host empty | left on walm-src |",
             "|---|---|---|---|---|---|---|---|"]
    for policy, r in reports.items():
        t = r["totals"]
        lines.append("| %s | %s | %s | %s | %s | %.2f | %s | %s |" % (
            policy, "-" if t["time_to_empty_s"] is None else "%.1f" % t["time_to_empty_s"],
            "-" if t["time_until_last_finished_s"] is None else "%.1f" % t["time_until_last_finished_s"],
            "-" if t["migration_phase_s"] is None else "%.1f" % t["migration_phase_s"], r["playbook_wall_s"],
            t["measured_migration_time_s"], "yes" if t["host_empty"] else "NO",
            ", ".join(r["still_running_on_source"]) or "nothing"))
    lines += ["", "| policy | # | VM | class | method | predicted TMT s | TMT s | predicted DT ms | DT ms | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for policy, r in reports.items():
        for row in sorted(r["summary"], key=lambda x: x["position"]):
            lines.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                policy, row["position"], row["vm"], row["class"], row["method"],
                _s(row["predicted_total_time_ms"]),
                _s(row["total_time_ms"]) if row["total_time_ms"] is not None
                else "(%s ran)" % _s(row.get("elapsed_ms")),
                "-" if row["predicted_downtime_ms"] is None else row["predicted_downtime_ms"],
                "-" if row["downtime_ms"] is None else row["downtime_ms"], row["status"]))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="naive,walm")
    ap.add_argument("--timeout-s", type=float, default=60)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "evacuation"))
    ap.add_argument("--teardown", action="store_true", help="tear the lab down at the end")
    ap.add_argument("--report-only", action="store_true", help="rewrite comparison.md from OUT/POLICY.json")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.report_only:
        reports = dict((p, json.load(open(os.path.join(a.out, p + ".json")))) for p in a.policies.split(","))
        with open(os.path.join(a.out, "comparison.md"), "w") as f:
            f.write(markdown(reports, a.timeout_s))
        print(markdown(reports, a.timeout_s))
        return
    lab.lab_setup()
    try:
        reports = {}
        for policy in a.policies.split(","):
            reports[policy] = run(policy, a.timeout_s, a.out)
        with open(os.path.join(a.out, "comparison.md"), "w") as f:
            f.write(markdown(reports, a.timeout_s))
        print(markdown(reports, a.timeout_s))
    finally:
        if a.teardown:
            lab.lab_teardown()


if __name__ == "__main__":
    main()
