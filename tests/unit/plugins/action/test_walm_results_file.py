"""The results file an evacuation keeps on the controller (action walm.qemu.walm_results_file)."""

import json
import os

from ansible_collections.walm.qemu.plugins.action.walm_results_file import write


def test_written_whole_as_sorted_json_and_unchanged_when_the_same(tmp_path):
    path = str(tmp_path / "evacuation.json")
    doc = {"state": "running", "results": [{"vm": "a", "status": "completed"}], "plan": {"b": 1, "a": 2}}
    assert write(path, doc) is True
    with open(path) as f:
        text = f.read()
    assert json.loads(text) == doc and text.index('"plan"') < text.index('"results"') < text.index('"state"')
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert write(path, doc) is False
    assert write(path, dict(doc, state="finished"), "0600") is True
    with open(path) as f:
        assert json.load(f)["state"] == "finished"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    # Nothing but the document is left in the directory (the temporary file was renamed over it).
    assert os.listdir(str(tmp_path)) == ["evacuation.json"]
