"""The registries of migration methods, timeout actions, objectives and evacuation policies: one entry each, in
the order the choice lists show them, and the behaviour each entry gives the code that reads it."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import adaptation, decide_defaults, evacuation_plan, methods
from ansible_collections.walm.qemu.plugins.module_utils.migration import Migration
from ansible_collections.walm.qemu.plugins.module_utils.migration_capabilities import capabilities_for, needs_postcopy

# name, label, postcopy, switch_point, adapts, safety_rank
METHOD_ROWS = [
    ("precopy", "pre-copy", False, False, True, 0),
    ("postcopy", "post-copy", True, False, False, 2),
    ("hybrid", "hybrid", True, True, True, 1),
]


def test_the_method_table():
    assert [tuple(m) for m in methods.METHOD_TABLE] == METHOD_ROWS
    assert methods.METHODS == ("precopy", "postcopy", "hybrid")
    assert all(methods.METHOD_BY_NAME[m.name] is m for m in methods.METHOD_TABLE)
    assert sorted(m.safety_rank for m in methods.METHOD_TABLE) == list(range(len(methods.METHOD_TABLE)))


def test_the_timeout_actions():
    assert [tuple(a) for a in methods.ON_TIMEOUT_TABLE] == [("abort", False), ("postcopy", True)]
    assert methods.ON_TIMEOUT == ("abort", "postcopy")


def test_the_entries_cannot_be_changed():
    with pytest.raises(AttributeError):
        methods.METHOD_BY_NAME["precopy"].postcopy = True


@pytest.mark.parametrize("method, requested, switch_after_passes", [
    ("precopy", 3, None),  # never switches
    ("postcopy", 3, 0),  # switches once the first pass has started
    ("hybrid", 3, 3),  # after the passes the request asks for
])
def test_switch_point(method, requested, switch_after_passes):
    assert methods.METHOD_BY_NAME[method].switch_after_passes(requested) == switch_after_passes
    m = Migration("vm1", "/x", "tcp:h:1", method=method, switch_after_passes=requested)
    assert m.switch_after_passes == switch_after_passes


@pytest.mark.parametrize("method, on_timeout, allow_postcopy, needed", [
    ("precopy", "abort", False, False),
    ("precopy", "postcopy", False, True),
    ("precopy", "abort", True, True),
    ("postcopy", "abort", False, True),
    ("hybrid", "abort", False, True),
    ("nonsense", "nonsense", False, False),
])
def test_postcopy_ram_follows_the_method_and_the_timeout_action(method, on_timeout, allow_postcopy, needed):
    assert needs_postcopy(method, on_timeout, allow_postcopy) is needed
    if method in methods.METHODS:
        assert ("postcopy-ram" in capabilities_for(method, on_timeout, allow_postcopy=allow_postcopy)) is needed


@pytest.mark.parametrize("method, watched", [("precopy", True), ("postcopy", False), ("hybrid", True),
                                             ("nonsense", False)])
def test_the_adaptation_watches_the_methods_that_adapt(method, watched):
    assert adaptation.Monitor(method).done is not watched


def test_objectives():
    assert [tuple(o) for o in decide_defaults.OBJECTIVE_TABLE] == [("urgent", False), ("balanced", True)]
    assert decide_defaults.OBJECTIVES == ("urgent", "balanced")
    assert decide_defaults.OPTIONS["objective"] in decide_defaults.OBJECTIVES


def test_evacuation_policies():
    rows = [(p.name, p.method, p.by_prediction, p.adapt, p.position is None, p.why is None)
            for p in evacuation_plan.POLICY_TABLE]
    assert rows == [("walm", None, True, True, True, True),
                    ("naive", "precopy", False, False, False, False)]
    assert evacuation_plan.POLICIES == ("walm", "naive")
    assert all(p.method is None or p.method in methods.METHODS for p in evacuation_plan.POLICY_TABLE)
    assert all(p.order_reason.startswith("Order: ") for p in evacuation_plan.POLICY_TABLE)
