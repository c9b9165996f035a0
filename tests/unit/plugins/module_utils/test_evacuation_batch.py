"""The evacuation's batch hand-offs (module_utils/evacuation_batch.py), the batch of migrations
(module_utils/migration_batch.py: the requests, checked before anything starts; the waves run in order, a wave's
migrations side by side; one migration's failure is its own) and of VMs (module_utils/vm_batch.py). Table tests;
migrate_vm and VMService are replaced where a test says so: the real ones run against QEMU in
tests/integration/test_evacuate.py. How the wait action reads a walm_migrate_waves job:
tests/unit/plugins/action/test_walm_migration_wait.py."""

import threading
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import evacuation_batch as eb
from ansible_collections.walm.qemu.plugins.module_utils import migration_batch as mb
from ansible_collections.walm.qemu.plugins.module_utils import vm_batch
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError

URI = "tcp:10.77.0.2:4444"


def entry(name, wave=1, method="precopy", adapt=True, tmt=1000, destination="hv2"):
    return {"name": name, "wave": wave, "method": method, "adapt": adapt, "on_timeout": "abort",
            "switch_after_passes": None, "destination": destination, "predicted_total_time_ms": tmt,
            "expectation": {"method": method, "total_time_ms": tmt}}


def ok(uri=URI, changed=True, started_at=5.0):
    return {"failed": False, "changed": changed, "incoming_uri": uri, "capabilities": {"postcopy-ram": True},
            "definition_sha256": "abc", "vm": {"started_at": started_at}}


# -- evacuation_batch ------------------------------------------------------------------------------------------------

def pending(name, destination="hv2", position=1, status="completed"):
    return {"vm": dict(entry(name, destination=destination), position=position),
            "where": {"action": "migrate"}, "prepared": {"prepare_started_at": 1.0, "prepared_at": 2.0},
            "migrated": {"status": status, "method": "precopy", "total_time_ms": 900, "downtime_ms": 120,
                         "source_stop_time": 10.0, "downtime_limit_ms": 300},
            "started_at": 3.0}


def read(host, *vms, **kw):
    r = {"_evacuate_dst": host, "vms": [{"name": n, "status": s} for n, s in vms]}
    r.update(kw)
    return r


# (pending VMs, the destinations' reads, the VMs seen running there)
RUNNING = [
    ([pending("a"), pending("b", "hv3")], [read("hv2", ("a", "running")), read("hv3", ("b", "running"))],
     ["a", "b"]),
    # Still loading its state, or not there: it goes the careful way.
    ([pending("a"), pending("b")], [read("hv2", ("a", "inmigrate"))], []),
    # Seen on another host than its destination: not this one's.
    ([pending("a")], [read("hv3", ("a", "running"))], []),
    # A read that failed shows nothing.
    ([pending("a")], [{"_evacuate_dst": "hv2", "failed": True, "msg": "unreachable"}], []),
]


@pytest.mark.parametrize("pend,reads,seen", RUNNING)
def test_running_on_their_destinations(pend, reads, seen):
    got = eb.running(pend, reads)
    assert sorted(got) == seen
    assert all(got[n]["vm"]["status"] == "running" for n in got)


def test_finished_records_each_clean_vm_as_the_migrate_role_would():
    pend = [pending("a", position=1), pending("b", "hv3", position=2), pending("c", position=3)]
    dst = {"a": {"vm": {"status": "running", "resumed_at": 10.25}}, "b": {"vm": {"status": "running"}}}
    got = eb.finished(pend, ["b", "a"], dst, "hv1", 300, 50.0)
    assert [g["vm"]["name"] for g in got] == ["a", "b"]  # the plan's order; c was not finished cleanly
    a, b = got[0]["result"], got[1]["result"]
    assert (a["vm"], a["source"], a["destination"], a["status"], a["position"]) == ("a", "hv1", "hv2", "completed", 1)
    assert (a["started_at"], a["finished_at"], a["prepare_started_at"], a["prepared_at"]) == (3.0, 50.0, 1.0, 2.0)
    # The guest-visible downtime (destination resumed less source stopped) judged against the limit.
    assert a["guest_visible_downtime_ms"] == 250.0 and a["downtime_within_limit"] is True
    assert b["guest_visible_downtime_ms"] is None and b["destination"] == "hv3"
    assert got[0]["message"] == a["message"] and got[0]["message"]


@pytest.mark.parametrize("result,dst_tls,src_tls,expected", [
    (ok(), "", "", {"ok": True, "uri": URI, "started": True, "tls": {}, "prepared_at": 5.0}),
    # A destination that was waiting already is not this run's to remove.
    (ok(changed=False), "", "", {"ok": True, "started": False}),
    (ok(), "/etc/walm/tls", "/etc/walm/tls",
     {"tls": {"dir": "/etc/walm/tls", "source_dir": "/etc/walm/tls", "allowed_clients": ["CN=hv1"]}}),
    # TLS on one side only is refused before anything starts (evacuate_host.yml); here it simply is not used.
    (ok(), "/etc/walm/tls", "", {"tls": {}}),
    ({"failed": True, "msg": "VM 'a': disk x is not reachable"}, "", "",
     {"ok": False, "started": False, "error": "hv2: VM 'a': disk x is not reachable", "prepared_at": None}),
    ({"failed": False, "changed": True}, "", "", {"ok": False, "error": "hv2: no incoming URI was returned"}),
])
def test_a_prepared_destination(result, dst_tls, src_tls, expected):
    got = eb.prepared(result, entry("a"), "hv1", dst_tls, src_tls, "1.5")
    assert got["prepare_started_at"] == 1.5
    for k, v in expected.items():
        assert got[k] == v, (k, got)


def test_incoming_takes_the_source_listing_and_the_plan():
    listing = [{"name": "a", "definition": {"name": "a"}, "qemu_version_tuple": [10, 0, 2]},
               {"name": "b", "definition": {"name": "b"}, "qemu_version_tuple": [10, 0, 2]}]
    got = eb.incoming([entry("b", method="postcopy"), entry("a", adapt=False)], listing)
    assert got == [
        {"name": "b", "definition": {"name": "b"}, "source_qemu_version": [10, 0, 2], "migration_method": "postcopy",
         "on_timeout": "abort", "allow_postcopy": True},
        # The naive baseline never adapts: no post-copy negotiated for it.
        {"name": "a", "definition": {"name": "a"}, "source_qemu_version": [10, 0, 2], "migration_method": "precopy",
         "on_timeout": "abort", "allow_postcopy": False}]
    # A VM missing from the listing gets no definition: walm_vms refuses it by name.
    assert eb.incoming([entry("c")], listing)[0]["definition"] is None


def test_migrations_only_for_ready_destinations_in_plan_order():
    ready = {"a": eb.prepared(ok("tcp:h:1"), entry("a"), "hv1"), "b": {"ok": False, "error": "x"},
             "c": eb.prepared(ok("tcp:h:3"), entry("c"), "hv1")}
    got = eb.migrations([entry("c", method="hybrid"), entry("b"), entry("a", adapt=False)], ready, True)
    assert [m["name"] for m in got] == ["c", "a"]
    assert got[0] == {"name": "c", "destination_uri": "tcp:h:3", "method": "hybrid", "switch_after_passes": 2,
                      "on_timeout": "abort", "capabilities": {"postcopy-ram": True},
                      "expected_definition_sha256": "abc", "tls_dir": None, "allow_postcopy": True, "adapt": True,
                      "expect": {"method": "hybrid", "total_time_ms": 1000}}
    assert got[1]["allow_postcopy"] is False and got[1]["adapt"] is False
    assert eb.migrations([entry("c")], ready, allow_postcopy=False)[0]["allow_postcopy"] is False


@pytest.mark.parametrize("waves,names,expected", [
    ([["a", "b"], ["c"]], ["a", "b", "c"], [["a", "b"], ["c"]]),
    ([["a", "b"], ["c"]], ["c", "b"], [["b"], ["c"]]),
    ([["a"], ["c"]], ["c"], [["c"]]),
    ([["a"]], [], []),
])
def test_waves_keep_only_what_goes(waves, names, expected):
    assert eb.waves(waves, names) == expected


@pytest.mark.parametrize("entries,expected", [
    ([entry("a", 1, tmt=1000), entry("b", 1, tmt=3000), entry("c", 2, tmt=500)], 3.5),
    ([entry("a", 1, tmt=None), entry("b", 2, tmt=2000)], 2.0),
    ([], 0.0),
])
def test_predicted_batch_time_is_the_longest_per_wave(entries, expected):
    assert eb.predicted_s(entries) == expected


# -- migration_batch -------------------------------------------------------------------------------------------------

SHARED = {"state_dir": "/run/walm", "method": "precopy", "switch_after_passes": 2, "on_timeout": "abort",
          "allow_postcopy": False, "adapt": True, "allow_unsafe_uri": False, "max_bandwidth_mib_s": 0,
          "max_postcopy_bandwidth_mib_s": 0, "downtime_limit_ms": 300, "downtime_headroom_pct": 20,
          "adaptation_actions": ["postcopy", "downtime", "throttle", "abort"], "max_downtime_limit_ms": None,
          "timeout_s": 600, "poll_interval_ms": 100}


def mig(name, **kw):
    m = {"name": name, "destination_uri": URI, "method": None, "adapt": None}
    m.update(kw)
    return m


def test_requests_take_each_migrations_keys_over_the_shared_ones():
    waves = mb.requests(SHARED, [mig("a", method="postcopy"), mig("b", adapt=False), mig("c")],
                        [["a", "b"], ["c"]])
    assert [[p["name"] for p in w] for w in waves] == [["a", "b"], ["c"]]
    a, b = waves[0]
    assert a["method"] == "postcopy" and a["adapt"] is True and a["downtime_limit_ms"] == 300
    assert b["method"] == "precopy" and b["adapt"] is False
    # Without waves: one at a time, in the given order.
    assert [[p["name"] for p in w] for w in mb.requests(SHARED, [mig("b"), mig("a")])] == [["b"], ["a"]]


@pytest.mark.parametrize("migrations,waves,message", [
    ([], None, "migrations is empty"),
    ([mig("a"), mig("a")], None, "VM a is in migrations twice"),
    ([{"destination_uri": URI}], None, "every migration needs a name"),
    ([mig("a")], [["a", "b"]], "waves names b, which is not in migrations"),
    ([mig("a"), mig("b")], [["a"]], "waves leave out b"),
    ([mig("a")], [["a"], ["a"]], "waves names a twice"),
    ([mig("a")], [[], ["a"]], "waves holds an empty wave"),
])
def test_a_wrong_batch_is_refused_naming_the_fix(migrations, waves, message):
    with pytest.raises(WalmError, match=message):
        mb.requests(SHARED, migrations, waves)


def test_a_wrong_parameter_fails_the_batch_before_any_migration_starts(monkeypatch):
    ran = []
    monkeypatch.setattr(mb, "migrate_vm", lambda params, **kw: ran.append(params["name"]))
    waves = mb.requests(SHARED, [mig("a"), mig("b", destination_uri="exec:rm -rf /")], [["a"], ["b"]])
    with pytest.raises(WalmError, match="only tcp:HOST:PORT is accepted"):
        mb.run(waves)
    assert ran == []


def test_waves_run_in_turn_and_a_waves_migrations_side_by_side(monkeypatch):
    """A wave's migrations overlap in time; the next wave starts after the last of this one has ended; a migration
    that raises or fails is its own result, the others complete."""
    spans = {}
    both_running = threading.Barrier(2, timeout=5)

    def fake(params, check_mode=False, migration=None):
        start = time.time()
        if params["name"] in ("a", "b"):
            both_running.wait()  # deadlocks (BrokenBarrierError) unless a and b run at once
        time.sleep(0.05)
        spans[params["name"]] = (start, time.time())
        if params["name"] == "b":
            raise WalmError("VM 'b' does not run on this host")
        if params["name"] == "c":
            return {"status": "timeout", "error": "did not converge", "source_status": "running"}
        return {"status": "completed", "total_time_ms": 50}

    monkeypatch.setattr(mb, "migrate_vm", fake)
    results = mb.run(mb.requests(SHARED, [mig("a"), mig("b"), mig("c"), mig("d")], [["a", "b"], ["c"], ["d"]]))
    assert spans["c"][0] >= max(spans["a"][1], spans["b"][1]) and spans["d"][0] >= spans["c"][1]
    assert results["a"]["status"] == "completed" and results["a"]["failed"] is False and results["a"]["wave"] == 1
    assert results["b"]["status"] == "failed" and results["b"]["failed"] is True
    assert results["b"]["msg"] == "VM 'b': VM 'b' does not run on this host"
    assert results["c"]["failed"] is True and "did not converge" in results["c"]["msg"] and results["c"]["wave"] == 2
    assert results["a"]["wave_started_at"] == results["b"]["wave_started_at"]
    assert all(r["migration_finished_at"] >= r["migration_started_at"] for r in results.values())
    done, not_done, msg = mb.summary(results)
    assert done == ["a", "d"] and sorted(not_done) == ["b", "c"]
    assert msg.startswith("2 of 4 migrations completed; not completed:")


# -- vm_batch --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("state,vms,message", [
    ("stopped", [], "vms is empty"),
    ("stopped", ["a", {"name": "a"}], "VM a is in vms twice"),
    ("stopped", [{"definition": {}}], "every entry of vms needs a name"),
    ("incoming", [{"name": "a"}], "VM a: state incoming needs its definition"),
])
def test_a_wrong_vm_list_is_refused(state, vms, message):
    with pytest.raises(WalmError, match=message):
        vm_batch.requests(state, {"state_dir": "/run/walm"}, vms)


def test_vm_requests_take_each_vms_keys_over_the_shared_ones():
    got = vm_batch.requests("incoming", {"state_dir": "/s", "migration_method": "precopy", "allow_postcopy": False},
                            [{"name": "a", "definition": {"x": 1}, "migration_method": "postcopy",
                              "state_dir": "/elsewhere"}])
    # state_dir is the host's, never a VM's own.
    assert got == [{"name": "a", "definition": {"x": 1}, "migration_method": "postcopy", "state_dir": "/s",
                    "allow_postcopy": False}]
    assert vm_batch.requests("stopped", {"state_dir": "/s"}, ["a", {"name": "b"}]) == [
        {"name": "a", "state_dir": "/s"}, {"name": "b", "state_dir": "/s"}]
