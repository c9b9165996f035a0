"""Fixtures shared by unit tests."""

import pytest

from ansible_collections.walm.qemu.tests.unit.private_nfs import PrivateNfs, available


@pytest.fixture(scope="module")
def nfs():
    why = available()
    if why:
        pytest.fail("private NFS server cannot run: " + why)
    server = PrivateNfs().start()
    try:
        yield server
    finally:
        server.stop()
