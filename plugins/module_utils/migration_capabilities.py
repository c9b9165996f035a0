# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The migration capabilities: which ones a method needs, and setting them on a QEMU that knows them. Both sides
take theirs from capabilities_for() (the source in migration.py, the destination in vm_service.py) so they
always agree."""

from __future__ import absolute_import, division, print_function

from .errors import WalmError
from .methods import METHOD_BY_NAME, METHODS, ON_TIMEOUT, ON_TIMEOUT_BY_NAME

# postcopy-preempt (faulted pages on their own channel, ahead of the background stream) exists since QEMU 8.0.
PREEMPT_MIN_VERSION = (8, 0, 0)


def needs_postcopy(method, on_timeout="abort", allow_postcopy=False):
    """Whether postcopy-ram must be negotiated: the method or the timeout action uses post-copy, or post-copy is
    allowed, so that the run-time adaptation can switch a pre-copy that does not converge."""
    m, action = METHOD_BY_NAME.get(method), ON_TIMEOUT_BY_NAME.get(on_timeout)
    return bool(m and m.postcopy) or bool(action and action.postcopy) or bool(allow_postcopy)


def capabilities_for(method, on_timeout="abort", qemu_versions=(), allow_postcopy=False):
    """Migration capabilities both sides set for a method (allow_postcopy: see needs_postcopy).

    return-path lets the destination report a failed load to the source, so a broken destination is not
    mistaken for success (without it the source declares success as soon as it has sent everything); post-copy
    needs it too. postcopy-ram must be set on both sides before `migrate`, also when pre-copy may be switched to
    post-copy at its timeout. postcopy-preempt is used only when every QEMU involved (`qemu_versions`, tuples)
    is 8.0 or newer, since both sides must agree. multifd is never combined with post-copy (crashes QEMU 7.2).
    """
    if method not in METHODS:
        raise WalmError("unknown migration method %r; choose one of %s" % (method, ", ".join(METHODS)))
    if on_timeout not in ON_TIMEOUT:
        raise WalmError("unknown on_timeout %r; choose one of %s" % (on_timeout, ", ".join(ON_TIMEOUT)))
    caps = {"events": True, "return-path": True}
    if needs_postcopy(method, on_timeout, allow_postcopy):
        caps["postcopy-ram"] = True
        versions = [tuple(v) for v in qemu_versions if v]
        if versions and min(versions) >= PREEMPT_MIN_VERSION:
            caps["postcopy-preempt"] = True
    return caps


def check_capabilities(qmp, caps):
    """Fail clearly (instead of with QEMU's error) when this QEMU lacks one of the capabilities."""
    known = set(c["capability"] for c in qmp.execute("query-migrate-capabilities"))
    missing = sorted(set(caps) - known)
    if missing:
        raise WalmError("VM '%s': this QEMU does not support migration capabilities %s"
                        % (qmp.vm, ", ".join(missing)))


def apply_capabilities(qmp, caps):
    qmp.execute("migrate-set-capabilities",
                {"capabilities": [{"capability": k, "state": bool(v)} for k, v in sorted(caps.items())]})


# The capabilities WALM sets. A QEMU that was itself the destination of a post-copy migration keeps the post-copy
# ones on; migrating it again to a destination prepared for pre-copy then fails at once ("Sibling indicated error").
MANAGED_CAPABILITIES = ("events", "return-path", "postcopy-ram", "postcopy-preempt", "auto-converge")


def outgoing_capabilities(qmp, caps):
    """caps, plus every managed capability this QEMU has on that caps does not ask for, turned off."""
    on = set(c["capability"] for c in qmp.execute("query-migrate-capabilities") if c.get("state"))
    out = dict((k, False) for k in MANAGED_CAPABILITIES if k in on and k not in caps)
    out.update(caps)
    return out


def set_capabilities(qmp, caps):
    """Set capabilities after checking this QEMU knows them all."""
    check_capabilities(qmp, caps)
    apply_capabilities(qmp, caps)
