"""migration_tls without QEMU: the directory check, the QMP arguments of each end, and what is sent in which order.

Real QEMUs refusing peers and carrying the stream over TLS: tests/integration/test_tls.py.
"""

import os

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import migration_tls
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError

ALL_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")


def make_dir(tmp_path, files=ALL_FILES, empty=()):
    d = tmp_path / "tls"
    d.mkdir()
    for name in files:
        (d / name).write_text("" if name in empty else "-----BEGIN-----\n")
    return str(d)


@pytest.mark.parametrize("files, empty, endpoint, message", [
    (ALL_FILES, (), "server", None),
    (ALL_FILES, (), "client", None),
    # The server does not need the client's files, and the other way round.
    (("ca-cert.pem", "server-cert.pem", "server-key.pem"), (), "server", None),
    (("ca-cert.pem", "client-cert.pem", "client-key.pem"), (), "client", None),
    (("server-cert.pem", "server-key.pem"), (), "server", r"ca-cert\.pem is missing"),
    (("ca-cert.pem", "server-cert.pem"), (), "server", r"server-key\.pem is missing"),
    (("ca-cert.pem", "server-cert.pem", "server-key.pem"), (), "client", r"client-cert\.pem is missing"),
    (ALL_FILES, ("client-key.pem",), "client", r"client-key\.pem is empty"),
])
def test_check_dir_names_the_missing_file_and_the_role(tmp_path, files, empty, endpoint, message):
    tls_dir = make_dir(tmp_path, files, empty)
    if message is None:
        migration_tls.check_dir(tls_dir, endpoint)
        return
    with pytest.raises(WalmError, match=message) as err:
        migration_tls.check_dir(tls_dir, endpoint)
    assert "walm.qemu.migration_tls" in str(err.value) and tls_dir in str(err.value)


def test_check_dir_refuses_a_relative_or_absent_directory(tmp_path):
    with pytest.raises(WalmError, match="must be an absolute path"):
        migration_tls.check_dir("tls", "server")
    with pytest.raises(WalmError, match="does not exist on this host: make it with the role walm.qemu.migration_tls"):
        migration_tls.check_dir(str(tmp_path / "nowhere"), "client")


def test_settings_of_each_end(tmp_path):
    tls_dir = make_dir(tmp_path)
    assert migration_tls.settings("server") is None and migration_tls.settings("client") is None
    assert migration_tls.settings("server", tls_dir, allowed_clients=["CN=hv1"]) == {
        "endpoint": "server", "dir": tls_dir, "allowed_clients": ["CN=hv1"]}
    assert migration_tls.settings("server", tls_dir) == {"endpoint": "server", "dir": tls_dir, "allowed_clients": []}
    assert migration_tls.settings("client", tls_dir, hostname="hv2") == {"endpoint": "client", "dir": tls_dir,
                                                                         "hostname": "hv2"}


@pytest.mark.parametrize("kwargs, message", [
    ({"endpoint": "server", "allowed_clients": ["CN=hv1"]}, "tls_allowed_clients needs tls_dir"),
    ({"endpoint": "client", "hostname": "hv2"}, "tls_hostname needs tls_dir"),
    ({"endpoint": "server", "tls_dir": "DIR", "allowed_clients": ["hv1"]}, "such as 'CN=hv1'"),
])
def test_settings_refuse_what_cannot_work(tmp_path, kwargs, message):
    if kwargs.get("tls_dir") == "DIR":
        kwargs["tls_dir"] = make_dir(tmp_path)
    endpoint = kwargs.pop("endpoint")
    with pytest.raises(WalmError, match=message):
        migration_tls.settings(endpoint, **kwargs)


@pytest.mark.parametrize("endpoint, tls_dir, hostname, allowed, expected", [
    # No tls-authz when TLS goes off: QEMU reads an empty one as an object id and refuses every client.
    ("client", None, None, (), {"tls-creds": "", "tls-hostname": ""}),
    ("client", "/d", None, (), {"tls-creds": "walm-tls-client", "tls-hostname": ""}),
    ("client", "/d", "hv2", (), {"tls-creds": "walm-tls-client", "tls-hostname": "hv2"}),
    ("server", "/d", None, (), {"tls-creds": "walm-tls-server"}),
    ("server", "/d", None, ["CN=hv1"], {"tls-creds": "walm-tls-server", "tls-authz": "walm-tls-authz"}),
])
def test_parameters(endpoint, tls_dir, hostname, allowed, expected):
    assert migration_tls.parameters(endpoint, tls_dir, hostname, allowed) == expected


def test_objects():
    assert migration_tls.creds_object("/d", "server") == {
        "qom-type": "tls-creds-x509", "id": "walm-tls-server", "dir": "/d", "endpoint": "server",
        "verify-peer": True}
    assert migration_tls.authz_object(["CN=hv1", "CN=hv3"]) == {
        "qom-type": "authz-list", "id": "walm-tls-authz", "policy": "deny",
        "rules": [{"match": "CN=hv1", "policy": "allow", "format": "exact"},
                  {"match": "CN=hv3", "policy": "allow", "format": "exact"}]}


@pytest.mark.parametrize("version, exit_on_error", [((7, 2, 0), None), ((9, 0, 2), None), ((9, 1, 0), False),
                                                    ((10, 0, 2), False)])
def test_exit_on_error_only_where_qemu_has_it(version, exit_on_error):
    args = migration_tls.incoming_arguments("tcp:10.0.0.2:0", version)
    assert args.get("exit-on-error") is exit_on_error and args["uri"] == "tcp:10.0.0.2:0"


class FakeQMP(object):
    def __init__(self, objects=(), tls_creds=""):
        self.objects = list(objects)
        self.tls_creds = tls_creds
        self.sent = []

    def execute(self, command, args=None):
        self.sent.append((command, args))
        if command == "qom-list":
            return [{"name": "type", "type": "string"}] + [{"name": o, "type": "child<x>"} for o in self.objects]
        if command == "query-migrate-parameters":
            return {"tls-creds": self.tls_creds, "tls-hostname": "", "tls-authz": ""}
        return {}


def test_a_source_in_clear_touches_nothing_unless_tls_was_left_on():
    fresh = FakeQMP()
    migration_tls.apply(fresh, None)
    assert fresh.sent == [("query-migrate-parameters", None)]
    arrived = FakeQMP(objects=["walm-tls-server", "walm-tls-authz"], tls_creds="walm-tls-server")
    migration_tls.apply(arrived, None)
    assert arrived.sent[-1] == ("migrate-set-parameters", {"tls-creds": "", "tls-hostname": ""})


def test_a_source_replaces_credentials_left_by_an_earlier_attempt(tmp_path):
    tls = migration_tls.settings("client", make_dir(tmp_path))
    qmp = FakeQMP(objects=["walm-tls-client", "walm-tls-server"])
    migration_tls.apply(qmp, tls)
    assert [c for c, _args in qmp.sent] == ["qom-list", "object-del", "object-add", "migrate-set-parameters"]
    assert qmp.sent[1] == ("object-del", {"id": "walm-tls-client"})
    assert qmp.sent[2][1]["endpoint"] == "client"


def test_a_destination_listens_after_its_credentials_and_its_authz(tmp_path):
    tls = migration_tls.settings("server", make_dir(tmp_path), allowed_clients=["CN=hv1"])
    qmp = FakeQMP()
    channel = migration_tls.listen(qmp, "tcp:10.0.0.2:0", (10, 0, 2), tls)
    assert [c for c, _args in qmp.sent] == ["qom-list", "object-add", "object-add", "migrate-set-parameters",
                                            "migrate-incoming"]
    assert qmp.sent[-1] == ("migrate-incoming", {"uri": "tcp:10.0.0.2:0", "exit-on-error": False})
    assert channel == {"tls": tls, "exit_on_error": False}
    old = FakeQMP()
    assert migration_tls.listen(old, "tcp:10.0.0.2:0", (8, 2, 0)) == {"tls": None, "exit_on_error": True}
    assert old.sent == [("migrate-incoming", {"uri": "tcp:10.0.0.2:0"})]


def test_the_script_and_the_module_agree_on_the_layout():
    script = os.path.join(os.path.dirname(migration_tls.__file__), "..", "..", "roles", "migration_tls", "files",
                          "walm-tls.sh")
    with open(script) as f:
        text = f.read()
    for name in set(migration_tls.FILES["server"] + migration_tls.FILES["client"]):
        assert name in text
