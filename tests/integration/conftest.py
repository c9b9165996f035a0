"""The lab, provisioned once per test session by the collection's own playbooks and torn down at the end."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from walmlab import playbook  # noqa: E402


@pytest.fixture(scope="session")
def lab():
    playbook("lab_setup.yml", timeout=1800)
    try:
        yield
    finally:
        playbook("lab_teardown.yml", timeout=600)
