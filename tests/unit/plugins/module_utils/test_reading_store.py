"""The probe's stored readings: persisted with the mode 0600, reused while fresh, a short history per process.

On a real QEMU, through walm_probe."""

import json
import os

from ansible_collections.walm.qemu.plugins.module_utils import probe
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_probe import opts


def test_persist_and_reuse_fresh_reading(tmp_path, vm):
    _proc, sock = vm
    o = opts(tmp_path, name="pvm1", samples=1, duration_s=0.1)
    checked = probe.run(dict(o, persist=True), check_mode=True)
    assert checked["persisted"] == [] and not (tmp_path / "state").exists()
    first = probe.run(dict(o, persist=True))
    path = str(tmp_path / "state" / "probe" / "pvm1.json")
    assert first["persisted"] == [path] and oct(os.stat(path).st_mode & 0o777) == "0o600"
    again = probe.run(dict(o, max_age_s=60))["vms"][0]
    assert again["cached"] is True and again["probed_at"] == first["vms"][0]["probed_at"] and again["age_s"] >= 0
    assert probe.run(dict(o, max_age_s=0))["vms"][0]["cached"] is False
    stale = json.load(open(path))
    stale["latest"]["probed_at"] -= 3600
    json.dump(stale, open(path, "w"))
    assert probe.run(dict(o, max_age_s=60))["vms"][0]["cached"] is False
    probe.run(dict(o, persist=True))
    assert len(json.load(open(path))["history"]) == 2
