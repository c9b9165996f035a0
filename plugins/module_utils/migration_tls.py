# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""A closed migration channel: TLS credentials for the migration stream, and how the destination listens.

QEMU reads a tls-creds-x509 object's files from one directory in a fixed layout (FILES); the role
walm.qemu.migration_tls makes that directory on every hypervisor. The destination is the TLS server: it verifies
the client's certificate against the CA (verify-peer) and may admit only listed distinguished names (tls-authz, an
authz-list object). The source is the client: it checks the destination's certificate against tls-hostname, which
QEMU takes from the migration URI's host when it is empty.

A peer that fails the handshake, the certificate check or tls-authz never reaches the migration stream: the
destination logs it and goes on listening. migrate-incoming's exit-on-error (QEMU 9.1) covers what comes after
the handshake: with it off, a stream that fails to load leaves the destination QEMU alive, no longer listening,
with the reason in query-migrate, instead of exiting.
"""

from __future__ import absolute_import, division, print_function

import os

from .errors import WalmError
from .qmp import QMP

ROLE = "walm.qemu.migration_tls"
ENDPOINTS = ("server", "client")
# The files each end reads from tls-creds-x509's dir.
FILES = {
    "server": ("ca-cert.pem", "server-cert.pem", "server-key.pem"),
    "client": ("ca-cert.pem", "client-cert.pem", "client-key.pem"),
}
CREDS_ID = {"server": "walm-tls-server", "client": "walm-tls-client"}
AUTHZ_ID = "walm-tls-authz"
# migrate-incoming's exit-on-error appeared in QEMU 9.1.
EXIT_ON_ERROR_MIN_VERSION = (9, 1, 0)


# -- pure helpers -------------------------------------------------------------------------------------------------

def check_dir(tls_dir, endpoint):
    """Fail, naming the file and the role that makes it, unless tls_dir holds this end's files, readable."""
    if endpoint not in ENDPOINTS:
        raise WalmError("TLS endpoint %r is neither server nor client" % (endpoint,))
    if not os.path.isabs(tls_dir):
        # QEMU resolves a relative dir against its own working directory, not the module's.
        raise WalmError("tls_dir %r must be an absolute path" % (tls_dir,))
    if not os.path.isdir(tls_dir):
        raise WalmError("TLS directory %s does not exist on this host: make it with the role %s (it installs %s "
                        "there), or leave tls_dir unset to migrate without TLS"
                        % (tls_dir, ROLE, ", ".join(sorted(set(FILES["server"] + FILES["client"])))))
    for name in FILES[endpoint]:
        path = os.path.join(tls_dir, name)
        if not os.path.isfile(path):
            raise WalmError("TLS file %s is missing on this host (the %s end of the migration needs %s): run the "
                            "role %s for this host" % (path, endpoint, ", ".join(FILES[endpoint]), ROLE))
        if not os.access(path, os.R_OK) or os.path.getsize(path) == 0:
            raise WalmError("TLS file %s is empty or not readable by this user: run the role %s for this host "
                            "again, and run the module as the user that runs QEMU" % (path, ROLE))


def creds_object(tls_dir, endpoint):
    """object-add arguments for this end's credentials. Both ends verify their peer's certificate."""
    return {"qom-type": "tls-creds-x509", "id": CREDS_ID[endpoint], "dir": tls_dir, "endpoint": endpoint,
            "verify-peer": True}


def authz_object(allowed_clients):
    """object-add arguments for an authz-list that admits exactly these client distinguished names."""
    return {"qom-type": "authz-list", "id": AUTHZ_ID, "policy": "deny",
            "rules": [{"match": dn, "policy": "allow", "format": "exact"} for dn in allowed_clients]}


def parameters(endpoint, tls_dir=None, hostname=None, allowed_clients=()):
    """migrate-set-parameters for this end; with no tls_dir, the empty strings that turn TLS off.

    tls-authz is set only to a list: QEMU 10.0 reads an empty (or null) tls-authz as the id of an authz object,
    finds none and refuses every client. It matters on the destination alone, which is always a fresh QEMU.
    """
    if not tls_dir:
        return {"tls-creds": "", "tls-hostname": ""}
    if endpoint == "server":
        params = {"tls-creds": CREDS_ID["server"]}
        if allowed_clients:
            params["tls-authz"] = AUTHZ_ID
        return params
    # Empty: QEMU checks the host of the migration URI.
    return {"tls-creds": CREDS_ID["client"], "tls-hostname": hostname or ""}


def settings(endpoint, tls_dir=None, hostname=None, allowed_clients=None):
    """Check a request for one end and return what the VM record and the module result keep (None: no TLS)."""
    if not tls_dir:
        if allowed_clients:
            raise WalmError("tls_allowed_clients needs tls_dir: without TLS there is no client certificate to "
                            "check")
        if hostname:
            raise WalmError("tls_hostname needs tls_dir: without TLS no certificate is checked")
        return None
    check_dir(tls_dir, endpoint)
    out = {"endpoint": endpoint, "dir": tls_dir}
    if endpoint == "server":
        allowed = list(allowed_clients or [])
        bad = [dn for dn in allowed if not isinstance(dn, str) or "=" not in dn]
        if bad:
            raise WalmError("tls_allowed_clients must be distinguished names as QEMU reads them from a client "
                            "certificate, such as 'CN=hv1' for a certificate of %s; got %s"
                            % (ROLE, ", ".join(repr(b) for b in bad)))
        out["allowed_clients"] = allowed
    else:
        out["hostname"] = hostname or None
    return out


def incoming_arguments(uri, qemu_version):
    """migrate-incoming's arguments: exit-on-error off where this QEMU has it."""
    args = {"uri": uri}
    if tuple(qemu_version) >= EXIT_ON_ERROR_MIN_VERSION:
        args["exit-on-error"] = False
    return args


# -- applied to one QEMU ------------------------------------------------------------------------------------------

def apply(qmp, tls):
    """Give this QEMU the credentials of `tls` (from settings()), or turn TLS off when it is None.

    Objects left by an earlier attempt (perhaps from another directory) are replaced, and a QEMU that was the TLS
    destination of an earlier migration loses its server credentials before it migrates on.
    """
    endpoint = tls["endpoint"] if tls else "client"
    if not tls:
        if qmp.execute("query-migrate-parameters").get("tls-creds"):
            qmp.execute("migrate-set-parameters", parameters(endpoint))
        return
    allowed = tls.get("allowed_clients") or []
    present = set(o.get("name") for o in qmp.execute("qom-list", {"path": "/objects"}))
    for obj_id in (CREDS_ID[endpoint], AUTHZ_ID if endpoint == "server" else None):
        if obj_id in present:
            qmp.execute("object-del", {"id": obj_id})
    qmp.execute("object-add", creds_object(tls["dir"], endpoint))
    if allowed:
        qmp.execute("object-add", authz_object(allowed))
    qmp.execute("migrate-set-parameters", parameters(endpoint, tls["dir"], tls.get("hostname"), allowed))


def configure_source(qmp, tls_dir=None, hostname=None, check_mode=False):
    """The source's end, before `migrate`: client credentials, or TLS off. Returns settings() for the result."""
    tls = settings("client", tls_dir, hostname=hostname)
    if not check_mode:
        apply(qmp, tls)
    return tls


def listen(qmp, uri, qemu_version, tls=None):
    """The destination's last step: server credentials when `tls` (from settings()) is set, then migrate-incoming.

    Returns what the VM record keeps: {"tls": tls, "exit_on_error": whether a failed stream ends this QEMU}.
    """
    if tls:
        apply(qmp, tls)
    args = incoming_arguments(uri, qemu_version)
    qmp.execute("migrate-incoming", args)
    return {"tls": tls, "exit_on_error": args.get("exit-on-error", True)}


def check_waiting(vm, qmp_socket, record, tls):
    """Before a destination already waiting is used again: it must still listen, with the TLS now asked for."""
    if record.get("tls") != tls:
        raise WalmError("VM '%s' already waits here for a migration, prepared with TLS %s; this request needs %s: "
                        "stop it (state: stopped) and prepare it again"
                        % (vm, record.get("tls") or "off", tls or "off"))
    with QMP(vm, qmp_socket) as qmp:
        info = qmp.execute("query-migrate")
    if info.get("status") == "failed":
        # With exit-on-error off, a stream that failed to load leaves QEMU alive but deaf.
        raise WalmError("VM '%s' waited here for a migration, but its incoming migration failed (%s) and it no "
                        "longer listens: stop it (state: stopped) and prepare it again"
                        % (vm, info.get("error-desc") or "no reason given"))
