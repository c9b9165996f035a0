"""walm_probe: command-line parsing, discovery, and probing real QEMU from end to end.

Real QEMU (firmware only, no guest) is measured, discovered, and migrated (to a `-incoming defer` QEMU, so the
probe must refuse).
"""

import os
import socket
import subprocess
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import discovery, probe
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths, normalize, qemu_argv
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_procfs import STAT

OPTS = {"duration_s": 0.4, "samples": 2, "dirty_rate_mode": "auto", "sample_pages": None, "persist": False,
        "max_age_s": 0, "all_netns": False, "qmp_timeout_s": 5.0}


# -- helpers ----------------------------------------------------------------------------------------------------

def start_qemu(tmp_path, name, extra=(), monitor="qmp", memory_mib=256, smp=1):
    """A real QEMU (firmware idles: no disk, no kernel) with a QMP socket; returns (proc, socket path)."""
    sock = str(tmp_path / ("%s.qmp" % name))
    argv = ["qemu-system-x86_64", "-name", "guest=%s,debug-threads=on" % name, "-accel", "tcg",
            "-m", str(memory_mib), "-smp", str(smp), "-nodefaults", "-display", "none"]
    if monitor == "qmp":
        argv += ["-qmp", "unix:%s,server=on,wait=off" % sock]
    else:  # the libvirt style: a socket chardev and a control-mode monitor on it
        argv += ["-chardev", "socket,id=mon0,path=%s,server=on,wait=off" % sock, "-mon", "chardev=mon0,mode=control"]
    argv += list(extra)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while not os.path.exists(sock):
        assert proc.poll() is None, "QEMU exited early: %s" % proc.stderr.read()
        assert time.time() < deadline, "QEMU did not create its QMP socket"
        time.sleep(0.05)
    return proc, sock


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# The `vm` fixture (a QEMU named pvm1, from start_qemu) is in tests/unit/plugins/conftest.py: test_module_cli.py
# uses it too.


def opts(tmp_path, **kw):
    o = dict(OPTS, state_dir=str(tmp_path / "state"))
    o.update(kw)
    return o


# -- QEMU command lines -----------------------------------------------------------------------------------------

def test_split_qemu_opts_escapes_implied_and_flags():
    assert discovery.split_qemu_opts("socket,id=m,path=/a,,b,server=on,nowait", implied="backend") == {
        "backend": "socket", "id": "m", "path": "/a,b", "server": "on", "nowait": "on"}
    assert discovery.split_qemu_opts("vm1", implied="guest") == {"guest": "vm1"}
    assert discovery.split_qemu_opts("guest=vm1,debug-threads=on", implied="guest")["guest"] == "vm1"


def test_facts_of_a_walm_command_line():
    d = normalize({"name": "vm1", "memory_mib": 1024, "vcpus": 2, "accel": "tcg", "machine": "pc-q35-10.0",
                   "nics": [{"tap": "tap-vm1", "mac": "52:54:00:00:00:01"}]})
    argv = qemu_argv(d, HostPaths("/run/walm", "vm1"))
    f = discovery.qemu_facts(argv)
    assert f["name"] == "vm1"
    assert f["qmp"] == [{"path": "/run/walm/vm1.qmp"}]
    assert f["taps"] == ["tap-vm1"]
    assert f["macs"] == ["52:54:00:00:00:01"]
    assert (f["memory_mib"], f["vcpus"], f["machine"], f["accel"]) == (1024, 2, "pc-q35-10.0", "tcg")


def test_facts_of_a_libvirt_style_command_line():
    argv = ["/usr/bin/qemu-system-x86_64", "-name", "guest=web1,debug-threads=on", "-S",
            "-machine", "pc-q35-7.2,usb=off,dump-guest-core=off", "-accel", "kvm,dirty-ring-size=4096",
            "-m", "size=2097152k", "-smp", "4,sockets=4,cores=1,threads=1",
            "-chardev", "socket,id=charmonitor,fd=31,server=on,wait=off",
            "-mon", "chardev=charmonitor,id=monitor,mode=control",
            "-chardev", "socket,id=hmp,path=/tmp/hmp.sock,server=on,wait=off", "-mon", "chardev=hmp",
            "-netdev", "tap,fd=33,vhost=on,vhostfd=35,id=hostnet0",
            "-append", "-qmp unix:/not/a/monitor"]
    f = discovery.qemu_facts(argv)
    assert f["name"] == "web1"
    assert f["qmp"] == [{"fd": 31}]  # the readline (HMP) monitor is not QMP; -append's text is not an option
    assert f["taps"] == []  # passed as fd: found through /proc/PID/fdinfo instead
    assert (f["memory_mib"], f["vcpus"], f["accel"], f["dirty_ring_size"]) == (2048, 4, "kvm", 4096)


def test_facts_monitor_variants():
    f = discovery.qemu_facts(["qemu-system-x86_64", "--qmp-pretty", "unix:rel.sock,server,nowait",
                              "-qmp", "tcp:127.0.0.1:4444,server=on", "-chardev", "socket,id=c1,path=/x.sock",
                              "-qmp", "chardev:c1", "-name", "plain", "-M", "pc,accel=kvm:tcg", "-m", "1G",
                              "-nic", "tap,ifname=t0,model=virtio,mac=52:54:00:AA:00:01", "-net", "tap,ifname=t1",
                              "-net", "nic,macaddr=52:54:00:aa:00:02",
                              "-device", "e1000,netdev=n2,mac=52:54:00:aa:00:01"])
    assert f["qmp"][0] == {"path": "rel.sock"}
    assert "unsupported" in f["qmp"][1]
    assert f["qmp"][2] == {"path": "/x.sock"}
    assert (f["name"], f["machine"], f["accel"], f["memory_mib"], f["taps"]) == ("plain", "pc", "kvm", 1024,
                                                                                 ["t0", "t1"])
    assert f["macs"] == ["52:54:00:aa:00:01", "52:54:00:aa:00:02"]  # lower case, each once


def test_info_invocations_are_not_vms():
    assert discovery.is_qemu_argv(["/usr/bin/qemu-system-x86_64", "-m", "512"])
    assert discovery.is_qemu_argv(["qemu-kvm", "-m", "512"])
    assert not discovery.is_qemu_argv(["qemu-system-x86_64", "--version"])
    assert not discovery.is_qemu_argv(["qemu-system-x86_64", "-machine", "help"])
    assert not discovery.is_qemu_argv(["qemu-system-x86_64", "-device", "virtio-net-pci,help"])
    assert not discovery.is_qemu_argv(["qemu-img", "info", "x"])
    assert not discovery.is_qemu_argv([])


# -- discovery on a fake /proc ----------------------------------------------------------------------------------

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


def test_parse_net_unix():
    text = ("Num       RefCount Protocol Flags    Type St Inode Path\n"
            "0000000000000000: 00000002 00000000 00010000 0001 01 31337 /run/libvirt/qemu/mon.sock\n"
            "0000000000000000: 00000002 00000000 00000000 0001 03 31338\n")
    assert discovery.parse_net_unix(text) == {31337: "/run/libvirt/qemu/mon.sock"}


# -- real QEMU --------------------------------------------------------------------------------------------------

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


def test_probe_real_qemu(tmp_path, vm):
    proc, sock = vm
    result = probe.run(opts(tmp_path, qmp_socket=sock))
    assert result["changed"] is False and result["failed_vms"] == []
    (r,) = result["vms"]
    v, w = r["vm"], r["workload"]
    assert (v["name"], v["pid"], v["qmp_socket"]) == ("pvm1", proc.pid, sock)
    assert (v["memory_mib"], v["vcpus"], v["accel"], v["taps"]) == (256, 2, "tcg", [])
    assert v["machine"].startswith("pc-i440fx-") and v["argv"][0] == "qemu-system-x86_64"
    assert len(v["vcpu_thread_ids"]) == 2 and v["qemu_version"]
    assert w["dirty_rate_mode"] == "page-sampling" and w["dirty_rate_sample_pages_per_gib"] == 16384
    assert w["dirty_rate_mib_s"] is not None and w["dirty_rate_mib_s"] < 5  # firmware idles
    assert len(w["cpu_percent_per_vcpu"]) == 2 and 0 <= w["cpu_percent"] < 50
    assert w["rss_mib"] > 0 and w["guest_memory_used_mib"] is None
    # Firmware alone writes little of the 256 MiB: a few MiB are non-zero, never the whole RAM.
    assert 0 < w["nonzero_mib"] < 32 and w["nonzero_rel_error_pct"] is not None
    assert w["net_rx_mib_s"] == 0 and w["net_per_tap"] == {}
    assert len(r["samples"]) == 2 and all(200 <= s["window_ms"] < 300 for s in r["samples"])
    assert set(r["stats"]["cpu_percent"]) == {"mean", "stdev", "min", "max", "n"}
    assert any("page-sampling" in lim for lim in r["limits"])
    assert any("no balloon device" in lim for lim in r["limits"])
    assert abs(r["probed_at"] - time.time()) < 10 and r["cached"] is False
    assert proc.poll() is None
    # by name: the QEMU's -name, not a WALM record
    assert probe.run(opts(tmp_path, name="pvm1", samples=1, duration_s=0.2))["vms"][0]["vm"]["pid"] == proc.pid


def test_default_probe_wall_time(tmp_path, vm):
    _proc, sock = vm
    t0 = time.time()
    result = probe.run(opts(tmp_path, qmp_socket=sock, duration_s=1.0, samples=2))
    wall = time.time() - t0
    assert wall <= 2.5 and result["probe_wall_time_s"] <= 2.5, wall


def run_one(tmp_path, **kw):
    """What the module does for one VM: a failure is an error."""
    result = probe.run(opts(tmp_path, **kw))
    if result["failed_vms"]:
        raise WalmError(result["failed_vms"][0]["error"], **result["failed_vms"][0])
    return result["vms"][0]


def test_missing_vm(tmp_path):
    with pytest.raises(WalmError, match="VM 'nosuchvm' is not running on this host"):
        probe.run(opts(tmp_path, name="nosuchvm"))


def test_socket_it_cannot_open(tmp_path):
    with pytest.raises(WalmError, match="QMP connect failed: QMP socket .*gone.qmp does not exist"):
        run_one(tmp_path, qmp_socket=str(tmp_path / "gone.qmp"))
    stale = str(tmp_path / "stale.qmp")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    with pytest.raises(WalmError, match="nothing is listening on QMP socket"):
        run_one(tmp_path, qmp_socket=stale)
    plain = tmp_path / "plain.qmp"
    plain.write_text("")
    with pytest.raises(WalmError, match="is not a unix socket"):
        run_one(tmp_path, qmp_socket=str(plain))


def test_vm_without_qmp_is_reported_not_skipped(tmp_path):
    proc = subprocess.Popen(["qemu-system-x86_64", "-name", "noqmp", "-accel", "tcg", "-m", "64", "-nodefaults",
                             "-display", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        result = probe.run(opts(tmp_path, samples=1, duration_s=0.1))
        mine = [f for f in result["failed_vms"] if f["pid"] == proc.pid]
        assert mine and "no QMP unix socket" in mine[0]["error"] and "-qmp unix:PATH" in mine[0]["error"]
    finally:
        stop(proc)


def test_vm_migrating_is_refused(tmp_path):
    """A real migration in progress (to a -incoming defer QEMU, throttled so it lasts) must not be measured."""
    src, src_sock = start_qemu(tmp_path, "psrc")
    dst, dst_sock = start_qemu(tmp_path, "pdst", extra=["-incoming", "defer"])
    uri = "unix:%s" % (tmp_path / "mig.sock")
    try:
        with QMP("pdst", dst_sock, 5) as q:
            q.execute("migrate-incoming", {"uri": uri})
        with QMP("psrc", src_sock, 5) as q:
            q.execute("migrate-set-parameters", {"max-bandwidth": 4096})
            q.execute("migrate", {"uri": uri})
            deadline = time.time() + 10
            while q.execute("query-migrate").get("status") != "active":
                assert time.time() < deadline
                time.sleep(0.05)
        with pytest.raises(WalmError) as err:
            run_one(tmp_path, name="psrc")
        assert "VM 'psrc' is migrating (query-migrate status active)" in str(err.value)
        assert err.value.details.get("migration_status") == "active"
        with pytest.raises(WalmError, match="VM 'pdst' is the destination of an incoming migration"):
            run_one(tmp_path, name="pdst")
        # probing every VM: both are reported as not probed, with the reason, and the probe still succeeds
        everything = probe.run(opts(tmp_path, samples=1, duration_s=0.1))
        failed = dict((f["name"], f["error"]) for f in everything["failed_vms"])
        assert "is migrating" in failed["psrc"] and "incoming migration" in failed["pdst"]
        with QMP("psrc", src_sock, 5) as q:
            assert q.execute("query-migrate")["status"] == "active"  # the probe did not disturb it
            q.execute("migrate_cancel")
    finally:
        stop(src)
        stop(dst)


# -- the module -------------------------------------------------------------------------------------------------
# Run through ansible-doc and the ansible command line: tests/unit/plugins/test_module_cli.py.
