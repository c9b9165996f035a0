"""walm_migrate (migrate_vm): a bad request is refused before anything on the host is read or touched."""

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.walm.qemu.plugins.module_utils import migration, qemu_binary, qemu_process, vm_records
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.migration_service import migrate_vm

PARAMS = {"name": "vm1", "destination_uri": "tcp:127.0.0.1:4444", "method": "precopy", "max_bandwidth_mib_s": 0,
          "downtime_limit_ms": 300, "timeout_s": 60, "poll_interval_ms": 100, "switch_after_passes": 2,
          "on_timeout": "abort", "max_postcopy_bandwidth_mib_s": 0, "capabilities": None, "resume": False,
          "expected_definition_sha256": None, "allow_unsafe_uri": False}


@pytest.fixture
def untouched(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("touched the host before the request was checked")
    for module, name in ((qemu_process, "running_pid"), (vm_records, "read_record"), (vm_records, "list_vms"),
                         (qemu_binary, "qemu_version")):
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(migration, "QMP", forbidden)


@pytest.mark.parametrize("change, message", [
    ({"destination_uri": "exec:touch /tmp/walm-pwned"}, "only tcp:HOST:PORT is accepted"),
    ({"switch_after_passes": 0}, "switch_after_passes must be an integer from 1"),
    ({"max_postcopy_bandwidth_mib_s": None}, "max_postcopy_bandwidth_mib_s must be"),
    ({"on_timeout": None}, "unknown on_timeout None"),
    ({"downtime_limit_ms": 3000000}, "downtime_limit_ms must be an integer from 1 to 2000000"),
])
def test_migrate_vm_refuses_before_reading_the_host(change, message, tmp_path, untouched):
    with pytest.raises(WalmError, match=message):
        migrate_vm(dict(PARAMS, state_dir=str(tmp_path), **change))
    assert list(tmp_path.iterdir()) == []


def test_walm_migrate_module_refuses_exec_uri(tmp_path, capsys, untouched):
    from ansible_collections.walm.qemu.plugins.modules import walm_migrate
    with patch_module_args({"name": "vm1", "state_dir": str(tmp_path),
                            "destination_uri": "exec:touch %s" % (tmp_path / "pwned")}):
        with pytest.raises(SystemExit):
            walm_migrate.main()
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] and "only tcp:HOST:PORT is accepted" in result["msg"]
    assert list(tmp_path.iterdir()) == []
