"""The state dir and the records in it, as documented: a private state dir, 0600 files, no symlink followed."""

import json
import os
import stat

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import taps, vm_records
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.vm_service import VMService
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- the state dir ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dir_mode, refused", [
    (0o700, None), (0o755, None), (0o750, None), (0o711, None),
    (0o770, "writable by group or others (mode 0770)"), (0o775, "writable by group or others"),
    (0o757, "writable by group or others"), (0o777, "writable by group or others"),
    (0o1777, "writable by group or others (mode 1777)"),
])
def test_state_dir_writable_by_others_is_refused_with_the_fix(tmp_path, dir_mode, refused):
    d = tmp_path / "sd"
    d.mkdir()
    d.chmod(dir_mode)
    if refused is None:
        vm_records.check_state_dir(str(d))
        assert vm_records.ensure_state_dir(str(d)) is False
        return
    for check in (vm_records.check_state_dir, vm_records.ensure_state_dir):
        with pytest.raises(WalmError) as err:
            check(str(d))
        assert refused in str(err.value) and "fix it with 'chmod 0700 %s'" % d in str(err.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_state_dir_of_another_user_is_refused(tmp_path):
    d = tmp_path / "sd"
    d.mkdir(mode=0o700)
    os.chown(str(d), 65534, -1)
    with pytest.raises(WalmError, match="belongs to uid 65534, not to this user .uid 0.*chown 0 %s" % d):
        vm_records.check_state_dir(str(d))


def test_state_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(WalmError, match="is not a directory"):
        vm_records.check_state_dir(str(tmp_path / "f"))


def test_missing_state_dir_is_made_private(tmp_path):
    vm_records.check_state_dir(str(tmp_path / "new"))  # nothing to check yet
    assert vm_records.ensure_state_dir(str(tmp_path / "new")) is True
    assert mode(str(tmp_path / "new")) == 0o700


def test_stopping_in_a_shared_state_dir_touches_nothing(tmp_path, monkeypatch):
    """Another user could plant a record there naming any tap: WALM must not act on it."""
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    planted = {"name": "vm1", "definition": {"nics": [{"tap": "eth0"}]}}
    (d / "vm1.json").write_text(json.dumps(planted))
    monkeypatch.setattr(taps, "delete_tap", lambda tap: pytest.fail("deleted tap %s" % tap))
    with pytest.raises(WalmError, match="chmod 0700"):
        VMService("vm1", str(d)).stopped()
    assert (d / "vm1.json").exists()


# -- records ----------------------------------------------------------------------------------------------------

def test_list_vms_skips_files_no_vm_can_have(tmp_path):
    for f in ("vm1.json", "bad name.json", ".hidden.json", "vm2.json.tmp"):
        (tmp_path / f).write_text("{}")
    assert vm_records.list_vms(str(tmp_path)) == ["vm1"]


def test_write_record_does_not_follow_symlinks(tmp_path, state_dir):
    paths = HostPaths(state_dir, "vm1")
    victim = tmp_path / "victim"
    victim.write_text("victim's")
    os.symlink(str(victim), paths.record + ".tmp")
    os.symlink(str(victim), paths.record)
    vm_records.write_record(paths, {"name": "vm1"})
    assert victim.read_text() == "victim's"
    assert not os.path.islink(paths.record) and mode(paths.record) == 0o600
    assert vm_records.read_record(paths) == {"name": "vm1"}
    assert not os.path.lexists(paths.record + ".tmp")


def test_write_record_refuses_a_shared_state_dir(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o775)
    with pytest.raises(WalmError, match="chmod 0700"):
        vm_records.write_record(HostPaths(str(d), "vm1"), {})
    assert list(d.iterdir()) == []
