"""The source sets exactly the capabilities the destination was prepared with: a VM that arrived by post-copy
still has the post-copy ones on, and a destination prepared for pre-copy would refuse its stream."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.migration_capabilities import outgoing_capabilities


class FakeQMP(object):
    def __init__(self, on):
        self.on = on

    def execute(self, command, args=None):
        assert command == "query-migrate-capabilities"
        return [{"capability": c, "state": c in self.on}
                for c in ("events", "return-path", "postcopy-ram", "postcopy-preempt", "multifd", "zero-blocks")]


@pytest.mark.parametrize("on, caps, expect", [
    # Arrived by post-copy, leaves by pre-copy: the post-copy capabilities are turned off.
    ({"events", "return-path", "postcopy-ram", "postcopy-preempt"}, {"events": True, "return-path": True},
     {"events": True, "return-path": True, "postcopy-ram": False, "postcopy-preempt": False}),
    # A fresh QEMU: nothing to turn off.
    (set(), {"events": True, "return-path": True}, {"events": True, "return-path": True}),
    # Leaves by post-copy: kept on.
    ({"postcopy-ram"}, {"events": True, "return-path": True, "postcopy-ram": True},
     {"events": True, "return-path": True, "postcopy-ram": True}),
    # Capabilities WALM does not manage are left as they are.
    ({"multifd", "zero-blocks"}, {"events": True}, {"events": True}),
])
def test_outgoing_capabilities(on, caps, expect):
    assert outgoing_capabilities(FakeQMP(on), caps) == expect
