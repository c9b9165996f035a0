"""The performance model against the lab's measurements, and its constants given as data.

The anchor figures are the lab's (QEMU 10.0.2, TCG, 512 MiB guests, a link shaped to 1 Gbit/s that measures
114 MiB/s; ../shared/ANCHORS.md and ../shared/LAB.md): an idle guest pre-copies in ~0.75 s sending ~86 MiB; a
heavy writer never converges in pre-copy and post-copies in ~2.2-2.3 s (~276 MiB touched) while stalling ~2 s; a
read-mostly guest with a large working set takes ~3 s in every method, with thousands of remote faults in post-copy
and none in hybrid.
"""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import decide_defaults
from ansible_collections.walm.qemu.plugins.module_utils.decide_model import Model, ModelInput
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_decide_policy import (
    HEAVY, HEAVY_AT_LINK, IDLE, LAB_LINK_MIB_S, MEDIUM, READ_MOSTLY, READ_MOSTLY_PROBED, decide, good, run, within)


def model_for(workload, bandwidth=LAB_LINK_MIB_S, limit_ms=300, max_passes=30):
    """The model alone, fed as walm_decide feeds it (reads assumed from CPU use when not measured)."""
    read = workload.get("read")
    reads = read if read is not None else workload["cpu"] / 100.0 * 32
    return Model(ModelInput(memory_mib=512, nonzero_mib=workload["rss"], working_set_mib=workload["wws"],
                            access_set_mib=workload["rss"] if reads > 0 else workload["wws"],
                            dirty_rate_mib_s=workload["dirty"], access_rate_mib_s=workload["dirty"] + reads,
                            busy_vcpus=max(1, workload["cpu"] / 100.0), bandwidth_mib_s=bandwidth, latency_ms=0.1,
                            downtime_limit_ms=limit_ms, max_passes=max_passes))


# --- the model against the lab's measurements -------------------------------------------------------------------

def test_idle_guest_precopies_like_the_lab():
    pre = model_for(IDLE).precopy(90)
    assert pre["converges"] and pre["passes"] == 2
    assert within(pre["total_time_ms"], 750, 30), pre["total_time_ms"]
    assert within(pre["transferred_mib"], 86, 10), pre["transferred_mib"]


@pytest.mark.parametrize("workload", [HEAVY_AT_LINK, HEAVY], ids=["120MiBs", "130MiBs"])
def test_heavy_writer_never_converges_and_postcopy_stalls_it(workload):
    model = model_for(workload)
    pre = model.precopy(90)
    assert pre["converges"] is False and pre["why_not_converging"] == "dirty_rate_near_link"
    assert pre["total_time_ms"] is None
    post = model.postcopy()
    assert within(post["total_time_ms"], 2300, 30), post["total_time_ms"]
    assert post["guest_slowdown_pct"] > 75  # measured: stalls ~2 s, loses > 75 % of its progress
    assert post["postcopy_faults"] > 1000


@pytest.mark.parametrize("workload", [READ_MOSTLY, dict(READ_MOSTLY, read=None), READ_MOSTLY_PROBED],
                         ids=["read-rate", "no-read-rate", "as-probed"])
def test_read_mostly_large_working_set(workload):
    model = model_for(workload)
    pre, post = model.precopy(90), model.postcopy()
    hybrid = model.hybrid(1, 90)
    for pred in (pre, post, hybrid):
        assert pred["converges"] and within(pred["total_time_ms"], 3000, 30), pred
    assert post["postcopy_faults"] >= 1000                           # thousands of remote faults in post-copy
    assert hybrid["completes_as_precopy"] and hybrid["postcopy_faults"] == 0  # none in hybrid
    assert hybrid["switch_after_passes"] == 1


def test_dirtied_memory_is_capped_by_the_working_set():
    model = model_for(MEDIUM)
    assert model.dirtied_mib(0.01) == pytest.approx(40 * 0.01, rel=0.01)
    assert model.dirtied_mib(1000) <= 256
    assert model_for(dict(MEDIUM, dirty=0)).dirtied_mib(5) == 0


def test_hybrid_time_grows_and_disruption_shrinks_with_more_passes():
    hybrids = model_for(HEAVY).hybrids(90)
    assert len(hybrids) >= 3
    times = [h["total_time_ms"] for h in hybrids]
    exposure = [h["postcopy_exposure_ms"] for h in hybrids]
    assert times == sorted(times) and exposure == sorted(exposure, reverse=True)


def test_smaller_downtime_limit_needs_more_passes():
    preds = [model_for(MEDIUM, limit_ms=limit).precopy(90) for limit in (300, 30, 10)]
    assert all(p["converges"] for p in preds)
    passes = [p["passes"] for p in preds]
    assert passes[0] < passes[1] < passes[2], passes
    # QEMU's rule: the last remainder fits the limit; the device state and the data in flight come on top
    m = decide_defaults.MODEL
    for pred, limit in zip(preds, (300, 30, 10)):
        assert pred["downtime_ms"] <= (limit + m["switchover_overhead_ms"] + 1
                                       + m["inflight_mib"] / LAB_LINK_MIB_S * 1000.0)


def test_precopy_gives_up_after_max_passes():
    pre = model_for(dict(MEDIUM, dirty=95), max_passes=5).precopy(90)
    assert pre["converges"] is False and pre["why_not_converging"] == "max_passes"
    assert len(pre["rounds"]) == 5


def test_small_hot_working_set_converges_even_above_the_link():
    # A guest rewriting 16 MiB at 500 MiB/s: every pass leaves at most 16 MiB, which fits one 300 ms switchover.
    pre = model_for(dict(dirty=500, cpu=100, rss=100, wws=16)).precopy(90)
    assert pre["converges"] and pre["rounds"][-1]["dirtied_mib"] <= pre["switchover_threshold_mib"]


def test_model_constants_are_overridable():
    slow_faults = run(READ_MOSTLY, model={"postcopy_fault_service_ms": 10})
    fast_faults = run(READ_MOSTLY)
    assert slow_faults["model"]["postcopy_fault_service_ms"] == 10
    assert slow_faults["predictions"]["postcopy"]["postcopy_faults"] < \
        fast_faults["predictions"]["postcopy"]["postcopy_faults"]


BAD = [
    ("unknown-model", good(model={"page_size": 4096}), r"unknown model parameter 'page_size'"),
    ("zero-page-size", good(model={"page_size_bytes": 0}), r"model\.page_size_bytes must be greater than 0"),
]


@pytest.mark.parametrize("params,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_fails_clearly(params, message):
    with pytest.raises(WalmError, match=message):
        decide(params)
