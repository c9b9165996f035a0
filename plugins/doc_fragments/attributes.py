# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Attributes shared by the walm.qemu modules.

walm.qemu.attributes: the descriptions, no diff, POSIX hosts. Each module states its own check_mode support inline
(support and details), which takes precedence over this fragment's.
walm.qemu.attributes.action_group_walm: member of the action group walm.qemu.walm (meta/runtime.yml), the modules that
take state_dir, so `module_defaults: {group/walm.qemu.walm: {state_dir: ...}}` sets it once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
    details: The module returns no diff; what it did (or would do) is in its result.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
"""

    ACTION_GROUP_WALM = r"""
attributes:
  action_group:
    description: Use C(group/walm.qemu.walm) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - walm.qemu.walm
"""
