# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The resource tracker behind walm_probe: measure what a running VM does, for the migration decision.

Per VM and per window (``duration_s`` split into ``samples`` windows), all VMs measured side by side:

- the page-dirtying rate from QEMU (``calc-dirty-rate`` / ``query-dirty-rate``; page-sampling, dirty-bitmap or
  dirty-ring),
- the CPU time of each vCPU thread (thread ids from ``query-cpus-fast``; ``/proc/PID/task/TID/schedstat``, or
  ``stat`` where schedstat is missing) and of the whole QEMU process,
- the traffic of each tap device (``/proc/PID/net/dev``: the counters of the QEMU's own network namespace),

then once per VM: resident memory (``VmRSS``), guest memory use from a balloon device's statistics when there is
one, and the VM's shape (memory, vCPUs, machine, accelerator, taps, command line).

Read-only: nothing on the VM or the host changes (``persist`` only writes the reading under the state directory).
Measuring during a migration is refused: ``calc-dirty-rate`` would compete with it for the dirty log.
"""

from __future__ import absolute_import, division, print_function

import datetime
import json
import math
import os
import re
import time

from . import discovery, memscan, vmhost
from .errors import WalmError
from .migration import ACTIVE_STATES
from .qmp import QMP, QMPFailure

MIB = 1024 * 1024
MODES = ("auto", "page-sampling", "dirty-bitmap", "dirty-ring")
# QEMU's limits (migration/dirtyrate.h).
MIN_SAMPLE_PAGES, MAX_SAMPLE_PAGES = 128, 16384
MIN_WINDOW_MS, MAX_WINDOW_MS = 50, 60000
QEMU_DEFAULT_SAMPLE_PAGES = 512
# auto sample_pages: sample about this many pages in all (see choose_sample_pages).
AUTO_SAMPLE_TOTAL = 8192
# page-sampling skips RAM blocks smaller than this (MIN_RAMBLOCK_SIZE in QEMU).
MIN_SAMPLED_BLOCK_MIB = 128
HISTORY_LEN = 60
PROBE_SUBDIR = "probe"
SCALAR_METRICS = ("dirty_rate_mib_s", "cpu_percent", "qemu_cpu_percent", "cpu_wait_percent", "net_rx_mib_s",
                  "net_tx_mib_s", "net_rx_pps", "net_tx_pps", "net_rx_mbit_s", "net_tx_mbit_s", "wws_mib")
TAP_METRICS = ("rx_mib_s", "tx_mib_s", "rx_pps", "tx_pps", "rx_mbit_s", "tx_mbit_s")


# -- /proc parsers ----------------------------------------------------------------------------------------------

def clock_ticks_per_s():
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - Linux always has it
        return 100


def parse_stat(text):
    """``/proc/PID[/task/TID]/stat``: the fields the probe uses (comm may contain spaces and parentheses)."""
    head, _paren, rest = text.rpartition(")")
    f = rest.split()
    # f[0] is field 3 (state); field N is f[N - 3].
    return {"comm": head.partition("(")[2], "state": f[0], "utime_ticks": int(f[11]), "stime_ticks": int(f[12]),
            "start_ticks": int(f[19]), "guest_ticks": int(f[40]) if len(f) > 40 else 0}


def parse_schedstat(text):
    """``/proc/.../schedstat``: nanoseconds on a CPU, nanoseconds waiting for one, timeslices."""
    f = text.split()
    return {"run_ns": int(f[0]), "wait_ns": int(f[1]), "timeslices": int(f[2])}


def parse_status(text):
    """``/proc/PID/status`` as a dict of strings; sizes keep their unit (``VmRSS: '123 kB'``)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def kib_to_mib(value):
    """``'123456 kB'`` from /proc/PID/status as MiB."""
    if not value:
        return None
    number, _space, unit = value.partition(" ")
    if unit and unit.strip().lower() != "kb":
        return None
    return int(number) / 1024.0


def parse_net_dev(text):
    """``/proc/net/dev`` as {interface: counters} (bytes, packets, drops in each direction)."""
    out = {}
    for line in text.splitlines()[2:]:
        name, sep, data = line.partition(":")
        if not sep:
            continue
        f = data.split()
        if len(f) < 16:
            continue
        out[name.strip()] = {"rx_bytes": int(f[0]), "rx_packets": int(f[1]), "rx_dropped": int(f[3]),
                             "tx_bytes": int(f[8]), "tx_packets": int(f[9]), "tx_dropped": int(f[11])}
    return out


def _read(path):
    with open(path) as f:
        return f.read()


# -- host-side counters -----------------------------------------------------------------------------------------

class HostSnapshot(object):
    """CPU time of the vCPU threads and the process, and tap counters, at one instant."""

    def __init__(self, pid, threads, taps, proc="/proc", use_schedstat=True):
        self.t = time.monotonic()
        self.thread_ns = {}
        self.thread_wait_ns = {}
        ticks_ns = 1e9 / clock_ticks_per_s()
        for tid in threads:
            base = "%s/%d/task/%d/" % (proc, pid, tid)
            self.thread_wait_ns[tid] = None
            try:
                if use_schedstat:
                    ss = parse_schedstat(_read(base + "schedstat"))
                    self.thread_ns[tid] = ss["run_ns"]
                    self.thread_wait_ns[tid] = ss["wait_ns"]
                else:
                    st = parse_stat(_read(base + "stat"))
                    self.thread_ns[tid] = (st["utime_ticks"] + st["stime_ticks"]) * ticks_ns
            except (IOError, OSError, ValueError, IndexError):
                self.thread_ns[tid] = None
        try:
            st = parse_stat(_read("%s/%d/stat" % (proc, pid)))
            self.process_ns = (st["utime_ticks"] + st["stime_ticks"]) * ticks_ns
        except (IOError, OSError, ValueError, IndexError):
            self.process_ns = None
        try:
            counters = parse_net_dev(_read("%s/%d/net/dev" % (proc, pid)))
        except (IOError, OSError):
            counters = {}
        self.net = dict((tap, counters.get(tap)) for tap in taps)


def schedstat_available(pid, tid, proc="/proc"):
    try:
        parse_schedstat(_read("%s/%d/task/%d/schedstat" % (proc, pid, tid)))
        return True
    except (IOError, OSError, ValueError, IndexError):
        return False


def cpu_percentages(before, after, vcpu_threads, field="thread_ns"):
    """Per-vCPU CPU use (100 = one host CPU busy all the window), the vCPUs' total, and the whole process.

    vcpu_threads lists each vCPU's thread id in vCPU order. vCPUs sharing a thread (single-threaded TCG) share
    its time evenly; the total counts each thread once. With field="thread_wait_ns" the same for the time the
    vCPU threads were runnable but waited for a host CPU (schedstat only; None from stat).
    """
    wall_ns = (after.t - before.t) * 1e9
    if wall_ns <= 0:
        raise ValueError("snapshots are not in time order")
    per_thread = {}
    for tid in set(vcpu_threads):
        a, b = getattr(before, field).get(tid), getattr(after, field).get(tid)
        per_thread[tid] = None if a is None or b is None else max(0.0, (b - a) * 100.0 / wall_ns)
    sharing = dict((tid, vcpu_threads.count(tid)) for tid in per_thread)
    per_vcpu = [None if per_thread[tid] is None else per_thread[tid] / sharing[tid] for tid in vcpu_threads]
    known = [v for v in per_thread.values() if v is not None]
    total = sum(known) if known else None
    process = None
    if before.process_ns is not None and after.process_ns is not None:
        process = max(0.0, (after.process_ns - before.process_ns) * 100.0 / wall_ns)
    return per_vcpu, total, process


def net_rates(before, after):
    """Tap traffic per second, from the guest's side: the guest's rx is what the tap sends (tap tx)."""
    secs = after.t - before.t
    per_tap = {}
    totals = dict((k, 0.0) for k in TAP_METRICS)
    for tap, b in before.net.items():
        a = after.net.get(tap)
        if b is None or a is None:
            per_tap[tap] = None
            continue
        d = dict((k, max(0, a[k] - b[k])) for k in b)
        rates = {
            "rx_mib_s": d["tx_bytes"] / MIB / secs, "tx_mib_s": d["rx_bytes"] / MIB / secs,
            "rx_pps": d["tx_packets"] / secs, "tx_pps": d["rx_packets"] / secs,
            "rx_mbit_s": d["tx_bytes"] * 8 / 1e6 / secs, "tx_mbit_s": d["rx_bytes"] * 8 / 1e6 / secs,
            # the tap's own drops: rx_dropped are frames from the guest the host dropped, and the reverse
            "rx_dropped": d["tx_dropped"], "tx_dropped": d["rx_dropped"],
        }
        per_tap[tap] = rates
        for k in TAP_METRICS:
            totals[k] += rates[k]
    return per_tap, totals


# -- small helpers ----------------------------------------------------------------------------------------------

def mean_stdev(values):
    """Mean, population standard deviation, min and max of the non-null values (None if there are none)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))
    return {"mean": _r(m), "stdev": _r(sd), "min": _r(min(vals)), "max": _r(max(vals)), "n": len(vals)}


def _r(value, digits=2):
    return None if value is None else round(float(value), digits)


def _mean(values):
    vals = [v for v in values if v is not None]
    return _r(sum(vals) / len(vals)) if vals else None


def _iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def version_tuple(info):
    q = (info or {}).get("qemu") or {}
    return (q.get("major", 0), q.get("minor", 0), q.get("micro", 0))


def choose_sample_pages(memory_mib, requested=None):
    """Pages per GiB that page-sampling hashes.

    QEMU's default (512 per GiB) samples only 256 pages of a 512 MiB guest: at 20 MiB/s over a 0.5 s window about
    5 of them change, a +-45 % statistical error. Auto aims at about AUTO_SAMPLE_TOTAL pages in all (xxhash of
    32 MiB, a few ms of QEMU time), within QEMU's range and never below its default.
    """
    if requested is not None:
        requested = int(requested)
        if not MIN_SAMPLE_PAGES <= requested <= MAX_SAMPLE_PAGES:
            raise WalmError("sample_pages must be between %d and %d pages per GiB (QEMU's range), got %d"
                            % (MIN_SAMPLE_PAGES, MAX_SAMPLE_PAGES, requested))
        return requested
    if not memory_mib:
        return QEMU_DEFAULT_SAMPLE_PAGES
    per_gib = int(math.ceil(AUTO_SAMPLE_TOTAL * 1024.0 / memory_mib))
    return max(QEMU_DEFAULT_SAMPLE_PAGES, min(MAX_SAMPLE_PAGES, per_gib))


def choose_mode(requested, vm, kvm, dirty_ring_size, has_mode_arg):
    """The dirty-rate mode to use, or a WalmError saying why the requested one cannot be used here."""
    if requested not in MODES:
        raise WalmError("dirty_rate_mode must be one of %s, got %r" % (", ".join(MODES), requested))
    if requested == "auto":
        if kvm and has_mode_arg:
            return "dirty-ring" if dirty_ring_size else "dirty-bitmap"
        return "page-sampling"
    if requested == "dirty-bitmap" and not kvm:
        raise WalmError("VM '%s' runs without KVM (TCG): dirty_rate_mode dirty-bitmap is refused because it "
                        "crashes QEMU 7.2 under TCG (the VM dies). Use dirty_rate_mode: auto or page-sampling."
                        % vm)
    if requested == "dirty-ring" and not (kvm and dirty_ring_size):
        raise WalmError("VM '%s' has no KVM dirty ring (%s): dirty_rate_mode dirty-ring needs QEMU started with "
                        "'-accel kvm,dirty-ring-size=N'. Use dirty_rate_mode: auto."
                        % (vm, "it runs under TCG" if not kvm else "dirty-ring-size is not set"))
    if requested != "page-sampling" and not has_mode_arg:
        raise WalmError("VM '%s': this QEMU only measures with page-sampling (dirty_rate_mode needs QEMU 6.2 or "
                        "later); use dirty_rate_mode: auto or page-sampling" % vm)
    return requested


def window_plan(duration_s, samples, has_ms_unit):
    """Length of one window in ms, and whether it had to be rounded up (QEMU before 8.2 measures whole seconds)."""
    if duration_s is None or duration_s <= 0:
        raise WalmError("duration_s must be positive, got %r" % (duration_s,))
    if samples is None or int(samples) < 1:
        raise WalmError("samples must be at least 1, got %r" % (samples,))
    window_ms = int(round(duration_s * 1000.0 / int(samples)))
    if window_ms < MIN_WINDOW_MS:
        raise WalmError("duration_s %.3g split into %d samples gives %d ms windows; QEMU needs at least %d ms per "
                        "window: lower samples or raise duration_s" % (duration_s, samples, window_ms,
                                                                       MIN_WINDOW_MS))
    if window_ms > MAX_WINDOW_MS:
        raise WalmError("windows of %d ms are longer than QEMU allows (%d ms): raise samples"
                        % (window_ms, MAX_WINDOW_MS))
    if not has_ms_unit and window_ms % 1000:
        return int(math.ceil(window_ms / 1000.0)) * 1000, True
    return window_ms, False


def limits_for(mode, sample_pages, window_ms, extra=()):
    """What the measurements cannot see, in plain sentences."""
    out = []
    if mode == "page-sampling":
        out.append(
            "dirty_rate_mib_s (page-sampling) hashes %d random pages per GiB of guest RAM and counts those whose "
            "content differs after the %d ms window: pages rewritten with the same data are missed although "
            "migration resends every written page, and a page written many times counts once, so a small working "
            "set written fast reads lower than its write rate (at most its size per window)." % (sample_pages,
                                                                                                 window_ms))
        out.append("page-sampling is a statistical estimate: its error grows as fewer sampled pages change (low "
                   "rates, short windows, large VMs); QEMU reports whole MiB/s, so rates below 1 MiB/s read 0, and "
                   "RAM blocks smaller than %d MiB are not sampled." % MIN_SAMPLED_BLOCK_MIB)
    elif mode == "dirty-bitmap":
        out.append("dirty_rate_mib_s (dirty-bitmap) counts pages written during the window, as migration would "
                   "resend them, but a page written many times counts once per window, and turning on dirty "
                   "logging slows the guest's writes while it measures.")
    elif mode == "dirty-ring":
        out.append("dirty_rate_mib_s (dirty-ring) sums what each vCPU wrote through the KVM dirty ring; pages "
                   "written by devices (DMA) are not counted, and a page written many times counts once per window.")
    out.append("wws_mib is the distinct memory changed within one window (dirty rate x window length): a lower "
               "bound of the writable working set that grows with the window until it reaches it.")
    out.append("cpu_percent is host CPU time of the vCPU threads (100 = one host CPU): time a vCPU was ready but "
               "waited for a host CPU is not in it (it is cpu_wait_percent, from schedstat), a halted vCPU counts 0, "
               "and under TCG it includes translation overhead; QEMU's I/O threads and kernel vhost threads are "
               "outside it (qemu_cpu_percent is the whole QEMU process).")
    out.append("net rates come from the VM's tap devices only (guest's point of view: rx = to the guest) and "
               "include Ethernet/IP headers; vhost-user, passthrough/SR-IOV and user-mode networking are not seen.")
    out.append("nonzero_mib is the guest RAM that is not all zero bytes, from a random sample of its pages read "
               "from the host (what one pre-copy pass or the post-copy stream sends in full; zero pages go as a "
               "header each).")
    out.append("rss_mib is the QEMU process's resident memory: guest memory touched so far plus QEMU's own "
               "(device buffers, under TCG the translation cache); guest pages freed inside the guest stay "
               "resident.")
    out.extend(extra)
    return out


# -- one VM -----------------------------------------------------------------------------------------------------

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
            self.t.argv = discovery.read_cmdline(self.pid, self.proc) or []
            self.t.facts = discovery.qemu_facts(self.t.argv)
            if self.t.name is None:
                self.t.name = self.t.facts.get("name") or "qemu-%d" % self.pid
                self.qmp.vm = self.t.name
        self.start_ticks = discovery.process_start_ticks(self.pid, self.proc)
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
                tgid = int(parse_status(_read("%s/%d/status" % (self.proc, tid)))["Tgid"])
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
        taps = discovery.tun_interfaces(self.pid, self.proc)
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
            "t_offset_s": _r(before.t - self.o["t0_monotonic"], 3),
            "window_ms": window_ms,
            "cpu_window_ms": int((after.t - before.t) * 1000),
            "dirty_rate_mib_s": rate,
            "wws_mib": None if rate is None else _r(rate * window_ms / 1000.0),
            "cpu_percent": _r(total),
            "cpu_percent_per_vcpu": [_r(v) for v in per_vcpu],
            "qemu_cpu_percent": _r(process),
            "cpu_wait_percent": _r(wait),
            "net_per_tap": dict((tap, None if r is None else dict((k, _r(v)) for k, v in r.items()))
                                for tap, r in per_tap.items()),
        }
        for k in TAP_METRICS:
            s["net_" + k] = _r(net[k])
        if info.get("vcpu-dirty-rate"):
            s["dirty_rate_per_vcpu_mib_s"] = [v.get("dirty-rate") for v in
                                              sorted(info["vcpu-dirty-rate"], key=lambda v: v.get("id", 0))]
        if self.mode == "page-sampling" and rate is not None and self.memory_mib:
            # How many sampled pages changed, hence the estimate's relative standard error (binomial).
            sampled = self.sample_pages * self.memory_mib / 1024.0
            changed = rate * window_ms / 1000.0 / self.memory_mib * sampled
            s["dirty_rate_rel_error_pct"] = _r(100.0 / math.sqrt(changed), 1) if changed > 0 else None
        return s

    # -- final reading ---------------------------------------------------------------------------------------

    def finish(self):
        self.check_not_migrating()  # a migration that started while measuring: the reading is not trustworthy
        self.status = self.qmp.execute("query-status").get("status")
        balloon_mib, balloon_note = self._balloon()
        if balloon_note:
            self.extra_limits.append(balloon_note)
        try:
            rss_mib = kib_to_mib(parse_status(_read("%s/%d/status" % (self.proc, self.pid))).get("VmRSS"))
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
        return _r(used / float(MIB)), note

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
        per_vcpu = [_mean([s["cpu_percent_per_vcpu"][i] for s in samples]) for i in range(len(self.vcpu_threads))]
        taps = sorted(set(t for s in samples for t in s["net_per_tap"]))
        net_per_tap = {}
        for tap in taps:
            vals = [s["net_per_tap"].get(tap) for s in samples if s["net_per_tap"].get(tap) is not None]
            net_per_tap[tap] = (dict((k, _mean([v[k] for v in vals])) for k in vals[0]) if vals else None)
        missing = [t for t in taps if net_per_tap[t] is None]
        if missing:
            self.extra_limits.append("Tap %s is not in the QEMU's network namespace: its traffic is not counted."
                                     % ", ".join(missing))
        stats = dict((k, mean_stdev([s.get(k) for s in samples])) for k in SCALAR_METRICS)
        rates = [s["dirty_rate_mib_s"] for s in samples]
        wws = [s["wws_mib"] for s in samples if s["wws_mib"] is not None]
        workload = {
            "dirty_rate_mib_s": _mean(rates),
            "dirty_rate_mode": self.mode,
            "dirty_rate_sample_pages_per_gib": self.sample_pages if self.mode == "page-sampling" else None,
            "cpu_percent": _mean([s["cpu_percent"] for s in samples]),
            "cpu_percent_per_vcpu": per_vcpu,
            "qemu_cpu_percent": _mean([s["qemu_cpu_percent"] for s in samples]),
            "cpu_wait_percent": _mean([s["cpu_wait_percent"] for s in samples]),
            "net_per_tap": net_per_tap,
            "wws_mib": max(wws) if wws else None,
            "wws_window_ms": self.window_ms,
            "rss_mib": _r(rss_mib),
            "guest_memory_used_mib": balloon_mib,
            "nonzero_mib": nonzero.get("nonzero_mib"),
            "nonzero_rel_error_pct": nonzero.get("nonzero_rel_error_pct"),
        }
        for k in TAP_METRICS:
            workload["net_" + k] = _mean([s["net_" + k] for s in samples])
        if any("dirty_rate_per_vcpu_mib_s" in s for s in samples):
            workload["dirty_rate_per_vcpu_mib_s"] = [
                _mean([s["dirty_rate_per_vcpu_mib_s"][i] for s in samples if "dirty_rate_per_vcpu_mib_s" in s])
                for i in range(len(self.vcpu_threads))]
        errs = [s.get("dirty_rate_rel_error_pct") for s in samples if s.get("dirty_rate_rel_error_pct") is not None]
        if errs:
            workload["dirty_rate_rel_error_pct"] = _r(max(errs) / math.sqrt(len(errs)), 1)
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
            "probed_at": _r(now, 3),
            "probed_at_iso": _iso(now),
            "cached": False,
            "age_s": 0.0,
            "limits": limits_for(self.mode, self.sample_pages, self.window_ms, self.extra_limits),
        }


def _guard(vp, func):
    """Run one step for one VM; a failure takes that VM out of the probe, never the others."""
    try:
        func()
        return True
    except WalmError as exc:
        vp.fail(exc)
    except Exception as exc:  # noqa: BLE001 - one odd VM (or QEMU answer) must not sink the whole host's probe
        vp.fail(WalmError("VM '%s': probe failed unexpectedly: %s: %s" % (vp.name, type(exc).__name__, exc)))
    return False


def measure(targets, options, proc="/proc"):
    """Probe several VMs at once (their windows run side by side). Returns (readings, failures)."""
    options = dict(options)
    options.setdefault("t0_monotonic", time.monotonic())
    probes = [VMProbe(t, options, proc) for t in targets]
    live = [vp for vp in probes if _guard(vp, vp.open)]
    try:
        for _window in range(int(options["samples"])):
            started = [vp for vp in live if vp.error is None and _guard(vp, vp.start_window)]
            if not started:
                break
            longest = max(vp.window_ms for vp in started) / 1000.0
            time.sleep(max(0.0, longest - 0.03 - (time.monotonic() - min(vp.window_started for vp in started))))
            waiting = list(started)
            while waiting:
                waiting = [vp for vp in waiting if vp.error is None and not _poll(vp)]
                if waiting:
                    time.sleep(0.01)
        readings = []
        for vp in live:
            if vp.error is None:
                out = []
                if _guard(vp, lambda: out.append(vp.finish())) and out[0] is not None:
                    readings.append(out[0])
    finally:
        for vp in probes:
            vp.close()
    failures = []
    for vp in probes:
        if vp.error is not None:
            f = {"name": vp.name, "pid": vp.t.pid, "qmp_socket": vp.t.qmp_socket, "error": vp.error}
            f.update(vp.error_details)
            failures.append(f)
    return sorted(readings, key=lambda r: r["vm"]["name"]), failures


def _poll(vp):
    done = []
    if not _guard(vp, lambda: done.append(vp.poll_window())):
        return True
    return done[0]


# -- persisted readings -----------------------------------------------------------------------------------------

def reading_path(state_dir, name):
    # Names of VMs not started by WALM come from their command line: keep them to one safe file name.
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", name).lstrip(".") or "_"
    return os.path.join(state_dir, PROBE_SUBDIR, safe + ".json")


def load_reading(state_dir, name):
    try:
        with open(reading_path(state_dir, name)) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return None


def save_reading(state_dir, reading):
    """Store a reading as the VM's latest and append it to a short history (atomic replace, mode 0600)."""
    vmhost.check_state_dir(state_dir)
    directory = os.path.join(state_dir, PROBE_SUBDIR)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    name = reading["vm"]["name"]
    old = load_reading(state_dir, name) or {}
    history = [h for h in old.get("history", []) if h.get("pid") == reading["vm"]["pid"]]
    history.append({"probed_at": reading["probed_at"], "pid": reading["vm"]["pid"],
                    "workload": dict((k, v) for k, v in reading["workload"].items() if k != "net_per_tap")})
    doc = {"latest": reading, "history": history[-HISTORY_LEN:]}
    path = reading_path(state_dir, name)
    vmhost.write_file_atomic(path, json.dumps(doc, sort_keys=True))
    return path


def fresh_reading(state_dir, target, max_age_s, proc="/proc", now=None):
    """The stored reading of this very QEMU process if it is at most max_age_s old, else None."""
    if not max_age_s or max_age_s <= 0 or target.pid is None or target.name is None:
        return None
    doc = load_reading(state_dir, target.name)
    latest = (doc or {}).get("latest")
    if not latest:
        return None
    vm = latest.get("vm") or {}
    if vm.get("pid") != target.pid or vm.get("process_start_ticks") != discovery.process_start_ticks(target.pid,
                                                                                                     proc):
        return None  # another QEMU process (restarted VM, reused pid)
    age = (now if now is not None else time.time()) - float(latest.get("probed_at") or 0)
    if age < 0 or age > max_age_s:
        return None
    out = dict(latest)
    out["cached"] = True
    out["age_s"] = _r(age)
    return out


# -- the module's entry point -----------------------------------------------------------------------------------

def run(options, check_mode=False, proc="/proc"):
    """walm_probe: resolve the targets, reuse fresh stored readings, measure the others, persist."""
    t0 = time.time()
    o = dict(options)
    o.setdefault("qmp_timeout_s", 5.0)
    o["t0_monotonic"] = time.monotonic()
    if o.get("dirty_rate_mode", "auto") not in MODES:
        raise WalmError("dirty_rate_mode must be one of %s" % ", ".join(MODES))
    window_plan(o["duration_s"], o["samples"], True)
    if o.get("sample_pages") is not None:
        choose_sample_pages(None, o["sample_pages"])
    if not 0 <= int(o.setdefault("nonzero_samples", memscan.DEFAULT_SAMPLES)) <= 1048576:
        raise WalmError("nonzero_samples must be between 0 (off) and 1048576, got %s" % o["nonzero_samples"])
    state_dir = o["state_dir"]
    if o.get("name") is not None:  # an empty name is refused (find_by_name), not read as "every VM"
        targets = [discovery.find_by_name(o["name"], state_dir, o.get("all_netns", False), proc)]
    elif o.get("qmp_socket"):
        targets = [discovery.find_by_socket(o["qmp_socket"], state_dir, proc)]
    else:
        targets = discovery.discover(state_dir, o.get("all_netns", False), proc)
    cached, to_measure = [], []
    for t in targets:
        hit = fresh_reading(state_dir, t, o.get("max_age_s") or 0, proc)
        (cached if hit else to_measure).append(hit or t)
    readings, failures = measure(to_measure, o, proc) if to_measure else ([], [])
    persisted = []
    if o.get("persist") and not check_mode:
        for r in readings:
            persisted.append(save_reading(state_dir, r))
    vms = sorted(cached + readings, key=lambda r: r["vm"]["name"])
    return {"changed": False, "vms": vms, "failed_vms": failures, "persisted": persisted,
            "probe_wall_time_s": _r(time.time() - t0, 3)}
