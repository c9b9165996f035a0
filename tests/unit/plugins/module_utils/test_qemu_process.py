"""A VM's QEMU process and the files it makes, as documented: 0600 files, no stale pidfile, no other process taken
for the VM's.

No QEMU here: a stand-in binary does what QEMU's -daemonize does to files (umask 027, pidfile, sockets, console
log), and short-lived Python processes carry a QEMU-like command line where a live VM process is needed.
"""

import os
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import qemu_process
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.vm_service import VMService
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths, normalize
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_vm_records import mode

# What QEMU -daemonize does to the files it makes: its own umask 027 (sockets 0750, files 0640), then exit 0.
FAKE_QEMU = r'''#!%s
import os, socket, sys
argv = sys.argv
os.umask(0o027)
pidfile = argv[argv.index("-pidfile") + 1]
for p in (pidfile,) + tuple(a[5:].split(",")[0] for a in argv if a.startswith("unix:")):
    if os.path.lexists(p):
        sys.exit("stale file left for QEMU: %%s" %% p)
for a in argv:
    if a.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(a[5:].split(",")[0])
    if a.startswith("file,id=walm-console,path="):
        open(a.split("path=")[1].split(",")[0], "a").close()
with open(pidfile, "w") as f:
    f.write("%%d\n" %% os.getpid())
'''


@pytest.fixture
def fake_qemu(tmp_path):
    path = tmp_path / "fake-qemu"
    path.write_text(FAKE_QEMU % sys.executable)
    path.chmod(0o755)
    return str(path)


def vm_process(name, pidfile):
    """A live process whose command line reads like WALM's QEMU for `name` with `pidfile`."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-name",
                             "guest=%s,debug-threads=on" % name, "-pidfile", pidfile])


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- the VM's process -------------------------------------------------------------------------------------------

def test_running_pid_is_not_fooled_by_another_process(state_dir, tmp_path):
    paths = HostPaths(state_dir, "vm1")
    others = [
        subprocess.Popen(["sleep", "30"]),  # a reused pid: not a QEMU at all
        vm_process("vm2", paths.pidfile),  # another VM
        vm_process("vm1", str(tmp_path / "elsewhere" / "vm1.pid")),  # vm1's other copy, from another state dir
    ]
    mine = vm_process("vm1", paths.pidfile)
    try:
        time.sleep(0.3)  # let each exec
        for p in others:
            with open(paths.pidfile, "w") as f:
                f.write("%d\n" % p.pid)
            assert qemu_process.running_pid(paths) is None, p.args
        with open(paths.pidfile, "w") as f:
            f.write("%d\n" % mine.pid)
        assert qemu_process.running_pid(paths) == mine.pid
        assert qemu_process.vm_processes(paths) == [mine.pid]
        assert qemu_process.stale_files(paths) == []
    finally:
        for p in others + [mine]:
            p.kill()
            p.wait()


def test_start_removes_what_a_killed_qemu_left_and_makes_files_0600(state_dir, fake_qemu):
    paths = HostPaths(state_dir, "vm1")
    with open(paths.pidfile, "w") as f:
        f.write("%d\n" % dead_pid())
    for stale in (paths.qmp_socket, paths.events_socket):
        with open(stale, "w") as f:
            f.write("left by a SIGKILLed QEMU")
    assert sorted(qemu_process.stale_files(paths)) == sorted([paths.pidfile, paths.qmp_socket, paths.events_socket])
    d = normalize({"name": "vm1", "accel": "tcg"})
    pid, argv = qemu_process.start_qemu(d, paths, incoming=True, binary=fake_qemu)
    assert pid and argv[0] == fake_qemu
    for f in (paths.pidfile, paths.qmp_socket, paths.events_socket, paths.console_log):
        assert mode(f) == 0o600, f
    assert stat.S_ISSOCK(os.lstat(paths.qmp_socket).st_mode)


def test_start_keeps_the_previous_console_log_and_makes_a_private_one(state_dir, fake_qemu):
    paths = HostPaths(state_dir, "vm1")
    with open(paths.console_log, "w") as f:
        f.write("previous boot\n")
    os.chmod(paths.console_log, 0o644)
    qemu_process.start_qemu(normalize({"name": "vm1", "accel": "tcg"}), paths, binary=fake_qemu)
    with open(paths.console_log + ".prev") as f:
        assert f.read() == "previous boot\n"
    assert mode(paths.console_log) == 0o600 and os.path.getsize(paths.console_log) == 0


@pytest.mark.parametrize("check_mode", [True, False])
def test_stopping_removes_what_a_killed_qemu_left(state_dir, check_mode):
    paths = HostPaths(state_dir, "vm1")
    with open(paths.pidfile, "w") as f:
        f.write("%d\n" % dead_pid())
    with open(paths.qmp_socket, "w") as f:
        f.write("left by a SIGKILLed QEMU")
    result = VMService("vm1", state_dir, check_mode=check_mode).stopped()
    assert result["changed"] is True
    assert result["actions"] == ["remove what a dead QEMU left: %s, %s" % (paths.pidfile, paths.qmp_socket)]
    assert os.path.exists(paths.pidfile) is check_mode and os.path.exists(paths.qmp_socket) is check_mode


def test_start_refuses_while_a_qemu_of_this_vm_runs_without_its_pidfile(state_dir, fake_qemu):
    paths = HostPaths(state_dir, "vm1")
    with open(paths.qmp_socket, "w") as f:
        f.write("the live QEMU's socket")
    live = vm_process("vm1", paths.pidfile)
    try:
        time.sleep(0.3)
        assert qemu_process.running_pid(paths) is None  # no pidfile ...
        assert qemu_process.stale_files(paths) == []  # ... but its socket is not stale
        with pytest.raises(WalmError, match="VM 'vm1' already runs on this host \\(pid %d\\)" % live.pid):
            qemu_process.start_qemu(normalize({"name": "vm1", "accel": "tcg"}), paths, binary=fake_qemu)
        assert os.path.exists(paths.qmp_socket)
    finally:
        live.kill()
        live.wait()


def test_failed_start_leaves_no_stale_files(state_dir, tmp_path):
    failing = tmp_path / "failing-qemu"
    failing.write_text("#!%s\nimport socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
                       "s.bind([a for a in sys.argv if a.startswith('unix:')][0][5:].split(',')[0])\n"
                       "sys.exit('cannot open tap')\n" % sys.executable)
    failing.chmod(0o755)
    paths = HostPaths(state_dir, "vm1")
    with pytest.raises(WalmError, match="QEMU failed to start .exit 1.: cannot open tap"):
        qemu_process.start_qemu(normalize({"name": "vm1", "accel": "tcg"}), paths, binary=str(failing))
    assert not os.path.lexists(paths.qmp_socket) and not os.path.lexists(paths.pidfile)
