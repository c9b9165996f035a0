# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The migration methods and timeout actions, each described once.

Choice lists, checks and per-method behaviour (what to negotiate, when to switch, what the run-time adaptation
watches, how ties break) read these tables instead of naming methods. The modules' DOCUMENTATION lists the same
names literally, as Ansible needs; a unit test keeps them equal.
"""

from __future__ import absolute_import, division, print_function

from collections import namedtuple


# name: the value of walm_migrate's `method` (walm_vm's `migration_method`, walm_decide's result).
# label: the name in sentences.
# postcopy: it switches to post-copy by design, so postcopy-ram is negotiated on both sides and its migrations
#   count as heavy when waves are formed. A method without it is the only one auto-converge may throttle.
# switch_point: it switches after the request's switch_after_passes complete pre-copy passes (else a post-copy
#   method switches as soon as the first pass has started).
# adapts: it sends pre-copy passes that the run-time adaptation checks against the decision's expectation.
# safety_rank: ties go to the lowest: the method that can still fall back to the source, then the least post-copy.
class Method(namedtuple("Method", "name label postcopy switch_point adapts safety_rank")):
    __slots__ = ()

    def switch_after_passes(self, requested):
        """Complete pre-copy passes before the switch to post-copy: None never switches, 0 switches once the
        first pass has started, `requested` (the request's switch_after_passes) for a method with a switch point."""
        if self.switch_point:
            return requested
        return 0 if self.postcopy else None


METHOD_TABLE = (
    Method("precopy", "pre-copy", postcopy=False, switch_point=False, adapts=True, safety_rank=0),
    Method("postcopy", "post-copy", postcopy=True, switch_point=False, adapts=False, safety_rank=2),
    Method("hybrid", "hybrid", postcopy=True, switch_point=True, adapts=True, safety_rank=1),
)
METHODS = tuple(m.name for m in METHOD_TABLE)
METHOD_BY_NAME = dict((m.name, m) for m in METHOD_TABLE)

# What a migration does when timeout_s passes before it completes.
# name: the value of `on_timeout`. postcopy: the action switches to post-copy, so postcopy-ram is negotiated.
TimeoutAction = namedtuple("TimeoutAction", "name postcopy")

ON_TIMEOUT_TABLE = (
    TimeoutAction("abort", postcopy=False),  # cancel: the VM keeps running on the source
    TimeoutAction("postcopy", postcopy=True),  # switch to post-copy: the migration completes, no fall-back
)
ON_TIMEOUT = tuple(a.name for a in ON_TIMEOUT_TABLE)
ON_TIMEOUT_BY_NAME = dict((a.name, a) for a in ON_TIMEOUT_TABLE)
