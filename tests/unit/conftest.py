"""Fixtures shared by unit tests."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from private_nfs import PrivateNfs, available  # noqa: E402


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
