# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""How the probe measures a VM: the dirty-rate mode, the pages sampled, the windows, and what the readings
cannot see."""

from __future__ import absolute_import, division, print_function

import math

from .errors import WalmError

MODES = ("auto", "page-sampling", "dirty-bitmap", "dirty-ring")
# QEMU's limits (migration/dirtyrate.h).
MIN_SAMPLE_PAGES, MAX_SAMPLE_PAGES = 128, 16384
MIN_WINDOW_MS, MAX_WINDOW_MS = 50, 60000
QEMU_DEFAULT_SAMPLE_PAGES = 512
# auto sample_pages: sample about this many pages in all (see choose_sample_pages).
AUTO_SAMPLE_TOTAL = 8192
# page-sampling skips RAM blocks smaller than this (MIN_RAMBLOCK_SIZE in QEMU).
MIN_SAMPLED_BLOCK_MIB = 128


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
