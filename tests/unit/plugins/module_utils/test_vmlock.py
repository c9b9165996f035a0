"""The per-VM lock (module_utils/vmlock.py): a second holder is refused naming the first, waits when asked, and a
killed holder leaves nothing behind."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import vmlock
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError

HOLDER = r"""
import sys, time
from ansible_collections.walm.qemu.plugins.module_utils import vmlock
with vmlock.hold(sys.argv[1], "vm1", "walm_migrate"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(tmp_path, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(seconds)], stdout=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert p.stdout.readline().strip() == b"held"
    return p


def test_second_holder_refused_naming_the_first(tmp_path):
    p = _holder(tmp_path, 30)
    try:
        with pytest.raises(WalmError) as err:
            with vmlock.hold(str(tmp_path), "vm1", "walm_vm state=stopped", wait_s=0.3):
                pytest.fail("the lock was taken twice")
        assert "busy" in str(err.value) and "walm_migrate" in str(err.value) and str(p.pid) in str(err.value)
        # Another VM's lock is independent.
        with vmlock.hold(str(tmp_path), "vm2", "walm_vm state=stopped"):
            pass
    finally:
        p.kill()
        p.wait()


def test_waits_for_a_holder_that_ends(tmp_path):
    p = _holder(tmp_path, 0.5)
    try:
        t0 = time.time()
        with vmlock.hold(str(tmp_path), "vm1", "walm_vm state=stopped", wait_s=10):
            assert time.time() - t0 >= 0.2
    finally:
        p.wait()


def test_killed_holder_releases(tmp_path):
    p = _holder(tmp_path, 60)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with vmlock.hold(str(tmp_path), "vm1", "walm_migrate"):
        assert oct(os.stat(vmlock.lock_path(str(tmp_path), "vm1")).st_mode & 0o777) == "0o600"


def test_no_state_dir_no_lock(tmp_path):
    with vmlock.hold(str(tmp_path / "absent"), "vm1", "walm_vm state=stopped") as path:
        assert path is None
    assert not (tmp_path / "absent").exists()


def test_symlinked_lock_file_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(str(victim), vmlock.lock_path(str(tmp_path), "vm1"))
    with pytest.raises(WalmError):
        with vmlock.hold(str(tmp_path), "vm1", "walm_migrate"):
            pass
    assert victim.read_text() == "keep"
