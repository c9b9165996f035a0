# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Filters walm.qemu.evacuation_incoming, walm.qemu.evacuation_prepared, walm.qemu.evacuation_migrations,
walm.qemu.evacuation_waves, walm.qemu.evacuation_predicted_s, walm.qemu.evacuation_running and
walm.qemu.evacuation_finished: the hand-offs of an evacuation run as a batch (module_utils/evacuation_batch.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.walm.qemu.plugins.module_utils import evacuation_batch


class FilterModule(object):
    def filters(self):
        return {"evacuation_incoming": evacuation_batch.incoming,
                "evacuation_prepared": evacuation_batch.prepared,
                "evacuation_migrations": evacuation_batch.migrations,
                "evacuation_waves": evacuation_batch.waves,
                "evacuation_predicted_s": evacuation_batch.predicted_s,
                "evacuation_running": evacuation_batch.running,
                "evacuation_finished": evacuation_batch.finished}
