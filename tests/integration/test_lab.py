"""The lab (roles/lab, three hosts joined by a switch) builds idempotently, answers over SSH, shapes each host's link,
serves NFS to QEMU, and tears down without leaving a process, namespace or mount behind. Needs root and
scripts/install.sh's packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest

from lab import (HOSTS, LAB_DIR, NFS_URL, SWITCH, ansible, ansible_playbook, lab_mounts, lab_namespaces,
                 lab_processes, lab_setup, lab_teardown, netns)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab_cycle(request):
    """Set the lab up twice (the second run must change nothing). This module tears the lab down itself, so its
    finalizer puts back what it found, even when a test failed: a lab that was up before (the session's shared
    lab) is set up again, otherwise everything is torn down."""
    # A lab that cannot be built fails these tests; it does not skip them.
    assert os.geteuid() == 0, "the lab needs root (network namespaces)"
    assert shutil.which("ganesha.nfsd"), "nfs-ganesha missing: run scripts/install.sh"
    was_up = bool(lab_namespaces())
    request.addfinalizer(lab_setup if was_up else lab_teardown)
    first = lab_setup()
    second = ansible_playbook("playbooks/lab_setup.yml").check()
    return {"first": first, "second": second}


def test_setup_is_idempotent(lab_cycle):
    assert lab_cycle["first"].recap()["localhost"]["failed"] == 0
    recap = lab_cycle["second"].recap()
    assert recap["localhost"]["changed"] == 0, lab_cycle["second"].stdout[-4000:]
    # The hosts were made ready by walm.qemu.hypervisor, which has nothing left to do on them.
    for host in HOSTS:
        assert recap[host]["failed"] == 0 and recap[host]["changed"] == 0, lab_cycle["second"].stdout[-4000:]
    print(f"setup: {lab_cycle['first'].seconds:.1f} s, again: {lab_cycle['second'].seconds:.1f} s")


def test_hosts_answer_over_ssh(lab_cycle):
    run = ansible("walm_lab", "-m", "ansible.builtin.ping").check()
    for host in HOSTS:
        assert f"{host} | SUCCESS" in run.stdout, run.stdout
    assert run.stdout.count('"ping": "pong"') == len(HOSTS)
    print(f"ansible ping of both hosts: {run.seconds:.2f} s")


def test_hosts_have_their_own_names(lab_cycle):
    run = ansible("walm_lab", "-m", "ansible.builtin.command", "-a", "hostname").check()
    for host in HOSTS:
        assert f"{host} | CHANGED | rc=0 >>\n{host}\n" in run.stdout, run.stdout


def test_link_is_shaped_on_both_ends(lab_cycle):
    for host in HOSTS:
        out = subprocess.run(["tc", "-n", host, "qdisc", "show", "dev", "link0", "root"],
                             capture_output=True, text=True, check=True).stdout
        assert "qdisc tbf" in out and "rate 1Gbit" in out, f"{host}: {out}"
        # The other end: the host's port on the switch, named after it.
        out = subprocess.run(["tc", "-n", SWITCH, "qdisc", "show", "dev", host, "root"],
                             capture_output=True, text=True, check=True).stdout
        assert "qdisc tbf" in out and "rate 1Gbit" in out, f"{SWITCH} port {host}: {out}"


def test_every_host_reaches_every_other(lab_cycle):
    """Through the switch: from its own namespace, each host opens a TCP connection to each other host's sshd."""
    for host in HOSTS:
        for other, address in HOSTS.items():
            if other != host:
                probe = netns(host, "timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{address}/22", check=False)
                assert probe.returncode == 0, f"{host} -> {other}: {probe.stderr}"


def test_link_throughput_is_about_a_gigabit(lab_cycle):
    size = 100 * 1024 * 1024
    port = "5555"
    listener = subprocess.Popen(["ip", "netns", "exec", "walm-dst", "socat", "-u",
                                 f"TCP-LISTEN:{port},bind={HOSTS['walm-dst']}", "/dev/null"])
    try:
        for _attempt in range(50):  # wait until it listens
            if port in netns("walm-dst", "ss", "-Hltn", f"sport = :{port}").stdout:
                break
            time.sleep(0.1)
        start = time.monotonic()
        netns("walm-src", "sh", "-c",
              f"head -c {size} /dev/zero | socat -u STDIN TCP:{HOSTS['walm-dst']}:{port}", timeout=120)
        seconds = time.monotonic() - start
        assert listener.wait(timeout=30) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    rate = size / seconds / 1e6
    print(f"link throughput: {rate:.1f} MB/s")
    assert rate < 130, "the link is not shaped (tbf 1gbit caps it near 119 MB/s)"
    assert rate > 40, "the link is far slower than its 1 Gbit/s shaping"


def test_nfs_export_is_served_to_the_source(lab_cycle):
    out = netns("walm-src", "nfs-ls", NFS_URL + "/", timeout=30)
    assert out.returncode == 0


def test_nfs_is_offered_to_the_hypervisors_only(lab_cycle):
    """rpcbind answers on walm-dst's address and loopback only, ganesha registered through loopback, and the
    export's clients are the hosts, not the subnet the guests are in."""
    sockets = netns("walm-dst", "ss", "-Hlntu", "sport = :111").stdout.split("\n")
    where = sorted(line.split()[4] for line in sockets if line.strip())
    assert set(where) <= {HOSTS["walm-dst"] + ":111", "127.0.0.1:111", "[::1]:111"}, where
    assert HOSTS["walm-dst"] + ":111" in where and "127.0.0.1:111" in where, where
    registered = netns("walm-dst", "rpcinfo", "-p", "127.0.0.1", timeout=30).stdout
    assert "mountd" in registered and "nfs" in registered, registered
    conf = (LAB_DIR / "hosts" / "walm-dst" / "ganesha.conf").read_text()
    assert "Clients = %s;" % ", ".join(HOSTS.values()) in conf, conf


def test_qemu_reads_and_writes_images_over_nfs(lab_cycle):
    name = f"test-lab-{uuid.uuid4().hex[:8]}.qcow2"
    url = f"{NFS_URL}/{name}"
    try:
        netns("walm-src", "qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", url, "64M")
        info = netns("walm-src", "qemu-img", "info", "--output=json", url).stdout
        assert '"virtual-size": 67108864' in info and '"format": "qcow2"' in info, info
        assert (LAB_DIR / "export" / name).exists()
    finally:
        (LAB_DIR / "export" / name).unlink(missing_ok=True)


def _pidfile_pids() -> list[int]:
    pids = []
    for pidfile in (LAB_DIR / "hosts").glob("*/*.pid"):
        try:
            pids.append(int(pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except OSError:
        return False


def test_teardown_leaves_nothing(lab_cycle):
    # Something the teardown must find on its own: a long-running process inside a lab host.
    sleeper = threading.Thread(target=netns, args=("walm-src", "sleep", "600"), kwargs={"timeout": 700,
                                                                                        "check": False})
    sleeper.start()
    daemons = _pidfile_pids()
    assert len(daemons) == len(HOSTS) + 2, daemons  # sshd on each host, rpcbind, ganesha
    run = lab_teardown()
    print(f"teardown: {run.seconds:.1f} s")
    sleeper.join(timeout=30)
    assert not sleeper.is_alive()
    assert lab_namespaces() == []
    assert lab_processes() == []
    assert lab_mounts() == []
    assert [pid for pid in daemons if _alive(pid)] == []
    # A second teardown finds nothing to do and still succeeds.
    again = lab_teardown()
    assert again.recap()["localhost"]["changed"] == 0
