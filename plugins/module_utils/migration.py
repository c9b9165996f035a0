# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The migration engine: drives the source QEMU through QMP, polls progress, keeps one snapshot per pass.

The destination side (incoming QEMU, its capabilities, migrate-incoming) is driven on its own host by the
walm_vm module; both sides take their capabilities from capabilities_for() so they always agree.
"""

from __future__ import absolute_import, division, print_function

import math
import re
import time

from . import adaptation, migration_tls, progress, qemu_binary, qemu_process, vm_records, vmlock
from .errors import WalmError
from .methods import METHOD_BY_NAME, METHODS, ON_TIMEOUT, ON_TIMEOUT_BY_NAME
from .qmp import QMP, QMPFailure, event_time_s
from .vmdef import HostPaths, fingerprint

MIB = 1024 * 1024

# query-migrate states in which a migration is still under way.
ACTIVE_STATES = ("setup", "active", "device", "pre-switchover", "postcopy-active", "postcopy-paused",
                 "postcopy-recover", "postcopy-recover-setup", "wait-unplug", "cancelling", "colo")
FINAL_STATES = ("completed", "failed", "cancelled")
# A resumed post-copy still connecting to the destination.
RESUMING = ("postcopy-recover-setup", "postcopy-recover")
POSTCOPY_STATES = ("postcopy-active", "postcopy-paused", "postcopy-recover", "postcopy-recover-setup")
# postcopy-preempt (faulted pages on their own channel, ahead of the background stream) exists since QEMU 8.0.
PREEMPT_MIN_VERSION = (8, 0, 0)

# Ceilings of a migration request (check_request), so that a typo fails before anything is touched.
MAX_DOWNTIME_LIMIT_MS = 2000000  # QEMU's own maximum for downtime-limit (2000 s)
# 1 TiB/s: far above any link, and what 0 ("no limit") gives QEMU; in bytes/s it fits QEMU's int64 with room.
MAX_BANDWIDTH_MIB_S = 1024 * 1024
MAX_TIMEOUT_S = 86400  # a day: a pre-copy that has not converged by then will not
MAX_SWITCH_AFTER_PASSES = 1000  # far beyond where pre-copy has either converged or never will
# tcp:HOST:PORT, the only URI QEMU is given unless allow_unsafe_uri: HOST a name, IPv4, or IPv6 in brackets.
TCP_URI_RE = re.compile(r"^tcp:(\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
                        r":([0-9]{1,5})\Z")


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


def _number(name, value, rule, low, high, integer=False, low_allowed=True):
    """value as an int or float if it is a finite number (or the string of one) within [low, high], else refuse.

    Playbook variables often arrive as strings ("300"); those are converted. Booleans and fractions where an
    integer is needed are refused, never rounded.
    """
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = None
    if isinstance(value, bool) or f is None or not math.isfinite(f) or (integer and f != int(f)) \
            or f < low or f > high or (f == low and not low_allowed):
        raise WalmError("%s must be %s, got %r" % (name, rule, value))
    return int(f) if integer else f


def _flag(name, value):
    """A yes/no option: a boolean, or one of the strings Ansible reads as one; anything else is refused."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise WalmError("%s must be true or false, got %r" % (name, value))


def check_destination_uri(uri, allow_unsafe_uri=False):
    """Refuse a migration URI that is not tcp:HOST:PORT unless allow_unsafe_uri; returns the URI."""
    if not isinstance(uri, str) or not uri.strip():
        raise WalmError("destination_uri is missing: pass the incoming_uri that walm_vm state=incoming returned on "
                        "the destination (e.g. tcp:10.0.0.2:49152)")
    scheme, sep, _address = uri.partition(":")
    if not sep or not scheme:
        raise WalmError("destination_uri %r is not a QEMU migration URI (e.g. tcp:10.0.0.2:49152)" % (uri,))
    if scheme != "tcp":
        if allow_unsafe_uri:
            return uri
        raise WalmError("destination_uri %r uses the scheme %r: only tcp:HOST:PORT is accepted, because QEMU runs "
                        "an exec: URI as a shell command on the source and file:, unix: or fd: reach this host's "
                        "files. Pass the incoming_uri of walm_vm state=incoming, or set allow_unsafe_uri: true if "
                        "the other scheme is meant" % (uri, scheme + ":"))
    m = TCP_URI_RE.match(uri)
    if not m or not 1 <= int(m.group(4)) <= 65535:
        raise WalmError("destination_uri %r is not tcp:HOST:PORT with a port from 1 to 65535 (an IPv6 address "
                        "goes in brackets: tcp:[fd00::2]:49152)" % (uri,))
    return uri


def check_request(method, on_timeout, switch_after_passes, downtime_limit_ms, max_bandwidth_mib_s,
                  max_postcopy_bandwidth_mib_s, timeout_s, destination_uri=None, allow_unsafe_uri=False):
    """Validate one migration request before anything is touched; returns its values, converted.

    Pure (no I/O), so it can check a playbook's parameters on the controller before any QEMU starts. Numbers may
    be given as strings of numbers (as playbook variables often are); they come back as int (switch_after_passes,
    downtime_limit_ms) or float (the rest). destination_uri None means "not known yet" (the destination is not
    prepared) and is not checked. Raises WalmError naming the parameter and the fix.
    """
    if method not in METHODS:
        raise WalmError("unknown migration method %r; choose one of %s" % (method, ", ".join(METHODS)))
    if on_timeout not in ON_TIMEOUT:
        raise WalmError("unknown on_timeout %r; choose one of %s" % (on_timeout, ", ".join(ON_TIMEOUT)))
    allow_unsafe_uri = _flag("allow_unsafe_uri", allow_unsafe_uri)
    bandwidth_rule = "0 (no limit) or at most %d MiB/s (1 TiB/s)" % MAX_BANDWIDTH_MIB_S
    return {
        "method": method,
        "on_timeout": on_timeout,
        "switch_after_passes": _number(
            "switch_after_passes", switch_after_passes,
            "an integer from 1 to %d (complete pre-copy passes before a hybrid switches; to switch during the "
            "first pass use method postcopy)" % MAX_SWITCH_AFTER_PASSES, 1, MAX_SWITCH_AFTER_PASSES, integer=True),
        "downtime_limit_ms": _number(
            "downtime_limit_ms", downtime_limit_ms,
            "an integer from 1 to %d (QEMU's limit)" % MAX_DOWNTIME_LIMIT_MS, 1, MAX_DOWNTIME_LIMIT_MS,
            integer=True),
        "max_bandwidth_mib_s": _number("max_bandwidth_mib_s", max_bandwidth_mib_s, bandwidth_rule, 0,
                                       MAX_BANDWIDTH_MIB_S),
        "max_postcopy_bandwidth_mib_s": _number("max_postcopy_bandwidth_mib_s", max_postcopy_bandwidth_mib_s,
                                                bandwidth_rule, 0, MAX_BANDWIDTH_MIB_S),
        "timeout_s": _number("timeout_s", timeout_s, "above 0 and at most %d s (a day)" % MAX_TIMEOUT_S, 0,
                             MAX_TIMEOUT_S, low_allowed=False),
        "destination_uri": None if destination_uri is None else check_destination_uri(destination_uri,
                                                                                      allow_unsafe_uri),
        "allow_unsafe_uri": allow_unsafe_uri,
    }


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
        "page_size": ram.get("page-size", 4096),
        "cpu_throttle_pct": info.get("cpu-throttle-percentage", 0),
    }


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
        self.allow_postcopy = _flag("allow_postcopy", allow_postcopy)
        self.adapt = _flag("adapt", adapt)
        self.expect = adaptation.check_expectation(expect)
        self.adaptation_actions = adaptation.check_actions(adaptation_actions)
        self.max_downtime_limit_ms = None if max_downtime_limit_ms is None else _number(
            "max_downtime_limit_ms", max_downtime_limit_ms, "an integer from downtime_limit_ms (%d) to %d"
            % (self.downtime_limit_ms, MAX_DOWNTIME_LIMIT_MS), self.downtime_limit_ms, MAX_DOWNTIME_LIMIT_MS,
            integer=True)
        self.downtime_headroom_pct = _number("downtime_headroom_pct", downtime_headroom_pct,
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
        self.resume_timeout_s = _number("resume_timeout_s", resume_timeout_s,
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
            snap = _snapshot(info, t0)
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
        final = _snapshot(info, t0)
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
