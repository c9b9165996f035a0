# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""QEMU command lines: the one WALM builds for a VM, parsing any QEMU's, and telling whose it is.

Built from a normalized definition (vmdef.py), the line is the same on both hosts but for host paths. Parsed,
a line tells what discovery needs (name, monitors, taps, MACs, memory, vCPUs, machine, accelerator); matched,
it tells whether a process is a given VM's QEMU or holds a given image.
"""

from __future__ import absolute_import, division, print_function

import os
import re

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


# -- building WALM's command line -------------------------------------------------------------------------------

def qemu_argv(d, paths, qemu_binary="qemu-system-x86_64", incoming=False):
    """The QEMU command line for a normalized definition on one host.

    Devices are listed in a fixed order with fixed ids so that source and destination build the same machine.
    """
    argv = [
        qemu_binary,
        "-name", "guest=%s,debug-threads=on" % d["name"],
        "-machine", d["machine"],
        "-accel", d["accel"],
        "-m", "%dM" % d["memory_mib"],
        "-smp", str(d["vcpus"]),
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-chardev", "file,id=walm-console,path=%s,append=on" % paths.console_log,
        "-serial", "chardev:walm-console",
        "-qmp", "unix:%s,server=on,wait=off" % paths.qmp_socket,
        "-pidfile", paths.pidfile,
        "-daemonize",
    ]
    if d["cpu_model"]:
        argv += ["-cpu", d["cpu_model"]]
    if d["kernel"]:
        argv += ["-kernel", d["kernel"]]
        if d["initrd"]:
            argv += ["-initrd", d["initrd"]]
        if d["append"]:
            argv += ["-append", d["append"]]
    for i, disk in enumerate(d["disks"]):
        argv += ["-drive",
                 "file=%s,format=%s,if=none,id=walm-disk%d,cache=%s"
                 % (_drive_escape(disk["file"]), disk["format"], i, disk["cache"]),
                 "-device", "virtio-blk-pci,drive=walm-disk%d,id=walm-vd%d" % (i, i)]
    for i, nic in enumerate(d["nics"]):
        argv += ["-netdev", "tap,id=walm-net%d,ifname=%s,script=no,downscript=no" % (i, nic["tap"]),
                 "-device", "virtio-net-pci,netdev=walm-net%d,mac=%s,id=walm-nic%d" % (i, nic["mac"], i)]
    argv += list(d["extra_args"])
    if incoming:
        # A second monitor for the event logger: it records when the guest resumes here (eventlog.py).
        argv += ["-qmp", "unix:%s,server=on,wait=off" % paths.events_socket, "-incoming", "defer"]
    return argv


def _drive_escape(value):
    # QEMU option syntax: a comma inside a value is written as two commas.
    return value.replace(",", ",,")


# -- parsing any QEMU's command line ----------------------------------------------------------------------------

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
    facts = {"name": None, "qmp": [], "taps": [], "macs": [], "memory_mib": None, "vcpus": None, "machine": None,
             "accel": None, "dirty_ring_size": 0}
    # A -mon or -qmp chardev:X names a chardev that may be defined later on the line: resolved at the end.
    monitors = {"chardevs": {}, "control": []}
    for opt, val in parse_argv(argv):
        handler = (_FLAG_FACTS if val is None else _OPTION_FACTS).get(opt)
        if handler is not None:
            handler(facts, val, monitors)
    for cid in monitors["control"]:
        c = monitors["chardevs"].get(cid)
        if c is None:
            facts["qmp"].append({"unsupported": "chardev:%s (not defined)" % cid})
        else:
            facts["qmp"].append(_endpoint(c))
    return facts


# -- one handler per option: (facts, its argument, the monitors seen so far) ---------------------------------------

def _enable_kvm(facts, _val, _monitors):
    facts["accel"] = "kvm"


def _name(facts, val, _monitors):
    facts["name"] = split_qemu_opts(val, implied="guest").get("guest") or None


def _qmp(facts, val, monitors):
    mon = _legacy_chardev(val)
    if "chardev" in mon:
        monitors["control"].append(mon["chardev"])
    else:
        facts["qmp"].append(_endpoint(mon))


def _chardev(_facts, val, monitors):
    c = split_qemu_opts(val, implied="backend")
    if c.get("id"):
        monitors["chardevs"][c["id"]] = c


def _mon(_facts, val, monitors):
    m = split_qemu_opts(val, implied="chardev")
    if m.get("mode") == "control" and m.get("chardev"):
        monitors["control"].append(m["chardev"])


def _netdev(facts, val, _monitors):
    n = split_qemu_opts(val, implied="type")
    if n.get("type") in ("tap", "bridge") and n.get("ifname") and n["ifname"] not in facts["taps"]:
        facts["taps"].append(n["ifname"])
    _add_mac(facts["macs"], n.get("mac") or n.get("macaddr"))  # -nic ...,mac= / -net nic,macaddr=


def _device(facts, val, _monitors):
    _add_mac(facts["macs"], split_qemu_opts(val, implied="driver").get("mac"))


def _memory(facts, val, _monitors):
    facts["memory_mib"] = _size_mib(split_qemu_opts(val, implied="size").get("size"))


def _smp(facts, val, _monitors):
    s = split_qemu_opts(val, implied="cpus")
    try:
        facts["vcpus"] = int(s.get("cpus") or 1)
    except ValueError:
        pass


def _machine(facts, val, _monitors):
    mach = split_qemu_opts(val, implied="type")
    if mach.get("type"):
        facts["machine"] = mach["type"]
    if mach.get("accel"):
        facts["accel"] = mach["accel"].split(":")[0]


def _accel(facts, val, _monitors):
    a = split_qemu_opts(val, implied="accel")
    if facts["accel"] is None or facts["accel"] == "kvm":
        facts["accel"] = a.get("accel")
    try:
        facts["dirty_ring_size"] = int(a.get("dirty-ring-size") or 0)
    except ValueError:
        pass


_FLAG_FACTS = {"-enable-kvm": _enable_kvm}
_OPTION_FACTS = {
    "-name": _name, "-qmp": _qmp, "-qmp-pretty": _qmp, "-chardev": _chardev, "-mon": _mon,
    "-netdev": _netdev, "-nic": _netdev, "-net": _netdev, "-device": _device, "-m": _memory, "-smp": _smp,
    "-machine": _machine, "-M": _machine, "-accel": _accel,
}


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


# -- matching a command line ------------------------------------------------------------------------------------

def is_vm_argv(argv, name, pidfile=None):
    """True if argv is a QEMU that qemu_argv built for VM `name` (with `pidfile`, that pidfile too).

    The pidfile tells apart a QEMU of the same name started from another state dir (the other end of a migration,
    when two hosts share a process table).
    """
    if ("guest=%s,debug-threads=on" % name) not in argv:
        return False
    if pidfile is None:
        return True
    named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-pidfile"]
    return any(os.path.realpath(p) == os.path.realpath(pidfile) for p in named)


def image_arg_re(file):
    """A pattern finding the image in a command line argument."""
    # The image as QEMU is given it: a -drive file= value (commas doubled), a JSON "filename", or a bare argument.
    variants = sorted({re.escape(file), re.escape(file.replace(",", ",,"))}, key=len, reverse=True)
    return re.compile("(?:^|[=,\"':])(?:%s)(?:$|[,\"'])" % "|".join(variants))
