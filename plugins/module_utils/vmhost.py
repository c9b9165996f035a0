# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Running VMs on this host: QEMU facts, disks, tap devices, starting, finding and stopping QEMU processes."""

from __future__ import absolute_import, division, print_function

import json
import os
import re
import signal
import stat
import subprocess
import time

from . import nfsurl
from .errors import WalmError
from .qmp import QMP, QMPFailure
from .vmdef import name_problem, qemu_argv

QEMU_BINARY = "qemu-system-x86_64"


def run(argv, timeout_s=60, check=True):
    """Run a host command; a failure raises WalmError with the command and its stderr."""
    try:
        # check=False: the exit code is checked below, so that the error names the command and its stderr.
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout_s,
                              universal_newlines=True, check=False)
    except FileNotFoundError:
        raise WalmError("%s is not installed on this host" % argv[0])
    except subprocess.TimeoutExpired:
        raise WalmError("'%s' did not finish within %d s" % (" ".join(argv), timeout_s))
    if check and proc.returncode != 0:
        raise WalmError("'%s' failed (exit %d): %s" % (" ".join(argv), proc.returncode,
                                                       (proc.stderr or proc.stdout).strip()))
    return proc


# -- QEMU facts -------------------------------------------------------------------------------------------------

def qemu_version(binary=QEMU_BINARY):
    """QEMU's version as (major, minor, micro) and the full first line of --version."""
    out = run([binary, "--version"]).stdout.splitlines()[0]
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise WalmError("cannot parse the QEMU version from %r" % out)
    return tuple(int(x) for x in m.groups()), out.strip()


def resolve_machine(machine, binary=QEMU_BINARY):
    """Turn a machine alias (q35, pc) into the versioned type QEMU would use (pc-q35-10.0).

    Migration needs the same versioned machine type on both sides; recording it at start pins it.
    """
    names = {}
    for line in run([binary, "-machine", "help"]).stdout.splitlines():
        m = re.match(r"^(\S+)\s+.*?(?:\(alias of (\S+)\))?$", line)
        if m and not line.startswith("Supported"):
            names[m.group(1)] = m.group(2) or m.group(1)
    if machine not in names:
        raise WalmError("machine type %r is not supported by this host's QEMU (%s); choose one of: %s"
                        % (machine, binary, ", ".join(sorted(names))))
    return names[machine]


# -- disks ------------------------------------------------------------------------------------------------------

def disk_info(disk):
    """`qemu-img info` of a disk, or None if it does not exist."""
    proc = run(["qemu-img", "info", "--output=json", "-U", "-f", disk["format"], disk["file"]], check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        if "No such file" in err or "NOENT" in err or "does not exist" in err:
            return None
        raise WalmError("cannot inspect disk %s: %s" % (disk["file"], err))
    return json.loads(proc.stdout)


def create_disk(disk):
    """Create a disk image. qcow2 gets preallocated metadata: QEMU's nfs:// driver never refreshes the file
    length, so clusters allocated on the source after the destination opened a sparse image read as zeros there
    (silent data loss found in the lab, shared/LAB.md)."""
    argv = ["qemu-img", "create", "-q", "-f", disk["format"]]
    if disk["format"] == "qcow2":
        argv += ["-o", "preallocation=metadata"]
    argv += [disk["file"], "%dM" % disk["size_mib"]]
    run(argv, timeout_s=300)


def qcow2_allocation(file, timeout_s=300):
    """(allocated clusters, total clusters) of a qcow2 image, as `qemu-img check` counts them.

    A qcow2 created with preallocation=metadata (or falloc, full) has every cluster allocated in its metadata; a
    sparse one allocates clusters, and grows its file, as the guest writes.
    """
    proc = run(["qemu-img", "check", "--output=json", "-U", "-f", "qcow2", file], check=False, timeout_s=timeout_s)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise WalmError("cannot check disk %s: %s" % (file, proc.stderr.strip()))
    return report.get("allocated-clusters", 0), report.get("total-clusters")


def nfs_trap(disk):
    """(allocated, total) clusters if the disk is a sparse qcow2 opened through QEMU's nfs:// driver, else None.

    That driver never refreshes the file length: clusters the source allocates after the destination opened the
    image read as zeros there and get overwritten, so live migration silently loses data (shared/LAB.md). Raw
    images and images opened through the file driver (a kernel NFS mount) are not affected.
    """
    if disk.get("format", "qcow2") != "qcow2" or not nfsurl.is_nfs_url(disk["file"]):
        return None
    allocated, total = qcow2_allocation(disk["file"])
    if total and allocated < total:
        return allocated, total
    return None


def check_disk_migratable(vm, disk):
    """Refuse a sparse qcow2 opened through QEMU's nfs:// driver (see nfs_trap)."""
    try:
        sparse = nfs_trap(disk)
    except WalmError as exc:
        raise WalmError("VM '%s': %s" % (vm, exc))
    if sparse:
        raise WalmError(
            "VM '%s': disk %s is a sparse qcow2 (%d of %d clusters allocated) opened through QEMU's nfs:// "
            "driver: live migration would silently lose data written during it. Convert it with "
            "'qemu-img convert -O qcow2 -o preallocation=metadata' (or use raw) before starting the VM."
            % ((vm, disk["file"]) + sparse))


def image_info(file, fmt="qcow2"):
    """`qemu-img info` of an image (read-only, shared lock), or None if it does not exist."""
    return disk_info({"file": file, "format": fmt})


def _image_arg_re(file):
    # The image as QEMU is given it: a -drive file= value (commas doubled), a JSON "filename", or a bare argument.
    variants = sorted({re.escape(file), re.escape(file.replace(",", ",,"))}, key=len, reverse=True)
    return re.compile("(?:^|[=,\"':])(?:%s)(?:$|[,\"'])" % "|".join(variants))


def processes_using(file):
    """QEMU processes on this host (qemu-system-*, qemu-img, qemu-nbd, qemu-storage-daemon) whose command line
    names the image, as [{"pid": N, "argv0": ...}]. Images on nfs:// hold no file locks and no local file
    descriptor, so the command line is what tells that one is in use."""
    pattern = _image_arg_re(file)
    users = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (IOError, OSError):
            continue
        if not argv or not os.path.basename(argv[0]).startswith("qemu-"):
            continue
        # A qemu-img that only looks (-U/--force-share: info, check, map) does not hold the image; WALM's own
        # inspections are of that kind and may run at the same time on another host of a shared process table.
        if os.path.basename(argv[0]) == "qemu-img" and ("-U" in argv or "--force-share" in argv):
            continue
        if any(pattern.search(a) for a in argv[1:]):
            users.append({"pid": int(entry), "argv0": argv[0]})
    return users


def preallocated_name(file):
    """Where the preallocated copy of an image is written before it replaces the original (same directory)."""
    base, query = nfsurl.split_query(file)
    return base + ".walm-prealloc" + query


def preallocate_qcow2(file, timeout_s=3600):
    """Replace a sparse qcow2 by a copy with preallocated metadata, atomically; the caller ensures that no process
    uses the image. The copy is compared with the original before the rename; on any failure the original is left
    untouched and the copy removed. Returns the qemu-img info of the result."""
    info = image_info(file)
    if info is None:
        raise WalmError("image %s does not exist" % file)
    if info.get("format") != "qcow2":
        raise WalmError("image %s is %s, not qcow2" % (file, info.get("format")))
    specific = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename"):
        # A converted copy would be flattened (the backing chain merged in): a different image, not ours to make.
        raise WalmError("image %s has a backing file (%s): convert it by hand, deciding what becomes of the chain"
                        % (file, info["backing-filename"]))
    if specific.get("encrypt") or info.get("encrypted"):
        raise WalmError("image %s is encrypted: convert it by hand with its secret" % file)
    if specific.get("corrupt") or info.get("dirty-flag"):
        raise WalmError("image %s is marked corrupt or dirty: repair it with 'qemu-img check -r' first" % file)
    opts = ["preallocation=metadata", "cluster_size=%d" % info.get("cluster-size", 65536)]
    if specific.get("compat"):
        opts.append("compat=%s" % specific["compat"])
    if specific.get("refcount-bits"):
        opts.append("refcount_bits=%d" % specific["refcount-bits"])
    if specific.get("extended-l2"):
        opts.append("extended_l2=on")
    tmp = preallocated_name(file)
    # A copy left by an interrupted run is incomplete by definition.
    nfsurl.remove(tmp, missing_ok=True)
    try:
        run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", "-o", ",".join(opts), file, tmp],
            timeout_s=timeout_s)
        proc = run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", file, tmp], check=False,
                   timeout_s=timeout_s)
        if proc.returncode != 0:
            raise WalmError("the preallocated copy %s differs from %s (qemu-img compare exit %d: %s); the original "
                            "was kept" % (tmp, file, proc.returncode, (proc.stderr or proc.stdout).strip()))
        allocated, total = qcow2_allocation(tmp)
        if total and allocated < total:
            raise WalmError("the copy %s is still sparse (%d of %d clusters); the original was kept"
                            % (tmp, allocated, total))
        nfsurl.rename(tmp, file)
    except Exception:
        try:
            nfsurl.remove(tmp, missing_ok=True)
        except WalmError:
            pass  # the first error is the one to report
        raise
    return image_info(file)


# -- tap devices ------------------------------------------------------------------------------------------------

def tap_exists(tap):
    return os.path.exists("/sys/class/net/%s" % tap)


def ensure_tap(nic):
    """Create the NIC's tap device (vnet_hdr, as QEMU's virtio-net wants) and put it on its bridge.

    Returns True when something was changed.
    """
    changed = False
    tap = nic["tap"]
    if not tap_exists(tap):
        run(["ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])
        changed = True
    if nic.get("bridge"):
        master = os.path.realpath("/sys/class/net/%s/master" % tap)
        if os.path.basename(master) != nic["bridge"]:
            if not os.path.exists("/sys/class/net/%s/bridge" % nic["bridge"]):
                raise WalmError("bridge %s for tap %s does not exist on this host" % (nic["bridge"], tap))
            run(["ip", "link", "set", tap, "master", nic["bridge"]])
            changed = True
    with open("/sys/class/net/%s/flags" % tap) as f:
        flags = int(f.read().strip(), 16)
    if not flags & 0x1:  # IFF_UP
        run(["ip", "link", "set", tap, "up"])
        changed = True
    return changed


def delete_tap(tap):
    if tap_exists(tap):
        run(["ip", "link", "delete", tap], check=False)
        return True
    return False


# -- processes --------------------------------------------------------------------------------------------------

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
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except (IOError, OSError):
        return False
    if ("guest=%s,debug-threads=on" % name) not in argv:
        return False
    if pidfile is None:
        return True
    named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-pidfile"]
    return any(os.path.realpath(p) == os.path.realpath(pidfile) for p in named)


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


def read_record(paths):
    check_state_dir(paths.state_dir)
    try:
        with open(paths.record) as f:
            return json.load(f)
    except (IOError, OSError):
        return None
    except ValueError as exc:
        raise WalmError("VM record %s is corrupt: %s" % (paths.record, exc))


def write_record(paths, record):
    check_state_dir(paths.state_dir)
    write_file_atomic(paths.record, json.dumps(record, indent=2, sort_keys=True))


def write_file_atomic(path, text):
    """Replace `path` by a file of mode 0600 holding `text`, never following a symlink.

    The text goes to a new temporary file beside it (O_EXCL | O_NOFOLLOW: a symlink planted there is refused, not
    written through), then rename() replaces `path` itself, also when `path` is a symlink.
    """
    tmp = path + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)  # left by an interrupted write; unlink removes a symlink, not its target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    except Exception:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


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


def list_vms(state_dir):
    """Names of the VMs that have a record in state_dir (files whose names no VM can have are not VMs)."""
    if not os.path.isdir(state_dir):
        return []
    return sorted(f[:-5] for f in os.listdir(state_dir) if f.endswith(".json") and not name_problem(f[:-5]))


def check_state_dir(state_dir):
    """Refuse an existing state dir that another user could write to: WALM reads records there that name the
    tap devices it deletes, and the QMP sockets there command root's QEMU."""
    try:
        st = os.stat(state_dir)
    except OSError:
        return  # not made yet: ensure_state_dir makes it 0700
    if not stat.S_ISDIR(st.st_mode):
        raise WalmError("state_dir %s is not a directory: remove it, or choose another state_dir" % state_dir)
    if st.st_uid != os.geteuid():
        raise WalmError("state_dir %s belongs to uid %d, not to this user (uid %d), who runs the VMs: fix it with "
                        "'chown %d %s && chmod 0700 %s', or choose another state_dir"
                        % (state_dir, st.st_uid, os.geteuid(), os.geteuid(), state_dir, state_dir))
    if st.st_mode & 0o022:
        raise WalmError("state_dir %s is writable by group or others (mode %04o): another user could plant files "
                        "there that WALM reads and removes; fix it with 'chmod 0700 %s'"
                        % (state_dir, stat.S_IMODE(st.st_mode), state_dir))


def ensure_state_dir(state_dir):
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, 0o700)
        return True
    check_state_dir(state_dir)
    return False


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
