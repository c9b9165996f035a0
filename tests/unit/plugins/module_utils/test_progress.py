"""A migration's progress document and the operator's line (module_utils/progress.py); how the wait action finds the
VM of each async job is test_walm_migration_wait.py under tests/unit/plugins/action."""

import json
import os

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import progress

MIB = 1024 * 1024


def snap(**kw):
    s = {"t_ms": 2100, "status": "active", "pass": 3, "transferred_bytes": 300 * MIB,
         "remaining_bytes": int(120.5 * MIB), "dirty_pages_rate": 0, "mbps": 924.5, "postcopy_requests": 0,
         "page_size": 4096, "cpu_throttle_pct": 0}
    s.update(kw)
    return s


@pytest.mark.parametrize("method,snapshot,switch_ms,adaptations,expected", [
    ("precopy", snap(), None, [],
     "vm1: precopy pass 3 (active), 120.5 MiB left, 110.2 MiB/s, 2.1 s"),
    ("precopy", snap(status="postcopy-active"), 3000, [{"action": "postcopy"}],
     "vm1: precopy pass 3 (postcopy-active), 120.5 MiB left, 110.2 MiB/s, 2.1 s, switched to post-copy at 3.0 s, "
     "adapted: postcopy"),
    # A post-copy's own switch is its method, not news.
    ("postcopy", snap(), 15, [], "vm1: postcopy pass 3 (active), 120.5 MiB left, 110.2 MiB/s, 2.1 s"),
    ("hybrid", snap(remaining_bytes=0, mbps=0, status="completed"), 4000, [],
     "vm1: hybrid pass 3 (completed), 0.0 MiB left, 0.0 MiB/s, 2.1 s, switched to post-copy at 4.0 s"),
    ("precopy", snap(), None, [{"action": "downtime"}, {"action": "downtime"}],
     "vm1: precopy pass 3 (active), 120.5 MiB left, 110.2 MiB/s, 2.1 s, adapted: downtime, downtime"),
])
def test_the_operator_line(method, snapshot, switch_ms, adaptations, expected):
    doc = progress.document("vm1", method, snapshot, switch_ms, adaptations, now=10.0)
    assert progress.line(doc) == expected
    assert doc["updated_at"] == 10.0


@pytest.mark.parametrize("before,after,news", [
    (None, {"pass": 1}, True),
    ({"status": "active", "pass": 1, "adaptations": []}, {"status": "active", "pass": 1, "adaptations": []}, False),
    ({"status": "active", "pass": 1}, {"status": "active", "pass": 2}, True),
    ({"status": "active", "pass": 2}, {"status": "postcopy-active", "pass": 2}, True),
    ({"pass": 2, "adaptations": []}, {"pass": 2, "adaptations": ["downtime"]}, True),
    ({"pass": 2, "postcopy_requested_ms": None}, {"pass": 2, "postcopy_requested_ms": 3000}, True),
    # The remainder and the throughput alone change every poll: not news.
    ({"pass": 2, "remaining_mib": 10}, {"pass": 2, "remaining_mib": 5}, False),
])
def test_what_is_news(before, after, news):
    assert progress.changed(before, after) is news


def test_the_writer_writes_news_and_a_heartbeat_only(tmp_path):
    path = str(tmp_path / "vm1.progress.json")
    w = progress.Writer(path, "vm1", "precopy", every_s=3600)
    assert w.update(snap()) is not None
    assert json.load(open(path))["pass"] == 3
    assert w.update(snap(remaining_bytes=MIB)) is None  # no news, heartbeat not due
    assert w.update(snap(**{"pass": 4})) is not None
    assert json.load(open(path))["pass"] == 4
    assert w.update(snap(**{"pass": 4}), force=True) is not None
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [f for f in os.listdir(str(tmp_path)) if f.endswith(".tmp")] == []


def test_a_writer_without_a_path_or_a_writable_directory_never_stops_the_migration(tmp_path):
    assert progress.Writer(None, "vm1", "precopy").update(snap()) is None
    gone = str(tmp_path / "missing" / "vm1.progress.json")
    assert progress.Writer(gone, "vm1", "precopy").update(snap()) is None
