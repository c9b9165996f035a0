# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Where the VMs of an evacuation go and when: their order, their waves, and a destination with room for each."""

from __future__ import absolute_import, division, print_function


def mean_wait_ms(tmts):
    """Mean time until each VM is off the host when they go one after another in this order."""
    done, total = 0, 0
    for t in tmts:
        done += t
        total += done
    return total / float(len(tmts)) if tmts else 0.0


def plan_order(cands, policy, listing):
    if not policy.by_prediction:
        return sorted(cands, key=lambda c: listing.index(c["name"]))

    def key(c):
        known = c["predicted_total_time_ms"] is not None
        return (0 if known else 1, c["predicted_total_time_ms"] if known else 0, c["memory_mib"],
                listing.index(c["name"]))
    return sorted(cands, key=key)


def group_waves(order, concurrency):
    """Waves of up to `concurrency` VMs in plan order, never two heavy (write-heavy or post-copy) ones together."""
    waves = []
    for c in order:
        wave = waves[-1] if waves else None
        if wave is None or len(wave) >= concurrency or (c["heavy"] and any(o["heavy"] for o in wave)):
            wave = []
            waves.append(wave)
        wave.append(c)
        c["wave"] = len(waves)
    return waves


def _no_room(c, dests, source):
    """Why VM c has no destination, in a sentence that names its memory, each destination's and the fix."""
    if any(d["free_mib"] >= c["memory_mib"] for d in dests):
        why = "no destination has that much left after the VMs placed before it in the plan"
    else:
        why = "no destination has that much free memory"
    hosts = []
    for d in dests:
        text = "%s has %d MiB free (%s)" % (d["name"], d["free_mib"], d["capacity_source"])
        if d["vms"]:
            text += ", %d MiB left after %s" % (d["free_mib_left"], ", ".join(d["vms"]))
        hosts.append(text)
    return ("it needs %d MiB and %s: %s. It stays on %s; add a destination to walm_destinations, free memory on "
            "one, or set walm_capacity_mib on a destination whose free memory is under-reported"
            % (c["memory_mib"], why, "; ".join(hosts), source))


def place(order, dests, source):
    """Each VM in plan order to a destination that fits it: (placed in order, unplaced with their reasons)."""
    placed, unplaced = [], []
    for c in order:
        fits = [d for d in dests if d["free_mib_left"] >= c["memory_mib"]]
        if not fits:
            # Like a failed migration, one VM without room does not hold the others back.
            unplaced.append({"name": c["name"], "memory_mib": c["memory_mib"], "class": c["class"],
                             "reason": _no_room(c, dests, source),
                             "destinations": [dict((k, d[k]) for k in ("name", "free_mib", "free_mib_left"))
                                              for d in dests]})
            continue
        placed.append(c)
        # A preferred destination first (one a rolling maintenance has already maintained: the VM will not have to
        # move again), then the most free memory left: spreads the VMs by capacity; ties go to the first listed.
        best = max(fits, key=lambda d: (d["preferred"], d["free_mib_left"], -dests.index(d)))
        before = best["free_mib_left"]
        best["free_mib_left"] -= c["memory_mib"]
        best["vms"].append(c["name"])
        c["destination"] = best["name"]
        if best["preferred"] and len(dests) > 1:
            c["reasons"].append("Destination %s: preferred (already maintained), %d MiB free before this VM, %d MiB "
                                "after." % (best["name"], before, best["free_mib_left"]))
        elif len(dests) > 1:
            c["reasons"].append("Destination %s: the most free memory left (%d MiB before this VM, %d MiB after)."
                                % (best["name"], before, best["free_mib_left"]))
        else:
            c["reasons"].append("Destination %s (%d MiB free before this VM, %d MiB after)."
                                % (best["name"], before, best["free_mib_left"]))
    return placed, unplaced
