# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Filter walm.qemu.migration_request: check a migration's parameters on the controller, before anything starts."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.migration_request import check_request

KEYS = ("method", "on_timeout", "switch_after_passes", "downtime_limit_ms", "max_bandwidth_mib_s",
        "max_postcopy_bandwidth_mib_s", "timeout_s")


def migration_request(request, prefix="walm_"):
    """The request with its values converted, or an error naming the variable (prefix + key) and the fix."""
    if not isinstance(request, dict):
        raise AnsibleFilterError("migration_request: expected a dict of %s, got %r" % (", ".join(KEYS), request))
    unknown = sorted(set(request) - set(KEYS))
    if unknown:
        raise AnsibleFilterError("migration_request: unknown keys %s (known: %s)" % (", ".join(unknown),
                                                                                     ", ".join(KEYS)))
    try:
        return check_request(**dict((k, request.get(k)) for k in KEYS))
    except WalmError as exc:
        raise AnsibleFilterError("Migration parameters refused before anything was started (playbook variables "
                                 "%s...): %s" % (prefix, exc))
    except TypeError as exc:
        raise AnsibleFilterError("migration_request: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"migration_request": migration_request}
