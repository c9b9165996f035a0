"""Probing one VM: what real QEMU must refuse or report, and a fake monitor for what real QEMU cannot be on
demand: a QEMU too old to measure dirty rates, one whose measurement never finishes, one that is not running."""

import json
import os
import socket
import threading
import time

import pytest

from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_probe import opts, run_one, start_qemu, stop
from ansible_collections.walm.qemu.plugins.module_utils import probe
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError


def test_balloon_without_driver_is_null_not_a_guess(tmp_path):
    proc, sock = start_qemu(tmp_path, "pballoon", extra=["-device", "virtio-balloon-pci,id=balloon0"])
    try:
        (r,) = probe.run(opts(tmp_path, qmp_socket=sock, samples=1, duration_s=0.1))["vms"]
        assert r["workload"]["guest_memory_used_mib"] is None
        assert any("balloon reports no statistics" in lim for lim in r["limits"])
    finally:
        stop(proc)


def test_dirty_bitmap_on_tcg_is_refused_and_qemu_survives(tmp_path, vm):
    proc, sock = vm
    with pytest.raises(WalmError) as err:
        run_one(tmp_path, qmp_socket=sock, dirty_rate_mode="dirty-bitmap")
    assert "crashes QEMU 7.2" in str(err.value) and "VM 'pvm1'" in str(err.value)
    with pytest.raises(WalmError, match="dirty-ring-size"):
        run_one(tmp_path, qmp_socket=sock, dirty_rate_mode="dirty-ring")
    time.sleep(0.5)
    assert proc.poll() is None


# -- a fake monitor for what real QEMU cannot be on demand ------------------------------------------------------

class FakeQEMU(threading.Thread):
    """A QMP server answering from a table: an old QEMU, or one whose measurement never ends."""

    def __init__(self, path, version, answers):
        super().__init__(daemon=True)
        self.version = version
        self.answers = answers
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.stopped = False

    def run(self):
        while not self.stopped:
            try:
                conn, _addr = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        major, minor, micro = self.version
        conn.sendall(json.dumps({"QMP": {"version": {"qemu": {"major": major, "minor": minor, "micro": micro},
                                                     "package": "fake"}, "capabilities": []}}).encode() + b"\n")
        buf = ""
        decoder = json.JSONDecoder()
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break  # incomplete message: read more
                buf = buf.lstrip()[end:]
                conn.sendall(json.dumps(self.reply(msg)).encode() + b"\n")

    def reply(self, msg):
        major, minor, micro = self.version
        cmd = msg.get("execute")
        if cmd == "qmp_capabilities":
            return {"return": {}, "id": msg.get("id")}
        if cmd == "query-version":
            return {"return": {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": "fake"},
                    "id": msg.get("id")}
        if cmd in self.answers:
            return {"return": self.answers[cmd], "id": msg.get("id")}
        return {"error": {"class": "CommandNotFound", "desc": "The command %s has not been found" % cmd},
                "id": msg.get("id")}

    def close(self):
        self.stopped = True
        self.srv.close()


BASIC = {"query-status": {"status": "running", "running": True}, "query-migrate": {},
         "query-kvm": {"enabled": False, "present": False},
         "query-cpus-fast": [{"cpu-index": 0, "thread-id": os.getpid()}],
         "query-memory-size-summary": {"base-memory": 512 * 1024 * 1024}}


def test_qemu_too_old(tmp_path):
    path = str(tmp_path / "old.qmp")
    fake = FakeQEMU(path, (5, 1, 0), dict(BASIC, **{"query-commands": [{"name": "query-status"}]}))
    fake.start()
    try:
        with pytest.raises(WalmError) as err:
            run_one(tmp_path, qmp_socket=path)
        assert "QEMU 5.1.0 is too old to measure its dirty rate" in str(err.value)
        assert "upgrade QEMU" in str(err.value)
    finally:
        fake.close()


def test_another_measurement_never_ending(tmp_path):
    path = str(tmp_path / "busy.qmp")
    cmds = [{"name": n} for n in ("calc-dirty-rate", "query-dirty-rate")]
    fake = FakeQEMU(path, (10, 0, 0), dict(BASIC, **{"query-commands": cmds,
                                                     "query-dirty-rate": {"status": "measuring"}}))
    fake.start()
    try:
        with pytest.raises(WalmError, match="another dirty-rate measurement is running"):
            run_one(tmp_path, qmp_socket=path, samples=1, duration_s=0.1)
    finally:
        fake.close()


def test_old_qemu_measures_whole_seconds_with_page_sampling(tmp_path):
    """QEMU 6.2-8.1: no millisecond windows; the window is rounded up and the reading says so."""
    path = str(tmp_path / "q7.qmp")
    cmds = [{"name": n} for n in ("calc-dirty-rate", "query-dirty-rate")]
    fake = FakeQEMU(path, (7, 2, 0), dict(BASIC, **{
        "query-commands": cmds, "calc-dirty-rate": {},
        "query-dirty-rate": {"status": "measured", "dirty-rate": 12, "calc-time": 1}}))
    fake.start()
    try:
        r = run_one(tmp_path, qmp_socket=path, samples=1, duration_s=0.3)
        assert r["settings"]["window_ms"] == 1000 and r["samples"][0]["window_ms"] == 1000
        assert r["workload"]["dirty_rate_mib_s"] == 12 and r["vm"]["qemu_version"] == "7.2.0"
        assert any("whole seconds" in lim for lim in r["limits"])
    finally:
        fake.close()


class StatusQEMU(FakeQEMU):
    """A fake that records the commands it gets and reports `later` as its status from the n-th query-status on."""

    def __init__(self, path, answers, later=None, from_query=None):
        super().__init__(path, (7, 2, 0), answers)
        self.commands = []
        self.later, self.from_query, self.status_queries = later, from_query, 0

    def reply(self, msg):
        self.commands.append(msg.get("execute"))
        if msg.get("execute") == "query-status":
            self.status_queries += 1
            if self.later and self.status_queries >= self.from_query:
                return {"return": {"status": self.later, "running": False}, "id": msg.get("id")}
        return super().reply(msg)


MEASURABLE = dict(BASIC, **{"query-commands": [{"name": n} for n in ("calc-dirty-rate", "query-dirty-rate")],
                            "calc-dirty-rate": {},
                            "query-dirty-rate": {"status": "measured", "dirty-rate": 12, "calc-time": 1}})


@pytest.mark.parametrize("status", ["paused", "postmigrate", "prelaunch", "suspended", "shutdown", "finish-migrate",
                                    "internal-error", "guest-panicked", "restore-vm", "inmigrate"])
def test_a_vm_that_is_not_running_is_not_measured(tmp_path, status):
    """A paused guest dirties no memory and uses no vCPU: its reading would pass for an idle workload."""
    path = str(tmp_path / "paused.qmp")
    fake = StatusQEMU(path, dict(MEASURABLE, **{"query-status": {"status": status, "running": False}}))
    fake.start()
    try:
        with pytest.raises(WalmError) as err:
            run_one(tmp_path, qmp_socket=path, samples=1, duration_s=0.1)
        if status == "inmigrate":
            assert "is the destination of an incoming migration (status inmigrate)" in str(err.value)
        else:
            assert "is not running (QEMU status %s)" % status in str(err.value)
            assert "has no workload to measure" in str(err.value) and "once it is resumed" in str(err.value)
        assert err.value.details.get("status") == status
        assert "calc-dirty-rate" not in fake.commands  # refused before measuring
    finally:
        fake.close()


def test_a_vm_paused_while_measured_gives_no_reading(tmp_path):
    path = str(tmp_path / "pausing.qmp")
    fake = StatusQEMU(path, MEASURABLE, later="paused", from_query=2)
    fake.start()
    try:
        with pytest.raises(WalmError, match="is not running \\(QEMU status paused\\)"):
            run_one(tmp_path, qmp_socket=path, samples=1, duration_s=0.1)
        assert "calc-dirty-rate" in fake.commands
    finally:
        fake.close()
