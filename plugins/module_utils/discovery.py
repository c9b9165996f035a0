# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Finding the QEMU VMs on this host, whoever started them.

Every running ``qemu-system-*`` (or ``qemu-kvm``) process is a VM. Its QMP sockets come from its command line
(``-qmp unix:PATH``, ``-qmp-pretty``, ``-chardev socket,id=X,path=PATH`` used by ``-mon chardev=X,mode=control``,
or ``-chardev socket,fd=N`` as libvirt passes it, resolved through ``/proc/PID/net/unix``); its tap devices from the
tun file descriptors it holds (``/proc/PID/fdinfo``: ``iff:``), falling back to ``ifname=`` on the command line.
WALM's own VMs are recognised from their records in the state directory and keep their WALM names.

Everything here reads /proc and the command line only: no QMP, nothing is changed.
"""

from __future__ import absolute_import, division, print_function

import os

from . import qemu_process
from .errors import WalmError
from .procfs import netns_id, parse_net_unix, read_cmdline, socket_inode, tun_interfaces
from .qemu_cmdline import is_qemu_argv, qemu_facts
from .vmdef import HostPaths, name_problem


def nic_users(proc="/proc"):
    """Who uses which tap and MAC in this network namespace (a host's, or a lab host's): ({tap: [who]},
    {mac: [who]}).

    A tap without multi-queue is opened by one process only. Taps are found by the /dev/net/tun descriptors of
    every process, MACs (lower case) on the command lines of the QEMUs.
    """
    mine = netns_id("self", proc)
    taps, macs = {}, {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if _elsewhere(pid, mine, proc):
            continue
        argv = read_cmdline(pid, proc) or []
        facts = qemu_facts(argv) if is_qemu_argv(argv) else {"name": None, "macs": []}
        who = ("VM '%s' (QEMU pid %d)" % (facts["name"], pid) if facts["name"]
               else "pid %d (%s)" % (pid, os.path.basename(argv[0]) if argv else "gone"))
        for tap in tun_interfaces(pid, proc):
            taps.setdefault(tap, []).append(who)
        for mac in facts["macs"]:
            macs.setdefault(mac, []).append(who)
    return taps, macs


def nic_conflicts(nics, proc="/proc", users=None):
    """What already uses the taps or MACs of `nics` in this network namespace, as sentences; empty when nothing
    does. A tap held open by another process would make QEMU fail to start; two NICs with one MAC on a network
    confuse every switch and bridge on it. users: nic_users()'s answer, when the caller has it already."""
    taps, macs = users if users is not None else nic_users(proc)
    out = ["tap %s is held open by %s" % (tap, ", ".join(taps[tap]))
           for tap in sorted(set(n["tap"] for n in nics)) if taps.get(tap)]
    out += ["MAC %s is used by %s" % (mac, ", ".join(macs[mac]))
            for mac in sorted(set(n["mac"].lower() for n in nics)) if macs.get(mac)]
    return out


def _elsewhere(pid, mine, proc="/proc"):
    """True if the process is known to live in another network namespace than `mine` (this one's)."""
    theirs = netns_id(pid, proc)
    return mine is not None and theirs is not None and theirs != mine


def resolve_qmp_paths(pid, facts, proc="/proc"):
    """The QMP unix socket paths of a process, usable from here; and the monitors that cannot be used."""
    paths, unusable = [], []
    unix = None
    for ep in facts["qmp"]:
        if "unsupported" in ep:
            unusable.append("QMP on %s is not a unix socket (only unix sockets are supported)" % ep["unsupported"])
            continue
        if "fd" in ep:
            if unix is None:
                try:
                    with open("%s/%d/net/unix" % (proc, pid)) as f:
                        unix = parse_net_unix(f.read())
                except (IOError, OSError):
                    unix = {}
            path = unix.get(socket_inode(pid, ep["fd"], proc) or -1)
            if not path or path.startswith("@"):
                unusable.append("QMP on inherited fd %d has no socket path" % ep["fd"])
                continue
        else:
            path = ep["path"]
        if not os.path.isabs(path):
            try:
                path = os.path.join(os.readlink("%s/%d/cwd" % (proc, pid)), path)
            except (IOError, OSError):
                unusable.append("QMP socket %s is relative and the process's directory is unreadable" % path)
                continue
        if not os.path.exists(path):
            # The QEMU may live in another mount namespace (private /run): reach the socket through its root.
            alt = "%s/%d/root%s" % (proc, pid, path)
            if os.path.exists(alt):
                path = alt
        if path not in paths:
            paths.append(path)
    return paths, unusable


def qemu_processes(proc="/proc"):
    """Every running QEMU system emulator: list of (pid, argv)."""
    out = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        argv = read_cmdline(int(entry), proc)
        if argv and is_qemu_argv(argv):
            out.append((int(entry), argv))
    return sorted(out)


class Target(object):
    """One VM to probe: where its QMP socket is and what /proc says about it."""

    def __init__(self, name, pid, qmp_socket, argv=None, facts=None, managed=False, unusable=None):
        self.name = name
        self.pid = pid
        self.qmp_socket = qmp_socket
        self.argv = argv or []
        self.facts = facts or qemu_facts(self.argv)
        self.managed = managed
        self.unusable = unusable or []

    def as_dict(self):
        return {"name": self.name, "pid": self.pid, "qmp_socket": self.qmp_socket, "managed": self.managed}


def _target_for_process(pid, argv, state_dir, proc="/proc"):
    facts = qemu_facts(argv)
    name = facts["name"]
    managed = False
    sockets = []
    # A QEMU not started by WALM may carry a name that cannot be a file name in the state dir: it has no files there.
    if name and not name_problem(name):
        paths = HostPaths(state_dir, name)
        if qemu_process.read_pid(paths) == pid and os.path.exists(paths.record):
            managed = True
            sockets.append(paths.qmp_socket)
    found, unusable = resolve_qmp_paths(pid, facts, proc)
    sockets += [s for s in found if s not in sockets]
    return Target(name or "qemu-%d" % pid, pid, sockets[0] if sockets else None, argv, facts, managed,
                  unusable)


def discover(state_dir, all_netns=False, proc="/proc"):
    """Every QEMU VM running on this host (in this network namespace unless all_netns).

    The lab's two "hosts" are network namespaces of one machine; a real host has its VMs in its own namespace.
    """
    mine = netns_id("self", proc)
    targets = []
    for pid, argv in qemu_processes(proc):
        if not all_netns and _elsewhere(pid, mine, proc):
            continue
        targets.append(_target_for_process(pid, argv, state_dir, proc))
    names = {}
    for t in targets:
        names.setdefault(t.name, []).append(t)
    for name, same in names.items():
        if len(same) > 1:  # two QEMUs named alike (e.g. a migration's source and destination copy): tell apart
            for t in same:
                t.name = "%s@%d" % (name, t.pid)
    return sorted(targets, key=lambda t: t.name)


def find_by_name(name, state_dir, all_netns=False, proc="/proc"):
    """The one VM called `name`: WALM's record first, then any QEMU started with ``-name guest=NAME``."""
    paths = HostPaths(state_dir, name)
    pid = qemu_process.running_pid(paths)
    if pid:
        argv = read_cmdline(pid, proc) or []
        return Target(name, pid, paths.qmp_socket, argv, managed=True)
    found = [t for t in discover(state_dir, all_netns=all_netns, proc=proc) if t.facts["name"] == name]
    if len(found) > 1:
        raise WalmError("VM '%s': %d QEMU processes carry this name (pids %s); select one with qmp_socket"
                        % (name, len(found), ", ".join(str(t.pid) for t in found)))
    if not found:
        running = [t.name for t in discover(state_dir, all_netns=all_netns, proc=proc)]
        raise WalmError("VM '%s' is not running on this host: no running QEMU for it in %s and no qemu-system "
                        "process started with -name %s (running here: %s)"
                        % (name, state_dir, name, ", ".join(running) or "none"))
    t = found[0]
    t.name = name
    return t


def find_by_socket(qmp_socket, state_dir, proc="/proc"):
    """The VM behind a QMP socket path. Its pid is confirmed later from QMP (the vCPU threads' process)."""
    real = os.path.realpath(qmp_socket)
    for t in discover(state_dir, all_netns=True, proc=proc):
        for ep in [t.qmp_socket] + resolve_qmp_paths(t.pid, t.facts, proc)[0]:
            if ep and os.path.realpath(ep) == real:
                t.qmp_socket = qmp_socket
                return t
    # Not found on any command line (e.g. a socket added at run time): QMP will tell us the pid.
    return Target(None, None, qmp_socket)
