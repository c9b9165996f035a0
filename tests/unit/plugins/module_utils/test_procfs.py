"""The /proc parsers, on captured text and on this process's own files."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import procfs


STAT = ("4242 (CPU 0/TCG) R 1 4240 4240 0 -1 4194368 1000 0 0 0 %d %d 0 0 20 0 3 0 %d 1000000 5000 "
        "18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 -1 1 0 0 0 %d 0 0 0 0 0 0 0 0 0 0")


def test_parse_stat_with_spaces_and_parens_in_comm():
    st = procfs.parse_stat(STAT % (150, 50, 777, 120))
    assert st["comm"] == "CPU 0/TCG"
    assert (st["utime_ticks"], st["stime_ticks"], st["start_ticks"], st["guest_ticks"]) == (150, 50, 777, 120)
    odd = procfs.parse_stat("7 (a) b) (c) S " + " ".join(["0"] * 50))
    assert odd["comm"] == "a) b) (c" and odd["state"] == "S"
    with open("/proc/self/stat") as f:
        assert procfs.parse_stat(f.read())["start_ticks"] > 0


def test_parse_schedstat_status_and_rss():
    assert procfs.parse_schedstat("25113012840 1940993192 97961\n") == {
        "run_ns": 25113012840, "wait_ns": 1940993192, "timeslices": 97961}
    st = procfs.parse_status("Name:\tqemu-system-x86\nTgid:\t4242\nVmRSS:\t  491468 kB\n")
    assert st["Tgid"] == "4242" and procfs.kib_to_mib(st["VmRSS"]) == pytest.approx(479.95, abs=0.01)
    assert procfs.kib_to_mib(None) is None


NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
    lo: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 tap0: %d %d 0 %d 0 0 0 0 %d %d 0 %d 0 0 0 0
"""


def test_parse_net_dev():
    counters = procfs.parse_net_dev(NET_DEV % (1000, 10, 1, 2000, 20, 2))
    assert counters["tap0"] == {"rx_bytes": 1000, "rx_packets": 10, "rx_dropped": 1, "tx_bytes": 2000,
                                "tx_packets": 20, "tx_dropped": 2}
    with open("/proc/self/net/dev") as f:
        assert "lo" in procfs.parse_net_dev(f.read())


def test_parse_net_unix():
    text = ("Num       RefCount Protocol Flags    Type St Inode Path\n"
            "0000000000000000: 00000002 00000000 00010000 0001 01 31337 /run/libvirt/qemu/mon.sock\n"
            "0000000000000000: 00000002 00000000 00000000 0001 03 31338\n")
    assert procfs.parse_net_unix(text) == {31337: "/run/libvirt/qemu/mon.sock"}


@pytest.mark.parametrize("text,expected", [
    ("MemTotal:       24608768 kB\nMemFree:  100 kB\nMemAvailable:   22395136 kB\n",
     {"total_mib": 24032, "available_mib": 21870}),
    # An old kernel without MemAvailable: unknown, never a guess.
    ("MemTotal:       1048576 kB\nMemFree:  524288 kB\n", {"total_mib": 1024, "available_mib": None}),
])
def test_host_memory_from_meminfo(tmp_path, text, expected):
    path = tmp_path / "meminfo"
    path.write_text(text)
    assert procfs.host_memory(str(path)) == expected
