"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse, and the documented options are the argument spec."""

import glob
import importlib
import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.walm.qemu.tests.unit.paths import ROOT

MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "plugins", "modules", "walm_*.py")))


class _Captured(Exception):
    pass


def _argument_spec(name, monkeypatch):
    mod = importlib.import_module("ansible_collections.walm.qemu.plugins.modules.%s" % name)
    seen = {}

    def fake_module(*args, **kwargs):
        seen.update(kwargs)
        raise _Captured()

    monkeypatch.setattr(mod, "AnsibleModule", fake_module)
    with pytest.raises(_Captured):
        mod.main()
    return mod, seen


@pytest.mark.parametrize("name", MODULES)
def test_docs_parse_and_match_the_argument_spec(name, monkeypatch):
    mod, seen = _argument_spec(name, monkeypatch)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    assert doc["module"] == name
    assert yaml.safe_load(mod.EXAMPLES)
    assert isinstance(yaml.safe_load(mod.RETURN), dict)
    spec = seen["argument_spec"]
    assert set(doc.get("options", {})) == set(spec), "documented options differ from the argument spec"
    for opt, d in doc.get("options", {}).items():
        assert d.get("description"), "%s: option %s has no description" % (name, opt)
        assert d.get("type", "str") == spec[opt].get("type", "str"), "%s: type of %s" % (name, opt)
        if "default" in spec[opt] or "default" in d:
            assert d.get("default") == spec[opt].get("default"), "%s: default of %s" % (name, opt)
        if "choices" in spec[opt] or "choices" in d:
            assert d.get("choices") == spec[opt].get("choices"), "%s: choices of %s" % (name, opt)
    # The documented check mode support is the module's: full or partial support it, none does not.
    assert bool(seen.get("supports_check_mode")) == (doc["attributes"]["check_mode"]["support"] != "none")


@pytest.mark.parametrize("name", ["walm_migration_wait", "walm_results_file"])
def test_an_action_takes_the_options_its_module_documents(name, monkeypatch):
    """An action plugin's argument spec is the one its docs module documents."""
    _validation, seen = _argument_spec(name, monkeypatch)
    action = importlib.import_module("ansible_collections.walm.qemu.plugins.action." + name)
    assert action.ARGS == seen["argument_spec"]


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders(name):
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "walm.qemu.%s" % name], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120,
                          check=False)
    assert proc.returncode == 0 and "[ERROR]" not in proc.stdout, proc.stdout[-2000:]


RETURN_KEYS = {"description", "type", "returned", "elements", "contains", "sample", "version_added"}


def _bad_return_entries(entries, path=()):
    """Return entries with keys a return value cannot have: an unquoted comma in a flow mapping's description
    splits it into a key of its own (`{description: id, or null, type: int}` has the key `or null`)."""
    bad = []
    for key, value in (entries or {}).items():
        if not isinstance(value, dict):
            bad.append((".".join(path + (key,)), value))
            continue
        extra = sorted(set(value) - RETURN_KEYS)
        if extra:
            bad.append((".".join(path + (key,)), extra))
        if isinstance(value.get("contains"), dict):
            bad += _bad_return_entries(value["contains"], path + (key,))
    return bad


@pytest.mark.parametrize("name", MODULES)
def test_return_values_parse_as_written(name):
    mod = importlib.import_module("ansible_collections.walm.qemu.plugins.modules.%s" % name)
    assert _bad_return_entries(yaml.safe_load(mod.RETURN)) == []
