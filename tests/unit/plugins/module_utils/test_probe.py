"""walm_probe from end to end, and its error paths.

Real QEMU (firmware only, no guest) is measured, and migrated (to a `-incoming defer` QEMU, so the probe must
refuse).
"""

import os
import socket
import subprocess
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import probe
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP

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


# -- real QEMU --------------------------------------------------------------------------------------------------

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
