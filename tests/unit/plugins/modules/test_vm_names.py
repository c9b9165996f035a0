"""One VM-name rule, checked before anything is read or touched, by every module and every state.

A VM's name becomes the names of its files in the state dir. A name like '../victim' or '/abs/victim' used to make
walm_vm state=stopped remove files outside the state dir and delete the tap devices such a file named. Each entry
point here is given each bad name, with a victim VM's files planted where the name points; nothing may change.
"""

import importlib
import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.walm.qemu.plugins.module_utils import (discovery, host_command, probe, qemu_process, reading_store,
                                                                taps, vmlock)
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.migration_service import migrate_vm
from ansible_collections.walm.qemu.plugins.module_utils.vm_service import VMService, list_vm_info
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import HostPaths, check_name, normalize

# Each with why it is bad. "{victim}" becomes the absolute path of the planted victim (without its suffix).
BAD_NAMES = [
    ("../victim", "climbs out of the state dir"),
    ("{victim}", "absolute path"),
    ("a/b", "a path, not a name"),
    ("sub/../../victim", "climbs out through a subdirectory"),
    ("..", "parent directory"),
    (".", "the state dir itself"),
    (".hidden", "starts with a dot"),
    ("-rf", "starts with a dash: read as an option"),
    ("vm;reboot", "shell ;"),
    ("vm$HOME", "shell $"),
    ("vm`id`", "shell backtick"),
    ("vm 1", "space"),
    ("vm|cat", "shell |"),
    ("vm&", "shell &"),
    ("vm1\n", "trailing newline"),
    ("", "empty"),
    ("v" * 65, "over 64 characters"),
]
GOOD_NAMES = ["vm1", "a", "VM-2.test_x", "9lives", "v" * 64]
DEFINITION = {"memory_mib": 64, "accel": "tcg"}


def _ids():
    return [why for _name, why in BAD_NAMES]


@pytest.fixture
def planted(tmp_path):
    """A state dir (empty) and, beside it, a victim VM's files that a bad name could reach."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    record = {"name": "victim", "definition": {"nics": [{"tap": "walmvictim0", "mac": "52:54:00:00:00:99"}]}}
    (tmp_path / "victim.json").write_text(json.dumps(record))
    for suffix in (".pid", ".qmp", ".events.qmp", ".events.log", ".console.log", ".lock"):
        (tmp_path / ("victim" + suffix)).write_text("victim's\n")
    return str(state_dir), str(victim)


def _snapshot(root):
    """Every file and directory under root with its content: what 'nothing touched' compares."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        out[dirpath] = "dir %o" % os.stat(dirpath).st_mode
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[p] = (os.stat(p).st_mode, fh.read())
    return out


def _bad(name, victim):
    return name.replace("{victim}", victim)


@pytest.fixture
def untouchable(monkeypatch):
    """Fail the test if anything tries to start a process, delete a tap or talk to QEMU."""
    def forbidden(*args, **kwargs):
        raise AssertionError("touched the host: %r %r" % (args, kwargs))
    monkeypatch.setattr(host_command, "run", forbidden)
    monkeypatch.setattr(taps, "delete_tap", forbidden)
    monkeypatch.setattr(qemu_process.subprocess, "Popen", forbidden)
    monkeypatch.setattr(qemu_process.os, "kill", forbidden)


# -- the rule ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, why", BAD_NAMES, ids=_ids())
def test_check_name_refuses_with_the_rule(name, why):
    with pytest.raises(WalmError) as err:
        check_name(_bad(name, "/abs/victim"))
    assert "is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit" in str(err.value)
    with pytest.raises(WalmError, match="is invalid"):
        HostPaths("/run/walm", _bad(name, "/abs/victim"))
    with pytest.raises(WalmError, match="is invalid"):
        normalize(dict(DEFINITION, name=_bad(name, "/abs/victim")))


@pytest.mark.parametrize("name", [None, 42, b"vm1"])
def test_check_name_refuses_what_is_not_a_string(name):
    with pytest.raises(WalmError, match="is invalid"):
        check_name(name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_pass_and_stay_in_the_state_dir(name):
    assert check_name(name) == name
    paths = HostPaths("/run/walm", name)
    for p in (paths.qmp_socket, paths.pidfile, paths.console_log, paths.record, paths.events_socket,
              paths.event_log):
        assert os.path.dirname(p) == "/run/walm"
    assert os.path.dirname(vmlock.lock_path("/run/walm", name)) == "/run/walm"


@pytest.mark.parametrize("state_dir", ["", "run/walm", None])
def test_state_dir_must_be_absolute(state_dir):
    with pytest.raises(WalmError, match="must be an absolute path"):
        HostPaths(state_dir, "vm1")


# -- every entry point in module_utils --------------------------------------------------------------------------

ENTRY_POINTS = {
    "walm_vm state=started": lambda n, sd: VMService(n, sd).started(dict(DEFINITION, name=n)),
    "walm_vm state=incoming": lambda n, sd: VMService(n, sd).incoming(dict(DEFINITION, name=n), "127.0.0.1"),
    "walm_vm state=stopped": lambda n, sd: VMService(n, sd).stopped(),
    "walm_vm state=recover": lambda n, sd: VMService(n, sd).recover("127.0.0.1"),
    "walm_vm_info": lambda n, sd: list_vm_info(sd, n),
    "walm_vm_info missing_ok": lambda n, sd: list_vm_info(sd, n, True),
    "walm_migrate": lambda n, sd: migrate_vm({
        "name": n, "state_dir": sd, "destination_uri": "tcp:127.0.0.1:4444", "method": "precopy",
        "max_bandwidth_mib_s": 0, "downtime_limit_ms": 300, "timeout_s": 60, "poll_interval_ms": 100}),
    "walm_probe": lambda n, sd: probe.run({"name": n, "state_dir": sd, "duration_s": 0.2, "samples": 1}),
    "vm lock": lambda n, sd: vmlock.lock_path(sd, n),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("name, why", BAD_NAMES, ids=_ids())
def test_every_entry_point_refuses_a_bad_name_touching_nothing(entry, name, why, planted, tmp_path, untouchable):
    state_dir, victim = planted
    before = _snapshot(tmp_path)
    with pytest.raises(WalmError, match="is invalid"):
        ENTRY_POINTS[entry](_bad(name, victim), state_dir)
    assert _snapshot(tmp_path) == before


def test_stopping_a_victim_outside_the_state_dir_leaves_it(planted, tmp_path, untouchable):
    state_dir, victim = planted
    for name in ("../victim", victim):
        with pytest.raises(WalmError, match="is invalid"):
            VMService(name, state_dir).stopped()
    assert os.path.exists(victim + ".json") and os.path.exists(victim + ".pid")
    assert os.listdir(state_dir) == []


def test_discovery_keeps_foreign_qemu_with_an_odd_name_without_state_files(tmp_path):
    """A QEMU not started by WALM may be named anything: it is still probed, it just has no files here."""
    argv = ["qemu-system-x86_64", "-name", "guest=../victim,debug-threads=on", "-qmp",
            "unix:%s,server=on,wait=off" % (tmp_path / "odd.qmp")]
    t = discovery._target_for_process(999999, argv, str(tmp_path / "state"), proc=str(tmp_path / "proc"))
    assert t.name == "../victim" and not t.managed
    assert reading_store.reading_path(str(tmp_path / "state"), t.name).startswith(
        str(tmp_path / "state" / "probe") + "/")


# -- every module's entry point ---------------------------------------------------------------------------------

MODULE_ARGS = {
    "walm_vm started": ("walm_vm", {"state": "started", "definition": DEFINITION}),
    "walm_vm incoming": ("walm_vm", {"state": "incoming", "definition": DEFINITION, "listen_address": "127.0.0.1"}),
    "walm_vm stopped": ("walm_vm", {"state": "stopped"}),
    "walm_vm recover": ("walm_vm", {"state": "recover", "listen_address": "127.0.0.1"}),
    "walm_vm_info": ("walm_vm_info", {}),
    "walm_migrate": ("walm_migrate", {"destination_uri": "tcp:127.0.0.1:4444"}),
    "walm_probe": ("walm_probe", {}),
}


def run_module(module, args, capsys):
    """Run a module's main() in this process as Ansible would; returns its JSON result."""
    mod = importlib.import_module("ansible_collections.walm.qemu.plugins.modules.%s" % module)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            mod.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("case", sorted(MODULE_ARGS))
@pytest.mark.parametrize("name, why", BAD_NAMES, ids=_ids())
def test_every_module_refuses_a_bad_name_touching_nothing(case, name, why, planted, tmp_path, capsys,
                                                          untouchable):
    state_dir, victim = planted
    module, args = MODULE_ARGS[case]
    before = _snapshot(tmp_path)
    result = run_module(module, dict(args, name=_bad(name, victim), state_dir=state_dir), capsys)
    assert result.get("failed") and "is invalid: use 1-64 letters" in result["msg"], result
    assert not result.get("changed")
    assert _snapshot(tmp_path) == before
