"""The QMP client's error mapping: every failure becomes one message naming the VM and the command.

Real QEMU (no guest, SeaBIOS idling) produces the QEMU-side errors and the disconnect; a fake server stands in
only where real QEMU cannot misbehave on demand (a monitor that never greets or never answers).
"""

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP, QMPFailure
from ansible_collections.walm.qemu.tests.unit.paths import COLLECTIONS


@pytest.fixture
def qemu(tmp_path):
    """A real QEMU with a QMP socket (no disk, no kernel: the firmware just idles)."""
    sock = str(tmp_path / "vm.qmp")
    proc = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-nodefaults", "-display", "none",
                             "-qmp", "unix:%s,server=on,wait=off" % sock],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not os.path.exists(sock):
        assert proc.poll() is None, "QEMU exited early"
        assert time.time() < deadline, "QEMU did not create its QMP socket"
        time.sleep(0.05)
    yield sock, proc
    proc.kill()
    proc.wait()


class FakeMonitor(threading.Thread):
    """A unix-socket server speaking just enough QMP to misbehave in one chosen way."""

    def __init__(self, path, behaviour):
        super().__init__(daemon=True)
        self.behaviour = behaviour
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.conns = []

    def run(self):
        conn, _addr = self.srv.accept()
        self.conns.append(conn)
        if self.behaviour == "silent":
            time.sleep(30)
            return
        conn.sendall(json.dumps({"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 0},
                                                     "package": "fake"}, "capabilities": []}}).encode() + b"\n")
        buf = b""
        decoder = json.JSONDecoder()
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.decode().lstrip())
                except ValueError:
                    break  # incomplete message: read more
                buf = buf.decode().lstrip()[end:].encode()
                self.handle(conn, msg)

    def handle(self, conn, msg):
        if msg.get("execute") == "qmp_capabilities":
            conn.sendall(json.dumps({"return": {}, "id": msg.get("id")}).encode() + b"\n")
        elif self.behaviour == "hang":
            pass  # never answer
        elif self.behaviour == "garbage":
            conn.sendall(b"this is not json\n")

    def close(self):
        for c in self.conns:
            c.close()
        self.srv.close()


def test_success_returns_result(qemu):
    sock, _proc = qemu
    with QMP("vm1", sock, 5) as qmp:
        assert qmp.execute("query-status")["status"] in ("running", "paused", "prelaunch")
        assert "qemu" in qmp.execute("query-version")


def test_missing_socket_names_vm_and_fix(tmp_path):
    with pytest.raises(QMPFailure) as err:
        QMP("vm1", str(tmp_path / "nope.qmp"), 2).connect()
    msg = str(err.value)
    assert "VM 'vm1'" in msg and "connect" in msg and "does not exist" in msg and "running on this host" in msg


def test_not_a_socket(tmp_path):
    path = tmp_path / "plain-file"
    path.write_text("x")
    with pytest.raises(QMPFailure, match="VM 'vm1'.*is not a unix socket"):
        QMP("vm1", str(path), 2).connect()


def test_stale_socket_nothing_listening(tmp_path):
    path = str(tmp_path / "stale.qmp")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens: what a crashed QEMU leaves behind
    with pytest.raises(QMPFailure) as err:
        QMP("vm1", path, 2).connect()
    assert "VM 'vm1'" in str(err.value) and "nothing is listening" in str(err.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_permission_denied_as_other_user(qemu):
    """A 0600 root-owned monitor socket refuses an unprivileged user, with a message saying so."""
    sock, _proc = qemu
    os.chmod(sock, 0o600)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP, QMPFailure\n"
            "try:\n    QMP('vm1', %r, 2).connect()\nexcept QMPFailure as e:\n    print(e)\n"
            % (COLLECTIONS, sock))
    # The socket's directory must be traversable for the test to reach the permission check on the socket itself.
    os.chmod(os.path.dirname(sock), 0o711)
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, preexec_fn=_drop_to_nobody, timeout=30, check=False)
    assert "VM 'vm1'" in out.stdout and "permission denied" in out.stdout, out.stdout + out.stderr


def _drop_to_nobody():
    os.setgid(65534)
    os.setuid(65534)


def test_qemu_refuses_command(qemu):
    sock, _proc = qemu
    with QMP("vm1", sock, 5) as qmp:
        with pytest.raises(QMPFailure) as err:
            qmp.execute("migrate", {"uri": "bogus-transport:1"})
    assert "VM 'vm1'" in str(err.value) and "'migrate'" in str(err.value) and "QEMU refused it" in str(err.value)
    assert err.value.error_class == "GenericError"


def test_unknown_command(qemu):
    sock, _proc = qemu
    with QMP("vm1", sock, 5) as qmp:
        with pytest.raises(QMPFailure) as err:
            qmp.execute("no-such-command")
    assert err.value.error_class == "CommandNotFound" and "'no-such-command'" in str(err.value)


def test_disconnect_when_qemu_exits(qemu):
    sock, proc = qemu
    with QMP("vm1", sock, 5) as qmp:
        proc.kill()
        proc.wait()
        with pytest.raises(QMPFailure) as err:
            for _attempt in range(3):  # the first call may race the reader noticing EOF
                qmp.execute("query-status")
                time.sleep(0.2)
    msg = str(err.value)
    assert "VM 'vm1'" in msg and "'query-status'" in msg and ("did QEMU exit?" in msg)


def test_no_greeting_times_out(tmp_path):
    path = str(tmp_path / "silent.qmp")
    fake = FakeMonitor(path, "silent")
    fake.start()
    try:
        t0 = time.time()
        with pytest.raises(QMPFailure) as err:
            QMP("vm1", path, 1).connect()
        assert time.time() - t0 < 5
        assert "VM 'vm1'" in str(err.value) and "no QMP greeting" in str(err.value)
    finally:
        fake.close()


def test_command_without_reply_times_out(tmp_path):
    path = str(tmp_path / "hang.qmp")
    fake = FakeMonitor(path, "hang")
    fake.start()
    try:
        with QMP("vm1", path, 2) as qmp:
            t0 = time.time()
            with pytest.raises(QMPFailure) as err:
                qmp.execute("query-migrate", timeout_s=0.5)
            assert time.time() - t0 < 3
        assert "'query-migrate'" in str(err.value) and "no reply within 0.5 s" in str(err.value)
    finally:
        fake.close()


def test_garbage_from_monitor_is_a_clear_error(tmp_path):
    path = str(tmp_path / "garbage.qmp")
    fake = FakeMonitor(path, "garbage")
    fake.start()
    try:
        with QMP("vm1", path, 2) as qmp:
            with pytest.raises(QMPFailure) as err:
                qmp.execute("query-status")
        assert "VM 'vm1'" in str(err.value) and "'query-status'" in str(err.value)
    finally:
        fake.close()


def test_missing_library_message(monkeypatch):
    from ansible_collections.walm.qemu.plugins.module_utils import qmp as qmp_mod
    monkeypatch.setattr(qmp_mod, "HAS_QMP", False)
    with pytest.raises(Exception, match="qemu.qmp is required"):
        qmp_mod.QMP("vm1", "/x", 1)


def test_errno_mapping_covers_permission():
    from ansible_collections.walm.qemu.plugins.module_utils.qmp import _describe_os_error
    msg = _describe_os_error(OSError(errno.EACCES, "Permission denied"), "/run/walm/vm1.qmp")
    assert "permission denied" in msg and "/run/walm/vm1.qmp" in msg
