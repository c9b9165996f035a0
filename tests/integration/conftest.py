"""The lab, provisioned once per test session by the collection's own playbooks and torn down at the end."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from walmlab import pid_running, playbook, stop_vm  # noqa: E402


@pytest.fixture(scope="session")
def lab():
    playbook("lab_setup.yml", timeout=1800)
    try:
        yield
    finally:
        playbook("lab_teardown.yml", timeout=600)


@pytest.fixture
def vm(lab, request):
    """A VM name unique to the test (prefix from the module's VM_PREFIX), stopped on both hosts afterwards."""
    prefix = getattr(request.module, "VM_PREFIX", "it-")
    name = prefix + request.node.name.replace("test_", "")[:23 - len(prefix)].replace("_", "-")
    yield name
    stop_vm(name)
    assert not pid_running("walm-src", name) and not pid_running("walm-dst", name)
