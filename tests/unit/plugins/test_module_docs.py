"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse, and the documented options are the argument spec."""

import glob
import importlib
import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.walm.qemu.plugins.module_utils import decide_defaults, evacuation_plan, methods
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


# Options whose choices come from a registry: the docs must list them literally, so they are compared here.
REGISTRIES = {
    "method": methods.METHODS,
    "migration_method": methods.METHODS,
    "on_timeout": methods.ON_TIMEOUT,
    "objective": decide_defaults.OBJECTIVES,
    "policy": evacuation_plan.POLICIES,
}


def _registry_options(options, path=()):
    """(dotted option path, documented choices, registry) for every registry option, suboptions included."""
    found = []
    for opt, d in (options or {}).items():
        if opt in REGISTRIES:
            found.append((".".join(path + (opt,)), d.get("choices"), list(REGISTRIES[opt])))
        found += _registry_options(d.get("suboptions"), path + (opt,))
    return found


@pytest.mark.parametrize("name", MODULES)
def test_documented_choices_are_the_registries(name):
    """A method, timeout action, objective or policy added to its registry is added to every module's docs."""
    mod = importlib.import_module("ansible_collections.walm.qemu.plugins.modules.%s" % name)
    for opt, documented, registry in _registry_options(yaml.safe_load(mod.DOCUMENTATION).get("options")):
        assert documented == registry, "%s: choices of %s" % (name, opt)


def test_the_registry_options_are_documented_where_expected():
    """The check above looks at these options (a renamed option would otherwise drop out of it silently)."""
    seen = set()
    for name in MODULES:
        mod = importlib.import_module("ansible_collections.walm.qemu.plugins.modules.%s" % name)
        seen.update("%s:%s" % (name, opt) for opt, _d, _r in
                    _registry_options(yaml.safe_load(mod.DOCUMENTATION).get("options")))
    assert {"walm_migrate:method", "walm_migrate:on_timeout", "walm_migrate_waves:migrations.method",
            "walm_migrate_waves:migrations.on_timeout", "walm_vm:migration_method", "walm_vms:migration_method",
            "walm_decide:objective", "walm_plan:decide.objective", "walm_plan:policy", "walm_plan:on_timeout"} <= seen


def test_role_choices_are_the_registries():
    """Role argument specs list choices literally too: a role option named after a registry option
    (incoming_destination_method, ..._on_timeout) lists the registry's names."""
    checked = []
    for spec_file in sorted(glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml"))):
        with open(spec_file) as f:
            specs = yaml.safe_load(f)["argument_specs"]
        for entry, spec in specs.items():
            for opt, d in (spec.get("options") or {}).items():
                key = [k for k in REGISTRIES if opt == k or opt.endswith("_" + k)]
                if key and "choices" in d:
                    checked.append(opt)
                    assert d["choices"] == list(REGISTRIES[key[0]]), "%s %s: choices of %s" % (spec_file, entry, opt)
    assert "incoming_destination_method" in checked


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
