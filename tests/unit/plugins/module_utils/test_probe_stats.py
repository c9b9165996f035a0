"""The statistics of the probe's readings."""

from ansible_collections.walm.qemu.plugins.module_utils import probe_stats


def test_mean_stdev():
    assert probe_stats.mean_stdev([10, 20, None]) == {"mean": 15.0, "stdev": 5.0, "min": 10.0, "max": 20.0, "n": 2}
    assert probe_stats.mean_stdev([None]) is None
    assert probe_stats.mean_stdev([7])["stdev"] == 0.0
