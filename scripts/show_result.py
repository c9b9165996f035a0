"""Print a migration result file (written by playbooks/migrate_vm.yml) as a short table."""
import json
import sys


def main(path):
    with open(path) as f:
        r = json.load(f)
    mib = (r.get("transferred_bytes") or 0) / 1048576.0
    rows = [
        ("VM", "%s: %s -> %s" % (r.get("vm"), r.get("source"), r.get("destination"))),
        ("status", r.get("status")),
        ("method", r.get("method")),
        ("total migration time (TMT)", "%s ms" % r.get("total_time_ms")),
        ("downtime (DT)", "%s ms" % r.get("downtime_ms")),
        ("setup time", "%s ms" % r.get("setup_time_ms")),
        ("transferred", "%.1f MiB" % mib),
        ("passes", r.get("passes")),
        ("on destination", r.get("destination_status")),
        ("QEMU", r.get("qemu_version")),
    ]
    if r.get("error"):
        rows.append(("error", r["error"]))
    width = max(len(k) for k, _value in rows)
    for k, v in rows:
        print("%-*s  %s" % (width, k, v))
    return 0 if r.get("status") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
