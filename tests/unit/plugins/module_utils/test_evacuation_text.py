"""How an evacuation writes a workload class."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.evacuation_text import class_text
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_evacuation_plan import CPU_CLASS, IDLE_CLASS, WRITE_CLASS


@pytest.mark.parametrize("cls, text", [
    (IDLE_CLASS, "idle"), (CPU_CLASS, "cpu"), (WRITE_CLASS, "memory+cpu write-intensive"), (None, "unknown"),
])
def test_class_text(cls, text):
    assert class_text(cls) == text
