# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""walm_migrate: its options, the Migration a request builds (checked before anything on the host is read), and
the migration of a VM that runs on this host."""

from __future__ import absolute_import, division, print_function

from . import adaptation, qemu_binary, qemu_process, vm_records, vmlock
from .errors import WalmError
from .methods import METHODS, ON_TIMEOUT
from .migration import Migration
from .vmdef import HostPaths, fingerprint

# walm_migrate's options that a batch of migrations (walm_migrate_waves) shares: one declaration of each default.
SHARED_OPTIONS = dict(
    state_dir=dict(type="path", default="/run/walm"),
    method=dict(type="str", default="precopy", choices=list(METHODS)),
    switch_after_passes=dict(type="int", default=2, no_log=False),
    on_timeout=dict(type="str", default="abort", choices=list(ON_TIMEOUT)),
    allow_postcopy=dict(type="bool", default=False),
    adapt=dict(type="bool", default=True),
    allow_unsafe_uri=dict(type="bool", default=False),
    max_bandwidth_mib_s=dict(type="float", default=0),
    max_postcopy_bandwidth_mib_s=dict(type="float", default=0),
    downtime_limit_ms=dict(type="int", default=300),
    downtime_headroom_pct=dict(type="float", default=adaptation.DOWNTIME_HEADROOM_PCT),
    adaptation_actions=dict(type="list", elements="str", default=list(adaptation.DEFAULT_ACTIONS),
                            choices=list(adaptation.ACTIONS)),
    max_downtime_limit_ms=dict(type="int"),
    timeout_s=dict(type="float", default=600),
    poll_interval_ms=dict(type="int", default=100),
)
# The statuses of a migration that went as asked (in check mode: would go); any other fails walm_migrate's task.
SUCCEEDED = ("completed", "would-migrate", "would-resume")


def failure_message(name, result):
    """What walm_migrate says when a migration did not succeed: the error and where the VM is."""
    return "VM '%s': %s; the VM is %s on the source" % (name, result.get("error"), result.get("source_status"))


def build_migration(params, check_mode=False):
    """The Migration a walm_migrate request describes, every parameter checked (WalmError naming the fix); pure:
    nothing on this host is read or touched."""
    paths = HostPaths(params["state_dir"], params["name"])
    # Missing keys take Migration's defaults; a value given as 0 or null is checked as given, never replaced.
    return Migration(params["name"], paths.qmp_socket, params["destination_uri"], method=params["method"],
                     max_bandwidth_mib_s=params["max_bandwidth_mib_s"],
                     downtime_limit_ms=params["downtime_limit_ms"], timeout_s=params["timeout_s"],
                     poll_interval_ms=params["poll_interval_ms"],
                     switch_after_passes=params.get("switch_after_passes", 2),
                     on_timeout=params.get("on_timeout", "abort"),
                     max_postcopy_bandwidth_mib_s=params.get("max_postcopy_bandwidth_mib_s", 0),
                     capabilities=params.get("capabilities"), resume=params.get("resume", False),
                     # In check mode the destination was only validated, so there is no URI to check yet.
                     check_mode_without_destination=check_mode,
                     allow_unsafe_uri=params.get("allow_unsafe_uri", False),
                     tls_dir=params.get("tls_dir"), tls_hostname=params.get("tls_hostname"),
                     resume_timeout_s=params.get("resume_timeout_s", 60),
                     allow_postcopy=params.get("allow_postcopy", False), adapt=params.get("adapt", True),
                     expect=params.get("expect"), adaptation_actions=params.get("adaptation_actions"),
                     max_downtime_limit_ms=params.get("max_downtime_limit_ms"),
                     downtime_headroom_pct=params.get("downtime_headroom_pct",
                                                      adaptation.DOWNTIME_HEADROOM_PCT),
                     progress_path=None if check_mode else paths.progress)


def migrate_vm(params, check_mode=False, migration=None):
    """walm_migrate: find the VM on this host and migrate it; returns the result dict.

    The name and the whole request are checked before anything is read or touched on this host (build_migration;
    a caller that checked several requests first passes the Migration it built)."""
    paths = HostPaths(params["state_dir"], params["name"])
    if migration is None:
        migration = build_migration(params, check_mode)
    if not qemu_process.running_pid(paths):
        known = vm_records.list_vms(params["state_dir"])
        raise WalmError("VM '%s' does not run on this host (state_dir %s; VMs recorded here: %s)"
                        % (params["name"], params["state_dir"], ", ".join(known) or "none"))
    record = vm_records.read_record(paths) or {}
    expected = params.get("expected_definition_sha256")
    if record.get("definition"):
        # Computed afresh: a record written by an earlier version may carry a fingerprint that counted tap names.
        record["definition_sha256"] = fingerprint(record["definition"])
    if expected and record.get("definition_sha256") != expected:
        raise WalmError("VM '%s': the destination was prepared from a different definition (sha256 %s) than the "
                        "one this host runs (%s); migrating would fail or corrupt the guest. Stop the "
                        "destination copy and prepare it from this host's record (walm_vm_info)."
                        % (params["name"], expected, record.get("definition_sha256") or "unrecorded"))
    # Held until the migration ends: a second run's migrate, stop or rollback of this VM waits or is refused.
    with vmlock.hold(params["state_dir"], params["name"], "walm_migrate%s" % (" resume" if params.get("resume")
                                                                              else ""), wait_s=0):
        result = migration.run(check_mode=check_mode)
    # The QEMU that runs the VM, which the binary on disk may no longer be after an upgrade.
    result["qemu_version"] = record.get("qemu_version") or qemu_binary.qemu_version()[1]
    return result
