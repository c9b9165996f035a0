# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The migration engine: drives the source QEMU through QMP, polls progress, keeps one snapshot per pass.

The destination side (incoming QEMU, its capabilities, migrate-incoming) is driven on its own host by the
walm_vm module; both sides take their capabilities from capabilities_for() so they always agree.
"""

from __future__ import absolute_import, division, print_function

import time

from .errors import WalmError
from .qmp import QMP, QMPFailure, event_time_s

METHODS = ("precopy",)
MIB = 1024 * 1024

# query-migrate states in which a migration is still under way.
ACTIVE_STATES = ("setup", "active", "device", "pre-switchover", "postcopy-active", "postcopy-paused",
                 "postcopy-recover", "postcopy-recover-setup", "wait-unplug", "cancelling", "colo")
FINAL_STATES = ("completed", "failed", "cancelled")


def capabilities_for(method):
    """Migration capabilities both sides set for a method.

    return-path lets the destination report a failed load to the source, so a broken destination is not
    mistaken for success (without it the source declares success as soon as it has sent everything).
    """
    if method not in METHODS:
        raise WalmError("unknown migration method %r; choose one of %s" % (method, ", ".join(METHODS)))
    return {"events": True, "return-path": True}


def set_capabilities(qmp, caps):
    """Set capabilities after checking this QEMU knows them all (clear error instead of QEMU's)."""
    known = set(c["capability"] for c in qmp.execute("query-migrate-capabilities"))
    missing = sorted(set(caps) - known)
    if missing:
        raise WalmError("VM '%s': this QEMU does not support migration capabilities %s"
                        % (qmp.vm, ", ".join(missing)))
    qmp.execute("migrate-set-capabilities",
                {"capabilities": [{"capability": k, "state": bool(v)} for k, v in sorted(caps.items())]})


def _snapshot(info, t0):
    ram = info.get("ram") or {}
    return {
        "t_ms": int((time.time() - t0) * 1000),
        "status": info.get("status"),
        "pass": ram.get("dirty-sync-count", 0),
        "transferred_bytes": ram.get("transferred", 0),
        "remaining_bytes": ram.get("remaining", 0),
        "dirty_pages_rate": ram.get("dirty-pages-rate", 0),
        "mbps": ram.get("mbps", 0),
        "postcopy_requests": ram.get("postcopy-requests", 0),
    }


class Migration(object):
    """One outgoing migration of the VM behind a QMP socket on this host."""

    def __init__(self, vm, qmp_socket, destination_uri, method="precopy", max_bandwidth_mib_s=0,
                 downtime_limit_ms=300, timeout_s=600, poll_interval_ms=100, qmp_timeout_s=10):
        if method not in METHODS:
            raise WalmError("unknown migration method %r; choose one of %s" % (method, ", ".join(METHODS)))
        if not destination_uri or ":" not in destination_uri:
            raise WalmError("destination_uri %r is not a QEMU migration URI (e.g. tcp:10.0.0.2:49152)"
                            % (destination_uri,))
        if max_bandwidth_mib_s is None or max_bandwidth_mib_s < 0:
            raise WalmError("max_bandwidth_mib_s must be 0 (no limit) or positive")
        if downtime_limit_ms is None or downtime_limit_ms <= 0:
            raise WalmError("downtime_limit_ms must be positive")
        if timeout_s is None or timeout_s <= 0:
            raise WalmError("timeout_s must be positive")
        self.vm = vm
        self.qmp_socket = qmp_socket
        self.destination_uri = destination_uri
        self.method = method
        self.max_bandwidth_mib_s = max_bandwidth_mib_s
        self.downtime_limit_ms = int(downtime_limit_ms)
        self.timeout_s = float(timeout_s)
        self.poll_s = max(0.01, poll_interval_ms / 1000.0)
        self.qmp_timeout_s = qmp_timeout_s

    def parameters(self):
        # 0 means "as fast as the link goes": QEMU has no 'unlimited', so give it far more than any NIC.
        bw = self.max_bandwidth_mib_s * MIB if self.max_bandwidth_mib_s else 1 << 40
        return {"max-bandwidth": int(bw), "downtime-limit": self.downtime_limit_ms}

    def preflight(self, qmp):
        """Checks that touch nothing: the VM can be migrated now."""
        status = qmp.execute("query-status")["status"]
        if status not in ("running", "paused"):
            raise WalmError("VM '%s' is %s on this host; only a running or paused VM can be migrated"
                            % (self.vm, status), source_status=status)
        current = qmp.execute("query-migrate").get("status")
        if current in ACTIVE_STATES:
            raise WalmError("VM '%s' is already migrating (status %s); wait for it or cancel it first"
                            % (self.vm, current), source_status=status)
        known = set(c["capability"] for c in qmp.execute("query-migrate-capabilities"))
        missing = sorted(set(capabilities_for(self.method)) - known)
        if missing:
            raise WalmError("VM '%s': this QEMU lacks migration capabilities %s needed for %s"
                            % (self.vm, ", ".join(missing), self.method))
        return status

    def run(self, check_mode=False):
        with QMP(self.vm, self.qmp_socket, self.qmp_timeout_s) as qmp:
            status_before = self.preflight(qmp)
            self._status_before = status_before
            result = {
                "method": self.method, "destination_uri": self.destination_uri,
                "capabilities": capabilities_for(self.method), "parameters": self.parameters(),
                "source_status_before": status_before,
            }
            if check_mode:
                result.update(status="would-migrate", changed=True)
                return result
            set_capabilities(qmp, result["capabilities"])
            qmp.execute("migrate-set-parameters", result["parameters"])
            qmp.events()  # drop stale events so STOP below belongs to this migration
            result.update(self._migrate(qmp))
            result["changed"] = True
            return result

    def _migrate(self, qmp):
        t0 = time.time()
        snapshots = []
        stop_ts = None
        try:
            qmp.execute("migrate", {"uri": self.destination_uri})
        except QMPFailure as exc:
            return self._failed(qmp, "QEMU refused to start the migration: %s" % exc, t0, snapshots)
        last_pass = -1
        info = {}
        timed_out = False
        while True:
            info = qmp.execute("query-migrate")
            snap = _snapshot(info, t0)
            if snap["pass"] != last_pass and info.get("status") in ACTIVE_STATES + ("completed",):
                snapshots.append(snap)
                last_pass = snap["pass"]
            for ev in qmp.events():
                if ev.get("event") == "STOP" and stop_ts is None:
                    stop_ts = event_time_s(ev)
            if info.get("status") in FINAL_STATES:
                break
            if time.time() - t0 > self.timeout_s:
                timed_out = True
                break
            time.sleep(self.poll_s)
        if timed_out:
            return self._cancel(qmp, t0, snapshots, info)
        if info["status"] != "completed":
            why = info.get("error-desc") or info["status"]
            return self._failed(qmp, "migration %s: %s" % (info["status"], why), t0, snapshots, info)
        ram = info.get("ram") or {}
        final = _snapshot(info, t0)
        if not snapshots or snapshots[-1]["pass"] != final["pass"]:
            snapshots.append(final)
        return {
            "status": "completed",
            "total_time_ms": info.get("total-time"),
            "downtime_ms": info.get("downtime"),
            "setup_time_ms": info.get("setup-time"),
            "transferred_bytes": ram.get("transferred"),
            "ram_total_bytes": ram.get("total"),
            "duplicate_pages": ram.get("duplicate"),
            "normal_pages": ram.get("normal"),
            "passes": ram.get("dirty-sync-count"),
            "postcopy_requests": ram.get("postcopy-requests", 0),
            "mbps": ram.get("mbps"),
            "wall_time_ms": int((time.time() - t0) * 1000),
            "source_stop_time": stop_ts,
            "source_status": qmp.execute("query-status")["status"],
            "snapshots": snapshots,
            "error": None,
        }

    def _cancel(self, qmp, t0, snapshots, info):
        """Pre-copy did not finish in time: cancel, and make sure the VM runs on here again."""
        last = info  # statistics of the migration as it stood; query-migrate drops them once cancelled
        qmp.execute("migrate_cancel")
        deadline = time.time() + 30
        while time.time() < deadline:
            info = qmp.execute("query-migrate")
            if info.get("status") in FINAL_STATES:
                break
            time.sleep(0.1)
        ram = last.get("ram") or {}
        return self._failed(qmp, "migration did not complete within timeout_s=%d s (after %s passes, %.1f MiB "
                                 "still dirty, %.1f MiB sent); cancelled"
                            % (self.timeout_s, ram.get("dirty-sync-count"), ram.get("remaining", 0) / MIB,
                               ram.get("transferred", 0) / MIB),
                            t0, snapshots, last, status="timeout")

    def _failed(self, qmp, error, t0, snapshots, info=None, status="failed"):
        """A pre-copy that failed leaves the source in charge: resume it if QEMU left it paused."""
        vm_status = qmp.execute("query-status")["status"]
        resumed = False
        if vm_status in ("paused", "finish-migrate", "postmigrate") and self._was_running():
            qmp.execute("cont")
            resumed = True
            vm_status = qmp.execute("query-status")["status"]
        ram = (info or {}).get("ram") or {}
        return {
            "status": status,
            "error": error,
            "total_time_ms": None,
            "downtime_ms": None,
            "setup_time_ms": (info or {}).get("setup-time"),
            "transferred_bytes": ram.get("transferred"),
            "passes": ram.get("dirty-sync-count"),
            "postcopy_requests": ram.get("postcopy-requests", 0),
            "wall_time_ms": int((time.time() - t0) * 1000),
            "source_status": vm_status,
            "source_resumed": resumed,
            "snapshots": snapshots,
        }

    def _was_running(self):
        # Set in run() via preflight; a VM the operator had paused stays paused.
        return getattr(self, "_status_before", "running") == "running"


def migrate_vm(params, check_mode=False):
    """walm_migrate: find the VM on this host and migrate it; returns the result dict."""
    from . import vmhost
    from .vmdef import HostPaths

    paths = HostPaths(params["state_dir"], params["name"])
    if not vmhost.running_pid(paths):
        known = vmhost.list_vms(params["state_dir"])
        raise WalmError("VM '%s' does not run on this host (state_dir %s; VMs recorded here: %s)"
                        % (params["name"], params["state_dir"], ", ".join(known) or "none"))
    migration = Migration(params["name"], paths.qmp_socket, params["destination_uri"], method=params["method"],
                          max_bandwidth_mib_s=params["max_bandwidth_mib_s"],
                          downtime_limit_ms=params["downtime_limit_ms"], timeout_s=params["timeout_s"],
                          poll_interval_ms=params["poll_interval_ms"])
    result = migration.run(check_mode=check_mode)
    result["qemu_version"] = vmhost.qemu_version()[1]
    return result
