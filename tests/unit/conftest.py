"""Fixtures shared by unit tests."""

import pytest

from ansible_collections.walm.qemu.tests.unit.private_nfs import PrivateNfs, available


def _nfs_scope(fixture_name, config):
    """One server per test file. ansible-test units runs each test in a fork of its own (its ansible_forked plugin):
    a module-scoped server would start again in every fork and be left running by all but the module's last test, so
    there each test gets its own, stopped when the test ends."""
    return "function" if config.pluginmanager.hasplugin("ansible_forked") else "module"


@pytest.fixture(scope=_nfs_scope)
def nfs():
    why = available()
    if why:
        pytest.fail("private NFS server cannot run: " + why)
    server = PrivateNfs().start()
    try:
        yield server
    finally:
        server.stop()
