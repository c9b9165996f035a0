# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Filters walm.qemu.migration_outcome and walm.qemu.migration_failure: one migration's result document and the
sentence for the operator, from what the role walm.qemu.migrate's steps returned."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.walm.qemu.plugins.module_utils import outcome

SUCCESS_KEYS = ("vm", "source", "destination", "where", "migration", "adaptation", "dst_vm", "check_mode", "method",
                "downtime_limit_ms")
FAILURE_KEYS = ("vm", "source", "destination", "error", "untouched", "after", "migration", "adaptation",
                "dst_removed", "src_after")


def _call(name, func, facts, keys, required):
    if not isinstance(facts, dict):
        raise AnsibleFilterError("%s: expected a dict of %s, got %r" % (name, ", ".join(keys), facts))
    unknown = sorted(set(facts) - set(keys))
    missing = [k for k in required if facts.get(k) is None]
    if unknown or missing:
        raise AnsibleFilterError("%s: %s (known keys: %s)" % (
            name, "; ".join(filter(None, ["unknown keys %s" % ", ".join(unknown) if unknown else "",
                                          "missing %s" % ", ".join(missing) if missing else ""])),
            ", ".join(keys)))
    return func(**facts)


def migration_outcome(facts):
    return _call("migration_outcome", outcome.migrated, facts, SUCCESS_KEYS,
                 ("vm", "source", "destination", "where"))


def migration_failure(facts):
    return _call("migration_failure", outcome.not_migrated, facts, FAILURE_KEYS,
                 ("vm", "source", "destination", "after"))


class FilterModule(object):
    def filters(self):
        return {"migration_outcome": migration_outcome, "migration_failure": migration_failure}
