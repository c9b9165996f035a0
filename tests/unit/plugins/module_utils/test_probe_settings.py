"""How the probe measures: the dirty-rate mode, the pages sampled, the windows."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import probe_settings
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError


def test_mode_choice():
    assert probe_settings.choose_mode("auto", "v", False, 0, True) == "page-sampling"
    assert probe_settings.choose_mode("auto", "v", True, 0, True) == "dirty-bitmap"
    assert probe_settings.choose_mode("auto", "v", True, 4096, True) == "dirty-ring"
    assert probe_settings.choose_mode("auto", "v", True, 0, False) == "page-sampling"
    assert probe_settings.choose_mode("dirty-bitmap", "v", True, 0, True) == "dirty-bitmap"
    with pytest.raises(WalmError, match="VM 'v'.*TCG.*crashes QEMU 7.2.*auto or page-sampling"):
        probe_settings.choose_mode("dirty-bitmap", "v", False, 0, True)
    with pytest.raises(WalmError, match="dirty-ring-size"):
        probe_settings.choose_mode("dirty-ring", "v", True, 0, True)
    with pytest.raises(WalmError, match="QEMU 6.2"):
        probe_settings.choose_mode("dirty-bitmap", "v", True, 0, False)
    with pytest.raises(WalmError, match="must be one of"):
        probe_settings.choose_mode("magic", "v", True, 0, True)


def test_sample_pages_choice():
    assert probe_settings.choose_sample_pages(512) == 16384
    assert probe_settings.choose_sample_pages(2048) == 4096
    assert probe_settings.choose_sample_pages(65536) == 512  # never below QEMU's default
    assert probe_settings.choose_sample_pages(512, 512) == 512
    with pytest.raises(WalmError, match="between 128 and 16384"):
        probe_settings.choose_sample_pages(512, 100000)


def test_window_plan():
    assert probe_settings.window_plan(1.0, 2, True) == (500, False)
    assert probe_settings.window_plan(1.0, 2, False) == (1000, True)  # QEMU < 8.2: whole seconds
    assert probe_settings.window_plan(3.0, 3, False) == (1000, False)
    with pytest.raises(WalmError, match="at least 50 ms"):
        probe_settings.window_plan(0.1, 4, True)
    with pytest.raises(WalmError, match="duration_s must be positive"):
        probe_settings.window_plan(0, 1, True)
    with pytest.raises(WalmError, match="samples must be at least 1"):
        probe_settings.window_plan(1, 0, True)
