"""playbooks/evacuate_host.yml into two destinations: the three evacuation guests leave walm-src for walm-dst and
walm-dst2, two migrations at a time, and come through intact. Both destinations already run a VM of their own on
the tap names the guests use on walm-src, as real destinations do; each keeps its tap and runs on.
"""

import pytest

from walmlab import (EVACUATION_VMS, assert_guest_went_on, evacuate, module, pid_running, qmp_status, reset_vm,
                     start_evacuation_vms, start_vm, state_dir, stop_vm, wait_busy)

pytestmark = pytest.mark.lab

DESTINATIONS = ("walm-dst", "walm-dst2")
# One VM on each destination on tap0 and one on tap1: the names ev-idle and ev-cpu have on walm-src.
BYSTANDERS = {
    "sp-by-dst": ("walm-dst", "tap0", "52:54:00:77:00:75", "10.77.0.115/24"),
    "sp-by-dst2": ("walm-dst2", "tap1", "52:54:00:77:00:76", "10.77.0.116/24"),
}


@pytest.fixture(scope="module")
def spread_vms(lab):
    names = sorted(EVACUATION_VMS)
    for vm in names + sorted(BYSTANDERS):
        reset_vm(vm)
    for vm, (host, tap, mac, ip) in sorted(BYSTANDERS.items()):
        start_vm(vm, "idle", host=host, tap=tap, mac=mac, ip=ip, memory_mib=256)
    start_evacuation_vms("walm-src")
    try:
        yield names
    finally:
        for vm in names + sorted(BYSTANDERS):
            stop_vm(vm)


def test_evacuation_into_two_destinations(spread_vms):
    before = wait_busy("walm-src", spread_vms)

    proc, report = evacuate({"walm_timeout_s": 120, "walm_concurrency": 2}, destinations=DESTINATIONS)

    assert proc.returncode == 0, proc.stdout[-6000:]
    print("\n".join(report["table"]))
    totals = report["totals"]
    assert totals["host_empty"] is True and totals["failed"] == [], totals
    rows = dict((r["vm"], r) for r in report["summary"])
    assert sorted(rows) == spread_vms and all(r["status"] == "completed" for r in rows.values()), rows
    # The plan spreads the guests by free memory: both destinations take some.
    went_to = dict((vm, r["destination"]) for vm, r in rows.items())
    assert set(went_to.values()) == set(DESTINATIONS), went_to

    for vm, host in sorted(went_to.items()):
        assert pid_running(host, vm) and qmp_status(host, vm) == "running", (vm, host)
        assert not pid_running("walm-src", vm), vm
        assert not any(pid_running(other, vm) for other in DESTINATIONS if other != host), vm
    for vm, host in sorted(went_to.items()):
        assert_guest_went_on(host, vm, before[vm])

    # Each destination's VMs hold distinct taps, its own VM kept the one it had, and it runs on.
    for host in DESTINATIONS:
        _ok, info = module(host, "walm.qemu.walm_vm_info", {"state_dir": state_dir(host)})
        taps = dict((v["name"], v["definition"]["nics"][0]["tap"]) for v in info["vms"]
                    if v.get("definition") and v.get("status") == "running")
        mine = [vm for vm, spec in BYSTANDERS.items() if spec[0] == host]
        assert [taps[vm] for vm in mine] == [BYSTANDERS[vm][1] for vm in mine], taps
        assert len(set(taps.values())) == len(taps), (host, taps)
        assert sorted(vm for vm, h in went_to.items() if h == host) == sorted(set(taps) - set(mine)), (host, taps)
        for vm in mine:
            assert qmp_status(host, vm) == "running", vm
