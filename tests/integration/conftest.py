"""The lab, provisioned once per test session by the collection's own playbooks and torn down at the end."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab import lab_setup, lab_teardown  # noqa: E402
from walmlab import pid_running, stop_all_vms, stop_vm  # noqa: E402


@pytest.fixture(scope="session")
def lab():
    lab_setup()
    # A clean slate: the tests name the VMs on each host (the demo's evacuated VMs would join an evacuation of
    # walm-dst). The lab is torn down at the end of the session anyway. The tests that need a destination already
    # running VMs start those themselves.
    left = stop_all_vms()
    if left:
        print("stopped VMs left on the lab: %s" % ", ".join(left))
    try:
        yield
    finally:
        lab_teardown()


@pytest.fixture
def vm(lab, request):
    """A VM name unique to the test (prefix from the module's VM_PREFIX), stopped on every lab host afterwards."""
    prefix = getattr(request.module, "VM_PREFIX", "it-")
    name = prefix + request.node.name.replace("test_", "")[:23 - len(prefix)].replace("_", "-")
    yield name
    stop_vm(name)
    assert not pid_running("walm-src", name) and not pid_running("walm-dst", name)
