"""A workload's class by the thresholds, which are data an operator can override."""

from ansible_collections.walm.qemu.plugins.module_utils import decide_defaults
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_decide_policy import HEAVY_AT_LINK, MEDIUM, run


def test_thresholds_are_data_and_overridable():
    default = run(MEDIUM)
    assert default["workload_class"]["thresholds_used"] == decide_defaults.THRESHOLDS
    raised = run(MEDIUM, thresholds={"dirty_rate_mib_s": 100, "cpu_percent": 150})
    assert raised["workload_class"]["intensity"] == ["idle"]
    assert raised["workload_class"]["thresholds_used"]["dirty_rate_mib_s"] == 100
    # the near-link rule is a threshold too: above 100 % of the link nothing changes for this guest
    assert run(HEAVY_AT_LINK, thresholds={"precopy_max_dirty_pct_of_link": 150})["predictions"]["precopy"][
        "why_not_converging"] != "dirty_rate_near_link"
