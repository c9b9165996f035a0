"""Fixtures shared by the plugins' unit tests on both sides of ansible-test's split: `vm`, a QEMU named pvm1 (from
test_probe.py's start_qemu), serves module_utils/test_probe.py and the controller's test_module_cli.py; `state_dir`, a
private state dir, the tests of a VM's files."""

import pytest

from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_probe import start_qemu, stop


@pytest.fixture
def vm(tmp_path):
    proc, sock = start_qemu(tmp_path, "pvm1", smp=2)
    yield proc, sock
    stop(proc)


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return str(d)
