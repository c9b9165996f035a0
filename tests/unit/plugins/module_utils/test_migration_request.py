"""check_request: one pure validator of a migration request, used by walm_migrate and before any QEMU starts.

Every value out of range is refused with the parameter's name and the fix, never replaced by a default; values
given as strings of numbers (playbook variables) are converted; only tcp: URIs reach QEMU unless allowed.
"""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import migration, qemu_process
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.migration import Migration
from ansible_collections.walm.qemu.plugins.module_utils.migration_request import check_request

GOOD = {"method": "hybrid", "on_timeout": "abort", "switch_after_passes": 2, "downtime_limit_ms": 300,
        "max_bandwidth_mib_s": 0, "max_postcopy_bandwidth_mib_s": 0, "timeout_s": 600,
        "destination_uri": "tcp:10.0.0.2:49152", "allow_unsafe_uri": False}


def check(**change):
    return check_request(**dict(GOOD, **change))


@pytest.mark.parametrize("change, expect", [
    ({}, {"switch_after_passes": 2, "downtime_limit_ms": 300, "max_bandwidth_mib_s": 0.0, "timeout_s": 600.0,
          "destination_uri": "tcp:10.0.0.2:49152", "allow_unsafe_uri": False}),
    # playbook variables arrive as strings
    ({"switch_after_passes": "3", "downtime_limit_ms": "250", "max_bandwidth_mib_s": "1250.5",
      "timeout_s": "30", "max_postcopy_bandwidth_mib_s": "0"},
     {"switch_after_passes": 3, "downtime_limit_ms": 250, "max_bandwidth_mib_s": 1250.5, "timeout_s": 30.0,
      "max_postcopy_bandwidth_mib_s": 0.0}),
    ({"downtime_limit_ms": 300.0}, {"downtime_limit_ms": 300}),  # a whole float is an integer
    ({"downtime_limit_ms": 2000000, "max_bandwidth_mib_s": 1048576, "max_postcopy_bandwidth_mib_s": 1048576,
      "timeout_s": 86400, "switch_after_passes": 1000},
     {"downtime_limit_ms": 2000000, "max_bandwidth_mib_s": 1048576.0, "timeout_s": 86400.0}),
    ({"timeout_s": 0.5, "switch_after_passes": 1, "downtime_limit_ms": 1}, {"timeout_s": 0.5}),
    ({"destination_uri": "tcp:[fd00::2]:49152"}, {"destination_uri": "tcp:[fd00::2]:49152"}),
    ({"destination_uri": "tcp:[fe80::1%eth0]:1"}, {"destination_uri": "tcp:[fe80::1%eth0]:1"}),
    ({"destination_uri": "tcp:host-b.example:65535"}, {"destination_uri": "tcp:host-b.example:65535"}),
    ({"destination_uri": None}, {"destination_uri": None}),  # not known yet: the destination is not prepared
    ({"destination_uri": "unix:/run/mig.sock", "allow_unsafe_uri": True},
     {"destination_uri": "unix:/run/mig.sock", "allow_unsafe_uri": True}),
    ({"allow_unsafe_uri": "no"}, {"allow_unsafe_uri": False}),
    ({"method": "precopy", "on_timeout": "postcopy"}, {"method": "precopy", "on_timeout": "postcopy"}),
])
def test_good_requests_come_back_converted(change, expect):
    got = check(**change)
    for key, value in expect.items():
        assert got[key] == value and type(got[key]) is type(value), key


@pytest.mark.parametrize("change, message", [
    ({"method": "teleport"}, "unknown migration method 'teleport'; choose one of precopy, postcopy, hybrid"),
    ({"method": None}, "unknown migration method"),
    ({"on_timeout": "retry"}, "unknown on_timeout 'retry'; choose one of abort, postcopy"),
    # 0 used to become 2 silently
    ({"switch_after_passes": 0}, "switch_after_passes must be an integer from 1 to 1000 (complete pre-copy passes "
                                 "before a hybrid switches; to switch during the first pass use method postcopy), "
                                 "got 0"),
    ({"switch_after_passes": "0"}, "switch_after_passes must be an integer from 1 to 1000"),
    ({"switch_after_passes": None}, "switch_after_passes must be an integer from 1 to 1000"),
    ({"switch_after_passes": 1.5}, "switch_after_passes must be an integer"),
    ({"switch_after_passes": True}, "switch_after_passes must be an integer"),
    ({"switch_after_passes": 1001}, "switch_after_passes must be an integer from 1 to 1000"),
    ({"downtime_limit_ms": 0}, "downtime_limit_ms must be an integer from 1 to 2000000 (QEMU's limit), got 0"),
    ({"downtime_limit_ms": 2000001}, "downtime_limit_ms must be an integer from 1 to 2000000"),
    ({"downtime_limit_ms": "300ms"}, "downtime_limit_ms must be an integer from 1 to 2000000"),
    ({"downtime_limit_ms": float("nan")}, "downtime_limit_ms must be"),
    ({"downtime_limit_ms": 2.5}, "downtime_limit_ms must be an integer"),
    ({"max_bandwidth_mib_s": -1}, "max_bandwidth_mib_s must be 0 (no limit) or at most 1048576 MiB/s (1 TiB/s)"),
    ({"max_bandwidth_mib_s": 1048577}, "max_bandwidth_mib_s must be 0 (no limit) or at most 1048576"),
    ({"max_bandwidth_mib_s": 1e300}, "max_bandwidth_mib_s must be 0 (no limit) or at most 1048576"),
    ({"max_bandwidth_mib_s": float("inf")}, "max_bandwidth_mib_s must be"),
    ({"max_bandwidth_mib_s": None}, "max_bandwidth_mib_s must be"),
    ({"max_postcopy_bandwidth_mib_s": -0.5}, "max_postcopy_bandwidth_mib_s must be 0 (no limit)"),
    ({"max_postcopy_bandwidth_mib_s": 2 ** 63}, "max_postcopy_bandwidth_mib_s must be 0 (no limit)"),
    ({"timeout_s": 0}, "timeout_s must be above 0 and at most 86400 s (a day), got 0"),
    ({"timeout_s": -5}, "timeout_s must be above 0"),
    ({"timeout_s": 86401}, "timeout_s must be above 0 and at most 86400"),
    ({"timeout_s": "soon"}, "timeout_s must be above 0"),
    ({"timeout_s": float("nan")}, "timeout_s must be above 0"),
    ({"destination_uri": "exec:touch /tmp/walm-pwned"}, "uses the scheme 'exec:': only tcp:HOST:PORT is accepted"),
    ({"destination_uri": "exec:touch /x", "allow_unsafe_uri": "false"}, "only tcp:HOST:PORT is accepted"),
    ({"destination_uri": "unix:/run/walm/vm1.qmp"}, "set allow_unsafe_uri: true"),
    ({"destination_uri": "file:/etc/shadow"}, "uses the scheme 'file:'"),
    ({"destination_uri": "fd:3"}, "uses the scheme 'fd:'"),
    ({"destination_uri": "rdma:10.0.0.2:4444"}, "uses the scheme 'rdma:'"),
    ({"destination_uri": "TCP:10.0.0.2:4444"}, "uses the scheme 'TCP:'"),
    ({"destination_uri": "10.0.0.2"}, "is not a QEMU migration URI (e.g. tcp:10.0.0.2:49152)"),
    ({"destination_uri": ""}, "destination_uri is missing: pass the incoming_uri"),
    ({"destination_uri": 4444}, "destination_uri is missing"),
    ({"destination_uri": "tcp:"}, "is not tcp:HOST:PORT"),
    ({"destination_uri": "tcp:10.0.0.2"}, "is not tcp:HOST:PORT"),
    ({"destination_uri": "tcp:10.0.0.2:0"}, "with a port from 1 to 65535"),
    ({"destination_uri": "tcp:10.0.0.2:65536"}, "with a port from 1 to 65535"),
    ({"destination_uri": "tcp:fd00::2:4444"}, "an IPv6 address goes in brackets"),
    ({"destination_uri": "tcp:10.0.0.2:4444;touch /x"}, "is not tcp:HOST:PORT"),
    ({"destination_uri": "tcp:10.0.0.2:4444,x=y"}, "is not tcp:HOST:PORT"),
    ({"destination_uri": "tcp:10.0.0.2:4444\n"}, "is not tcp:HOST:PORT"),
    ({"destination_uri": "tcp:-oProxy:4444"}, "is not tcp:HOST:PORT"),
    ({"allow_unsafe_uri": "maybe"}, "allow_unsafe_uri must be true or false, got 'maybe'"),
    ({"allow_unsafe_uri": None}, "allow_unsafe_uri must be true or false"),
])
def test_bad_requests_are_refused_naming_the_parameter_and_the_fix(change, message):
    with pytest.raises(WalmError) as err:
        check(**change)
    assert message in str(err.value)


def test_check_request_is_pure(monkeypatch):
    """No I/O: it can run on the controller, where there is no QEMU and no state dir."""
    def forbidden(*args, **kwargs):
        raise AssertionError("check_request did I/O")
    monkeypatch.setattr("builtins.open", forbidden)
    monkeypatch.setattr(migration, "QMP", forbidden)
    monkeypatch.setattr(qemu_process, "running_pid", forbidden)
    check(destination_uri="tcp:[::1]:1")


def test_migration_uses_the_checked_values():
    m = Migration("vm1", "/x", "tcp:h:1", method="hybrid", switch_after_passes="3", downtime_limit_ms="250",
                  max_bandwidth_mib_s="100", timeout_s="30")
    assert (m.switch_after_passes, m.downtime_limit_ms, m.timeout_s) == (3, 250, 30.0)
    # QEMU gets the limit less the 20 % headroom for the data in flight, so the guest sees at most 250 ms.
    assert m.parameters() == {"max-bandwidth": 100 * 2 ** 20, "downtime-limit": 200, "max-postcopy-bandwidth": 0}
    with pytest.raises(WalmError, match="only tcp:HOST:PORT"):
        Migration("vm1", "/x", "exec:true")
    assert Migration("vm1", "/x", "exec:true", allow_unsafe_uri=True).destination_uri == "exec:true"
    # check mode without a destination: nothing to check yet
    assert "check mode" in Migration("vm1", "/x", None, check_mode_without_destination=True).destination_uri
    with pytest.raises(WalmError, match="only tcp:HOST:PORT"):
        Migration("vm1", "/x", "exec:true", check_mode_without_destination=True)
