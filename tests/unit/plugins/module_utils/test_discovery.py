"""Finding QEMU VMs from their command lines and /proc: on fake process tables, and a real QEMU with an inherited
monitor fd."""

import os
import socket
import subprocess
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import discovery
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_probe import stop
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_procfs import STAT


def fake_process(root, pid, argv, netns="net:[4026531840]"):
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "stat").write_text(STAT % (0, 0, 1000 + (pid if isinstance(pid, int) else 0), 0))
    (d / "ns").mkdir()
    os.symlink(netns, str(d / "ns" / "net"))
    (d / "fd").mkdir()


def test_discovery_from_command_lines(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    fake_process(proc, "self", ["python3"])
    state = tmp_path / "state"
    state.mkdir()
    # a WALM VM with its record and pidfile, a foreign VM with a -mon socket, a nameless one, a helper
    # invocation, a VM in another network namespace, and an unrelated process
    fake_process(proc, 100, ["qemu-system-x86_64", "-name", "guest=vm1,debug-threads=on",
                             "-qmp", "unix:%s/vm1.qmp,server=on,wait=off" % state])
    (state / "vm1.json").write_text("{}")
    (state / "vm1.pid").write_text("100\n")
    fake_process(proc, 200, ["/usr/bin/qemu-system-x86_64", "-name", "db", "-chardev",
                             "socket,id=m,path=/srv/db.qmp,server=on", "-mon", "chardev=m,mode=control"])
    fake_process(proc, 300, ["qemu-system-aarch64", "-qmp", "unix:/srv/x.qmp,server"])
    fake_process(proc, 400, ["qemu-system-x86_64", "--version"])
    fake_process(proc, 500, ["qemu-system-x86_64", "-name", "elsewhere"], netns="net:[4026532999]")
    fake_process(proc, 600, ["sshd"])
    found = discovery.discover(str(state), proc=str(proc))
    assert [(t.name, t.pid, t.qmp_socket, t.managed) for t in found] == [
        ("db", 200, "/srv/db.qmp", False), ("qemu-300", 300, "/srv/x.qmp", False),
        ("vm1", 100, "%s/vm1.qmp" % state, True)]
    everywhere = discovery.discover(str(state), all_netns=True, proc=str(proc))
    assert "elsewhere" in [t.name for t in everywhere]
    with pytest.raises(WalmError) as err:
        discovery.find_by_name("ghost", str(state), proc=str(proc))
    assert "VM 'ghost' is not running on this host" in str(err.value) and "db, qemu-300, vm1" in str(err.value)
    assert discovery.find_by_name("db", str(state), proc=str(proc)).pid == 200


def test_discovery_tells_apart_two_qemus_of_one_name(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    fake_process(proc, "self", ["python3"])
    for pid in (10, 11):  # e.g. a migration's source and destination on one machine
        fake_process(proc, pid, ["qemu-system-x86_64", "-name", "twin", "-qmp", "unix:/t%d.qmp" % pid])
    assert [t.name for t in discovery.discover(str(tmp_path), proc=str(proc))] == ["twin@10", "twin@11"]
    with pytest.raises(WalmError, match="2 QEMU processes carry this name.*qmp_socket"):
        discovery.find_by_name("twin", str(tmp_path), proc=str(proc))


def hold_tap(root, pid, fd, tap):
    """A /dev/net/tun descriptor of a fake process, attached to `tap` (what the kernel shows in fdinfo)."""
    os.symlink("/dev/net/tun", str(root / str(pid) / "fd" / str(fd)))
    (root / str(pid) / "fdinfo").mkdir(exist_ok=True)
    (root / str(pid) / "fdinfo" / str(fd)).write_text("pos:\t0\nflags:\t0100002\nmnt_id:\t25\niff:\t%s\n" % tap)


def test_nic_conflicts_name_who_holds_a_tap_or_uses_a_mac_in_this_namespace(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    fake_process(proc, "self", ["python3"])
    fake_process(proc, 100, ["qemu-system-x86_64", "-name", "guest=vm1,debug-threads=on",
                             "-netdev", "tap,id=n0,ifname=tap0",
                             "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:64"])
    hold_tap(proc, 100, 17, "tap0")
    fake_process(proc, 200, ["some-vpn-daemon"])
    hold_tap(proc, 200, 5, "tap9")
    # The same tap name and MAC in another namespace (the other lab host, say) are no conflict.
    fake_process(proc, 300, ["qemu-system-x86_64", "-name", "vm2", "-device", "virtio-net-pci,mac=52:54:00:77:00:65"],
                 netns="net:[4026532999]")
    hold_tap(proc, 300, 17, "tap1")

    def nic(tap, mac):
        return {"tap": tap, "mac": mac, "bridge": None}

    assert discovery.nic_conflicts([nic("tap1", "52:54:00:77:00:65")], proc=str(proc)) == []
    assert discovery.nic_conflicts([nic("tap0", "52:54:00:77:00:99"), nic("tap9", "52:54:00:77:00:64")],
                                   proc=str(proc)) == [
        "tap tap0 is held open by VM 'vm1' (QEMU pid 100)", "tap tap9 is held open by pid 200 (some-vpn-daemon)",
        "MAC 52:54:00:77:00:64 is used by VM 'vm1' (QEMU pid 100)"]
    # MACs compare without regard to case.
    assert discovery.nic_conflicts([nic("tap5", "52:54:00:77:00:64".upper())], proc=str(proc)) == [
        "MAC 52:54:00:77:00:64 is used by VM 'vm1' (QEMU pid 100)"]


def test_discovers_real_qemu_and_its_inherited_monitor_fd(tmp_path, vm):
    proc, sock = vm
    found = [t for t in discovery.discover(str(tmp_path / "state")) if t.pid == proc.pid]
    assert len(found) == 1 and found[0].name == "pvm1" and found[0].qmp_socket == sock
    assert discovery.find_by_socket(sock, str(tmp_path)).pid == proc.pid
    # the same monitor as libvirt passes it: a listening socket inherited as fd 3
    path = str(tmp_path / "inherited.qmp")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    os.set_inheritable(srv.fileno(), True)
    child = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-nodefaults", "-display", "none",
                              "-chardev", "socket,id=mon,fd=%d,server=on,wait=off" % srv.fileno(),
                              "-mon", "chardev=mon,mode=control"], pass_fds=(srv.fileno(),),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv.close()
    try:
        deadline = time.time() + 10
        while True:
            t = [t for t in discovery.discover(str(tmp_path)) if t.pid == child.pid]
            if t and t[0].qmp_socket:
                break
            assert time.time() < deadline and child.poll() is None
            time.sleep(0.1)
        assert t[0].qmp_socket == path and t[0].name == "qemu-%d" % child.pid
        with QMP("x", t[0].qmp_socket, 5) as q:
            assert q.execute("query-status")["status"] == "running"
    finally:
        stop(child)
