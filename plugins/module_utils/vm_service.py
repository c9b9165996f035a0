# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""What the walm_vm module does: bring one VM on this host to a state (started, incoming, stopped).

Every mutation is guarded by check_mode and listed in `actions`, so check mode predicts `changed` exactly.
"""

from __future__ import absolute_import, division, print_function

import os
import socket
import time

from . import discovery, eventlog, images, migration_tls, nicnames, qemu_binary, qemu_process, taps, vm_records, vmlock
from .errors import WalmError
from .methods import METHODS, ON_TIMEOUT
from .migration_capabilities import capabilities_for, set_capabilities
from .qmp import QMP, QMPFailure
from .vmdef import HostPaths, fingerprint, normalize


# A QEMU whose monitor does not answer within this is reported "unreachable", not waited for.
INFO_QMP_TIMEOUT_S = 5
# Post-copy recovery talks to a QEMU that may be stuck: every wait is bounded by this.
RECOVER_QMP_TIMEOUT_S = 10


class VMService(object):
    def __init__(self, name, state_dir, check_mode=False, qemu_binary=qemu_binary.QEMU_BINARY, tap_lock=None):
        self.name = name
        # Held while a destination's tap names are chosen and the taps made (walm_vms starts several at once).
        self.tap_lock = tap_lock or _NoLock()
        self.paths = HostPaths(state_dir, name)
        self.check_mode = check_mode
        self.qemu_binary = qemu_binary
        self.actions = []
        self.changed = False

    def _act(self, description, func=None, *args, **kwargs):
        self.actions.append(description)
        self.changed = True
        if not self.check_mode and func is not None:
            return func(*args, **kwargs)
        return None

    # -- reporting --------------------------------------------------------------------------------------------

    def info(self):
        """The VM as this host sees it: pid, QMP status, record."""
        pid = qemu_process.running_pid(self.paths)
        record = vm_records.read_record(self.paths)
        status = migration_status = None
        if pid:
            try:
                with QMP(self.name, self.paths.qmp_socket, INFO_QMP_TIMEOUT_S) as qmp:
                    status = qmp.execute("query-status")["status"]
                    migration_status = qmp.execute("query-migrate").get("status")
            except QMPFailure as exc:
                # QEMU serves one QMP client at a time: a migration under way holds the monitor (and the lock).
                busy = vmlock.holder(self.paths.state_dir, self.name)
                status = ("busy: %s (pid %s) holds the VM" % (busy.get("what"), busy.get("pid", "?")) if busy
                          else "unreachable: %s" % exc)
        out = {"name": self.name, "pid": pid, "running": bool(pid), "status": status,
               "migration_status": migration_status}
        out.update(self.paths.as_dict())
        if record:
            out.update({"definition": record.get("definition"), "role": record.get("role"),
                        "qemu_version": record.get("qemu_version"),
                        "qemu_version_tuple": record.get("qemu_version_tuple"), "argv": record.get("argv"),
                        "capabilities": record.get("capabilities"),
                        "definition_sha256": record.get("definition_sha256"),
                        "incoming_uri": record.get("incoming_uri"), "started_at": record.get("started_at")})
            if record.get("role") == "incoming":
                out["resumed_at"] = eventlog.resumed_at(self.paths)
                out["event_log_note"] = record.get("event_log_note")
        return out

    def result(self, **extra):
        out = {"changed": self.changed, "actions": self.actions, "vm": self.info()}
        out.update(extra)
        return out

    # -- helpers ----------------------------------------------------------------------------------------------

    def _prepare(self, definition, for_incoming):
        d = normalize(dict(definition, name=definition.get("name") or self.name))
        if d["name"] != self.name:
            raise WalmError("definition.name %r differs from name %r" % (d["name"], self.name))
        # Pin the versioned machine type: source and destination must run the same one.
        concrete = qemu_binary.resolve_machine(d["machine"], self.qemu_binary)
        if for_incoming and concrete != d["machine"]:
            raise WalmError("VM '%s': the destination definition must carry the source's versioned machine type "
                            "(e.g. pc-q35-7.2), got the alias %r; pass the definition recorded by the source"
                            % (self.name, d["machine"]))
        d["machine"] = concrete
        users = discovery.nic_users()
        if for_incoming:
            # The tap name is this host's: where another process here holds the source's, take one of our own.
            d["nics"], renames = nicnames.host_taps(self.name, d["nics"], users[0], taps.tap_exists)
            for old, new, holders in renames:
                self.actions.append("NIC on tap %s here: tap %s is held open by %s on this host"
                                    % (new, old, ", ".join(holders)))
        conflicts = discovery.nic_conflicts(d["nics"], users=users)
        if conflicts:
            raise WalmError("VM '%s' cannot start here: %s. Give each VM on a host its own tap and MAC "
                            "(definition.nics[].tap and .mac), or stop what uses them first"
                            % (self.name, "; ".join(conflicts)))
        for path_key in ("kernel", "initrd"):
            if d[path_key]:
                if not os.path.isfile(d[path_key]):
                    raise WalmError("VM '%s': %s %s does not exist on this host" % (self.name, path_key,
                                                                                    d[path_key]))
        for disk in d["disks"]:
            info = images.disk_info(disk)
            if info is None:
                if for_incoming:
                    raise WalmError("VM '%s': disk %s is not reachable from this host; the destination must see "
                                    "the same shared storage" % (self.name, disk["file"]))
                if not disk["create"]:
                    raise WalmError("VM '%s': disk %s does not exist; create it or set create: true with "
                                    "size_mib" % (self.name, disk["file"]))
                self._act("create disk %s (%d MiB, %s, preallocated metadata)"
                          % (disk["file"], disk["size_mib"], disk["format"]), images.create_disk, disk)
            elif not for_incoming:
                images.check_disk_migratable(self.name, disk)
        return d

    def _record(self, d, argv, role, **extra):
        version = qemu_binary.qemu_version(self.qemu_binary)
        record = {"name": self.name, "definition": d, "definition_sha256": fingerprint(d), "argv": argv,
                  "role": role,
                  "qemu_version": version[1], "qemu_version_tuple": list(version[0]),
                  "started_at": time.time()}
        record.update(extra)
        vm_records.write_record(self.paths, record)

    def _make_room(self, d):
        """The state directory and the definition's taps (on their bridges), before its QEMU starts."""
        if vm_records.ensure_state_dir(self.paths.state_dir):
            self.actions.append("create state dir %s" % self.paths.state_dir)
        for nic in d["nics"]:
            taps.ensure_tap(nic)

    # -- states -----------------------------------------------------------------------------------------------

    def started(self, definition=None, wait_running_s=0, force_resume=False):
        pid = qemu_process.running_pid(self.paths)
        if pid:
            status = qemu_process.qmp_status(self.name, self.paths)
            if status == "inmigrate" and wait_running_s > 0:
                # The destination of a migration under way: wait for it to take over.
                status = qemu_process.wait_status(self.name, self.paths, ("running",), wait_running_s)
            if status == "running":
                return self.result()
            if status == "postmigrate" and not force_resume:
                raise WalmError("VM '%s' has completed an outgoing migration: its copy may be running on the "
                                "destination, and resuming this one would run two guests on one disk. Stop this "
                                "copy (state: stopped), or set force_resume: true if the destination copy is "
                                "known to be gone." % self.name, status=status)
            if status in ("paused", "postmigrate", "finish-migrate"):
                self._act("resume VM (was %s)" % status, self._cont)
                return self.result()
            raise WalmError("VM '%s' is %s and cannot be started or resumed" % (self.name, status), status=status)
        if not definition:
            raise WalmError("VM '%s' is not running on this host and no definition was given to start it"
                            % self.name)
        d = self._prepare(definition, for_incoming=False)
        if self.check_mode:
            self._act("start VM %s (%d MiB, %d vCPUs, %s)" % (self.name, d["memory_mib"], d["vcpus"], d["accel"]))
            return self.result()
        self.actions.append("start VM %s" % self.name)
        self.changed = True
        self._make_room(d)
        pid, argv = qemu_process.start_qemu(d, self.paths, incoming=False, binary=self.qemu_binary)
        self._record(d, argv, "source")
        status = qemu_process.qmp_status(self.name, self.paths)
        if status != "running":
            raise WalmError("VM '%s' started but is %s" % (self.name, status))
        return self.result()

    def _cont(self):
        with QMP(self.name, self.paths.qmp_socket) as qmp:
            qmp.execute("cont")

    def incoming(self, definition, listen_address, listen_port=0, method="precopy", on_timeout="abort",
                 source_qemu_version=None, tls_dir=None, tls_allowed_clients=None, allow_postcopy=False):
        if not definition:
            raise WalmError("state incoming needs the source's definition (from walm_vm_info on the source)")
        if not listen_address:
            raise WalmError("state incoming needs listen_address: the destination address the source connects to")
        own_version = qemu_binary.qemu_version(self.qemu_binary)[0]
        caps = capabilities_for(method, on_timeout, [own_version, tuple(source_qemu_version or own_version)],
                                allow_postcopy)
        tls = migration_tls.settings("server", tls_dir, allowed_clients=tls_allowed_clients)
        pid = qemu_process.running_pid(self.paths)
        if pid:
            status = qemu_process.qmp_status(self.name, self.paths)
            record = vm_records.read_record(self.paths) or {}
            if status == "inmigrate" and record.get("role") == "incoming" and record.get("incoming_uri"):
                if record.get("capabilities") != caps:
                    raise WalmError("VM '%s' already waits here for a migration, prepared with capabilities %s; "
                                    "this request needs %s: stop it (state: stopped) and prepare it again"
                                    % (self.name, record.get("capabilities"), caps))
                migration_tls.check_waiting(self.name, self.paths.qmp_socket, record, tls)
                return self.result(incoming_uri=record["incoming_uri"], capabilities=caps, tls=tls,
                                   definition_sha256=record.get("definition_sha256"))
            raise WalmError("VM '%s' already runs on this host (status %s): a destination must not have it; stop "
                            "it first if it is a leftover" % (self.name, status), status=status)
        # The tap names are chosen and the taps made under the host's tap lock, so that a VM started beside this
        # one (walm_vms) cannot choose the same free name; QEMU itself starts outside it.
        with self.tap_lock:
            d = self._prepare(definition, for_incoming=True)
            if self.check_mode:
                self._act("start VM %s in incoming mode listening on %s" % (self.name, listen_address))
                return self.result(incoming_uri=None, capabilities=caps, tls=tls, definition_sha256=fingerprint(d))
            self.actions.append("start VM %s in incoming mode" % self.name)
            self.changed = True
            self._make_room(d)
        pid, argv = qemu_process.start_qemu(d, self.paths, incoming=True, binary=self.qemu_binary)
        try:
            events_note = eventlog.start(self.paths)
            with QMP(self.name, self.paths.qmp_socket) as qmp:
                set_capabilities(qmp, caps)
                channel = migration_tls.listen(qmp, tcp_uri(listen_address, listen_port), own_version, tls)
                uri = self._bound_uri(qmp, listen_address, listen_port)
            self._record(d, argv, "incoming", incoming_uri=uri, method=method, capabilities=caps,
                         event_log_note=events_note, **channel)
        except Exception:
            # Leave nothing half-prepared behind: a destination QEMU that is not listening is useless.
            qemu_process.stop_qemu(self.name, self.paths)
            raise
        return self.result(incoming_uri=uri, capabilities=caps, tls=tls, definition_sha256=fingerprint(d))

    def recover(self, listen_address, listen_port=0):
        """Destination side of post-copy recovery: listen again for the source's 'migrate resume'.

        While the post-copy stream is broken, this QEMU's main loop may be blocked on a guest page that will not
        come, and then its monitor answers no in-band command. The event logger holds a monitor negotiated with
        out-of-band support since the QEMU started: through it, `migrate-recover` runs in the monitor's own thread
        (its listener then accepts the source there too), and the migration's state is read from the events QEMU
        already sent. In-band QMP is used only where QEMU offered no out-of-band support."""
        if not listen_address:
            raise WalmError("state recover needs listen_address: the destination address the source connects to")
        if not qemu_process.running_pid(self.paths):
            raise WalmError("VM '%s' does not run on this host: there is nothing to recover here" % self.name)
        record = vm_records.read_record(self.paths) or {}
        oob = eventlog.control_ready(self.paths)
        status = self._migration_status(oob)
        if status in ("postcopy-recover", "postcopy-recover-setup") and record.get("recover_uri"):
            return self.result(recover_uri=record["recover_uri"], migration_status=status)
        if status != "postcopy-paused":
            raise WalmError("VM '%s' has no paused post-copy migration to recover (migration status %s)"
                            % (self.name, status or "none"), migration_status=status)
        uri = tcp_uri(listen_address, int(listen_port) or _free_port(listen_address))
        try:
            if oob:
                self._act("listen for the resumed migration on %s (migrate-recover, out-of-band)" % uri,
                          eventlog.execute_oob, self.paths, "migrate-recover", {"uri": uri}, RECOVER_QMP_TIMEOUT_S)
            else:
                self._act("listen for the resumed migration on %s (migrate-recover)" % uri, self._qmp_execute,
                          "migrate-recover", {"uri": uri})
        except WalmError as exc:
            # An earlier attempt's listener is still up (its source did not get through): use it again.
            if "already" in str(exc) and record.get("recover_uri"):
                self.actions.append("already listening on %s since an earlier attempt" % record["recover_uri"])
                return self.result(recover_uri=record["recover_uri"], migration_status=status, out_of_band=oob)
            raise
        if not self.check_mode:
            record["recover_uri"] = uri
            vm_records.write_record(self.paths, record)
        return self.result(recover_uri=uri, migration_status=status, out_of_band=oob)

    def _migration_status(self, oob):
        """query-migrate, or with out-of-band support and a monitor that does not answer, the last MIGRATION
        event's status."""
        try:
            with QMP(self.name, self.paths.qmp_socket, RECOVER_QMP_TIMEOUT_S) as qmp:
                return qmp.execute("query-migrate").get("status")
        except QMPFailure as exc:
            if not oob:
                raise WalmError("VM '%s': its monitor does not answer (%s) and it has no out-of-band monitor to "
                                "recover through; once the link works the migration may resume by itself, "
                                "else the guest waits on both hosts: do not stop either QEMU" % (self.name, exc))
            return eventlog.last_migration_status(self.paths)

    def _qmp_execute(self, command, arguments):
        with QMP(self.name, self.paths.qmp_socket, RECOVER_QMP_TIMEOUT_S) as qmp:
            return qmp.execute(command, arguments)

    def _bound_uri(self, qmp, address, listen_port):
        """The URI the source must use; with port 0 QEMU picks a free port and reports it."""
        if int(listen_port):
            return tcp_uri(address, listen_port)
        addrs = qmp.execute("query-migrate").get("socket-address") or []
        for a in addrs:
            if a.get("type") in ("inet", "tcp") and a.get("port"):
                return tcp_uri(address, a["port"])
        raise WalmError("VM '%s': QEMU did not report the port it listens on; set listen_port explicitly"
                        % self.name)

    def stopped(self):
        pid = qemu_process.running_pid(self.paths)
        record = vm_records.read_record(self.paths)
        if pid:
            self._act("stop VM %s (pid %d)" % (self.name, pid), qemu_process.stop_qemu, self.name, self.paths)
        else:
            # A QEMU killed without cleaning up (SIGKILL, a crash) left these; a stopped VM has none.
            stale = qemu_process.stale_files(self.paths)
            if stale:
                self._act("remove what a dead QEMU left: %s" % ", ".join(stale), qemu_process.remove_stale_files,
                          self.paths)
        if record:
            for nic in (record.get("definition") or {}).get("nics", []):
                if taps.tap_exists(nic["tap"]):
                    self._act("delete tap %s" % nic["tap"], taps.delete_tap, nic["tap"])
            self._act("remove record %s" % self.paths.record, _unlink, self.paths.record)
        if os.path.exists(self.paths.progress):
            self._act("remove the migration progress %s" % self.paths.progress, _unlink, self.paths.progress)
        if os.path.exists(self.paths.event_log) or os.path.exists(self.paths.events_socket):
            self._act("remove the event log %s" % self.paths.event_log, eventlog.remove, self.paths)
        return self.result()


# The options of walm_vm that walm_vms shares (one declaration of each default): where the VMs' files are, how a
# destination listens and what it is prepared for, the lock and the QEMU binary.
HOST_OPTIONS = dict(
    state_dir=dict(type="path", default="/run/walm"),
    listen_address=dict(type="str"),
    listen_port=dict(type="int", default=0),
    migration_method=dict(type="str", default="precopy", choices=list(METHODS)),
    on_timeout=dict(type="str", default="abort", choices=list(ON_TIMEOUT)),
    allow_postcopy=dict(type="bool", default=False),
    source_qemu_version=dict(type="list", elements="int"),
    tls_dir=dict(type="path"),
    tls_allowed_clients=dict(type="list", elements="str"),
    lock_wait_s=dict(type="float", default=30),
    qemu_binary=dict(type="str", default=qemu_binary.QEMU_BINARY),
)


def apply(service, p, who="walm_vm"):
    """Bring service's VM to p["state"] (started, incoming, recover or stopped) with walm_vm's parameters p, holding
    the VM's lock (vmlock: one change to a VM at a time on this host; a migration holds the same lock)."""
    with vmlock.hold(service.paths.state_dir, service.name, "%s state=%s" % (who, p["state"]),
                     wait_s=p["lock_wait_s"]):
        if p["state"] == "started":
            return service.started(p["definition"], p["wait_running_s"], p["force_resume"])
        if p["state"] == "incoming":
            return service.incoming(p["definition"], p["listen_address"], p["listen_port"],
                                    p["migration_method"], p["on_timeout"], p["source_qemu_version"],
                                    p["tls_dir"], p["tls_allowed_clients"], p["allow_postcopy"])
        if p["state"] == "recover":
            return service.recover(p["listen_address"], p["listen_port"])
        return service.stopped()


class _NoLock(object):
    """The tap lock of a VMService that runs alone."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def tcp_uri(address, port):
    """A QEMU tcp: migration URI; IPv6 addresses go in brackets."""
    return "tcp:%s:%d" % ("[%s]" % address if ":" in address else address, int(port))


def _free_port(address):
    """A TCP port free on this host's address now (QEMU's migrate-recover cannot pick one and report it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((address, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _unlink(path):
    if os.path.exists(path):
        os.unlink(path)


def list_vm_info(state_dir, name=None, missing_ok=False):
    """walm_vm_info: every recorded VM on this host, or just `name` (which must exist unless missing_ok)."""
    names = vm_records.list_vms(state_dir)
    if name is not None:
        if name not in names and not qemu_process.running_pid(HostPaths(state_dir, name)):
            if missing_ok:
                return []
            raise WalmError("VM '%s' is not known on this host: no record in %s and no running QEMU for it "
                            "(known here: %s)" % (name, state_dir, ", ".join(names) or "none"))
        names = [name]
    return [VMService(n, state_dir).info() for n in names]
