# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Reading /proc: the parsers of its files and the small readers built on them.

Each parser takes the text of one file, so that it can be tested on a captured copy; each reader takes `proc`
(default ``/proc``), so that it can be pointed at a fake tree.
"""

from __future__ import absolute_import, division, print_function

import os
import re


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


def read_text(path):
    with open(path) as f:
        return f.read()


def read_cmdline(pid, proc="/proc"):
    """argv of a process, or None if it is gone (or a kernel thread)."""
    try:
        with open("%s/%d/cmdline" % (proc, pid), "rb") as f:
            raw = f.read()
    except (IOError, OSError):
        return None
    if not raw:
        return None
    return [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")]


def parse_net_unix(text):
    """``/proc/PID/net/unix`` as {inode: path} for sockets that have a path."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split(None, 7)
        if len(parts) == 8:
            try:
                out[int(parts[6])] = parts[7]
            except ValueError:
                continue
    return out


def socket_inode(pid, fd, proc="/proc"):
    try:
        target = os.readlink("%s/%d/fd/%d" % (proc, pid, fd))
    except (IOError, OSError):
        return None
    m = re.match(r"^socket:\[(\d+)\]$", target)
    return int(m.group(1)) if m else None


def tun_interfaces(pid, proc="/proc"):
    """Tap/tun interface names behind the /dev/net/tun descriptors a process holds (``iff:`` in fdinfo)."""
    names = []
    fd_dir = "%s/%d/fd" % (proc, pid)
    try:
        fds = os.listdir(fd_dir)
    except (IOError, OSError):
        return names
    for fd in fds:
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != "/dev/net/tun":
                continue
            with open("%s/%d/fdinfo/%s" % (proc, pid, fd)) as f:
                for line in f:
                    if line.startswith("iff:"):
                        name = line.split(":", 1)[1].strip()
                        if name and name not in names:
                            names.append(name)
        except (IOError, OSError):
            continue
    return sorted(names)


def netns_id(pid="self", proc="/proc"):
    try:
        return os.readlink("%s/%s/ns/net" % (proc, pid))
    except (IOError, OSError):
        return None


def process_start_ticks(pid, proc="/proc"):
    """Start time of a process (field 22 of /proc/PID/stat): with the pid, it identifies one process."""
    try:
        with open("%s/%d/stat" % (proc, pid)) as f:
            text = f.read()
    except (IOError, OSError):
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def parse_maps(text):
    """(start, size) of the read-write private or shared mappings in /proc/PID/maps text."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith("rw"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        out.append((start, end - start))
    return out


def host_memory(path="/proc/meminfo"):
    """This host's memory in MiB: total_mib and available_mib (MemAvailable: what new VMs may use without
    swapping); None for a figure the kernel does not report."""
    fields = {}
    with open(path) as f:
        for line in f:
            key, _sep, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0]) // 1024  # kB
    return {"total_mib": fields.get("MemTotal"), "available_mib": fields.get("MemAvailable")}
