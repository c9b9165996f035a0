"""walm_probe on the real lab, over SSH with Ansible: the acceptance checks of issue 3.

Each check starts lab guests on walm-src with a known workload, waits until the guest reports it, runs
walm.qemu.walm_probe on the host and compares the measurement with what the guest was told to do:
- `wset` writing W MiB/s (two values of W): dirty_rate_mib_s within +-30 % of W;
- `cpu` (sysbench, one thread): cpu_percent >= 80; `idle`: cpu_percent <= 10 and dirty rate near 0;
- `net` sending R Mbit/s: the tap's rate (guest tx) within +-20 % of R;
- three VMs on one host: probing every VM returns exactly those three, with their own taps and MACs;
- the wall time of one probe with the default window (target <= 2.5 s).
Measured numbers are printed (run pytest with -s to see them).
"""

import time

import pytest

from walmlab import console_log, module, parse_console, playbook, state_dir, stop_vm, wait_until

pytestmark = pytest.mark.lab

HOST = "walm-src"
WSET_MIB = 256


@pytest.fixture
def vms(lab, request):
    """Start lab guests on walm-src; every one is stopped afterwards, whatever happened."""
    started = []
    prefix = "it-pr-" + request.node.name.replace("test_", "")[:10].replace("_", "-")

    def start(workload, args=None, index=0, memory_mib=512):
        name = "%s-%d" % (prefix, index)
        started.append(name)
        playbook("vm_start.yml", {"walm_host": HOST, "lab_vm_name": name, "lab_vm_workload": workload,
                                  "lab_vm_workload_args": args or {}, "lab_vm_memory_mib": memory_mib,
                                  "lab_vm_tap": "tap%d" % index, "lab_vm_mac": "52:54:00:77:00:%02x" % (0x64 + index),
                                  "lab_vm_ip": "10.77.0.%d/24" % (100 + index)})
        return name

    yield start
    for name in started:
        stop_vm(name)


def probe(**args):
    args.setdefault("state_dir", state_dir(HOST))
    t0 = time.time()
    _ok, result = module(HOST, "walm.qemu.walm_probe", args)
    result["_ansible_wall_s"] = time.time() - t0
    assert result["changed"] is False
    return result


def wait_workload(name, kind, lines=3):
    """Wait until the guest has reported its workload `lines` times (past any start-up phase)."""
    return wait_until(lambda: [r for r in parse_console(console_log(HOST, name), kind) if r.get("seq", 0) >= 1]
                      [lines - 1:], 90, "%d '%s' lines from %s" % (lines, kind, name))


@pytest.mark.parametrize("rate_mib_s", [20, 60])
def test_dirty_rate_of_a_writer(vms, rate_mib_s):
    name = vms("wset", {"wset_mib": WSET_MIB, "rate_mib_s": rate_mib_s})
    wait_workload(name, "wset")
    result = probe(name=name)
    (r,) = result["vms"]
    w = r["workload"]
    achieved = parse_console(console_log(HOST, name), "wset")[-1]["rate_mib_s"]
    print("wset %d MiB/s (guest reports %.1f): dirty_rate_mib_s %s (windows %s, %s, +-%s %%), cpu %s %%, "
          "probe %.2f s (ansible %.2f s)" % (rate_mib_s, achieved, w["dirty_rate_mib_s"],
                                             [s["dirty_rate_mib_s"] for s in r["samples"]], w["dirty_rate_mode"],
                                             w.get("dirty_rate_rel_error_pct"), w["cpu_percent"],
                                             result["probe_wall_time_s"], result["_ansible_wall_s"]))
    assert w["dirty_rate_mode"] == "page-sampling"  # the lab runs TCG
    assert abs(w["dirty_rate_mib_s"] - rate_mib_s) <= 0.3 * rate_mib_s, w
    assert r["vm"]["name"] == name and r["vm"]["accel"] == "tcg" and r["vm"]["memory_mib"] == 512
    assert r["vm"]["taps"] == ["tap0"] and r["vm"]["macs"] == ["52:54:00:77:00:64"]
    assert len(r["samples"]) == 2 and r["limits"]


def test_cpu_busy_and_idle(vms):
    busy = vms("cpu", index=0)
    idle = vms("idle", index=1)
    wait_workload(busy, "cpu", 2)
    wait_workload(idle, "idle", 2)
    readings = []
    for _attempt in range(3):
        result = probe(duration_s=2, samples=2)
        by_name = dict((r["vm"]["name"], r["workload"]) for r in result["vms"])
        b, i = by_name[busy], by_name[idle]
        readings.append((b["cpu_percent"], b["cpu_wait_percent"], i["cpu_percent"]))
        print("cpu guest: cpu_percent %s (waited for a host CPU %s, whole qemu %s), dirty %s MiB/s; "
              "idle guest: cpu_percent %s, dirty %s MiB/s" % (b["cpu_percent"], b["cpu_wait_percent"],
                                                              b["qemu_cpu_percent"], b["dirty_rate_mib_s"],
                                                              i["cpu_percent"], i["dirty_rate_mib_s"]))
        # The busy vCPU always wants a whole host CPU: what it got plus what it waited for.
        assert b["cpu_percent"] + b["cpu_wait_percent"] >= 80
        assert len(b["cpu_percent_per_vcpu"]) == 1
        assert i["cpu_percent"] <= 10
        assert i["dirty_rate_mib_s"] <= 2  # near 0: the kernel and the disk check write a few pages
        if b["cpu_percent"] >= 80:
            break
    # On 2 host cores shared with Ansible, NFS and SSH, a window can be short of CPU: one of 3 readings must show
    # the vCPU getting >= 80 %.
    assert max(r[0] for r in readings) >= 80, readings


@pytest.mark.parametrize("rate_mbit", [20, 100])
def test_tap_rate_of_a_sender(vms, rate_mbit):
    # the guest sends UDP to walm-src's own bridge address: the traffic never leaves the lab
    name = vms("net", {"net_rate_mbit": rate_mbit, "net_dst": "10.77.0.1"})
    wait_workload(name, "net")
    (r,) = probe(name=name)["vms"]
    w = r["workload"]
    achieved = parse_console(console_log(HOST, name), "net")[-1]["rate_mbit"]
    print("net %d Mbit/s (guest reports %.1f payload): tap tx %s Mbit/s, %s pps; per tap %s"
          % (rate_mbit, achieved, w["net_tx_mbit_s"], w["net_tx_pps"], w["net_per_tap"]))
    assert set(w["net_per_tap"]) == {"tap0"}
    assert abs(w["net_tx_mbit_s"] - rate_mbit) <= 0.2 * rate_mbit, w
    assert w["net_per_tap"]["tap0"]["tx_mbit_s"] == pytest.approx(w["net_tx_mbit_s"], abs=0.05)


def test_three_vms_on_one_host(vms):
    names = [vms("idle", index=i, memory_mib=256) for i in range(3)]
    for name in names:
        wait_workload(name, "idle", 1)
    result = probe()
    print("three VMs: %d entries %s, failed %s, probe %.2f s (ansible %.2f s)"
          % (len(result["vms"]), [r["vm"]["name"] for r in result["vms"]], result["failed_vms"],
             result["probe_wall_time_s"], result["_ansible_wall_s"]))
    assert sorted(r["vm"]["name"] for r in result["vms"]) == sorted(names)
    assert result["failed_vms"] == []
    assert sorted(t for r in result["vms"] for t in r["vm"]["taps"]) == ["tap0", "tap1", "tap2"]
    assert len(set(m for r in result["vms"] for m in r["vm"]["macs"])) == 3
    for r in result["vms"]:
        assert r["vm"]["managed"] and r["vm"]["memory_mib"] == 256 and r["vm"]["argv"]
        assert "-name" in r["vm"]["argv"]


def test_probe_wall_time_and_persisted_reading(vms):
    name = vms("wset", {"wset_mib": WSET_MIB, "rate_mib_s": 40})
    wait_workload(name, "wset")
    walls = []
    for _attempt in range(3):
        result = probe(name=name)
        walls.append((result["probe_wall_time_s"], result["_ansible_wall_s"]))
    print("probe wall time, default window (module, ansible round trip): %s" % walls)
    assert all(module_s <= 2.5 for module_s, _ansible_s in walls)
    # periodic tracking: store a reading, then reuse it while it is fresh
    stored = probe(name=name, persist=True)
    assert stored["persisted"] == [state_dir(HOST) + "/probe/%s.json" % name]
    reused = probe(name=name, max_age_s=60)
    assert reused["vms"][0]["cached"] is True
    assert reused["vms"][0]["probed_at"] == stored["vms"][0]["probed_at"]
    assert reused["probe_wall_time_s"] < 0.5


def test_missing_vm_fails_clearly(lab):
    ok, result = module(HOST, "walm.qemu.walm_probe", {"name": "it-pr-nosuchvm", "state_dir": state_dir(HOST)},
                        check=False)
    assert not ok and "VM 'it-pr-nosuchvm' is not running on this host" in result["msg"]
