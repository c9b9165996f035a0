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

import time

from . import discovery, memscan
from .errors import WalmError
from .probe_settings import MODES, choose_sample_pages, window_plan
from .probe_stats import rounded
from .reading_store import fresh_reading, save_reading
from .vm_probe import VMProbe


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
            "probe_wall_time_s": rounded(time.time() - t0, 3)}
