# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Filter walm.qemu.adaptation_note: what walm_migrate's run-time adaptation did, in a phrase for a message."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.walm.qemu.plugins.module_utils.evacuation_summary import adaptation_text


def adaptation_note(result):
    if result is None:
        return ""
    if not isinstance(result, dict):
        raise AnsibleFilterError("adaptation_note: expected walm_migrate's result (a dict), got %r" % (result,))
    return adaptation_text(result)


class FilterModule(object):
    def filters(self):
        return {"adaptation_note": adaptation_note}
