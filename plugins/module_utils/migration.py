# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The migration engine: drives the source QEMU through QMP, polls progress, keeps one snapshot per pass.

The destination side (incoming QEMU, its capabilities, migrate-incoming) is driven on its own host by the
walm_vm module; both sides take their capabilities from migration_capabilities.capabilities_for() so they
always agree.
"""

from __future__ import absolute_import, division, print_function

import time

from . import adaptation, migration_tls, progress
from .errors import WalmError
from .methods import METHOD_BY_NAME, ON_TIMEOUT_BY_NAME
from .migration_capabilities import (apply_capabilities, capabilities_for, check_capabilities, needs_postcopy,
                                     outgoing_capabilities)
from .migration_request import MAX_DOWNTIME_LIMIT_MS, MAX_TIMEOUT_S, check_flag, check_number, check_request
from .migration_status import ACTIVE_STATES, FINAL_STATES, POSTCOPY_STATES, RESUMING, snapshot
from .qmp import QMP, QMPFailure, event_time_s

MIB = 1024 * 1024


class Migration(object):
    """One outgoing migration of the VM behind a QMP socket on this host.

    precopy: passes over memory until the remainder fits the downtime limit.
    postcopy: switch to post-copy as soon as the first pass has started (the research's vanilla post-copy).
    hybrid: switch after `switch_after_passes` complete pre-copy passes (unless pre-copy converges first).
    """

    def __init__(self, vm, qmp_socket, destination_uri, method="precopy", max_bandwidth_mib_s=0,
                 downtime_limit_ms=300, timeout_s=600, poll_interval_ms=100, qmp_timeout_s=10,
                 switch_after_passes=2, on_timeout="abort", max_postcopy_bandwidth_mib_s=0, capabilities=None,
                 resume=False, check_mode_without_destination=False, allow_unsafe_uri=False,
                 tls_dir=None, tls_hostname=None, resume_timeout_s=60, allow_postcopy=False, adapt=True,
                 expect=None, adaptation_actions=None, max_downtime_limit_ms=None,
                 downtime_headroom_pct=adaptation.DOWNTIME_HEADROOM_PCT, progress_path=None):
        without_destination = check_mode_without_destination and not destination_uri
        req = check_request(method, on_timeout, switch_after_passes, downtime_limit_ms, max_bandwidth_mib_s,
                            max_postcopy_bandwidth_mib_s, timeout_s,
                            None if without_destination else (destination_uri or ""), allow_unsafe_uri)
        if without_destination:
            destination_uri = "(prepared in check mode: not listening)"
        self.vm = vm
        self.qmp_socket = qmp_socket
        self.destination_uri = destination_uri
        self.method = method
        self.on_timeout = on_timeout
        self.max_bandwidth_mib_s = req["max_bandwidth_mib_s"]
        self.max_postcopy_bandwidth_mib_s = req["max_postcopy_bandwidth_mib_s"]
        self.downtime_limit_ms = req["downtime_limit_ms"]
        self.timeout_s = req["timeout_s"]
        self.poll_s = max(0.01, poll_interval_ms / 1000.0)
        self.qmp_timeout_s = qmp_timeout_s
        # QEMU counts a sync before the first pass, so pass p is under way while dirty-sync-count == p.
        self.switch_after_passes = METHOD_BY_NAME[method].switch_after_passes(req["switch_after_passes"])
        # dirty-sync-count value at which to switch: k complete passes have been sent when it reaches k + 1.
        self._switch_at_sync = None if self.switch_after_passes is None else self.switch_after_passes + 1
        self.allow_postcopy = check_flag("allow_postcopy", allow_postcopy)
        self.adapt = check_flag("adapt", adapt)
        self.expect = adaptation.check_expectation(expect)
        self.adaptation_actions = adaptation.check_actions(adaptation_actions)
        self.max_downtime_limit_ms = None if max_downtime_limit_ms is None else check_number(
            "max_downtime_limit_ms", max_downtime_limit_ms, "an integer from downtime_limit_ms (%d) to %d"
            % (self.downtime_limit_ms, MAX_DOWNTIME_LIMIT_MS), self.downtime_limit_ms, MAX_DOWNTIME_LIMIT_MS,
            integer=True)
        self.downtime_headroom_pct = check_number("downtime_headroom_pct", downtime_headroom_pct,
                                                  "a percentage from 0 to 90", 0, 90)
        self.monitor = None  # the run-time check of this migration (adaptation.Monitor), made by run()
        self.capabilities = dict(capabilities) if capabilities else None
        if self.capabilities is not None and needs_postcopy(method, on_timeout) \
                and not self.capabilities.get("postcopy-ram"):
            raise WalmError("method %s (on_timeout %s) needs the postcopy-ram capability on both sides, but the "
                            "destination was prepared without it: prepare it with the same migration_method and "
                            "on_timeout" % (method, on_timeout))
        self._status_before = "running"
        # resume: continue a post-copy that broke (both sides postcopy-paused) through a destination that
        # listens again after migrate-recover.
        self.resume = bool(resume)
        # A resume whose connection is never taken up (a destination stuck, a link still down) is paused again after
        # this long, so recovery attempts are bounded and can be repeated.
        self.resume_timeout_s = check_number("resume_timeout_s", resume_timeout_s,
                                             "above 0 and at most %d s" % MAX_TIMEOUT_S, 0, MAX_TIMEOUT_S,
                                             low_allowed=False)
        # This host's certificates (migration_tls); None migrates in clear. A resume keeps the channel it had.
        self.tls_dir = tls_dir
        self.tls_hostname = tls_hostname
        # Where the progress document goes while the migration runs (progress.py); None writes none.
        self.progress = progress.Writer(progress_path, vm, method)

    def parameters(self):
        # 0 means "as fast as the link goes": QEMU has no 'unlimited', so give it far more than any NIC.
        bw = self.max_bandwidth_mib_s * MIB if self.max_bandwidth_mib_s else 1 << 40
        params = {"max-bandwidth": int(bw),
                  "downtime-limit": adaptation.qemu_downtime_limit_ms(self.downtime_limit_ms,
                                                                      self.downtime_headroom_pct)}
        if needs_postcopy(self.method, self.on_timeout, self.allow_postcopy):
            # max-bandwidth does not apply in post-copy; 0 here is QEMU's own "no limit".
            params["max-postcopy-bandwidth"] = int(self.max_postcopy_bandwidth_mib_s * MIB)
        return params

    def preflight(self, qmp, caps):
        """Checks that touch nothing: the VM can be migrated now, with these capabilities."""
        status = qmp.execute("query-status")["status"]
        if status not in ("running", "paused"):
            raise WalmError("VM '%s' is %s on this host; only a running or paused VM can be migrated"
                            % (self.vm, status), source_status=status)
        current = qmp.execute("query-migrate").get("status")
        if current in ACTIVE_STATES:
            raise WalmError("VM '%s' is already migrating (status %s); wait for it or cancel it first"
                            % (self.vm, current), source_status=status)
        check_capabilities(qmp, caps)
        return status

    def _capabilities(self, qmp):
        if self.capabilities is not None:
            return self.capabilities
        v = qmp.execute("query-version")["qemu"]
        return capabilities_for(self.method, self.on_timeout, [(v["major"], v["minor"], v["micro"])],
                                self.allow_postcopy)

    def _throttle_reachable(self, caps):
        """auto-converge is set before the start when the adaptation may reach its throttle action: QEMU takes no
        capability during a migration, and it throttles on its own only when passes stop shrinking."""
        actions = self.adaptation_actions
        if not self.adapt or METHOD_BY_NAME[self.method].postcopy or "throttle" not in actions:
            return False
        if caps.get("postcopy-ram") and "postcopy" in actions \
                and actions.index("postcopy") < actions.index("throttle"):
            return False
        return True

    def _make_monitor(self, caps, throttle):
        if not self.adapt or not METHOD_BY_NAME[self.method].adapts:
            return None
        return adaptation.Monitor(self.method, self.expect, self.adaptation_actions, self.downtime_limit_ms,
                                  self.max_downtime_limit_ms, postcopy_possible=bool(caps.get("postcopy-ram")),
                                  throttle_possible=throttle, headroom_pct=self.downtime_headroom_pct)

    def _pause_again(self, qmp):
        """Take a resume that did not get through back to postcopy-paused (migrate-pause); returns the status."""
        try:
            qmp.execute("migrate-pause")
        except QMPFailure:
            pass  # QEMU accepts it only in postcopy-active or postcopy-recover; the status below says where it is
        deadline = time.time() + 10
        status = qmp.execute("query-migrate").get("status")
        while status != "postcopy-paused" and status not in FINAL_STATES and time.time() < deadline:
            time.sleep(0.2)
            status = qmp.execute("query-migrate").get("status")
        return status

    def _run_resume(self, qmp, check_mode):
        status = qmp.execute("query-migrate").get("status")
        # An earlier resume still connecting, or already through: follow it rather than start another.
        follow = status in RESUMING + ("postcopy-active",)
        if status != "postcopy-paused" and not follow:
            raise WalmError("VM '%s': resume needs a post-copy migration paused by a broken link (postcopy-paused), "
                            "but its migration is %s" % (self.vm, status or "not started"))
        result = {"method": self.method, "destination_uri": self.destination_uri, "on_timeout": self.on_timeout,
                  "resume": True, "switch_after_passes": self.switch_after_passes,
                  "source_status_before": qmp.execute("query-status")["status"]}
        if check_mode:
            result.update(status="would-resume", changed=True)
            return result
        result.update(self._migrate(qmp, send=not follow))
        result["changed"] = True
        return result

    def run(self, check_mode=False):
        with QMP(self.vm, self.qmp_socket, self.qmp_timeout_s) as qmp:
            if self.resume:
                return self._run_resume(qmp, check_mode)
            caps = self._capabilities(qmp)
            status_before = self.preflight(qmp, caps)
            self._status_before = status_before
            result = {
                "method": self.method, "destination_uri": self.destination_uri, "on_timeout": self.on_timeout,
                "capabilities": caps, "parameters": self.parameters(),
                "switch_after_passes": self.switch_after_passes, "source_status_before": status_before,
            }
            result["tls"] = migration_tls.configure_source(qmp, self.tls_dir, self.tls_hostname, check_mode)
            outgoing = dict(caps)
            known = set(c["capability"] for c in qmp.execute("query-migrate-capabilities"))
            if self._throttle_reachable(caps) and "auto-converge" in known:
                outgoing["auto-converge"] = True  # the source's alone: the destination need not know it
            self.monitor = self._make_monitor(caps, outgoing.get("auto-converge", False))
            result.update(adapt=self.monitor is not None, expectation=self.expect,
                          adaptation_actions=list(self.adaptation_actions) if self.monitor else [])
            if check_mode:
                result.update(status="would-migrate", changed=True)
                return result
            # preflight() has checked that QEMU supports them; left-overs of an earlier migration are turned off.
            apply_capabilities(qmp, outgoing_capabilities(qmp, outgoing))
            qmp.execute("migrate-set-parameters", result["parameters"])
            qmp.events()  # drop stale events so STOP below belongs to this migration
            result.update(self._migrate(qmp))
            result["changed"] = True
            return result

    def _start_postcopy(self, qmp, t0, why):
        qmp.execute("migrate-start-postcopy")
        return {"postcopy_requested_ms": int((time.time() - t0) * 1000), "postcopy_reason": why}

    def _migrate(self, qmp, send=True):
        t0 = time.time()
        snapshots = []
        stop_ts = None
        switch = {}
        args = {"uri": self.destination_uri}
        if self.resume:
            args["resume"] = True
        try:
            if send:
                qmp.execute("migrate", args)
        except QMPFailure as exc:
            if self.resume:
                raise WalmError("VM '%s': QEMU refused to resume the post-copy migration: %s" % (self.vm, exc))
            return self._failed(qmp, "QEMU refused to start the migration: %s" % exc, t0, snapshots)
        last_pass = -1
        info = {}
        postcopy_seen_ms = 0 if self.resume else None
        left_paused = not self.resume
        while True:
            info = qmp.execute("query-migrate")
            status = info.get("status")
            snap = snapshot(info, t0)
            if snap["pass"] != last_pass and status in ACTIVE_STATES + ("completed",):
                snapshots.append(snap)
                last_pass = snap["pass"]
            for ev in qmp.events():
                if ev.get("event") == "STOP" and stop_ts is None:
                    stop_ts = event_time_s(ev)
            if status in POSTCOPY_STATES and postcopy_seen_ms is None:
                postcopy_seen_ms = snap["t_ms"]
            self.progress.update(snap, switch.get("postcopy_requested_ms"),
                                 self.monitor.adaptations if self.monitor is not None else ())
            if status in FINAL_STATES:
                break
            if status == "postcopy-paused":
                if not left_paused and time.time() - t0 < 5:
                    # Right after 'migrate resume' QEMU may still report the old pause: give it a moment.
                    time.sleep(self.poll_s)
                    continue
                # The link broke in post-copy. Never cancel now: the guest runs on the destination with part of
                # its memory still here. Report it so the caller can recover (migrate-recover + resume).
                return self._paused(qmp, info, t0, snapshots, switch, stop_ts)
            left_paused = True
            if self.resume and status in RESUMING and time.time() - t0 > self.resume_timeout_s:
                now = self._pause_again(qmp)
                if now not in RESUMING + ("postcopy-paused",):
                    continue  # it got through meanwhile (or ended): follow it
                info = qmp.execute("query-migrate")
                if now == "postcopy-paused":
                    result = self._paused(qmp, info, t0, snapshots, switch, stop_ts)
                else:
                    # QEMU takes no migrate-pause while it still connects: report where it is, bounded.
                    result = self._result(qmp, info, t0, snapshots, switch, stop_ts, 0, status=now)
                result["error"] = ("the destination did not take up the resumed migration within %d s (status %s, "
                                   "now %s); nothing was cancelled and the guest is intact on both hosts: recover "
                                   "again once the destination listens and the link works"
                                   % (self.resume_timeout_s, status, now))
                return result
            if not switch and status == "active" and self._switch_at_sync is not None \
                    and snap["pass"] >= self._switch_at_sync:
                switch = self._start_postcopy(qmp, t0, "after %d complete pre-copy passes" % self.switch_after_passes
                                              if self.switch_after_passes else "as soon as the first pass started")
            elif not switch and self.monitor is not None and status == "active":
                for act in self.monitor.observe(snap):
                    if act["action"] == "postcopy":
                        switch = self._start_postcopy(qmp, t0, "adaptation: " + act["reason"])
                    elif act["action"] == "downtime":
                        qmp.execute("migrate-set-parameters", {"downtime-limit": act["qemu_downtime_limit_ms"]})
                    elif act["action"] == "abort":
                        return self._cancel(qmp, t0, snapshots, info, why=act["reason"])
            if not switch and postcopy_seen_ms is None and time.time() - t0 > self.timeout_s:
                if not ON_TIMEOUT_BY_NAME[self.on_timeout].postcopy:
                    return self._cancel(qmp, t0, snapshots, info)
                switch = self._start_postcopy(qmp, t0, "pre-copy had not completed within timeout_s=%d s"
                                              % self.timeout_s)
            time.sleep(self.poll_s)
        if info["status"] != "completed":
            why = info.get("error-desc") or info["status"]
            if postcopy_seen_ms is not None:
                # Past the switch the source cannot take over again; say so instead of resuming it.
                return self._result(qmp, info, t0, snapshots, switch, stop_ts, postcopy_seen_ms,
                                    status="failed", error="migration %s during post-copy: %s; the source copy "
                                    "is not resumed (the guest ran on the destination)" % (info["status"], why))
            return self._failed(qmp, "migration %s: %s" % (info["status"], why), t0, snapshots, info)
        final = snapshot(info, t0)
        if not snapshots or snapshots[-1]["pass"] != final["pass"]:
            snapshots.append(final)
        return self._result(qmp, info, t0, snapshots, switch, stop_ts, postcopy_seen_ms)

    def _result(self, qmp, info, t0, snapshots, switch, stop_ts, postcopy_seen_ms, status="completed",
                error=None):
        ram = info.get("ram") or {}
        result = {
            "status": status,
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
            "started_at": t0,
            "finished_at": time.time(),
            # Pre-copy that converged before the switch took effect completes as pre-copy.
            "ran_postcopy": postcopy_seen_ms is not None,
            "postcopy_requested_ms": switch.get("postcopy_requested_ms"),
            "postcopy_reason": switch.get("postcopy_reason"),
            "postcopy_started_ms": postcopy_seen_ms,
            "source_stop_time": stop_ts,
            "source_status": qmp.execute("query-status")["status"],
            "snapshots": snapshots,
            "error": error,
        }
        result.update(self._adaptation_result(info.get("downtime") if status == "completed" else None))
        return result

    def _paused(self, qmp, info, t0, snapshots, switch, stop_ts):
        return self._result(qmp, info, t0, snapshots, switch, stop_ts, 0, status="postcopy-paused",
                            error="the migration stream broke during post-copy; both sides are paused and the "
                                  "guest can be recovered: migrate-recover on the destination, then migrate with "
                                  "resume on the source. Do not cancel and do not stop either QEMU.")

    def _cancel(self, qmp, t0, snapshots, info, why=None):
        """Pre-copy did not finish in time (or, with why, the adaptation gave up on it): cancel, and make sure the
        VM runs on here again."""
        last = info  # statistics of the migration as it stood; query-migrate drops them once cancelled
        qmp.execute("migrate_cancel")
        deadline = time.time() + 30
        while time.time() < deadline:
            info = qmp.execute("query-migrate")
            if info.get("status") in FINAL_STATES:
                break
            time.sleep(0.1)
        ram = last.get("ram") or {}
        where = "(after %s passes, %.1f MiB still dirty, %.1f MiB sent)" % (
            ram.get("dirty-sync-count"), ram.get("remaining", 0) / MIB, ram.get("transferred", 0) / MIB)
        if why is not None:
            return self._failed(qmp, "pre-copy would not converge: %s; no other adaptation action applied, so it "
                                     "was cancelled %s and the VM runs on the source. Allow post-copy, raise "
                                     "max_downtime_limit_ms, or migrate when the guest writes less"
                                % (why, where), t0, snapshots, last, status="aborted")
        return self._failed(qmp, "migration did not complete within timeout_s=%d s %s; cancelled"
                            % (self.timeout_s, where), t0, snapshots, last, status="timeout")

    def _adaptation_result(self, downtime_ms=None):
        """What the run-time check saw and did, and whether the downtime kept the limit in effect."""
        m = self.monitor
        limit = m.limit_ms if m is not None else self.downtime_limit_ms
        return {
            "adapt": m is not None,
            "expectation": self.expect,
            "adaptations": list(m.adaptations) if m is not None else [],
            "pass_measurements": list(m.passes) if m is not None else [],
            "downtime_limit_ms": limit,
            "qemu_downtime_limit_ms": adaptation.qemu_downtime_limit_ms(limit, self.downtime_headroom_pct),
            "downtime_within_limit": None if downtime_ms is None else downtime_ms <= limit,
        }

    def _failed(self, qmp, error, t0, snapshots, info=None, status="failed"):
        """A pre-copy that failed leaves the source in charge: resume it if QEMU left it paused."""
        vm_status = qmp.execute("query-status")["status"]
        resumed = False
        if vm_status in ("paused", "finish-migrate", "postmigrate") and self._status_before == "running":
            qmp.execute("cont")
            resumed = True
            vm_status = qmp.execute("query-status")["status"]
        ram = (info or {}).get("ram") or {}
        result = {
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
            "started_at": t0,
            "finished_at": time.time(),
            "snapshots": snapshots,
        }
        result.update(self._adaptation_result())
        return result
