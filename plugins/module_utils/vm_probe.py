# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Probing one VM: preflight over QMP, the measurement windows, and the final reading."""

from __future__ import absolute_import, division, print_function

import math
import os
import time

from . import memscan, procfs, qemu_cmdline
from .errors import WalmError
from .host_counters import MIB, TAP_METRICS, HostSnapshot, cpu_percentages, net_rates, schedstat_available
from .migration_status import ACTIVE_STATES
from .probe_settings import (MIN_SAMPLED_BLOCK_MIB, QEMU_DEFAULT_SAMPLE_PAGES, choose_mode, choose_sample_pages,
                             limits_for, version_tuple, window_plan)
from .probe_stats import iso_utc, mean_of, mean_stdev, rounded
from .procfs import kib_to_mib, parse_status, read_text
from .qmp import QMP, QMPFailure

SCALAR_METRICS = ("dirty_rate_mib_s", "cpu_percent", "qemu_cpu_percent", "cpu_wait_percent", "net_rx_mib_s",
                  "net_tx_mib_s", "net_rx_pps", "net_tx_pps", "net_rx_mbit_s", "net_tx_mbit_s", "wws_mib")


class VMProbe(object):
    """Probing one VM: preflight over QMP, windows, and the final reading."""

    def __init__(self, target, options, proc="/proc"):
        self.t = target
        self.o = options
        self.proc = proc
        self.qmp = None
        self.samples = []
        self.extra_limits = []
        self.error = None
        self.error_details = {}
        self.pending = False

    @property
    def name(self):
        return self.t.name or os.path.basename(self.t.qmp_socket or "?")

    def fail(self, exc):
        self.error = str(exc)
        self.error_details = dict(getattr(exc, "details", None) or {})
        self.close()

    def close(self):
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None

    # -- preflight -------------------------------------------------------------------------------------------

    def open(self):
        if self.t.qmp_socket is None:
            why = "; ".join(self.t.unusable) or "no -qmp or -mon mode=control on its command line"
            raise WalmError("VM '%s' (pid %s): no QMP unix socket to talk to (%s); give it one "
                            "(-qmp unix:PATH,server=on,wait=off)" % (self.name, self.t.pid, why))
        self.qmp = QMP(self.name, self.t.qmp_socket, self.o["qmp_timeout_s"])
        self.qmp.connect()
        q = self.qmp
        self.version_info = q.execute("query-version")
        self.version = version_tuple(self.version_info)
        commands = set(c["name"] for c in q.execute("query-commands"))
        if "calc-dirty-rate" not in commands or "query-dirty-rate" not in commands:
            raise WalmError("VM '%s': QEMU %d.%d.%d is too old to measure its dirty rate (calc-dirty-rate came "
                            "with QEMU 5.2; WALM needs QEMU 7.2 or later): upgrade QEMU on this host"
                            % ((self.name,) + self.version))
        self.status = q.execute("query-status").get("status")
        self.check_running(self.status)
        self.check_not_migrating()
        self.kvm = bool(q.execute("query-kvm").get("enabled"))
        cpus = q.execute("query-cpus-fast")
        self.vcpu_threads = [c.get("thread-id") for c in sorted(cpus, key=lambda c: c.get("cpu-index", 0))]
        mem = q.execute("query-memory-size-summary")
        self.memory_mib = (mem.get("base-memory", 0) + mem.get("plugged-memory", 0)) // MIB
        try:
            machine = q.execute("qom-get", {"path": "/machine", "property": "type"})
            self.machine = machine[:-len("-machine")] if machine.endswith("-machine") else machine
        except QMPFailure:
            self.machine = self.t.facts.get("machine")
        self.pid = self._pid_from_threads()
        if self.t.pid is None or not self.t.argv:
            self.t.pid = self.pid
            self.t.argv = procfs.read_cmdline(self.pid, self.proc) or []
            self.t.facts = qemu_cmdline.qemu_facts(self.t.argv)
            if self.t.name is None:
                self.t.name = self.t.facts.get("name") or "qemu-%d" % self.pid
                self.qmp.vm = self.t.name
        self.start_ticks = procfs.process_start_ticks(self.pid, self.proc)
        self.taps = self._taps()
        self.macs = self._macs()
        has_mode = self.version >= (6, 2)
        self.mode = choose_mode(self.o["dirty_rate_mode"], self.name, self.kvm, self.t.facts.get("dirty_ring_size"),
                                has_mode)
        self.has_mode_arg = has_mode
        self.has_sample_pages_arg = self.version >= (6, 1)
        self.has_ms_unit = self.version >= (8, 2)
        self.sample_pages = choose_sample_pages(self.memory_mib, self.o.get("sample_pages"))
        if not self.has_sample_pages_arg:
            self.sample_pages = QEMU_DEFAULT_SAMPLE_PAGES
        self.window_ms, rounded = window_plan(self.o["duration_s"], self.o["samples"], self.has_ms_unit)
        if rounded:
            self.extra_limits.append(
                "QEMU %d.%d.%d measures whole seconds only: each window was %d ms instead of the %d ms asked for."
                % (self.version + (self.window_ms, int(round(self.o["duration_s"] * 1000.0 / self.o["samples"])))))
        if self.mode == "page-sampling" and self.memory_mib < MIN_SAMPLED_BLOCK_MIB:
            self.extra_limits.append("The VM has less than %d MiB of RAM: page-sampling cannot measure it "
                                     "(dirty_rate_mib_s is null)." % MIN_SAMPLED_BLOCK_MIB)
        self.use_schedstat = all(schedstat_available(self.pid, tid, self.proc) for tid in set(self.vcpu_threads))
        if len(set(self.vcpu_threads)) < len(self.vcpu_threads):
            self.extra_limits.append("Several vCPUs share one host thread (single-threaded TCG): "
                                     "cpu_percent_per_vcpu splits that thread's time evenly.")
        self._wait_idle_dirty_rate()

    def check_running(self, status):
        """Only a running guest has a workload: a paused one dirties no memory and uses no vCPU time."""
        if status == "running":
            return
        if status == "inmigrate":
            raise WalmError("VM '%s' is the destination of an incoming migration (status inmigrate): there is "
                            "nothing to measure yet; probe it on its source host, or here once it runs"
                            % self.name, status=status)
        raise WalmError("VM '%s' is not running (QEMU status %s): a stopped guest has no workload to measure, and "
                        "its readings would pass for an idle one. Probe it where it runs (after a migration, on the "
                        "destination), or once it is resumed" % (self.name, status), status=status)

    def check_not_migrating(self):
        info = self.qmp.execute("query-migrate")
        status = info.get("status")
        if status in ACTIVE_STATES:
            raise WalmError("VM '%s' is migrating (query-migrate status %s): the probe does not measure during a "
                            "migration because calc-dirty-rate would compete with it for the dirty log; probe "
                            "again when the migration has ended" % (self.name, status), migration_status=status)
        return status

    def _pid_from_threads(self):
        """The QEMU process owning the vCPU threads QMP reports (so a socket path can never point us elsewhere)."""
        for tid in self.vcpu_threads:
            try:
                tgid = int(parse_status(read_text("%s/%d/status" % (self.proc, tid)))["Tgid"])
            except (IOError, OSError, ValueError, KeyError):
                continue
            if self.t.pid is not None and tgid != self.t.pid:
                raise WalmError("VM '%s': QMP socket %s belongs to QEMU pid %d, not to pid %d found for this VM"
                                % (self.name, self.t.qmp_socket, tgid, self.t.pid))
            return tgid
        if self.t.pid is not None:
            return self.t.pid
        raise WalmError("VM '%s': cannot find the QEMU process behind %s (its vCPU threads %s are not visible "
                        "here: is QEMU in another PID namespace?)" % (self.name, self.t.qmp_socket,
                                                                      self.vcpu_threads))

    def _taps(self):
        taps = procfs.tun_interfaces(self.pid, self.proc)
        if not taps:
            taps = list(self.t.facts.get("taps") or [])
        return taps

    def _macs(self):
        try:
            filters = self.qmp.execute("query-rx-filter")
        except QMPFailure:
            return []
        return sorted(f.get("main-mac") for f in filters if f.get("main-mac"))

    def _wait_idle_dirty_rate(self):
        """Another client (a second probe, libvirt) may be measuring: wait briefly for it, never interrupt it."""
        deadline = time.monotonic() + max(2.0, self.window_ms / 1000.0 + 1)
        while True:
            info = self.qmp.execute("query-dirty-rate")
            if info.get("status") != "measuring":
                return
            if time.monotonic() > deadline:
                raise WalmError("VM '%s': another dirty-rate measurement is running on it (another walm_probe, or "
                                "libvirt's domdirtyrate-calc) and did not finish; probe again later" % self.name)
            time.sleep(0.1)

    # -- windows ---------------------------------------------------------------------------------------------

    def start_window(self):
        args = {"calc-time": self.window_ms // (1 if self.has_ms_unit else 1000)}
        if self.has_ms_unit:
            args["calc-time-unit"] = "millisecond"
        if self.has_mode_arg:
            args["mode"] = self.mode
        if self.mode == "page-sampling" and self.has_sample_pages_arg:
            args["sample-pages"] = self.sample_pages
        self.before = HostSnapshot(self.pid, self.vcpu_threads, self.taps, self.proc, self.use_schedstat)
        self.window_started = time.monotonic()
        try:
            self.qmp.execute("calc-dirty-rate", args)
        except QMPFailure as exc:
            if self.o["dirty_rate_mode"] == "auto" and self.mode == "dirty-bitmap" and "not enabled" in str(exc):
                # The KVM dirty ring is on though the command line did not say so: use it.
                self.mode = "dirty-ring"
                args["mode"] = "dirty-ring"
                self.qmp.execute("calc-dirty-rate", args)
            elif "already being measured" in str(exc):
                raise WalmError("VM '%s': another dirty-rate measurement started on it meanwhile (another "
                                "walm_probe?); probe again later" % self.name)
            else:
                raise
        self.pending = True

    def poll_window(self):
        """True once QEMU has the window's result (and the sample is recorded)."""
        args = {"calc-time-unit": "millisecond"} if self.has_ms_unit else None
        info = self.qmp.execute("query-dirty-rate", args)
        if info.get("status") != "measured":
            if time.monotonic() - self.window_started > self.window_ms / 1000.0 + self.o["qmp_timeout_s"]:
                raise WalmError("VM '%s': QEMU did not finish measuring the dirty rate within %.1f s"
                                % (self.name, self.window_ms / 1000.0 + self.o["qmp_timeout_s"]))
            return False
        after = HostSnapshot(self.pid, self.vcpu_threads, self.taps, self.proc, self.use_schedstat)
        self.pending = False
        self.samples.append(self._sample(info, self.before, after))
        return True

    def _sample(self, info, before, after):
        rate = info.get("dirty-rate")
        if rate is not None and rate < 0:
            rate = None  # QEMU's "no result" (e.g. no RAM block large enough to sample)
        window_ms = info.get("calc-time")
        if window_ms is None or not self.has_ms_unit:
            window_ms = (window_ms or 0) * 1000 or self.window_ms
        per_vcpu, total, process = cpu_percentages(before, after, self.vcpu_threads)
        _per_vcpu_wait, wait, _process_wait = cpu_percentages(before, after, self.vcpu_threads, "thread_wait_ns")
        per_tap, net = net_rates(before, after)
        s = {
            "t_offset_s": rounded(before.t - self.o["t0_monotonic"], 3),
            "window_ms": window_ms,
            "cpu_window_ms": int((after.t - before.t) * 1000),
            "dirty_rate_mib_s": rate,
            "wws_mib": None if rate is None else rounded(rate * window_ms / 1000.0),
            "cpu_percent": rounded(total),
            "cpu_percent_per_vcpu": [rounded(v) for v in per_vcpu],
            "qemu_cpu_percent": rounded(process),
            "cpu_wait_percent": rounded(wait),
            "net_per_tap": dict((tap, None if r is None else dict((k, rounded(v)) for k, v in r.items()))
                                for tap, r in per_tap.items()),
        }
        for k in TAP_METRICS:
            s["net_" + k] = rounded(net[k])
        if info.get("vcpu-dirty-rate"):
            s["dirty_rate_per_vcpu_mib_s"] = [v.get("dirty-rate") for v in
                                              sorted(info["vcpu-dirty-rate"], key=lambda v: v.get("id", 0))]
        if self.mode == "page-sampling" and rate is not None and self.memory_mib:
            # How many sampled pages changed, hence the estimate's relative standard error (binomial).
            sampled = self.sample_pages * self.memory_mib / 1024.0
            changed = rate * window_ms / 1000.0 / self.memory_mib * sampled
            s["dirty_rate_rel_error_pct"] = rounded(100.0 / math.sqrt(changed), 1) if changed > 0 else None
        return s

    # -- final reading ---------------------------------------------------------------------------------------

    def finish(self):
        self.check_not_migrating()  # a migration that started while measuring: the reading is not trustworthy
        self.status = self.qmp.execute("query-status").get("status")
        balloon_mib, balloon_note = self._balloon()
        if balloon_note:
            self.extra_limits.append(balloon_note)
        try:
            rss_mib = kib_to_mib(parse_status(read_text("%s/%d/status" % (self.proc, self.pid))).get("VmRSS"))
        except (IOError, OSError, ValueError):
            rss_mib = None
        self.check_running(self.status)  # paused while it was measured: the rates are not its workload's
        return self.reading(rss_mib, balloon_mib, self._nonzero())

    def _nonzero(self):
        """Non-zero guest memory sampled from the host (memscan.py), or None with the reason in the limits."""
        samples = self.o.get("nonzero_samples", memscan.DEFAULT_SAMPLES)
        if not samples:
            self.extra_limits.append("nonzero_mib is null: nonzero_samples is 0.")
            return None
        try:
            text = self.qmp.execute("human-monitor-command", {"command-line": "info ramblock"})
            return memscan.scan(self.pid, memscan.parse_ramblocks(text), samples=samples, proc=self.proc)
        except (QMPFailure, memscan.MemScanError) as exc:
            self.extra_limits.append("nonzero_mib is null: %s." % exc)
            return None

    def _balloon(self):
        """Guest memory in use from the balloon's statistics, or (None, why not)."""
        try:
            self.qmp.execute("query-balloon")
        except QMPFailure as exc:
            if exc.error_class == "DeviceNotActive":
                return None, ("guest_memory_used_mib is null: the VM has no balloon device, and the host cannot "
                              "tell used from cached guest memory without one.")
            return None, "guest_memory_used_mib is null: query-balloon failed (%s)." % exc
        path = self._balloon_path()
        if path is None:
            return None, "guest_memory_used_mib is null: the balloon device was not found in QEMU's device tree."
        try:
            gs = self.qmp.execute("qom-get", {"path": path, "property": "guest-stats"})
        except QMPFailure as exc:
            return None, "guest_memory_used_mib is null: cannot read the balloon's statistics (%s)." % exc
        stats = gs.get("stats") or {}
        total = stats.get("stat-total-memory", -1)
        avail = stats.get("stat-available-memory", -1)
        free = stats.get("stat-free-memory", -1)
        if not gs.get("last-update") or total is None or total < 0:
            return None, ("guest_memory_used_mib is null: the balloon reports no statistics (statistics polling is "
                          "off: set guest-stats-polling-interval on the balloon device, and the guest needs its "
                          "virtio_balloon driver).")
        age = time.time() - gs["last-update"]
        note = None
        if age > 60:
            note = "guest_memory_used_mib comes from balloon statistics %d s old." % age
        used = total - (avail if avail is not None and avail >= 0 else free)
        return rounded(used / float(MIB)), note

    def _balloon_path(self):
        for container in ("/machine/peripheral", "/machine/peripheral-anon"):
            try:
                children = self.qmp.execute("qom-list", {"path": container})
            except QMPFailure:
                continue
            for child in children:
                if child.get("type", "").startswith("child<virtio-balloon"):
                    return "%s/%s" % (container, child["name"])
        return None

    def reading(self, rss_mib, balloon_mib, nonzero=None):
        samples = self.samples
        nonzero = nonzero or {}
        per_vcpu = [mean_of([s["cpu_percent_per_vcpu"][i] for s in samples]) for i in range(len(self.vcpu_threads))]
        taps = sorted(set(t for s in samples for t in s["net_per_tap"]))
        net_per_tap = {}
        for tap in taps:
            vals = [s["net_per_tap"].get(tap) for s in samples if s["net_per_tap"].get(tap) is not None]
            net_per_tap[tap] = (dict((k, mean_of([v[k] for v in vals])) for k in vals[0]) if vals else None)
        missing = [t for t in taps if net_per_tap[t] is None]
        if missing:
            self.extra_limits.append("Tap %s is not in the QEMU's network namespace: its traffic is not counted."
                                     % ", ".join(missing))
        stats = dict((k, mean_stdev([s.get(k) for s in samples])) for k in SCALAR_METRICS)
        rates = [s["dirty_rate_mib_s"] for s in samples]
        wws = [s["wws_mib"] for s in samples if s["wws_mib"] is not None]
        workload = {
            "dirty_rate_mib_s": mean_of(rates),
            "dirty_rate_mode": self.mode,
            "dirty_rate_sample_pages_per_gib": self.sample_pages if self.mode == "page-sampling" else None,
            "cpu_percent": mean_of([s["cpu_percent"] for s in samples]),
            "cpu_percent_per_vcpu": per_vcpu,
            "qemu_cpu_percent": mean_of([s["qemu_cpu_percent"] for s in samples]),
            "cpu_wait_percent": mean_of([s["cpu_wait_percent"] for s in samples]),
            "net_per_tap": net_per_tap,
            "wws_mib": max(wws) if wws else None,
            "wws_window_ms": self.window_ms,
            "rss_mib": rounded(rss_mib),
            "guest_memory_used_mib": balloon_mib,
            "nonzero_mib": nonzero.get("nonzero_mib"),
            "nonzero_rel_error_pct": nonzero.get("nonzero_rel_error_pct"),
        }
        for k in TAP_METRICS:
            workload["net_" + k] = mean_of([s["net_" + k] for s in samples])
        if any("dirty_rate_per_vcpu_mib_s" in s for s in samples):
            workload["dirty_rate_per_vcpu_mib_s"] = [
                mean_of([s["dirty_rate_per_vcpu_mib_s"][i] for s in samples if "dirty_rate_per_vcpu_mib_s" in s])
                for i in range(len(self.vcpu_threads))]
        errs = [s.get("dirty_rate_rel_error_pct") for s in samples if s.get("dirty_rate_rel_error_pct") is not None]
        if errs:
            workload["dirty_rate_rel_error_pct"] = rounded(max(errs) / math.sqrt(len(errs)), 1)
        now = time.time()
        return {
            "vm": {
                "name": self.name, "pid": self.pid, "qmp_socket": self.t.qmp_socket,
                "memory_mib": self.memory_mib, "vcpus": len(self.vcpu_threads), "taps": self.taps,
                "macs": self.macs, "machine": self.machine, "accel": "kvm" if self.kvm else
                (self.t.facts.get("accel") if self.t.facts.get("accel") not in (None, "kvm") else "tcg"),
                "argv": self.t.argv, "status": self.status,
                "qemu_version": "%d.%d.%d" % self.version, "managed": self.t.managed,
                "vcpu_thread_ids": self.vcpu_threads, "process_start_ticks": self.start_ticks,
            },
            "workload": workload,
            "samples": samples,
            "stats": stats,
            "settings": {"duration_s": self.o["duration_s"], "samples": self.o["samples"],
                         "window_ms": self.window_ms, "dirty_rate_mode_requested": self.o["dirty_rate_mode"],
                         "dirty_rate_mode": self.mode, "sample_pages_per_gib": self.sample_pages,
                         "cpu_source": "schedstat" if self.use_schedstat else "stat"},
            "probed_at": rounded(now, 3),
            "probed_at_iso": iso_utc(now),
            "cached": False,
            "age_s": 0.0,
            "limits": limits_for(self.mode, self.sample_pages, self.window_ms, self.extra_limits),
        }
