"""walm_decide's input: a probe result, options and thresholds refused with the fix, and the model's inputs made
from the measurements (the link the guest's own traffic leaves, the memory counted when keys are missing)."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_decide_policy import (
    LAB_LINK_MIB_S, NET, decide, good, probe, run)


def test_network_heavy_guest_leaves_less_of_the_link():
    quiet = run(dict(NET, tx=0))
    busy = run(NET)
    assert busy["link"]["usable_bandwidth_mib_s"] == pytest.approx(LAB_LINK_MIB_S - 60)
    assert quiet["link"]["usable_bandwidth_mib_s"] == pytest.approx(LAB_LINK_MIB_S)
    assert busy["predictions"]["precopy"]["total_time_ms"] > 1.5 * quiet["predictions"]["precopy"]["total_time_ms"]
    assert any("shares the link: 54 of the 114 MiB/s link is usable" in r for r in busy["reasons"])
    assert busy["workload_class"]["intensity"][0] == "network"


def test_guest_traffic_beyond_the_link_is_floored():
    result = run(dict(NET, tx=100, rx=50))
    assert result["link"]["floored"] is True
    assert result["link"]["usable_bandwidth_mib_s"] == pytest.approx(LAB_LINK_MIB_S * 0.1)


def test_missing_optional_probe_keys_are_conservative():
    result = decide({"probe": {"vm": {"memory_mib": 512}, "workload": {"dirty_rate_mib_s": 1}},
                     "link_bandwidth_mib_s": LAB_LINK_MIB_S})
    assert result["model_inputs"]["nonzero_mib"] == 512  # no rss_mib: every page counted
    assert result["model_inputs"]["working_set_source"].startswith("memory_mib")
    assert result["method"] == "precopy"


BAD = [
    ("no-dirty-rate", good(probe={"vm": {"memory_mib": 512}, "workload": {"cpu_percent": 3}}),
     r"probe\.workload\.dirty_rate_mib_s is missing or null"),
    ("no-workload", good(probe={"vm": {"memory_mib": 512}}), r"probe\.workload is missing"),
    ("no-memory", good(probe={"vm": {"name": "x"}, "workload": {"dirty_rate_mib_s": 1}}),
     r"probe\.vm\.memory_mib is missing"),
    ("several-vms", good(probe={"vms": [probe(), probe()]}), r"probe holds 2 VMs"),
    ("not-a-dict", good(probe=[probe()]), r"probe must be the probe result of one VM"),
    ("negative-dirty", good(probe=probe(dirty=-1)), r"probe\.workload\.dirty_rate_mib_s must be at least 0"),
    ("text-dirty", good(probe=probe(dirty="fast")), r"dirty_rate_mib_s must be a number, not 'fast'"),
    ("negative-bandwidth", good(link_bandwidth_mib_s=-5), r"link_bandwidth_mib_s must be greater than 0"),
    ("zero-bandwidth", good(link_bandwidth_mib_s=0), r"link_bandwidth_mib_s must be greater than 0"),
    ("no-bandwidth", good(link_bandwidth_mib_s=None), r"link_bandwidth_mib_s is required"),
    ("zero-downtime", good(downtime_limit_ms=0), r"downtime_limit_ms must be greater than 0"),
    ("objective", good(objective="fastest"), r"unknown objective 'fastest'; choose one of urgent, balanced"),
    ("unknown-threshold", good(thresholds={"cpu_pct": 5}), r"unknown threshold 'cpu_pct'; known thresholds: "),
    ("negative-threshold", good(thresholds={"tmt_tolerance_pct": -1}), r"thresholds\.tmt_tolerance_pct must be"),
]


@pytest.mark.parametrize("params,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_fails_clearly(params, message):
    with pytest.raises(WalmError, match=message):
        decide(params)
