# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A VM's QEMU process on this host: started, found from its pidfile and command line, asked its status, stopped;
and the QEMU processes holding an image."""

from __future__ import absolute_import, division, print_function

import os
import signal
import subprocess
import time

from .errors import WalmError
from .procfs import read_cmdline
from .qemu_binary import QEMU_BINARY
from .qemu_cmdline import image_arg_re, is_vm_argv, qemu_argv
from .qmp import QMP, QMPFailure


def read_pid(paths):
    try:
        with open(paths.pidfile) as f:
            return int(f.read().strip() or 0) or None
    except (IOError, OSError, ValueError):
        return None


def process_is_vm(pid, name, pidfile=None):
    """True if pid is a live QEMU started for VM `name` (guards against a reused pid).

    With `pidfile`, its command line must also name that pidfile: a QEMU of the same name started from another
    state dir (the other end of a migration, when two hosts share a process table) is another VM's process.
    """
    argv = read_cmdline(pid)
    return bool(argv) and is_vm_argv(argv, name, pidfile)


def running_pid(paths):
    pid = read_pid(paths)
    if pid and process_is_vm(pid, paths.name, paths.pidfile):
        return pid
    return None


def vm_processes(paths):
    """Pids of every live QEMU started for this VM from this state dir, whatever its pidfile says."""
    return sorted(int(e) for e in os.listdir("/proc")
                  if e.isdigit() and process_is_vm(int(e), paths.name, paths.pidfile))


def stale_files(paths):
    """The pidfile and sockets a QEMU of this VM left behind when it died without cleaning up (SIGKILL, crash).

    Empty while a QEMU of this VM runs, even one whose pidfile is gone: its files are not stale then.
    """
    if running_pid(paths) or vm_processes(paths):
        return []
    return [f for f in (paths.pidfile, paths.qmp_socket, paths.events_socket, paths.control_socket)
            if os.path.lexists(f)]


def remove_stale_files(paths):
    for f in stale_files(paths):
        os.unlink(f)


def processes_using(file):
    """QEMU processes on this host (qemu-system-*, qemu-img, qemu-nbd, qemu-storage-daemon) whose command line
    names the image, as [{"pid": N, "argv0": ...}]. Images on nfs:// hold no file locks and no local file
    descriptor, so the command line is what tells that one is in use."""
    pattern = image_arg_re(file)
    users = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        argv = [a for a in read_cmdline(int(entry)) or [] if a]
        if not argv or not os.path.basename(argv[0]).startswith("qemu-"):
            continue
        # A qemu-img that only looks (-U/--force-share: info, check, map) does not hold the image; WALM's own
        # inspections are of that kind and may run at the same time on another host of a shared process table.
        if os.path.basename(argv[0]) == "qemu-img" and ("-U" in argv or "--force-share" in argv):
            continue
        if any(pattern.search(a) for a in argv[1:]):
            users.append({"pid": int(entry), "argv0": argv[0]})
    return users


def _make_private(path):
    """chmod 0600 a file QEMU made: its -daemonize sets umask 027, so its sockets come out 0750 and files 0640."""
    if os.path.lexists(path) and not os.path.islink(path):
        os.chmod(path, 0o600)


def start_qemu(definition, paths, incoming=False, binary=QEMU_BINARY, timeout_s=30):
    """Start QEMU daemonized for a normalized definition; returns the pid.

    The pidfile, QMP sockets and console log are mode 0600: the monitor is root's alone, and the console may show
    what the guest prints. QEMU's -daemonize sets its own umask (027), so the console log is made here before QEMU
    appends to it, and the sockets QEMU made are chmod-ed once it has started (the 0700 state dir covers the
    moment between).
    """
    argv = qemu_argv(definition, paths, binary, incoming=incoming)
    live = vm_processes(paths)
    if live:
        raise WalmError("VM '%s' already runs on this host (pid %s), though its pidfile %s does not say so: stop "
                        "that QEMU before starting the VM again" % (definition["name"],
                                                                    ", ".join(str(p) for p in live), paths.pidfile))
    # A QEMU that was killed (SIGKILL, a crash) leaves its pidfile and sockets: they belong to no process now.
    remove_stale_files(paths)
    if os.path.lexists(paths.console_log):
        # One log per QEMU process: keep the previous one beside it rather than mixing two boots.
        os.rename(paths.console_log, paths.console_log + ".prev")
    os.close(os.open(paths.console_log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    old_umask = os.umask(0o077)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, close_fds=True)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise WalmError("VM '%s': QEMU did not finish starting within %d s" % (definition["name"], timeout_s))
    finally:
        os.umask(old_umask)
    if proc.returncode != 0:
        # QEMU may have created its socket before failing: leave no stale files for the next start.
        remove_stale_files(paths)
        raise WalmError("VM '%s': QEMU failed to start (exit %d): %s"
                        % (definition["name"], proc.returncode, (err or out).strip()),
                        argv=argv)
    pid = read_pid(paths)
    if not pid:
        raise WalmError("VM '%s': QEMU started but wrote no pidfile %s" % (definition["name"], paths.pidfile))
    for f in (paths.pidfile, paths.qmp_socket, paths.events_socket, paths.console_log):
        _make_private(f)
    return pid, argv


def qmp_status(name, paths, timeout_s=10):
    """query-status of a running VM: e.g. 'running', 'paused', 'inmigrate', 'postmigrate'."""
    with QMP(name, paths.qmp_socket, timeout_s) as qmp:
        return qmp.execute("query-status")["status"]


def stop_qemu(name, paths, timeout_s=30):
    """Stop a VM's QEMU: QMP 'quit', then SIGTERM, then SIGKILL; returns True if a process was stopped."""
    pid = running_pid(paths)
    if not pid:
        return False
    try:
        with QMP(name, paths.qmp_socket, 5) as qmp:
            qmp.execute("quit")
    except QMPFailure:
        pass  # QEMU often drops the connection while quitting; the pid check below decides.
    deadline = time.time() + timeout_s
    sent_term = False
    while process_is_vm(pid, name, paths.pidfile):
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            break
        if not sent_term and time.time() > deadline - timeout_s / 2.0:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
            sent_term = True
        time.sleep(0.1)
    for f in (paths.qmp_socket, paths.pidfile, paths.events_socket):
        if os.path.exists(f):
            os.unlink(f)
    return True


def wait_status(name, paths, wanted, timeout_s, poll_s=0.2):
    """Poll query-status until it is one of `wanted`; returns the last status (may not be wanted on timeout)."""
    deadline = time.time() + timeout_s
    status = None
    while True:
        status = qmp_status(name, paths)
        if status in wanted or time.time() >= deadline:
            return status
        time.sleep(poll_s)
