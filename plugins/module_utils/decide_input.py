# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""walm_decide's input: one VM's probe result, the thresholds and the options, checked (WalmError naming the
fix), and the model's inputs made from the measurements, with where each came from."""

from __future__ import absolute_import, division, print_function

from .decide_defaults import OBJECTIVES, OPTIONS, THRESHOLDS
from .decide_model import Model, ModelInput, as_number
from .errors import WalmError


def _sub(probe, key):
    value = probe.get(key)
    if not isinstance(value, dict):
        raise WalmError("probe.%s is missing or not a dict: walm_decide needs the probe result of one VM from "
                        "walm.qemu.walm_probe (at least vm.memory_mib and workload.dirty_rate_mib_s)" % key)
    return value


def _required(section, name, key, **kw):
    if section.get(key) is None:
        raise WalmError("probe.%s.%s is missing or null: walm_decide needs it to predict the migration; pass the "
                        "probe result of one VM from walm.qemu.walm_probe" % (name, key))
    return as_number(section[key], "probe.%s.%s" % (name, key), **kw)


def _optional(section, name, key, default=None):
    return as_number(section.get(key, default), "probe.%s.%s" % (name, key), minimum=0, allow_none=True)


def read_probe(probe):
    """The measurements of one VM's probe result, checked: required keys present, numbers non-negative."""
    if not isinstance(probe, dict):
        raise WalmError("probe must be the probe result of one VM (a dict with vm and workload), not %s"
                        % type(probe).__name__)
    if "vm" not in probe and isinstance(probe.get("vms"), list):
        raise WalmError("probe holds %d VMs (probe.vms): walm_decide decides for one VM; pass one entry, e.g. "
                        "loop over probe.vms" % len(probe["vms"]))
    vm = _sub(probe, "vm")
    workload = _sub(probe, "workload")
    cpu = workload.get("cpu_percent")
    if isinstance(cpu, dict):  # a per-vCPU breakdown with its total
        cpu = cpu.get("total", cpu.get("total_percent"))
    vcpus = as_number(vm.get("vcpus", 1) or 1, "probe.vm.vcpus", positive=True)
    return {
        "name": str(vm.get("name") or "(unnamed)"),
        "memory_mib": _required(vm, "vm", "memory_mib", positive=True),
        "vcpus": int(vcpus),
        "dirty_rate_mib_s": _required(workload, "workload", "dirty_rate_mib_s", minimum=0),
        "cpu_percent": as_number(cpu if cpu is not None else 0, "probe.workload.cpu_percent", minimum=0),
        "net_rx_mib_s": _optional(workload, "workload", "net_rx_mib_s", 0) or 0.0,
        "net_tx_mib_s": _optional(workload, "workload", "net_tx_mib_s", 0) or 0.0,
        "wws_mib": _optional(workload, "workload", "wws_mib"),
        "rss_mib": _optional(workload, "workload", "rss_mib"),
        "nonzero_mib": _optional(workload, "workload", "nonzero_mib"),
        "working_set_mib": _optional(workload, "workload", "working_set_mib"),
        "read_rate_mib_s": _optional(workload, "workload", "read_rate_mib_s"),
    }


def read_thresholds(overrides):
    thresholds = dict(THRESHOLDS)
    if overrides is None:
        return thresholds
    if not isinstance(overrides, dict):
        raise WalmError("thresholds must be a dict (known keys: %s)" % ", ".join(sorted(THRESHOLDS)))
    for key, value in sorted(overrides.items()):
        if key not in THRESHOLDS:
            raise WalmError("unknown threshold %r; known thresholds: %s" % (key, ", ".join(sorted(THRESHOLDS))))
        thresholds[key] = as_number(value, "thresholds.%s" % key, minimum=0,
                                    positive=key in ("cpu_percent", "dirty_rate_mib_s", "network_mib_s",
                                                     "balanced_budget_factor"))
    return thresholds


def read_options(params):
    """walm_decide's scalar options with their defaults (decide_defaults.OPTIONS), checked."""
    opts = dict(OPTIONS)
    opts.update(dict((k, v) for k, v in params.items() if k in OPTIONS and v is not None))
    if params.get("link_bandwidth_mib_s") is None:
        raise WalmError("link_bandwidth_mib_s is required: the migration link's bandwidth in MiB/s "
                        "(1 Gbit/s is about 119 MiB/s)")
    opts["link_bandwidth_mib_s"] = as_number(params["link_bandwidth_mib_s"], "link_bandwidth_mib_s", positive=True)
    opts["link_latency_ms"] = as_number(opts["link_latency_ms"], "link_latency_ms", minimum=0)
    opts["downtime_limit_ms"] = as_number(opts["downtime_limit_ms"], "downtime_limit_ms", positive=True)
    opts["safety_margin_pct"] = as_number(opts["safety_margin_pct"], "safety_margin_pct", minimum=0)
    opts["max_passes"] = int(as_number(opts["max_passes"], "max_passes", minimum=1))
    if opts["time_budget_s"] is not None:
        opts["time_budget_s"] = as_number(opts["time_budget_s"], "time_budget_s", positive=True)
    if opts["objective"] not in OBJECTIVES:
        raise WalmError("unknown objective %r; choose one of %s" % (opts["objective"], ", ".join(OBJECTIVES)))
    if not isinstance(opts["allow_postcopy"], bool):
        raise WalmError("allow_postcopy must be true or false")
    return opts


def model_input(measures, params, opts):
    """Turn the measurements into the model's inputs; say where each came from."""
    memory = measures["memory_mib"]
    wws, rss = measures["wws_mib"], measures["rss_mib"]
    if measures["nonzero_mib"]:  # 0 is a failed measurement: a running guest's kernel alone is non-zero
        nonzero, nonzero_source = min(memory, max(measures["nonzero_mib"], wws or 0.0)), "nonzero_mib"
    elif rss:  # a resident size of 0 is a failed measurement, not an empty guest
        nonzero, nonzero_source = (min(memory, max(rss, wws or 0.0)),
                                   "rss_mib: no nonzero_mib, the QEMU process's resident memory counted")
    else:
        nonzero, nonzero_source = memory, "memory_mib: no usable nonzero_mib or rss_mib, every page counted"
    # walm_probe's wws_mib is what one window wrote (dirty rate x window), a lower bound of the pages a pass of
    # several seconds finds dirty: it cannot bound them. Without a real working-set estimate the guest may write
    # anywhere in its non-zero memory.
    if measures["working_set_mib"] is not None:
        working_set, ws_source = min(measures["working_set_mib"], nonzero), "working_set_mib"
    else:
        working_set, ws_source = nonzero, ("%s: no working_set_mib (wws_mib is only a lower bound)"
                                           % nonzero_source.split(":", maxsplit=1)[0])
    busy_share = min(float(measures["vcpus"]), measures["cpu_percent"] / 100.0)
    if measures["read_rate_mib_s"] is not None:
        reads, access_source = measures["read_rate_mib_s"], "dirty rate + read_rate_mib_s"
    else:
        reads = busy_share * params["assumed_read_rate_mib_s_per_busy_vcpu"]
        access_source = "dirty rate + assumed_read_rate_mib_s_per_busy_vcpu: no read_rate_mib_s"
    # The probe sees writes only: a guest that reads may read anything it has touched.
    if reads > 0:
        access_set, access_set_source = nonzero, "nonzero_mib: the guest reads, and may read all it touched"
    else:
        access_set, access_set_source = working_set, "working_set_mib: the guest does not read"
    bandwidth = opts["link_bandwidth_mib_s"]
    traffic = params["guest_traffic_share"] * (measures["net_rx_mib_s"] + measures["net_tx_mib_s"])
    floor = bandwidth * params["min_usable_link_pct"] / 100.0
    usable = max(bandwidth - traffic, floor)
    inp = ModelInput(memory_mib=memory, nonzero_mib=nonzero, working_set_mib=working_set,
                     dirty_rate_mib_s=measures["dirty_rate_mib_s"], access_set_mib=access_set,
                     access_rate_mib_s=measures["dirty_rate_mib_s"] + reads,
                     busy_vcpus=max(1.0, busy_share), bandwidth_mib_s=usable, latency_ms=opts["link_latency_ms"],
                     downtime_limit_ms=opts["downtime_limit_ms"], max_passes=opts["max_passes"])
    link = {"bandwidth_mib_s": bandwidth, "usable_bandwidth_mib_s": round(usable, 2),
            "guest_traffic_mib_s": round(traffic, 2), "latency_ms": opts["link_latency_ms"],
            "floored": bandwidth - traffic < floor}
    sources = {
        "memory_mib": memory, "nonzero_mib": round(inp.nonzero_mib, 1), "nonzero_source": nonzero_source,
        "working_set_mib": round(inp.working_set_mib, 1), "working_set_source": ws_source,
        "dirty_rate_mib_s": measures["dirty_rate_mib_s"], "access_rate_mib_s": round(inp.access_rate_mib_s, 2),
        "access_rate_source": access_source, "access_set_mib": round(inp.access_set_mib, 1),
        "access_set_source": access_set_source, "busy_vcpus": round(inp.busy_vcpus, 2),
        "switchover_threshold_mib": round(Model(inp, params).switchover_threshold_mib(), 1),
    }
    return inp, link, sources
