"""Evacuation benchmark: how long playbooks/evacuate_host.yml takes to empty a host of mixed VMs, against the
physical limit (the non-zero memory of all VMs over the source's link), for each policy and concurrency.

On the lab (set up by the script itself, as scripts/demo.sh does): six guests on walm-src - idle, CPU-bound, a light
and a heavy writer, a read-mostly large working set, a network sender - go to walm-dst and walm-dst2, each of which
already runs two VMs on the tap names the first two use on walm-src. Two cores cannot carry six busy 512 MiB TCG
guests and the playbook beside them, so the guests are smaller (256 MiB) and the writers paced (see VMS). Each run
checks that every guest came through: it runs on the destination the plan gave it, its workload counters go on past
where they were and its disk check reads back the records written before the move, with no error on its console.

    .venv/bin/python scripts/compare_evacuation.py --out results/evacuation-compare
    .venv/bin/python scripts/compare_evacuation.py --policies walm --concurrency 1 --repeats 1   # one run
    [--timeout-s 90] [--teardown]   # walm_timeout_s of the evacuations; tear the lab down at the end

Writes OUT/runs.json (every run: the evacuation's results file, the checks), OUT/table.md (per policy and
concurrency: host-empty time, migrations, probe and planning, overhead per VM, ratio to the physical limit) and
OUT/timeline-POLICY-cN.png (one row per VM: probe, prepare, migrate, switchover, cleanup).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, ".collections"))

import lab  # noqa: E402
from walmlab import console_log, kernel_trouble, parse_console, progress  # noqa: E402

AP = str(lab.VENV_BIN / "ansible-playbook")
SOURCE, DESTINATIONS = "walm-src", ("walm-dst", "walm-dst2")
# The lab link as measured (docs/lab.md): 1 Gbit/s shaped, 114 MiB/s of migration stream.
LINK_MIB_S = 114.0
MEMORY_MIB = 256
# name: (workload, kernel arguments, tap, MAC, address). The writers are paced so that six guests and Ansible share
# two cores: the heavy one still writes faster than the link (pre-copy cannot converge), the light one slowly.
VMS = {
    "e6-idle": ("idle", {}, "tap10", "52:54:00:77:01:01", "10.77.0.131/24"),
    "e6-cpu": ("cpu", {}, "tap11", "52:54:00:77:01:02", "10.77.0.132/24"),
    "e6-light": ("wset", {"wset_mib": 32, "rate_mib_s": 8}, "tap12", "52:54:00:77:01:03", "10.77.0.133/24"),
    "e6-heavy": ("wset", {"wset_mib": 128, "rate_mib_s": 150}, "tap13", "52:54:00:77:01:04", "10.77.0.134/24"),
    "e6-rset": ("rset", {"wset_mib": 96, "rate_mib_s": 64}, "tap14", "52:54:00:77:01:05", "10.77.0.135/24"),
    "e6-net": ("net", {"net_rate_mbit": 10}, "tap15", "52:54:00:77:01:06", "10.77.0.136/24"),
}
# Already on each destination, on the tap names e6-idle and e6-cpu have on the source. destination: {name: ...}.
BYSTANDERS = {
    "walm-dst": {"e6-by0": ("idle", {}, "tap10", "52:54:00:77:01:11", "10.77.0.141/24"),
                 "e6-by1": ("idle", {}, "tap11", "52:54:00:77:01:12", "10.77.0.142/24")},
    "walm-dst2": {"e6-by2": ("idle", {}, "tap10", "52:54:00:77:01:13", "10.77.0.143/24"),
                  "e6-by3": ("idle", {}, "tap11", "52:54:00:77:01:14", "10.77.0.144/24")},
}
ALL_BYSTANDERS = dict((n, spec) for on_host in BYSTANDERS.values() for n, spec in on_host.items())
# The guest check of a VM the policy left on the source: a result of the run, not a broken guest.
NOT_MOVED = ["not moved"]
PHASES = (("probe", "#9e9e9e"), ("prepare", "#64b5f6"), ("migrate", "#43a047"), ("switchover", "#e53935"),
          ("cleanup", "#ffb300"))


def playbook(path, extra, timeout=1800):
    return subprocess.run([AP, path, "-e", json.dumps(extra)], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout, check=False)


def vms_playbook(tmp):
    """A playbook that sets lab VMs to a state on one host: walm.qemu.lab_vm for each entry of `vms`."""
    path = os.path.join(tmp, "vms.yml")
    with open(path, "w") as f:
        f.write("""---
- name: Lab VMs
  hosts: "{{ host }}"
  gather_facts: false
  tasks:
    - name: Each VM
      ansible.builtin.include_role:
        name: walm.qemu.lab_vm
      vars:
        lab_vm_name: "{{ item.name }}"
        lab_vm_state: "{{ state }}"
        lab_vm_workload: "{{ item.workload }}"
        lab_vm_workload_args: "{{ item.args }}"
        lab_vm_tap: "{{ item.tap }}"
        lab_vm_mac: "{{ item.mac }}"
        lab_vm_ip: "{{ item.ip }}"
        lab_vm_memory_mib: "{{ item.memory_mib }}"
      loop: "{{ vms }}"
      loop_control:
        label: "{{ item.name }}"
""")
    return path


def set_vms(pb, host, state, vms, memory_mib):
    spec = [{"name": n, "workload": w, "args": a, "tap": t, "mac": m, "ip": ip, "memory_mib": memory_mib}
            for n, (w, a, t, m, ip) in sorted(vms.items())]
    proc = playbook(pb, {"host": host, "state": state, "vms": spec})
    if proc.returncode != 0:
        raise SystemExit("setting %s %s on %s failed:\n%s" % (", ".join(sorted(vms)), state, host,
                                                              proc.stdout[-4000:]))


def counters(host, vm):
    """(last workload seq, last disk record written) on a host's console; None when absent."""
    return progress(host, vm, VMS[vm][0])


def wait_for(predicate, timeout_s):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    return predicate()


def guest_check(vm, before, destination):
    """What the guest shows on its destination after the move: its counters past `before`, no errors. A list of
    problems."""
    seq_before, disk_before = before
    workload = VMS[vm][0]
    log = console_log(destination, vm)
    went_on = wait_for(lambda: len([r for r in parse_console(log, workload) if r.get("seq", 0) > seq_before]) >= 3,
                       90)
    disk_ok = wait_for(lambda: [r for r in parse_console(log, "disk") if r.get("written", 0) > disk_before], 90)
    problems = []
    if not went_on:
        problems.append("its %s counters did not go on past %s" % (workload, seq_before))
    if not disk_ok:
        problems.append("no disk check after the move")
    errors = [r for r in parse_console(log, workload) + parse_console(log, "disk") if r.get("errors", 0)]
    if errors:
        problems.append("errors on its console: %s" % errors[:2])
    if kernel_trouble(log):
        problems.append("kernel trouble: %s" % kernel_trouble(log))
    return problems


def run_one(pb, policy, concurrency, repeat, out_dir, memory_mib, timeout_s):
    everything = dict(VMS, **ALL_BYSTANDERS)
    for host in (SOURCE,) + DESTINATIONS:
        set_vms(pb, host, "stopped", everything, memory_mib)
    for host in (SOURCE,) + DESTINATIONS:
        for vm in everything:
            if os.path.exists(console_log(host, vm)):
                os.remove(console_log(host, vm))
    for host in DESTINATIONS:
        set_vms(pb, host, "started", BYSTANDERS[host], 128)
    set_vms(pb, SOURCE, "started", VMS, memory_mib)
    busy = wait_for(lambda: all((counters(SOURCE, vm)[0] or 0) >= 3 and counters(SOURCE, vm)[1]
                                for vm in VMS), 180)
    if not busy:
        raise SystemExit("the guests did not all start working on %s: %s"
                         % (SOURCE, dict((vm, counters(SOURCE, vm)) for vm in VMS)))
    before = dict((vm, counters(SOURCE, vm)) for vm in VMS)
    result_file = os.path.join(out_dir, "evacuation-%s-c%d-r%d.json" % (policy, concurrency, repeat))
    t0 = time.time()
    proc = playbook("playbooks/evacuate_host.yml", {
        "walm_source": SOURCE, "walm_destinations": list(DESTINATIONS), "walm_evacuate_policy": policy,
        "walm_concurrency": concurrency, "walm_timeout_s": timeout_s, "walm_result_file": result_file})
    wall_s = time.time() - t0
    with open(result_file) as f:
        report = json.load(f)
    went_to = dict((r["vm"], r.get("destination")) for r in report["summary"])
    checks = dict((vm, guest_check(vm, before[vm], went_to[vm]) if vm in report["totals"]["completed"] else
                   NOT_MOVED) for vm in VMS)
    with open(os.path.join(out_dir, "evacuation-%s-c%d-r%d.log" % (policy, concurrency, repeat)), "w") as f:
        f.write(proc.stdout)
    return {"policy": policy, "concurrency": concurrency, "repeat": repeat, "returncode": proc.returncode,
            "playbook_wall_s": round(wall_s, 2), "report": report, "guest_checks": checks}


def figures(run):
    report = run["report"]
    totals = report["totals"]
    order = report["plan"]["order"]
    nonzero = [c.get("nonzero_mib") for c in order]
    limit_s = sum(n if n is not None else c["memory_mib"] for n, c in zip(nonzero, order)) / LINK_MIB_S
    empty = totals.get("time_to_empty_s")
    probe_plan_s = report["migrations_started_at"] - report["started_at"]
    migrations = totals.get("measured_migration_time_s") or 0.0
    n = totals["vms"]
    return {
        "policy": run["policy"], "concurrency": run["concurrency"], "repeat": run["repeat"],
        "vms": n, "moved": len(totals["completed"]),
        "intact": sum(1 for p in run["guest_checks"].values() if not p),
        "host_empty_s": empty, "migrations_s": migrations, "probe_plan_s": round(probe_plan_s, 2),
        "physical_limit_s": round(limit_s, 2),
        "empty_over_limit": round(empty / limit_s, 2) if empty and limit_s else None,
        "bound_s": round(1.5 * limit_s + 5, 2),
        "overhead_per_vm_s": round((empty - migrations) / n, 2) if empty and n else None,
        "nonzero_estimated": any(v is None for v in nonzero),
    }


def table(rows):
    head = ("policy", "conc", "moved", "intact", "host empty s", "migrations s", "probe+plan s", "physical limit s",
            "empty / limit", "1.5 x limit + 5 s", "overhead per VM s")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in rows:
        out.append("| " + " | ".join(str(x) for x in (
            f["policy"], f["concurrency"], "%d/%d" % (f["moved"], f["vms"]), "%d/%d" % (f["intact"], f["vms"]),
            f["host_empty_s"], f["migrations_s"], f["probe_plan_s"], f["physical_limit_s"], f["empty_over_limit"],
            f["bound_s"], f["overhead_per_vm_s"])) + " |")
    return "\n".join(out)


def vm_table(runs):
    out = ["| policy | conc | # | VM | class | method | wave | pred TMT s | TMT s | DT ms | status | intact |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        waves = dict((c["name"], c["wave"]) for c in run["report"]["plan"]["order"])
        for row in sorted(run["report"]["summary"], key=lambda x: x["position"]):
            out.append("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                run["policy"], run["concurrency"], row["position"], row["vm"], row["class"], row["method"],
                waves.get(row["vm"], "-"),
                "-" if row["predicted_total_time_ms"] is None else "%.2f" % (row["predicted_total_time_ms"] / 1e3),
                "-" if row["total_time_ms"] is None else "%.2f" % (row["total_time_ms"] / 1e3),
                "-" if row["downtime_ms"] is None else row["downtime_ms"], row["status"],
                "yes" if not run["guest_checks"].get(row["vm"]) else "; ".join(run["guest_checks"][row["vm"]])))
    return "\n".join(out)


def segments(report):
    """Per VM, in plan order: (name, [(phase, start_s, length_s)]) relative to the evacuation's start."""
    t0 = report["started_at"]
    probe_end = report["migrations_started_at"] - t0
    rows = []
    by_vm = dict((r["vm"], r) for r in report["results"])
    for c in report["plan"]["order"]:
        r = by_vm.get(c["name"])
        segs = [("probe", 0.0, probe_end)]
        if r:
            if r.get("prepare_started_at") and r.get("prepared_at"):
                segs.append(("prepare", r["prepare_started_at"] - t0, r["prepared_at"] - r["prepare_started_at"]))
            start = r["started_at"] - t0
            tmt = (r.get("total_time_ms") or 0) / 1000.0
            down = (r.get("downtime_ms") or 0) / 1000.0
            segs.append(("migrate", start, max(0.0, tmt - down)))
            segs.append(("switchover", start + tmt - down, down))
            segs.append(("cleanup", start + tmt, max(0.0, r["finished_at"] - r["started_at"] - tmt)))
        rows.append((c["name"], segs))
    return rows


def plot(run, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = segments(run["report"])
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    for i, (name, segs) in enumerate(rows):
        for phase, start, length in segs:
            ax.barh(i, length, left=start, color=dict(PHASES)[phase], edgecolor="none")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n for n, _row in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds into the evacuation")
    f = figures(run)
    ax.set_title("%s, concurrency %d: host empty after %ss (physical limit %ss)" % (
        run["policy"], run["concurrency"], f["host_empty_s"], f["physical_limit_s"]))
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for _phase, c in PHASES], labels=[p for p, _color in PHASES],
              loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def qemu_version():
    out = subprocess.run(["qemu-system-x86_64", "--version"], stdout=subprocess.PIPE, universal_newlines=True,
                         check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "evacuation-compare"))
    ap.add_argument("--policies", default="walm,naive")
    ap.add_argument("--concurrency", default="1,2")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--memory-mib", type=int, default=MEMORY_MIB)
    ap.add_argument("--timeout-s", type=int, default=90, help="walm_timeout_s of each evacuation")
    ap.add_argument("--teardown", action="store_true", help="tear the lab down at the end")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = []
    lab.lab_setup()
    with tempfile.TemporaryDirectory(prefix="walm-evac-") as tmp:
        pb = vms_playbook(tmp)
        try:
            for repeat in range(1, args.repeats + 1):
                for policy in args.policies.split(","):
                    for conc in [int(c) for c in args.concurrency.split(",")]:
                        run = run_one(pb, policy, conc, repeat, args.out, args.memory_mib, args.timeout_s)
                        runs.append(run)
                        f = figures(run)
                        print("%s c%d r%d: %s" % (policy, conc, repeat, json.dumps(f)), flush=True)
                        plot(run, os.path.join(args.out, "timeline-%s-c%d.png" % (policy, conc)))
        finally:
            everything = dict(VMS, **ALL_BYSTANDERS)
            for host in (SOURCE,) + DESTINATIONS:
                set_vms(pb, host, "stopped", everything, args.memory_mib)
            if args.teardown:
                lab.lab_teardown()
    rows = [figures(r) for r in runs]
    header = ("Evacuation of %d VMs (%s) from %s into %s (already running %s on the same tap names); %s, TCG, "
              "%d MiB guests, link %.0f MiB/s. Physical limit: the VMs' non-zero memory (probe) over the link."
              % (len(VMS), ", ".join(sorted(VMS)), SOURCE, " and ".join(DESTINATIONS),
                 ", ".join(sorted(ALL_BYSTANDERS)), qemu_version(), args.memory_mib, LINK_MIB_S))
    with open(os.path.join(args.out, "runs.json"), "w") as f:
        json.dump({"qemu": qemu_version(), "runs": runs, "figures": rows}, f, indent=1)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(header + "\n\n" + table(rows) + "\n\n" + vm_table(runs) + "\n")
    print(header)
    print(table(rows))
    stayed = [(r["policy"], r["concurrency"], vm) for r in runs for vm, p in r["guest_checks"].items()
              if p == NOT_MOVED]
    bad = [(r["policy"], r["concurrency"], vm, p) for r in runs for vm, p in r["guest_checks"].items()
           if p and p != NOT_MOVED]
    for s in stayed:
        print("not moved (still on %s): %s c%d %s" % ((SOURCE,) + s))
    for b in bad:
        print("NOT INTACT: %s c%d %s: %s" % b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
