"""The destination's event log and the guest-visible downtime, on two real QEMUs migrating over loopback.

A firmware-only guest (no kernel, no disk, no NIC) migrates between two QEMUs of this host started through
VMService, as walm_vm starts them; the destination's logger must record RESUME after the source's STOP.
"""

import os
import socket
import stat
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import eventlog, qemu_binary, qemu_process
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.migration import Migration
from ansible_collections.walm.qemu.plugins.module_utils.vm_service import VMService
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_vm_records import mode

DEFINITION = {"name": "ev1", "memory_mib": 64, "vcpus": 1, "accel": "tcg"}


def test_guest_visible_downtime_from_both_sides(tmp_path):
    src = VMService("ev1", str(tmp_path / "src"))
    dst = VMService("ev1", str(tmp_path / "dst"))
    try:
        started = src.started(DEFINITION)
        recorded = started["vm"]["definition"]  # the source's record: machine type pinned, as walm_vm_info gives
        prepared = dst.incoming(recorded, "127.0.0.1", method="precopy")
        assert prepared["vm"]["status"] == "inmigrate"
        assert prepared["vm"]["resumed_at"] is None and prepared["vm"]["event_log_note"] is None
        # As documented, although QEMU's -daemonize makes its files with umask 027 (sockets 0750, files 0640).
        for f in (src.paths.qmp_socket, src.paths.pidfile, src.paths.console_log, src.paths.record,
                  dst.paths.qmp_socket, dst.paths.events_socket, dst.paths.event_log):
            assert stat.S_IMODE(os.lstat(f).st_mode) == 0o600, f
        before = time.time()
        result = Migration("ev1", src.paths.qmp_socket, prepared["incoming_uri"], method="precopy",
                           capabilities=prepared["capabilities"], timeout_s=60).run()
        assert result["status"] == "completed", result
        qemu_process.wait_status("ev1", dst.paths, ("running",), 30)
        info = dst.info()
        stop, resume = result["source_stop_time"], info["resumed_at"]
        print("guest-visible downtime %.1f ms, QEMU downtime %s ms, TMT %s ms" % ((resume - stop) * 1000.0,
                                                                                  result["downtime_ms"],
                                                                                  result["total_time_ms"]))
        assert stop is not None and resume is not None
        assert before <= stop <= resume <= time.time()
        # The guest stops and resumes within the migration (a tiny guest on loopback: well under its TMT).
        assert (resume - stop) * 1000.0 <= result["total_time_ms"] + 50
    finally:
        src.stopped()
        dst.stopped()
    # Stopping removes the log and the second monitor's socket; the logger ends with its QEMU.
    assert not os.path.exists(dst.paths.event_log) and not os.path.exists(dst.paths.events_socket)


def test_reading_a_log_with_a_torn_line(tmp_path):
    paths = VMService("ev2", str(tmp_path)).paths
    os.makedirs(str(tmp_path), exist_ok=True)
    with open(paths.event_log, "w") as f:
        f.write('{"walm": "connected", "time": 1}\n')
        f.write('{"event": "RESUME", "timestamp": {"seconds": 100, "microseconds": 250000}}\n')
        f.write('{"event": "RESUME", "timestamp": {"seconds": 200, "microseconds": 0}}\n')
        f.write('{"event": "STOP", "timest')  # a crash mid-line
    assert eventlog.resumed_at(paths) == 100.25
    assert len(eventlog.read(paths)) == 3
    os.unlink(paths.event_log)
    assert eventlog.resumed_at(paths) is None


def test_out_of_band_commands_through_the_logger(tmp_path):
    """The logger negotiated 'oob' and serves exec-oob on its monitor: QEMU answers migrate-pause (refused here, as
    no post-copy runs) and the migration's state is read from the events it sent."""
    dst = VMService("ev3", str(tmp_path / "dst"))
    try:
        dst.incoming(dict(DEFINITION, name="ev3", machine=qemu_binary.resolve_machine("q35")), "127.0.0.1")
        assert eventlog.control_ready(dst.paths)
        assert stat.S_IMODE(os.lstat(dst.paths.control_socket).st_mode) == 0o600
        with pytest.raises(WalmError) as refused:
            eventlog.execute_oob(dst.paths, "migrate-pause", timeout_s=5)
        # QEMU's own words, passed through: it was asked, out of band, and said no.
        assert "refused out-of-band migrate-pause" in str(refused.value) and "postcopy" in str(refused.value)
        assert eventlog.last_migration_status(dst.paths) == "setup"
    finally:
        dst.stopped()
    assert not os.path.exists(dst.paths.control_socket)


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
