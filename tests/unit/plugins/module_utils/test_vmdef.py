"""VM definitions: validation names the field and the fix; the QEMU command line is the same on both hosts."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.migration import Migration
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import normalize

GOOD = {"name": "vm1", "memory_mib": 1024, "vcpus": 2, "accel": "tcg",
        "disks": [{"file": "nfs://10.0.0.2/vms/vm1.qcow2", "size_mib": 64, "create": True}],
        "nics": [{"tap": "tap-vm1", "mac": "52:54:00:AA:00:01", "bridge": "br0"}]}


@pytest.mark.parametrize("change, message", [
    ({"name": "bad name"}, "name 'bad name' is invalid"),
    ({"memory_mib": 8}, "memory_mib must be at least 16"),
    ({"vcpus": "two"}, "vcpus must be an integer"),
    ({"accel": "hvf"}, "accel must be one of kvm, tcg"),
    ({"cpu_model": "host"}, "cpu_model 'host' needs accel 'kvm'"),
    ({"append": "console=ttyS0"}, "append is only used with kernel"),
    ({"disks": [{"size_mib": 1}]}, "disks[0] needs 'file'"),
    ({"disks": [{"file": "/x.img", "format": "vmdk"}]}, "disks[0].format must be one of qcow2, raw"),
    ({"disks": [{"file": "/x.img", "create": True}]}, "disks[0]: create needs size_mib"),
    ({"nics": [{"tap": "tap0"}]}, "nics[0].mac must be set to a fixed MAC"),
    ({"nics": [{"tap": "a-very-long-tap-name", "mac": "52:54:00:00:00:01"}]}, "not a valid interface name"),
    ({"nics": [{"tap": "t0", "mac": "52:54:00:00:00:01"}, {"tap": "t0", "mac": "52:54:00:00:00:02"}]},
     "each NIC needs its own tap device"),
    ({"extra_args": ["-incoming", "tcp:0:1"]}, "extra_args may not contain -incoming"),
    ({"memroy_mib": 512}, "unknown keys memroy_mib"),
])
def test_bad_definitions_are_refused_with_the_fix(change, message):
    d = dict(GOOD)
    d.update(change)
    with pytest.raises(WalmError) as err:
        normalize(d)
    assert message in str(err.value)
    assert "vm1" in str(err.value) or "name" in message


def test_defaults_filled_and_mac_normalised():
    d = normalize({"name": "vm2"})
    assert (d["memory_mib"], d["vcpus"], d["accel"], d["machine"]) == (512, 1, "kvm", "q35")
    assert normalize(GOOD)["nics"][0]["mac"] == "52:54:00:aa:00:01"


@pytest.mark.parametrize("kwargs, message", [
    ({"destination_uri": "10.0.0.2"}, "not a QEMU migration URI"),
    ({"method": "teleport"}, "unknown migration method"),
    ({"max_bandwidth_mib_s": -1}, "max_bandwidth_mib_s must be 0"),
    ({"downtime_limit_ms": 0}, "downtime_limit_ms must be an integer from 1"),
    ({"timeout_s": 0}, "timeout_s must be above 0"),
    ({"switch_after_passes": 0}, "switch_after_passes must be an integer from 1"),
    ({"destination_uri": "exec:touch /tmp/x"}, "only tcp:HOST:PORT is accepted"),
])
def test_migration_parameters_are_checked_before_anything_is_touched(kwargs, message):
    args = {"destination_uri": "tcp:10.0.0.2:4444"}
    args.update(kwargs)
    with pytest.raises(WalmError, match=message):
        Migration("vm1", "/nonexistent/vm1.qmp", **args)


def test_unlimited_bandwidth_is_far_above_any_link():
    m = Migration("vm1", "/x", "tcp:10.0.0.2:1", max_bandwidth_mib_s=0)
    assert m.parameters()["max-bandwidth"] >= 100 * 1024 ** 3
    assert Migration("vm1", "/x", "tcp:h:1", max_bandwidth_mib_s=100).parameters()["max-bandwidth"] == 100 * 2 ** 20
