"""Run-time adaptation on the lab: real pre-copies that leave their prediction, carried through each action by
playbooks/migrate_vm.yml, and the guest's memory check and disk check afterwards.

The prediction handed over is what a probe that misses the guest's writes gives (an idle guest: ~0.85 s, 2
passes), as page-sampling does for a guest that rewrites pages with their own values; the guest is the verify
workload, which writes 256 MiB at 64 MiB/s (or 150) and checks every page it reads.
"""

import pytest

from test_migrate import assert_migrated_intact, last, qmp_status
from walmlab import console_log, kernel_trouble, migrate, parse_console, pid_running, start_vm, wait_until

pytestmark = pytest.mark.lab

VM_PREFIX = "ad-"
VERIFY = {"verify_mib": 256, "rate_mib_s": 64}
HEAVY_VERIFY = {"verify_mib": 256, "rate_mib_s": 150}  # dirties faster than the 1 Gbit/s link carries
# walm_decide's expectation for an idle 512 MiB guest on the lab link (what a fooled probe leads to).
IDLE_EXPECT = {"method": "precopy", "converges": True, "total_time_ms": 850, "downtime_ms": 200, "passes": 2,
               "dirty_rate_mib_s": 0.0, "objective": "urgent", "budget_ms": None}


def _first_pass_ms(result):
    """When pass 1 ended (the first snapshot of dirty-sync-count 2)."""
    return min(s["t_ms"] for s in result["snapshots"] if s["pass"] >= 2)


def _acted_promptly(result, adaptation):
    # Present from the start, the divergence shows after pass 1: the check must act within 2 passes or 5 s of it.
    assert adaptation["pass"] <= 2, result["adaptations"]
    assert adaptation["t_ms"] <= _first_pass_ms(result) + 5000, result["adaptations"]


def test_diverged_precopy_switches_to_postcopy(vm):
    start_vm(vm, "verify", VERIFY)
    result = assert_migrated_intact(vm, "verify", "pass", {"walm_method": "precopy", "walm_expect": IDLE_EXPECT})
    (adaptation,) = result["adaptations"]
    assert adaptation["action"] == "postcopy", adaptation
    _acted_promptly(result, adaptation)
    assert adaptation["measured"]["dirty_rate_mib_s"] > 30 and adaptation["predicted"]["total_time_ms"] == 850
    assert result["ran_postcopy"] is True and result["postcopy_reason"].startswith("adaptation: ")
    assert result["downtime_within_limit"] is True
    print("switched at %s ms (pass %s): %s; TMT %s ms, DT %s ms, guest-visible %s ms"
          % (adaptation["t_ms"], adaptation["pass"], adaptation["reason"], result["total_time_ms"],
             result["downtime_ms"], result["guest_visible_downtime_ms"]))


def test_diverged_precopy_gets_a_higher_downtime_limit(vm):
    start_vm(vm, "verify", VERIFY)
    result = assert_migrated_intact(vm, "verify", "pass", {
        "walm_method": "precopy", "walm_expect": IDLE_EXPECT, "walm_allow_postcopy": False,
        "walm_adaptation_actions": ["downtime", "abort"], "walm_max_downtime_limit_ms": 4000})
    # The limit is raised in steps (each at least double): a slower link or a larger remainder after the next pass
    # takes a second step, so only the first must be prompt and every step must raise the limit.
    adaptations = result["adaptations"]
    assert adaptations and all(a["action"] == "downtime" for a in adaptations), adaptations
    adaptation = adaptations[0]
    _acted_promptly(result, adaptation)
    limits = [a["downtime_limit_ms"] for a in adaptations]
    assert limits == sorted(set(limits)) and limits[-1] == result["downtime_limit_ms"], adaptations
    assert result["ran_postcopy"] is False and "postcopy-ram" not in result["capabilities"]
    assert 300 < result["downtime_limit_ms"] <= 4000
    # The raised limit is still a promise: the guest saw no longer a pause than it.
    assert result["downtime_ms"] <= result["downtime_limit_ms"]
    assert result["guest_visible_downtime_ms"] <= result["downtime_limit_ms"], result
    assert result["downtime_within_limit"] is True
    print("raised to %s ms (steps %s, the first at %s ms): TMT %s ms, DT %s ms, guest-visible %s ms"
          % (result["downtime_limit_ms"], limits, adaptation["t_ms"], result["total_time_ms"], result["downtime_ms"],
             result["guest_visible_downtime_ms"]))


def test_diverged_precopy_without_a_way_out_aborts_and_stays_on_the_source(vm):
    start_vm(vm, "verify", VERIFY)
    src_log = console_log("walm-src", vm)
    wait_until(lambda: len(parse_console(src_log, "verify")) >= 3 and last(parse_console(src_log, "disk"),
                                                                           "written"), 90, "verify progress")
    disk_before = last(parse_console(src_log, "disk"), "written")
    proc, result = migrate(vm, {"walm_method": "precopy", "walm_expect": IDLE_EXPECT, "walm_allow_postcopy": False,
                                "walm_adaptation_actions": ["downtime", "abort"], "walm_timeout_s": 120},
                           check=False)
    assert proc.returncode != 0
    assert result["status"] == "aborted" and "would not converge" in result["error"], result
    (adaptation,) = result["adaptations"]
    assert adaptation["action"] == "abort"
    assert adaptation["t_ms"] < 10000  # long before timeout_s
    assert result["source_status_after"] == "running"
    assert qmp_status("walm-src", vm) == "running"
    assert not pid_running("walm-dst", vm)  # the destination copy was removed
    # The guest goes on on the source: more verify passes, more disk records, no error anywhere.
    seen = last(parse_console(src_log, "verify"), "pages_checked")
    wait_until(lambda: last(parse_console(src_log, "verify"), "pages_checked") > seen + 30000, 60,
               "verify progress on the source")
    wait_until(lambda: last(parse_console(src_log, "disk"), "written") > disk_before, 60, "disk check")
    assert all(r.get("errors", 0) == 0 for r in parse_console(src_log, "verify") + parse_console(src_log, "disk"))
    assert kernel_trouble(src_log) == []


def test_hybrid_switches_when_passes_stop_shrinking(vm):
    """A hybrid told to wait 10 passes switches as soon as a pass stops shrinking the remainder (no prediction)."""
    start_vm(vm, "verify", HEAVY_VERIFY)
    result = assert_migrated_intact(vm, "verify", "pass", {"walm_method": "hybrid", "walm_switch_after_passes": 10})
    (adaptation,) = result["adaptations"]
    assert adaptation["action"] == "postcopy" and adaptation["reason"].startswith("hybrid switches early")
    assert adaptation["pass"] <= 3, adaptation
    assert result["ran_postcopy"] is True
    print("hybrid switched after pass %s (%s ms): %s" % (adaptation["pass"], adaptation["t_ms"],
                                                         adaptation["reason"]))
