"""A closed migration channel, on real QEMUs of this host migrating over loopback (no lab).

Firmware-only guests (no kernel, no disk, no NIC) are started through VMService as walm_vm starts them; the
certificates come from roles/migration_tls/files/walm-tls.sh, the script the role runs, in a temporary directory.

Shown: a TLS migration completes and delivers the guest's RAM intact, and the destination copy, once a source,
migrates on in clear; neither 4 KiB of
random bytes on a raw TCP connection, nor a silent connection, nor a QEMU source without TLS, nor a
certificate from another CA, nor one from the cluster's CA issued to another host can feed the waiting
destination, which still takes the real source afterwards; the source refuses a destination whose certificate does
not carry the expected name; a destination whose stream failed to load stays alive (exit-on-error off) but is not
mistaken for one still waiting. Last, the same through Ansible: the roles migration_tls and incoming_destination
and the module walm_migrate, on two local inventory hosts.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from ansible_collections.walm.qemu.plugins.module_utils import qemu_process, vm_records
from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.plugins.module_utils.migration import Migration
from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP
from ansible_collections.walm.qemu.plugins.module_utils.vm_service import VMService

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "roles", "migration_tls", "files", "walm-tls.sh")
# The tools of the Python that runs the tests (scripts/install.sh's venv, or any other with requirements/test.txt).
VENV_BIN = os.path.dirname(sys.executable)
NAME = "tls1"
DEFINITION = {"name": NAME, "memory_mib": 64, "vcpus": 1, "accel": "tcg"}
# Where and how much random data the first test puts in guest RAM (16 MiB up: clear of the firmware).
RANDOM_RAM_AT = 16 << 20
RANDOM_RAM_BYTES = 64 << 20


def tls_script(*args):
    proc = subprocess.run([SCRIPT] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class PKI(object):
    """The cluster's CA with certificates for hv-src, hv-dst and hv-other, and a rogue CA's certificate for hv-src."""

    def __init__(self, base):
        self.ca = os.path.join(base, "ca")
        tls_script("ca", self.ca)
        for host in ("hv-src", "hv-dst", "hv-other"):
            tls_script("host", self.ca, host, "--san", host, "--san", "127.0.0.1")
        rogue_ca = os.path.join(base, "rogue-ca")
        tls_script("ca", rogue_ca, "--name", "Rogue CA")
        tls_script("host", rogue_ca, "hv-src", "--san", "hv-src", "--san", "127.0.0.1")
        # The intruder trusts the cluster's CA (so it accepts the destination) but holds a rogue CA's certificate
        # with the real source's name: only the destination's check of the client can stop it.
        self.rogue = os.path.join(base, "rogue")
        os.mkdir(self.rogue, 0o700)
        with open(os.path.join(self.rogue, "ca-cert.pem"), "w") as out:
            for ca in (self.ca, rogue_ca):
                with open(os.path.join(ca, "ca-cert.pem")) as f:
                    out.write(f.read())
        for f in ("client-cert.pem", "client-key.pem"):
            with open(os.path.join(rogue_ca, "hosts", "hv-src", f)) as src, \
                    open(os.path.join(self.rogue, f), "w") as dst:
                dst.write(src.read())

    def dir(self, host):
        return os.path.join(self.ca, "hosts", host)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def vms(tmp_path):
    """vms(label): a VMService for the test VM in its own state directory; every one is stopped afterwards."""
    made = []

    def make(label):
        service = VMService(NAME, str(tmp_path / label))
        made.append(service)
        return service

    yield make
    for service in made:
        service.stopped()
    assert not any(qemu_process.running_pid(s.paths) for s in made)


def migrate(source, prepared, tls_dir=None, tls_hostname=None):
    return Migration(NAME, source.paths.qmp_socket, prepared["incoming_uri"], method="precopy",
                     capabilities=prepared["capabilities"], timeout_s=30, tls_dir=tls_dir,
                     tls_hostname=tls_hostname).run()


def port_of(uri):
    return int(uri.rsplit(":", 1)[1])


def assert_waiting(service):
    """The destination QEMU is alive, has not loaded anything and still listens."""
    with QMP(NAME, service.paths.qmp_socket) as qmp:
        assert qmp.execute("query-status")["status"] == "inmigrate"
        info = qmp.execute("query-migrate")
    assert info.get("status") == "setup" and info.get("socket-address"), info


def wait_migration_status(service, status, timeout_s=10):
    deadline = time.time() + timeout_s
    while True:
        with QMP(NAME, service.paths.qmp_socket) as qmp:
            info = qmp.execute("query-migrate")
        if info.get("status") == status or time.time() > deadline:
            assert info.get("status") == status, info
            return info
        time.sleep(0.1)


def assert_refused(source, result):
    assert result["status"] == "failed", result
    assert result["source_status"] == "running", result  # a refused migration leaves the guest where it ran
    with QMP(NAME, source.paths.qmp_socket) as qmp:
        assert qmp.execute("query-status")["status"] == "running"


def prepare_tls_pair(pki, vms, allowed=("CN=hv-src",)):
    src, dst = vms("src"), vms("dst")
    recorded = src.started(DEFINITION)["vm"]["definition"]
    prepared = dst.incoming(recorded, "127.0.0.1", tls_dir=pki.dir("hv-dst"), tls_allowed_clients=list(allowed))
    return src, dst, recorded, prepared


def guest_ram_sha256(service, address, size):
    """sha256 of guest physical memory [address, address + size), as QEMU reads it (pmemsave)."""
    out = service.paths.qmp_socket + ".ram"
    with QMP(NAME, service.paths.qmp_socket) as qmp:
        qmp.execute("pmemsave", {"val": address, "size": size, "filename": out})
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    os.unlink(out)
    return digest


def test_tls_migration_carries_the_guest_ram_and_the_copy_migrates_on_in_clear(pki, vms, tmp_path):
    # 64 MiB of random bytes in guest RAM, which QEMU's loader device puts there at boot on the source only (an
    # incoming QEMU takes its RAM from the stream): the destination can hold them only if the stream carried them.
    blob = str(tmp_path / "random.bin")
    with open(blob, "wb") as f:
        f.write(os.urandom(RANDOM_RAM_BYTES))
    with open(blob, "rb") as f:
        expected = hashlib.sha256(f.read()).hexdigest()
    definition = dict(DEFINITION, memory_mib=128,
                      extra_args=["-device", "loader,file=%s,addr=%d,force-raw=on" % (blob, RANDOM_RAM_AT)])
    src, mid = vms("src"), vms("mid")
    recorded = src.started(definition)["vm"]["definition"]
    assert guest_ram_sha256(src, RANDOM_RAM_AT, RANDOM_RAM_BYTES) == expected
    prepared = mid.incoming(recorded, "127.0.0.1", tls_dir=pki.dir("hv-dst"), tls_allowed_clients=["CN=hv-src"])
    assert prepared["tls"] == {"endpoint": "server", "dir": pki.dir("hv-dst"), "allowed_clients": ["CN=hv-src"]}
    record = vm_records.read_record(mid.paths)
    assert record["tls"] == prepared["tls"] and record["exit_on_error"] is False  # QEMU 10: exit-on-error off
    assert guest_ram_sha256(mid, RANDOM_RAM_AT, RANDOM_RAM_BYTES) != expected
    tls = migrate(src, prepared, tls_dir=pki.dir("hv-src"))
    assert tls["status"] == "completed", tls
    assert tls["tls"] == {"endpoint": "client", "dir": pki.dir("hv-src"), "hostname": None}
    assert tls["transferred_bytes"] >= RANDOM_RAM_BYTES
    assert qemu_process.wait_status(NAME, mid.paths, ("running",), 30) == "running"
    assert qemu_process.qmp_status(NAME, src.paths) == "postmigrate"
    assert guest_ram_sha256(mid, RANDOM_RAM_AT, RANDOM_RAM_BYTES) == expected

    # The copy that arrived by TLS holds server credentials; leaving in clear, it must drop them.
    dst = vms("dst")
    onward = dst.incoming(recorded, "127.0.0.1")
    assert onward["tls"] is None
    plain = migrate(mid, onward)
    assert plain["status"] == "completed" and plain["tls"] is None, plain
    assert qemu_process.wait_status(NAME, dst.paths, ("running",), 30) == "running"
    assert guest_ram_sha256(dst, RANDOM_RAM_AT, RANDOM_RAM_BYTES) == expected
    print("%s: 128 MiB guest holding 64 MiB of random bytes, over loopback: TLS TMT %s ms, downtime %s ms, "
          "%.1f MiB; in clear TMT %s ms, downtime %s ms, %.1f MiB"
          % (record["qemu_version"], tls["total_time_ms"], tls["downtime_ms"], tls["transferred_bytes"] / 2.0 ** 20,
             plain["total_time_ms"], plain["downtime_ms"], plain["transferred_bytes"] / 2.0 ** 20))


def test_peers_without_a_certificate_cannot_feed_the_destination(pki, vms):
    src, dst, recorded, prepared = prepare_tls_pair(pki, vms)
    port = port_of(prepared["incoming_uri"])
    # The connection that took a destination in clear: 4 KiB of random bytes.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as peer:
        peer.sendall(os.urandom(4096))
        time.sleep(0.3)
    assert_waiting(dst)
    # A peer that connects and says nothing. QEMU 10.0 shakes hands on a blocking socket in its main loop, so
    # the destination is stalled while such a peer stays (docs/tls.md); once it hangs up, the destination waits.
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        time.sleep(0.5)
    assert_waiting(dst)
    # A QEMU source without credentials: its stream in clear fails the handshake.
    intruder = vms("intruder")
    intruder.started(recorded)
    assert_refused(intruder, migrate(intruder, prepared))
    assert_waiting(dst)
    result = migrate(src, prepared, tls_dir=pki.dir("hv-src"))
    assert result["status"] == "completed", result
    assert qemu_process.wait_status(NAME, dst.paths, ("running",), 30) == "running"


def test_certificates_of_another_ca_or_another_host_are_refused(pki, vms):
    src, dst, recorded, prepared = prepare_tls_pair(pki, vms)
    intruder = vms("intruder")
    intruder.started(recorded)
    # A certificate a rogue CA issued in the real source's name.
    assert_refused(intruder, migrate(intruder, prepared, tls_dir=pki.rogue))
    assert_waiting(dst)
    # The cluster's CA signed it, but for another host: tls-authz admits CN=hv-src only.
    assert_refused(intruder, migrate(intruder, prepared, tls_dir=pki.dir("hv-other")))
    assert_waiting(dst)
    result = migrate(src, prepared, tls_dir=pki.dir("hv-src"), tls_hostname="hv-dst")
    assert result["status"] == "completed", result
    assert qemu_process.wait_status(NAME, dst.paths, ("running",), 30) == "running"


def test_the_source_refuses_a_destination_without_the_expected_name(pki, vms):
    src, dst, recorded, prepared = prepare_tls_pair(pki, vms)
    assert_refused(src, migrate(src, prepared, tls_dir=pki.dir("hv-src"), tls_hostname="hv-elsewhere"))
    # Each end checks the other once the handshake is done: the destination had admitted the real source and
    # began to load, so it failed too. With exit-on-error off it lives on, but is never taken for one waiting.
    assert wait_migration_status(dst, "failed")["error-desc"]
    with pytest.raises(WalmError, match="no longer listens: stop it"):
        dst.incoming(recorded, "127.0.0.1", tls_dir=pki.dir("hv-dst"), tls_allowed_clients=["CN=hv-src"])


def test_missing_certificates_fail_before_anything_starts(pki, vms, tmp_path):
    src, dst = vms("src"), vms("dst")
    recorded = src.started(DEFINITION)["vm"]["definition"]
    empty = str(tmp_path / "no-certs")
    os.mkdir(empty)
    with pytest.raises(WalmError, match=r"ca-cert\.pem is missing.*walm\.qemu\.migration_tls"):
        dst.incoming(recorded, "127.0.0.1", tls_dir=empty)
    assert not qemu_process.running_pid(dst.paths)
    prepared = dst.incoming(recorded, "127.0.0.1", tls_dir=pki.dir("hv-dst"))
    with pytest.raises(WalmError, match=r"client-cert\.pem is missing.*walm\.qemu\.migration_tls"):
        migrate(src, prepared, tls_dir=pki.ca)  # the CA's directory holds no client certificate
    assert qemu_process.qmp_status(NAME, src.paths) == "running"
    assert_waiting(dst)


def test_a_destination_in_clear_whose_stream_failed_is_not_reused(vms):
    src, dst = vms("src"), vms("dst")
    recorded = src.started(DEFINITION)["vm"]["definition"]
    prepared = dst.incoming(recorded, "127.0.0.1")
    with socket.create_connection(("127.0.0.1", port_of(prepared["incoming_uri"])), timeout=5) as peer:
        peer.sendall(os.urandom(4096))
    # exit-on-error off: the QEMU lives on with the reason, but no longer listens.
    assert wait_migration_status(dst, "failed")["error-desc"]
    assert qemu_process.running_pid(dst.paths)
    with pytest.raises(WalmError, match="no longer listens: stop it"):
        dst.incoming(recorded, "127.0.0.1")


# -- the same through Ansible ---------------------------------------------------------------------------------------

def playbook(inventory, book):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"))
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, book], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300,
                          env=env, check=False)
    return proc.returncode, proc.stdout


def test_roles_and_modules_migrate_over_tls_where_the_inventory_says(tmp_path):
    python = os.path.join(VENV_BIN, "python")
    hosts = {}
    for host in ("hv-src", "hv-dst"):
        hosts[host] = {"ansible_connection": "local", "ansible_python_interpreter": python,
                       "ansible_host": "127.0.0.1", "walm_state_dir": str(tmp_path / host / "run"),
                       "walm_tls_dir": str(tmp_path / host / "tls")}
    inventory = str(tmp_path / "inventory.yml")
    with open(inventory, "w") as f:
        yaml.safe_dump({"all": {"hosts": hosts}}, f)
    book = str(tmp_path / "migrate.yml")
    with open(book, "w") as f:
        f.write(textwrap.dedent("""\
            - name: Certificates
              hosts: all
              gather_facts: false
              roles:
                - role: walm.qemu.migration_tls
                  migration_tls_ca_dir: %(ca)s
            - name: Migrate
              hosts: hv-src
              gather_facts: false
              tasks:
                - walm.qemu.walm_vm:
                    name: %(name)s
                    state_dir: "{{ walm_state_dir }}"
                    definition: %(definition)s
                - ansible.builtin.include_role:
                    name: walm.qemu.incoming_destination
                  vars:
                    incoming_destination_vm: %(name)s
                    incoming_destination_source: hv-src
                    incoming_destination_host: hv-dst
                - walm.qemu.walm_migrate:
                    name: %(name)s
                    state_dir: "{{ walm_state_dir }}"
                    destination_uri: "{{ incoming_destination_uri }}"
                    capabilities: "{{ incoming_destination_capabilities }}"
                    tls_dir: "{{ incoming_destination_tls.source_dir | default(omit) }}"
                  register: migration
                - ansible.builtin.debug:
                    msg: "RESULT {{ {'migration': migration, 'tls': incoming_destination_tls} | to_json }}"
            """) % {"ca": tmp_path / "ca", "name": NAME, "definition": json.dumps(DEFINITION)})
    try:
        rc, out = playbook(inventory, book)
    finally:
        for host in hosts:
            VMService(NAME, hosts[host]["walm_state_dir"]).stopped()
    assert rc == 0, out[-4000:]
    line = [l for l in out.splitlines() if '"msg": "RESULT ' in l][0]
    result = json.loads(line.split('"msg": "RESULT ', 1)[1].rstrip('"').replace('\\"', '"'))
    assert result["migration"]["status"] == "completed"
    assert result["migration"]["tls"]["dir"] == hosts["hv-src"]["walm_tls_dir"]
    assert result["tls"] == {"dir": hosts["hv-dst"]["walm_tls_dir"], "source_dir": hosts["hv-src"]["walm_tls_dir"],
                             "allowed_clients": ["CN=hv-src"]}
    for host in hosts:
        assert oct(os.stat(os.path.join(hosts[host]["walm_tls_dir"], "server-key.pem")).st_mode & 0o777) == "0o600"
