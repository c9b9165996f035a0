"""QEMU command lines: built the same on both hosts, parsed (WALM, libvirt-style and legacy monitors), matched."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import qemu_cmdline
from ansible_collections.walm.qemu.plugins.module_utils.qemu_cmdline import qemu_argv
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths, normalize
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_vmdef import GOOD


# -- building ---------------------------------------------------------------------------------------------------

def test_argv_differs_between_hosts_only_in_host_paths():
    d = normalize(GOOD)
    d["machine"] = "pc-q35-10.0"
    src = qemu_argv(d, HostPaths("/run/walm", "vm1"))
    dst = qemu_argv(d, HostPaths("/srv/walm", "vm1"), incoming=True)
    assert dst[-2:] == ["-incoming", "defer"]
    differing = [(a, b) for a, b in zip(src, dst[:-2]) if a != b]
    assert differing and all("/run/walm" in a and "/srv/walm" in b for a, b in differing)
    assert "-cpu" not in src  # QEMU's default model unless one is named: never 'host' implicitly
    assert "file=nfs://10.0.0.2/vms/vm1.qcow2,format=qcow2,if=none,id=walm-disk0,cache=none" in src
    assert "tap,id=walm-net0,ifname=tap-vm1,script=no,downscript=no" in src


def test_commas_in_paths_are_escaped():
    d = normalize({"name": "vm3", "disks": [{"file": "/images/a,b.qcow2"}]})
    assert any("file=/images/a,,b.qcow2," in a for a in qemu_argv(d, HostPaths("/run/walm", "vm3")))


# -- parsing ----------------------------------------------------------------------------------------------------

def test_split_qemu_opts_escapes_implied_and_flags():
    assert qemu_cmdline.split_qemu_opts("socket,id=m,path=/a,,b,server=on,nowait", implied="backend") == {
        "backend": "socket", "id": "m", "path": "/a,b", "server": "on", "nowait": "on"}
    assert qemu_cmdline.split_qemu_opts("vm1", implied="guest") == {"guest": "vm1"}
    assert qemu_cmdline.split_qemu_opts("guest=vm1,debug-threads=on", implied="guest")["guest"] == "vm1"


def test_facts_of_a_walm_command_line():
    d = normalize({"name": "vm1", "memory_mib": 1024, "vcpus": 2, "accel": "tcg", "machine": "pc-q35-10.0",
                   "nics": [{"tap": "tap-vm1", "mac": "52:54:00:00:00:01"}]})
    argv = qemu_argv(d, HostPaths("/run/walm", "vm1"))
    f = qemu_cmdline.qemu_facts(argv)
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
    f = qemu_cmdline.qemu_facts(argv)
    assert f["name"] == "web1"
    assert f["qmp"] == [{"fd": 31}]  # the readline (HMP) monitor is not QMP; -append's text is not an option
    assert f["taps"] == []  # passed as fd: found through /proc/PID/fdinfo instead
    assert (f["memory_mib"], f["vcpus"], f["accel"], f["dirty_ring_size"]) == (2048, 4, "kvm", 4096)


def test_facts_monitor_variants():
    f = qemu_cmdline.qemu_facts(["qemu-system-x86_64", "--qmp-pretty", "unix:rel.sock,server,nowait",
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
    assert qemu_cmdline.is_qemu_argv(["/usr/bin/qemu-system-x86_64", "-m", "512"])
    assert qemu_cmdline.is_qemu_argv(["qemu-kvm", "-m", "512"])
    assert not qemu_cmdline.is_qemu_argv(["qemu-system-x86_64", "--version"])
    assert not qemu_cmdline.is_qemu_argv(["qemu-system-x86_64", "-machine", "help"])
    assert not qemu_cmdline.is_qemu_argv(["qemu-system-x86_64", "-device", "virtio-net-pci,help"])
    assert not qemu_cmdline.is_qemu_argv(["qemu-img", "info", "x"])
    assert not qemu_cmdline.is_qemu_argv([])


# -- matching ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arg,hit", [
    ("file=nfs://10.0.0.2/vms/a.qcow2,format=qcow2,if=none", True),
    ("nfs://10.0.0.2/vms/a.qcow2", True),
    ('json:{"driver":"qcow2","file":{"filename":"nfs://10.0.0.2/vms/a.qcow2"}}', True),
    ("file=nfs://10.0.0.2/vms/a.qcow2.bak,format=qcow2", False),
    ("file=nfs://10.0.0.2/vms/xa.qcow2,format=qcow2", False),
    ("file=nfs://10.0.0.2/vms/a.qcow2x", False),
])
def test_image_argument_matching(arg, hit):
    assert bool(qemu_cmdline.image_arg_re("nfs://10.0.0.2/vms/a.qcow2").search(arg)) is hit


def test_image_with_a_comma_matches_its_escaped_drive_value():
    pattern = qemu_cmdline.image_arg_re("/srv/a,b.qcow2")
    assert pattern.search("file=/srv/a,,b.qcow2,format=qcow2")
    assert not pattern.search("file=/srv/a,,b.qcow2.old,format=qcow2")
