"""CPU and network rates from /proc snapshots of a fake QEMU process."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import host_counters
from ansible_collections.walm.qemu.plugins.module_utils.procfs import clock_ticks_per_s
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_procfs import NET_DEV, STAT


def fake_proc(root, pid=4242, threads=(4243, 4244), run_ns=(0, 0), ticks=(0, 0), proc_ticks=0,
              net=(0, 0, 0, 0), schedstat=True, wait_ns=(0, 0)):
    """A /proc tree holding what HostSnapshot reads, for one QEMU process."""
    base = root / str(pid)
    for tid, ns, tk, wns in zip(threads, run_ns, ticks, wait_ns):
        d = base / "task" / str(tid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "stat").write_text(STAT % (tk, 0, 1, 0))
        if schedstat:
            (d / "schedstat").write_text("%d %d 1\n" % (ns, wns))
        elif (d / "schedstat").exists():
            (d / "schedstat").unlink()
    (base / "stat").write_text(STAT % (proc_ticks, 0, 1, 0))
    (base / "net").mkdir(exist_ok=True)
    (base / "net" / "dev").write_text(NET_DEV % (net[0], net[1], 0, net[2], net[3], 0))
    return str(root)


def snapshot_at(monkeypatch, t, *args, **kw):
    monkeypatch.setattr(host_counters.time, "monotonic", lambda: t)
    return host_counters.HostSnapshot(*args, **kw)


def test_cpu_math_from_schedstat_snapshots(tmp_path, monkeypatch):
    proc = fake_proc(tmp_path, run_ns=(1000000000, 5000000000), proc_ticks=100)
    a = snapshot_at(monkeypatch, 100.0, 4242, [4243, 4244], ["tap0"], proc)
    # 0.5 s later: vCPU 0 ran the whole time, vCPU 1 a fifth of it; the process used 60 ticks (0.6 s)
    # and vCPU 1 was ready to run but waited for a host CPU for 0.2 s
    fake_proc(tmp_path, run_ns=(1500000000, 5100000000), proc_ticks=160, wait_ns=(0, 200000000))
    b = snapshot_at(monkeypatch, 100.5, 4242, [4243, 4244], ["tap0"], proc)
    per_vcpu, total, process = host_counters.cpu_percentages(a, b, [4243, 4244])
    assert per_vcpu == [pytest.approx(100.0), pytest.approx(20.0)]
    assert total == pytest.approx(120.0)
    assert process == pytest.approx(60 * 1e9 / clock_ticks_per_s() / 0.5e9 * 100)
    wait_per_vcpu, wait, _process_wait = host_counters.cpu_percentages(a, b, [4243, 4244], "thread_wait_ns")
    assert wait_per_vcpu == [0.0, pytest.approx(40.0)] and wait == pytest.approx(40.0)


def test_cpu_math_from_stat_ticks_and_shared_thread(tmp_path, monkeypatch):
    hz = clock_ticks_per_s()
    proc = fake_proc(tmp_path, threads=(4243,), ticks=(0,), schedstat=False, wait_ns=(0,))
    a = snapshot_at(monkeypatch, 10.0, 4242, [4243], [], proc, use_schedstat=False)
    fake_proc(tmp_path, threads=(4243,), ticks=(hz,), schedstat=False, wait_ns=(0,))
    b = snapshot_at(monkeypatch, 12.0, 4242, [4243], [], proc, use_schedstat=False)
    # single-threaded TCG: both vCPUs on one thread, busy half of the 2 s
    per_vcpu, total, _process = host_counters.cpu_percentages(a, b, [4243, 4243])
    assert total == pytest.approx(50.0) and per_vcpu == [pytest.approx(25.0), pytest.approx(25.0)]
    assert host_counters.cpu_percentages(a, b, [4243, 4243], "thread_wait_ns")[1] is None  # stat has no wait time
    with pytest.raises(ValueError):
        host_counters.cpu_percentages(b, a, [4243])


def test_vanished_thread_gives_null_not_a_guess(tmp_path, monkeypatch):
    proc = fake_proc(tmp_path, threads=(4243,), run_ns=(0,), wait_ns=(0,))
    a = snapshot_at(monkeypatch, 1.0, 4242, [4243, 4299], [], proc)
    b = snapshot_at(monkeypatch, 2.0, 4242, [4243, 4299], [], proc)
    per_vcpu, total, _process = host_counters.cpu_percentages(a, b, [4243, 4299])
    assert per_vcpu == [0.0, None] and total == 0.0


def test_net_rates_are_from_the_guests_side(tmp_path, monkeypatch):
    proc = fake_proc(tmp_path, net=(0, 0, 0, 0))
    a = snapshot_at(monkeypatch, 0.0, 4242, [4243], ["tap0", "gone0"], proc)
    # the tap received 12.5 MB from the guest (guest tx = 100 Mbit/s) and sent it 1 MiB, in 1 s
    fake_proc(tmp_path, net=(12500000, 10000, 1048576, 800))
    b = snapshot_at(monkeypatch, 1.0, 4242, [4243], ["tap0", "gone0"], proc)
    per_tap, totals = host_counters.net_rates(a, b)
    assert per_tap["gone0"] is None
    t = per_tap["tap0"]
    assert t["tx_mbit_s"] == pytest.approx(100.0) and t["tx_pps"] == pytest.approx(10000)
    assert t["rx_mib_s"] == pytest.approx(1.0) and t["rx_pps"] == pytest.approx(800)
    assert totals["tx_mbit_s"] == pytest.approx(100.0) and totals["rx_mib_s"] == pytest.approx(1.0)
