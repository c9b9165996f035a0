"""A VM's files on its host, as documented: a private state dir, 0600 files, no symlink followed, no stale pidfile.

No QEMU here: a stand-in binary does what QEMU's -daemonize does to files (umask 027, pidfile, sockets, console
log), and short-lived Python processes carry a QEMU-like command line where a live VM process is needed.
"""

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import eventlog, vmhost
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.vm_service import VMService
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths, normalize

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


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return str(d)


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


# -- the state dir ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dir_mode, refused", [
    (0o700, None), (0o755, None), (0o750, None), (0o711, None),
    (0o770, "writable by group or others (mode 0770)"), (0o775, "writable by group or others"),
    (0o757, "writable by group or others"), (0o777, "writable by group or others"),
    (0o1777, "writable by group or others (mode 1777)"),
])
def test_state_dir_writable_by_others_is_refused_with_the_fix(tmp_path, dir_mode, refused):
    d = tmp_path / "sd"
    d.mkdir()
    d.chmod(dir_mode)
    if refused is None:
        vmhost.check_state_dir(str(d))
        assert vmhost.ensure_state_dir(str(d)) is False
        return
    for check in (vmhost.check_state_dir, vmhost.ensure_state_dir):
        with pytest.raises(WalmError) as err:
            check(str(d))
        assert refused in str(err.value) and "fix it with 'chmod 0700 %s'" % d in str(err.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_state_dir_of_another_user_is_refused(tmp_path):
    d = tmp_path / "sd"
    d.mkdir(mode=0o700)
    os.chown(str(d), 65534, -1)
    with pytest.raises(WalmError, match="belongs to uid 65534, not to this user .uid 0.*chown 0 %s" % d):
        vmhost.check_state_dir(str(d))


def test_state_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(WalmError, match="is not a directory"):
        vmhost.check_state_dir(str(tmp_path / "f"))


def test_missing_state_dir_is_made_private(tmp_path):
    vmhost.check_state_dir(str(tmp_path / "new"))  # nothing to check yet
    assert vmhost.ensure_state_dir(str(tmp_path / "new")) is True
    assert mode(str(tmp_path / "new")) == 0o700


def test_stopping_in_a_shared_state_dir_touches_nothing(tmp_path, monkeypatch):
    """Another user could plant a record there naming any tap: WALM must not act on it."""
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    planted = {"name": "vm1", "definition": {"nics": [{"tap": "eth0"}]}}
    (d / "vm1.json").write_text(json.dumps(planted))
    monkeypatch.setattr(vmhost, "delete_tap", lambda tap: pytest.fail("deleted tap %s" % tap))
    with pytest.raises(WalmError, match="chmod 0700"):
        VMService("vm1", str(d)).stopped()
    assert (d / "vm1.json").exists()


# -- records ----------------------------------------------------------------------------------------------------

def test_list_vms_skips_files_no_vm_can_have(tmp_path):
    for f in ("vm1.json", "bad name.json", ".hidden.json", "vm2.json.tmp"):
        (tmp_path / f).write_text("{}")
    assert vmhost.list_vms(str(tmp_path)) == ["vm1"]


def test_write_record_does_not_follow_symlinks(tmp_path, state_dir):
    paths = HostPaths(state_dir, "vm1")
    victim = tmp_path / "victim"
    victim.write_text("victim's")
    os.symlink(str(victim), paths.record + ".tmp")
    os.symlink(str(victim), paths.record)
    vmhost.write_record(paths, {"name": "vm1"})
    assert victim.read_text() == "victim's"
    assert not os.path.islink(paths.record) and mode(paths.record) == 0o600
    assert vmhost.read_record(paths) == {"name": "vm1"}
    assert not os.path.lexists(paths.record + ".tmp")


def test_write_record_refuses_a_shared_state_dir(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o775)
    with pytest.raises(WalmError, match="chmod 0700"):
        vmhost.write_record(HostPaths(str(d), "vm1"), {})
    assert list(d.iterdir()) == []


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
            assert vmhost.running_pid(paths) is None, p.args
        with open(paths.pidfile, "w") as f:
            f.write("%d\n" % mine.pid)
        assert vmhost.running_pid(paths) == mine.pid
        assert vmhost.vm_processes(paths) == [mine.pid]
        assert vmhost.stale_files(paths) == []
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
    assert sorted(vmhost.stale_files(paths)) == sorted([paths.pidfile, paths.qmp_socket, paths.events_socket])
    d = normalize({"name": "vm1", "accel": "tcg"})
    pid, argv = vmhost.start_qemu(d, paths, incoming=True, binary=fake_qemu)
    assert pid and argv[0] == fake_qemu
    for f in (paths.pidfile, paths.qmp_socket, paths.events_socket, paths.console_log):
        assert mode(f) == 0o600, f
    assert stat.S_ISSOCK(os.lstat(paths.qmp_socket).st_mode)


def test_start_keeps_the_previous_console_log_and_makes_a_private_one(state_dir, fake_qemu):
    paths = HostPaths(state_dir, "vm1")
    with open(paths.console_log, "w") as f:
        f.write("previous boot\n")
    os.chmod(paths.console_log, 0o644)
    vmhost.start_qemu(normalize({"name": "vm1", "accel": "tcg"}), paths, binary=fake_qemu)
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
        assert vmhost.running_pid(paths) is None  # no pidfile ...
        assert vmhost.stale_files(paths) == []  # ... but its socket is not stale
        with pytest.raises(WalmError, match="VM 'vm1' already runs on this host \\(pid %d\\)" % live.pid):
            vmhost.start_qemu(normalize({"name": "vm1", "accel": "tcg"}), paths, binary=fake_qemu)
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
        vmhost.start_qemu(normalize({"name": "vm1", "accel": "tcg"}), paths, binary=str(failing))
    assert not os.path.lexists(paths.qmp_socket) and not os.path.lexists(paths.pidfile)


# -- the event log ----------------------------------------------------------------------------------------------

def test_event_log_is_0600_and_replaces_a_symlink(state_dir, tmp_path):
    paths = HostPaths(state_dir, "vm1")
    victim = tmp_path / "victim"
    victim.write_text("victim's")
    os.symlink(str(victim), paths.event_log)
    server = socket.socket(socket.AF_UNIX)
    server.bind(paths.events_socket)
    server.listen(1)
    server.settimeout(10)
    try:
        # The stand-in monitor never answers: the logger gives up, which start() reports, not raises.
        assert "did not connect" in eventlog.start(paths, timeout_s=0.3)
        assert not os.path.islink(paths.event_log) and mode(paths.event_log) == 0o600
        assert victim.read_text() == "victim's"
    finally:
        conn, _addr = server.accept()
        conn.close()
        server.close()


@pytest.mark.parametrize("text,expected", [
    ("MemTotal:       24608768 kB\nMemFree:  100 kB\nMemAvailable:   22395136 kB\n",
     {"total_mib": 24032, "available_mib": 21870}),
    # An old kernel without MemAvailable: unknown, never a guess.
    ("MemTotal:       1048576 kB\nMemFree:  524288 kB\n", {"total_mib": 1024, "available_mib": None}),
])
def test_host_memory_from_meminfo(tmp_path, text, expected):
    path = tmp_path / "meminfo"
    path.write_text(text)
    assert vmhost.host_memory(str(path)) == expected
