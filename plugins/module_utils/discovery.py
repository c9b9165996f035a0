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
import re

from . import vmhost
from .errors import WalmError
from .vmdef import HostPaths, name_problem

# Options whose argument we read, plus common options that take an argument (so that the argument is never
# mistaken for an option). Options not listed are taken to have no argument.
_OPTS_WITH_ARG = frozenset("""
-name -qmp -qmp-pretty -chardev -mon -monitor -netdev -nic -net -m -smp -machine -M -accel -cpu -pidfile
-append -kernel -initrd -dtb -drive -blockdev -device -object -serial -parallel -debugcon -boot -display -vga
-rtc -global -incoming -k -L -bios -uuid -D -d -trace -runas -sandbox -msg -overcommit -fsdev -virtfs -audiodev
-audio -smbios -numa -add-fd -mem-path -loadvm -action -icount -gdb -plugin -semihosting-config -fw_cfg -set
-readconfig -writeconfig -option-rom -usbdevice -tpmdev -compat -iscsi -spice -vnc -chroot -watchdog-action
-acpitable -hda -hdb -hdc -hdd -cdrom -fda -fdb -mtdblock -sd -pflash -run-with
-iothread -xen-domid
""".split())

QEMU_NAME_RE = re.compile(r"^(qemu-system-[A-Za-z0-9_]+|qemu-kvm)$")


# -- parsing QEMU command lines ---------------------------------------------------------------------------------

def split_qemu_opts(text, implied=None):
    """Parse a QEMU option string (``a=1,b=x,,y,flag``) into an ordered dict.

    ``,,`` is a literal comma. A first item without ``=`` is the value of the implied key (e.g. ``-name vm1`` is
    ``guest=vm1``, ``-chardev socket,...`` is ``backend=socket``); a later bare item is a flag (value ``on``).
    """
    items, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == ",":
            if text[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    items.append("".join(cur))
    out = {}
    for n, item in enumerate(items):
        if n == 0 and implied and "=" not in item:
            out[implied] = item
        elif "=" in item:
            key, value = item.split("=", 1)
            out[key] = value
        elif item:
            out[item] = "on"
    return out


def parse_argv(argv):
    """QEMU argv as a list of (option, argument-or-None), options normalised to a single dash."""
    out = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and len(arg) > 2:
            arg = arg[1:]
        if arg.startswith("-") and arg in _OPTS_WITH_ARG and i + 1 < len(argv):
            out.append((arg, argv[i + 1]))
            i += 2
            continue
        if arg.startswith("-"):
            out.append((arg, None))
        i += 1
    return out


def is_qemu_argv(argv):
    """A QEMU system emulator running a VM (not `--version`, `-machine help` and the like)."""
    if not argv or not QEMU_NAME_RE.match(os.path.basename(argv[0])):
        return False
    for opt, val in parse_argv(argv):
        if opt in ("-version", "-h", "-help") or val in ("help", "?"):
            return False
        if val is not None and (val.startswith("help,") or val.endswith(",help")):
            return False
    return True


def _legacy_chardev(spec):
    """A monitor given in the legacy chardev syntax (``-qmp unix:PATH,server=on``) as a dict."""
    if spec.startswith("unix:"):
        opts = split_qemu_opts(spec[len("unix:"):], implied="path")
        opts["backend"] = "socket"
        return opts
    if spec.startswith("chardev:"):
        return {"chardev": spec[len("chardev:"):]}
    if spec.startswith("tcp:") or spec.startswith("telnet:"):
        return {"backend": "tcp", "spec": spec}
    return {"backend": "other", "spec": spec}


def qemu_facts(argv):
    """What a QEMU command line says about a VM: name, monitors, taps, memory, vCPUs, machine, accelerator.

    ``qmp`` is a list of monitor endpoints, each ``{"path": ...}`` (a unix socket path as written, possibly
    relative), ``{"fd": N}`` (a socket QEMU inherited), or ``{"unsupported": spec}`` (TCP, stdio, ...).
    """
    opts = parse_argv(argv)
    facts = {"name": None, "qmp": [], "taps": [], "macs": [], "memory_mib": None, "vcpus": None, "machine": None,
             "accel": None, "dirty_ring_size": 0}
    chardevs = {}
    control_mons = []
    for opt, val in opts:
        if val is None:
            if opt == "-enable-kvm":
                facts["accel"] = "kvm"
            continue
        if opt == "-name":
            facts["name"] = split_qemu_opts(val, implied="guest").get("guest") or None
        elif opt in ("-qmp", "-qmp-pretty"):
            mon = _legacy_chardev(val)
            if "chardev" in mon:
                control_mons.append(mon["chardev"])
            else:
                facts["qmp"].append(_endpoint(mon))
        elif opt == "-chardev":
            c = split_qemu_opts(val, implied="backend")
            if c.get("id"):
                chardevs[c["id"]] = c
        elif opt == "-mon":
            m = split_qemu_opts(val, implied="chardev")
            if m.get("mode") == "control" and m.get("chardev"):
                control_mons.append(m["chardev"])
        elif opt in ("-netdev", "-nic", "-net"):
            n = split_qemu_opts(val, implied="type")
            if n.get("type") in ("tap", "bridge") and n.get("ifname") and n["ifname"] not in facts["taps"]:
                facts["taps"].append(n["ifname"])
            _add_mac(facts["macs"], n.get("mac") or n.get("macaddr"))  # -nic ...,mac= / -net nic,macaddr=
        elif opt == "-device":
            _add_mac(facts["macs"], split_qemu_opts(val, implied="driver").get("mac"))
        elif opt == "-m":
            facts["memory_mib"] = _size_mib(split_qemu_opts(val, implied="size").get("size"))
        elif opt == "-smp":
            s = split_qemu_opts(val, implied="cpus")
            try:
                facts["vcpus"] = int(s.get("cpus") or 1)
            except ValueError:
                pass
        elif opt in ("-machine", "-M"):
            mach = split_qemu_opts(val, implied="type")
            if mach.get("type"):
                facts["machine"] = mach["type"]
            if mach.get("accel"):
                facts["accel"] = mach["accel"].split(":")[0]
        elif opt == "-accel":
            a = split_qemu_opts(val, implied="accel")
            if facts["accel"] is None or facts["accel"] == "kvm":
                facts["accel"] = a.get("accel")
            try:
                facts["dirty_ring_size"] = int(a.get("dirty-ring-size") or 0)
            except ValueError:
                pass
    for cid in control_mons:
        c = chardevs.get(cid)
        if c is None:
            facts["qmp"].append({"unsupported": "chardev:%s (not defined)" % cid})
        else:
            facts["qmp"].append(_endpoint(c))
    return facts


def _add_mac(macs, mac):
    if mac and mac.lower() not in macs:
        macs.append(mac.lower())


def _endpoint(chardev):
    backend = chardev.get("backend")
    if backend == "socket" and chardev.get("path"):
        return {"path": chardev["path"]}
    if backend == "socket" and chardev.get("fd"):
        try:
            return {"fd": int(chardev["fd"])}
        except ValueError:
            pass
    return {"unsupported": chardev.get("spec") or ",".join("%s=%s" % kv for kv in sorted(chardev.items()))}


def _size_mib(text):
    """QEMU -m size (default unit MiB; suffixes K, M, G, T) in MiB."""
    if not text:
        return None
    m = re.match(r"^(\d+(?:\.\d+)?)([kKmMgGtT]?)[bB]?$", text.strip())
    if not m:
        return None
    value = float(m.group(1))
    factor = {"": 1, "k": 1.0 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[m.group(2).lower()]
    return int(value * factor)


# -- reading /proc ----------------------------------------------------------------------------------------------

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
        if vmhost.read_pid(paths) == pid and os.path.exists(paths.record):
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
    pid = vmhost.running_pid(paths)
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
