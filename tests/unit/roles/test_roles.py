"""The roles walm.qemu.nfs_shared_storage and walm.qemu.incoming_destination, without the lab.

- Argument specs: parse, document every option, match defaults/main.yml, render with ansible-doc, and reject bad
  input before any task runs.
- Kernel mode cannot run on this machine (no nfs/nfsd in its kernel, no modules): its exports template is rendered
  for two clients, and the whole role runs in check mode against localhost (server and clients are local aliases,
  every path under a temporary directory), proving that check mode installs, writes and mounts nothing.
- Userspace mode and tasks_from check_images run for real against a private userspace NFS server (private_nfs.py):
  the export reachable with nfs-ls, a sparse qcow2 refused, fixed, and left alone while a QEMU uses it.
- incoming_destination: its failures before anything starts (missing options, same host, unknown VM). Starting a
  destination QEMU needs a running source VM: that is tests/integration/test_roles.py, in the lab.
- the roles migrate and evacuate (roles/migrate/tasks/main.yml, roles/evacuate/tasks/record.yml): single tasks run on local hosts with made-up inputs (one
  host per case): the result document's downtime judgement, the adaptation options handed to walm_migrate, the
  evacuation's finish line.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from ansible_collections.walm.qemu.plugins.module_utils import images
from ansible_collections.walm.qemu.tests.unit.paths import COLLECTIONS, ROOT

# The tools of the Python that runs the tests (scripts/install.sh's venv, or any other with requirements/test.txt).
VENV_BIN = os.path.dirname(sys.executable)
PYTHON = os.path.join(VENV_BIN, "python")
ROLES = ("nfs_shared_storage", "incoming_destination", "migration_tls", "hypervisor", "migrate", "evacuate",
         "maintain")
RECAP_RE = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


# -- helpers ----------------------------------------------------------------------------------------------------

def write(path, text):
    with open(str(path), "w") as f:
        f.write(textwrap.dedent(text))
    return str(path)


def local_inventory(tmp_path, hosts, group_vars=None):
    """An inventory of local aliases: {name: {var: value}}; every host runs on this machine (connection local).
    group_vars: variables of every host, below the hosts' own (as a role's defaults are)."""
    inv = {"all": {"hosts": {}, "vars": dict(group_vars or {})}}
    for name, hostvars in hosts.items():
        inv["all"]["hosts"][name] = dict({"ansible_connection": "local", "ansible_python_interpreter": PYTHON},
                                         **hostvars)
    path = str(tmp_path / "inventory.yml")
    with open(path, "w") as f:
        yaml.safe_dump(inv, f)
    return path


def playbook(inventory, path, *args, argv_prefix=(), timeout=600):
    """Run ansible-playbook from the repository root (its ansible.cfg resolves walm.qemu.*)."""
    argv = list(argv_prefix) + [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, path] + list(args)
    # The collections of ansible.cfg (walm.qemu and ansible.posix from scripts/install.sh), whatever collections path
    # the caller's environment exports.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS)
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout, env=env, check=False)
    return proc.returncode, proc.stdout


def recap(output):
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
            for m in RECAP_RE.finditer(output)}


def load_yaml(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return yaml.safe_load(f)


# -- argument specs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_document_every_option_and_match_the_defaults(role):
    specs = load_yaml("roles", role, "meta", "argument_specs.yml")["argument_specs"]
    defaults = load_yaml("roles", role, "defaults", "main.yml")
    documented = set()
    for entry, spec in specs.items():
        assert spec.get("short_description"), "%s:%s has no short_description" % (role, entry)
        for name, opt in spec["options"].items():
            documented.add(name)
            assert name.startswith(role + "_"), "%s: option %s is not prefixed with the role name" % (role, name)
            desc = opt.get("description")
            assert desc and all(isinstance(d, str) for d in (desc if isinstance(desc, list) else [desc])), name
            assert opt.get("type"), "%s: option %s has no type" % (role, name)
            if opt.get("required"):
                assert name not in defaults, "%s: required option %s has a default" % (role, name)
                continue
            assert name in defaults, "%s: option %s is not in defaults/main.yml" % (role, name)
            if "default" in opt and "{{" not in str(defaults[name]):
                assert opt["default"] == defaults[name], "%s: default of %s" % (role, name)
            if "choices" in opt:
                # A default taken from a playbook variable is checked as documented (its fallback).
                value = opt.get("default") if "{{" in str(defaults[name]) else defaults[name]
                assert value in opt["choices"], "%s: default of %s is not a choice" % (role, name)
    assert set(defaults) <= documented, "undocumented defaults: %s" % (set(defaults) - documented)


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_the_role(role):
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-doc"), "-t", "role", "walm.qemu." + role], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120,
                          check=False)
    assert proc.returncode == 0 and "ERROR" not in proc.stdout, proc.stdout[-2000:]


def test_playbooks_using_the_roles_pass_syntax_check(tmp_path):
    inv = local_inventory(tmp_path, {"hv1": {}, "hv2": {}})
    book = write(tmp_path / "uses.yml", """\
        - name: Storage
          hosts: all
          gather_facts: false
          roles:
            - role: walm.qemu.nfs_shared_storage
              nfs_shared_storage_mode: userspace
          tasks:
            - name: Images
              ansible.builtin.include_role:
                name: walm.qemu.nfs_shared_storage
                tasks_from: check_images
              vars:
                nfs_shared_storage_images: ["{{ nfs_shared_storage_disk_url_base }}/vm1.qcow2"]
        - name: Destination
          hosts: hv2
          gather_facts: false
          roles:
            - role: walm.qemu.incoming_destination
              incoming_destination_vm: vm1
              incoming_destination_source: hv1
        """)
    for path in (book, os.path.join(ROOT, "playbooks", "migrate_vm.yml")):
        rc, out = playbook(inv, path, "--syntax-check")
        assert rc == 0, out


@pytest.mark.parametrize("role,extra,message", [
    ("nfs_shared_storage", {"nfs_shared_storage_mode": "nfs4"}, "nfs_shared_storage_mode"),
    ("nfs_shared_storage", {"nfs_shared_storage_ready_retries": "many"}, "nfs_shared_storage_ready_retries"),
    ("incoming_destination", {"incoming_destination_source": "hv1"}, "incoming_destination_vm"),
    ("incoming_destination", {"incoming_destination_vm": "vm1", "incoming_destination_source": "hv1",
                              "incoming_destination_method": "teleport"}, "incoming_destination_method"),
    ("migration_tls", {}, "migration_tls_ca_dir"),
    ("migration_tls", {"migration_tls_ca_dir": "/tmp/ca", "migration_tls_cert_days": "long"},
     "migration_tls_cert_days"),
])
def test_argument_validation_fails_before_any_task(tmp_path, role, extra, message):
    inv = local_inventory(tmp_path, {"hv1": {}, "hv2": {}})
    book = write(tmp_path / "bad.yml", """\
        - hosts: hv2
          gather_facts: false
          tasks:
            - ansible.builtin.include_role:
                name: walm.qemu.%s
              vars: %s
        """ % (role, json.dumps(extra)))
    rc, out = playbook(inv, book)
    assert rc != 0
    assert "Validating arguments against arg spec" in out and message in out, out[-3000:]
    assert "TASK [walm.qemu.%s : " % role not in out.split("Validating arguments")[1], "a task ran after validation"


# -- nfs_shared_storage, kernel mode: template and check mode -----------------------------------------------------

KERNEL_HOSTS = {
    # Loopback addresses only: nothing is contacted (connection local), but the exports must name them.
    "nfs-server": {"ansible_host": "127.0.0.1"},
    "hv-a": {"ansible_host": "127.0.0.2"},
    "hv-b": {"ansible_host": "127.0.0.3", "nfs_shared_storage_address": "127.0.0.4"},
}


def test_exports_template_lists_exactly_the_named_clients(tmp_path):
    inv = local_inventory(tmp_path, KERNEL_HOSTS)
    out_file = str(tmp_path / "walm.exports")
    role = os.path.join(ROOT, "roles", "nfs_shared_storage")
    book = write(tmp_path / "render.yml", """\
        - hosts: nfs-server
          gather_facts: false
          vars_files: [%(role)s/defaults/main.yml, %(role)s/vars/main.yml]
          tasks:
            - ansible.builtin.template:
                src: %(role)s/templates/walm.exports.j2
                dest: %(out)s
                mode: "0644"
              # Task vars: above the role files loaded as vars_files.
              vars:
                nfs_shared_storage_server: nfs-server
                # The server is listed too: it reaches the export locally, so it gets no entry.
                nfs_shared_storage_clients: [hv-a, nfs-server, hv-b]
                nfs_shared_storage_export_dir: /srv/walm
        """ % {"role": role, "out": out_file})
    rc, out = playbook(inv, book)
    assert rc == 0, out
    lines = [line for line in open(out_file).read().splitlines() if line and not line.startswith("#")]
    opts = "(rw,sync,no_subtree_check,no_root_squash)"
    # hv-b's storage address overrides its ansible_host; the order is the clients' order, so a rerun is identical.
    assert lines == ["/srv/walm 127.0.0.2%s 127.0.0.4%s" % (opts, opts)]


# -- lab: the NFS server's configuration (the lab itself is tests/integration/test_lab.py) -------------------------

@pytest.mark.parametrize("extra, nfs_address, clients", [
    # The role's defaults: the two hypervisors, never the 10.77.0.0/24 the guests take addresses in.
    ({}, "10.77.0.2", ["10.77.0.1", "10.77.0.2"]),
    # Other addresses and NFS host: the client list follows lab_hosts.
    ({"lab_hosts": [{"name": "hv-a", "address": "192.168.50.7", "mac": "02:00:00:00:00:07"},
                    {"name": "hv-b", "address": "192.168.50.9", "mac": "02:00:00:00:00:09"}],
      "lab_subnet": "192.168.50.0/24", "lab_nfs_host": "hv-a"},
     "192.168.50.7", ["192.168.50.7", "192.168.50.9"]),
])
def test_lab_nfs_is_limited_to_the_hypervisors(tmp_path, extra, nfs_address, clients):
    inv = local_inventory(tmp_path, {"localhost": {}})
    conf, listen = str(tmp_path / "ganesha.conf"), str(tmp_path / "rpcbind.json")
    role = os.path.join(ROOT, "roles", "lab")
    book = write(tmp_path / "render.yml", """\
        - hosts: localhost
          gather_facts: false
          vars_files: [%(role)s/defaults/main.yml, %(role)s/vars/main.yml]
          tasks:
            - ansible.builtin.template:
                src: %(role)s/templates/ganesha.conf.j2
                dest: %(conf)s
                mode: "0644"
              vars: %(extra)s
            - ansible.builtin.copy:
                content: "{{ __lab_rpcbind_listen | to_json }}"
                dest: %(listen)s
                mode: "0644"
              vars: %(extra)s
        """ % {"role": role, "conf": conf, "listen": listen, "extra": json.dumps(extra)})
    rc, out = playbook(inv, book)
    assert rc == 0, out
    text = open(conf).read()
    blocks = re.findall(r"CLIENT\s*\{\s*Clients\s*=\s*([^;]*);\s*Access_Type\s*=\s*RW;\s*\}", text)
    assert len(blocks) == 1 and text.count("CLIENT") == 1, text
    assert [c.strip() for c in blocks[0].split(",")] == clients
    assert "/" not in blocks[0] and "10.77.0.0" not in text
    # Nobody else gets access: the export itself grants none.
    assert re.search(r"EXPORT\s*\{[^}]*Access_Type = None;", text)
    assert "Bind_addr = %s;" % nfs_address in text
    with open(listen) as f:
        assert json.load(f) == ["%s:111" % nfs_address, "127.0.0.1:111", "[::1]:111"]


def _system_state():
    with open("/etc/fstab", "rb") as f:
        fstab = hashlib.sha256(f.read()).hexdigest()
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET,SOURCE,FSTYPE"], stdout=subprocess.PIPE,
                            universal_newlines=True, check=False).stdout
    pkgs = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", "nfs-kernel-server", "nfs-common",
                           "qemu-utils"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          universal_newlines=True, check=False).stdout
    exports = sorted(os.listdir("/etc/exports.d")) if os.path.isdir("/etc/exports.d") else None
    return fstab, mounts, pkgs, exports


def test_kernel_mode_in_check_mode_installs_writes_and_mounts_nothing(tmp_path):
    inv = local_inventory(tmp_path, KERNEL_HOSTS)
    base = tmp_path / "walm"
    book = write(tmp_path / "kernel.yml", """\
        - hosts: all
          gather_facts: false
          roles:
            - role: walm.qemu.nfs_shared_storage
              nfs_shared_storage_server: nfs-server
              nfs_shared_storage_clients: [hv-a, hv-b, nfs-server]
              nfs_shared_storage_export_dir: %(base)s/export
              nfs_shared_storage_exports_file: %(base)s/exports.d/walm.exports
              nfs_shared_storage_mount_point: %(base)s/images
          post_tasks:
            - name: Report
              ansible.builtin.debug:
                msg: "BASE {{ inventory_hostname }} {{ nfs_shared_storage_disk_url_base }}"
        """ % {"base": base})
    before = _system_state()
    rc, out = playbook(inv, book, "--check", "--diff")
    assert rc == 0, out[-4000:]
    assert _system_state() == before, "check mode changed the system"
    assert not base.exists(), "check mode created %s" % base
    totals = recap(out)
    assert all(h["failed"] == 0 for h in totals.values()) and totals["nfs-server"]["changed"] > 0, totals
    # What a real run would do: the export for the two remote clients, an NFS mount on each, a bind mount on the
    # server (it is a client too), and where the disks are on each host.
    assert "127.0.0.2(rw,sync,no_subtree_check,no_root_squash) 127.0.0.4(" in out
    assert re.search(r"TASK \[walm.qemu.nfs_shared_storage : Mount the export\][^\n]*\n(?:.*\n)*?changed: \[hv-a\]",
                     out)
    assert re.search(r"Show the export at the clients' path on the server\][^\n]*\n(?:.*\n)*?changed: \[nfs-server\]",
                     out)
    assert "BASE hv-a %s/images" % base in out and "BASE nfs-server %s/images" % base in out
    assert "RUNNING HANDLER [walm.qemu.nfs_shared_storage : Reload the NFS exports]" in out
    if not _kernel_has("nfsd"):
        assert "a real run fails here" in out  # this machine: warned, not failed, in check mode


def _kernel_has(fs):
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fs for line in f if line.strip())


# -- nfs_shared_storage, userspace mode and check_images, over a real NFS server -----------------------------------


def userspace_play(tmp_path, nfs, images=None, fix=False, url=None, extra_tasks=""):
    """Two hypervisors (local aliases) in the NFS server's network namespace: the role, then check_images."""
    inv = local_inventory(tmp_path, {"hv1": {}, "hv2": {}})
    vars_ = {"nfs_shared_storage_mode": "userspace", "nfs_shared_storage_server": "hv2",
             "nfs_shared_storage_url": url or nfs.url, "nfs_shared_storage_install_packages": False,
             "nfs_shared_storage_ready_retries": 2, "nfs_shared_storage_ready_delay_s": 0.2}
    book = write(tmp_path / "userspace.yml", """\
        - hosts: all
          gather_facts: false
          tasks:
            - ansible.builtin.include_role:
                name: walm.qemu.nfs_shared_storage
              vars: %(vars)s
            - ansible.builtin.include_role:
                name: walm.qemu.nfs_shared_storage
                tasks_from: check_images
              vars:
                nfs_shared_storage_images: %(images)s
                nfs_shared_storage_fix_sparse: %(fix)s
            - name: Report
              ansible.builtin.debug:
                msg: "REPORT {{ {'base': nfs_shared_storage_disk_url_base, 'images': nfs_shared_storage_image_report,
                                 'fixed': nfs_shared_storage_fixed_images} | to_json }}"
        """ % {"vars": json.dumps(vars_), "images": json.dumps(images or []), "fix": json.dumps(fix)})
    rc, out = playbook(inv, book, argv_prefix=nfs.netns_argv([]))
    reports = [json.loads(m) for m in re.findall(r'"msg": "REPORT (.*)"', out.replace('\\"', '"'))]
    return rc, out, reports


def make_sparse(nfs, name):
    url = "%s/%s" % (nfs.url, name)
    nfs.run(["qemu-img", "create", "-q", "-f", "qcow2", url, "32M"])
    nfs.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 2M 64k", url])
    return url


def allocation(nfs, name):
    return images.qcow2_allocation(os.path.join(nfs.export, name))


def test_userspace_mode_checks_the_export_and_publishes_the_url(tmp_path, nfs):
    rc, out, reports = userspace_play(tmp_path, nfs)
    assert rc == 0, out[-4000:]
    assert len(reports) == 2 and all(r["base"] == nfs.url for r in reports)
    assert "Check that the export is reachable from each client" in out


def test_userspace_mode_fails_when_the_export_is_not_there(tmp_path, nfs):
    rc, out, _reports = userspace_play(tmp_path, nfs, url="nfs://127.0.0.1/not-exported")
    assert rc != 0
    assert "Check that the export is reachable from each client" in out and "FAILED - RETRYING" in out


def test_check_images_refuses_a_sparse_qcow2_and_passes_a_preallocated_one(tmp_path, nfs):
    sparse = make_sparse(nfs, "r-sparse.qcow2")
    good = nfs.url + "/r-good.qcow2"
    nfs.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", good, "32M"])
    rc, out, _reports = userspace_play(tmp_path, nfs, images=[good, {"file": sparse, "format": "qcow2"}])
    assert rc != 0
    assert "Sparse qcow2 images opened through QEMU's nfs:// driver: %s." % sparse in out.replace("\n", " ")
    rc, out, reports = userspace_play(tmp_path, nfs, images=[good])
    assert rc == 0, out[-4000:]
    assert reports[0]["images"][0]["image"] == good and not reports[0]["images"][0]["affected"]


def test_check_images_fixes_a_sparse_qcow2_once_and_keeps_its_data(tmp_path, nfs):
    sparse = make_sparse(nfs, "f-sparse.qcow2")
    rc, out, reports = userspace_play(tmp_path, nfs, images=[sparse], fix=True)
    assert rc == 0, out[-4000:]
    assert all(r["fixed"] == [sparse] for r in reports) and reports[0]["images"][0]["affected"]
    # Converted once (run_once), on one host.
    assert len(re.findall(r"changed: \[hv[12]\] => \(item=%s\)" % re.escape(sparse), out)) == 1, out[-4000:]
    allocated, total = allocation(nfs, "f-sparse.qcow2")
    assert allocated == total
    read = nfs.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 2M 64k", sparse])
    assert "Pattern verification failed" not in read.stdout
    assert sorted(f for f in os.listdir(nfs.export) if f.startswith("f-sparse")) == ["f-sparse.qcow2"]
    rc, out, reports = userspace_play(tmp_path, nfs, images=[sparse], fix=True)
    assert rc == 0 and reports[0]["fixed"] == [] and recap(out)["hv1"]["changed"] == 0, out[-4000:]


def test_check_images_never_fixes_an_image_a_qemu_uses(tmp_path, nfs):
    sparse = make_sparse(nfs, "b-sparse.qcow2")
    holder = subprocess.Popen(["qemu-holder", "-c", "sleep 120; true", "qemu-holder", "-drive",
                               "file=%s,format=qcow2,if=none" % sparse], executable="/bin/sh")
    try:
        rc, out, _reports = userspace_play(tmp_path, nfs, images=[sparse], fix=True)
    finally:
        holder.kill()
        holder.wait()
    assert rc != 0
    assert "that QEMU uses on at least one host: %s." % sparse in out.replace("\n", " ")
    assert allocation(nfs, "b-sparse.qcow2")[0] < allocation(nfs, "b-sparse.qcow2")[1]


# -- incoming_destination: what fails before anything starts ----------------------------------------------------

def run_incoming_role(tmp_path, hostvars, host="hv2", vm="vm1"):
    """Run walm.qemu.incoming_destination on `host` for `vm` (source hv1) with a local inventory of hostvars."""
    inv = local_inventory(tmp_path, hostvars)
    book = write(tmp_path / "incoming.yml", """\
        - hosts: %s
          gather_facts: false
          roles:
            - role: walm.qemu.incoming_destination
              incoming_destination_vm: %s
              incoming_destination_source: hv1
        """ % (host, vm))
    return playbook(inv, book)


def test_incoming_destination_refuses_a_vm_the_source_does_not_know(tmp_path):
    src_dir, dst_dir = tmp_path / "src", tmp_path / "dst"
    src_dir.mkdir()
    rc, out = run_incoming_role(tmp_path, {"hv1": {"walm_state_dir": str(src_dir), "ansible_host": "127.0.0.1"},
                                           "hv2": {"walm_state_dir": str(dst_dir), "ansible_host": "127.0.0.1"}},
                                vm="ghost")
    assert rc != 0
    assert "VM 'ghost' is not known on this host" in out and str(src_dir) in out, out[-3000:]
    assert not dst_dir.exists(), "the destination was touched"


def test_incoming_destination_refuses_the_source_as_destination(tmp_path):
    rc, out = run_incoming_role(tmp_path, {"hv1": {"walm_state_dir": str(tmp_path)}}, host="hv1")
    assert rc != 0 and "run the role for a destination host other than the source" in out.replace("\n", " ")


# -- migration_tls: the cluster's CA and each hypervisor's certificates ------------------------------------------

def tls_play(tmp_path, *args):
    """The role for two hypervisors (local aliases), the CA on the controller; returns the hosts, rc and output."""
    hosts = {"hv1": {"walm_tls_dir": str(tmp_path / "hv1" / "tls"), "walm_migration_address": "127.0.0.11"},
             "hv2": {"walm_tls_dir": str(tmp_path / "hv2" / "tls"), "ansible_host": "127.0.0.12"}}
    inv = local_inventory(tmp_path, hosts)
    book = write(tmp_path / "tls.yml", """\
        - hosts: all
          gather_facts: false
          roles:
            - role: walm.qemu.migration_tls
              migration_tls_ca_dir: %s
        """ % (tmp_path / "ca"))
    rc, out = playbook(inv, book, *args)
    return hosts, rc, out


def mode(path):
    return oct(os.stat(str(path)).st_mode & 0o777)


def openssl(*args):
    return subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=True).stdout


def test_migration_tls_makes_the_ca_once_and_each_hosts_layout(tmp_path):
    hosts, rc, out = tls_play(tmp_path, "--check")
    assert rc == 0, out[-4000:]
    assert all(h["changed"] > 0 and h["failed"] == 0 for h in recap(out).values()), out[-4000:]
    assert not (tmp_path / "ca").exists() and not (tmp_path / "hv1").exists(), "check mode wrote files"

    hosts, rc, out = tls_play(tmp_path)
    assert rc == 0, out[-4000:]
    ca = tmp_path / "ca"
    assert mode(ca) == "0o700" and mode(ca / "ca-key.pem") == "0o600"
    for host, address in (("hv1", "127.0.0.11"), ("hv2", "127.0.0.12")):
        tls_dir = hosts[host]["walm_tls_dir"]
        assert mode(tls_dir) == "0o700"
        assert sorted(os.listdir(tls_dir)) == ["ca-cert.pem", "client-cert.pem", "client-key.pem",
                                               "server-cert.pem", "server-key.pem"]
        for name in os.listdir(tls_dir):
            assert mode(os.path.join(tls_dir, name)) == ("0o600" if name.endswith("-key.pem") else "0o644"), name
        cert = os.path.join(tls_dir, "server-cert.pem")
        assert "OK" in openssl("verify", "-CAfile", str(ca / "ca-cert.pem"), cert)
        text = openssl("x509", "-noout", "-subject", "-ext", "subjectAltName", "-nameopt", "RFC2253", "-in", cert)
        assert "subject=CN=%s" % host in text and "DNS:%s, IP Address:%s" % (host, address) in text, text

    _hosts, rc, out = tls_play(tmp_path)
    assert rc == 0 and all(h["changed"] == 0 for h in recap(out).values()), out[-4000:]
    _hosts, rc, out = tls_play(tmp_path, "--check")
    assert rc == 0 and all(h["changed"] == 0 for h in recap(out).values()), out[-4000:]


def test_migration_tls_issues_again_only_what_changed(tmp_path):
    hosts, rc, out = tls_play(tmp_path)
    assert rc == 0, out[-4000:]
    ca_before = (tmp_path / "ca" / "ca-cert.pem").read_text()
    hv1_key = open(os.path.join(hosts["hv1"]["walm_tls_dir"], "server-key.pem")).read()
    hv2_key = open(os.path.join(hosts["hv2"]["walm_tls_dir"], "server-key.pem")).read()
    os.unlink(str(tmp_path / "ca" / "hosts" / "hv2" / "client-key.pem"))  # a file lost on the CA host
    _hosts, rc, out = tls_play(tmp_path)
    assert rc == 0, out[-4000:]
    assert recap(out)["hv1"]["changed"] == 0 and recap(out)["hv2"]["changed"] > 0, out[-4000:]
    assert (tmp_path / "ca" / "ca-cert.pem").read_text() == ca_before
    assert open(os.path.join(hosts["hv1"]["walm_tls_dir"], "server-key.pem")).read() == hv1_key
    assert open(os.path.join(hosts["hv2"]["walm_tls_dir"], "server-key.pem")).read() != hv2_key


def test_migration_tls_needs_walm_tls_dir(tmp_path):
    inv = local_inventory(tmp_path, {"hv1": {}})
    book = write(tmp_path / "tls.yml", """\
        - hosts: all
          gather_facts: false
          roles:
            - role: walm.qemu.migration_tls
              migration_tls_ca_dir: %s
        """ % (tmp_path / "ca"))
    rc, out = playbook(inv, book)
    assert rc != 0 and "Set walm_tls_dir in the inventory for hv1" in out.replace("\n", " "), out[-3000:]
    assert not (tmp_path / "ca").exists()


def test_incoming_destination_refuses_tls_on_one_side_only(tmp_path):
    dst_dir = tmp_path / "dst"
    rc, out = run_incoming_role(tmp_path, {"hv1": {"walm_state_dir": str(tmp_path / "src")},
                                           "hv2": {"walm_state_dir": str(dst_dir),
                                                   "walm_tls_dir": str(tmp_path / "tls")}})
    assert rc != 0
    assert "walm_tls_dir is set for hv2 but not for hv1" in out.replace("\n", " "), out[-3000:]
    assert not dst_dir.exists(), "the destination was touched"


# -- the roles migrate and evacuate: the result document and the operator's line, from made-up inputs -------

def task_named(path, suffix):
    """The task of a task file whose name ends with suffix (looked for in blocks and rescues too)."""
    def walk(tasks):
        for t in tasks or []:
            if str(t.get("name", "")).endswith(suffix):
                return t
            found = walk(t.get("block")) or walk(t.get("rescue"))
            if found:
                return found
        return None
    task = walk(load_yaml(*path))
    assert task, "no task named ...%s in %s" % (suffix, "/".join(path))
    return dict(task)


def run_task_per_host(tmp_path, task, cases, outputs, role=None):
    """Run one task on one local host per case (its variables as host variables, over the defaults of `role`, the
    role the task is from); returns each host's outputs."""
    inv = local_inventory(tmp_path, cases, load_yaml("roles", role, "defaults", "main.yml") if role else None)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    save = {"name": "Save", "ansible.builtin.copy": {
        "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (k, v) for k, v in outputs.items()),
        "dest": str(out_dir) + "/{{ inventory_hostname }}.json", "mode": "0600"}}
    book = str(tmp_path / "book.yml")
    with open(book, "w") as f:
        yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [task, save]}], f)
    rc, out = playbook(inv, book)
    assert rc == 0, out[-4000:]
    return dict((name, json.load(open(str(out_dir / (name + ".json"))))) for name in cases)


def _migration(**over):
    m = {"status": "completed", "method": "precopy", "total_time_ms": 4000, "downtime_ms": 200,
         "transferred_bytes": 300 * 1048576, "passes": 4, "qemu_version": "QEMU emulator version 8.2.2",
         "source_stop_time": 1000.0, "downtime_limit_ms": 300, "adapt": True, "adaptations": []}
    m.update(over)
    return m


ADAPTED_DOWNTIME = {"t_ms": 2400, "pass": 1, "action": "downtime", "reason": "pass 1 shrank the remainder only to 95 %",
                    "measured": {}, "predicted": {}}
ADAPTED_POSTCOPY = dict(ADAPTED_DOWNTIME, action="postcopy", t_ms=3100)


def _one(migration, resumed_at=None, action="migrate", adaptation=None):
    return {"_migrate_run": migration, "_migrate_where": {"action": action},
            "_migrate_dst_vm": {"vm": {"status": "running", "resumed_at": resumed_at}},
            "_migrate_adaptation": adaptation or {}, "migrate_vm": "vm1", "migrate_destination": "hv2",
            "migrate_downtime_limit_ms": 300}


def test_migrate_one_judges_the_downtime_the_guest_saw_against_the_limit_in_effect(tmp_path):
    task = task_named(("roles", "migrate", "tasks", "main.yml"), "Migrated: {{ migrate_vm }}")
    got = run_task_per_host(tmp_path, task, {
        # The guest-visible downtime (the destination's RESUME less the source's STOP) decides.
        "within": _one(_migration(), resumed_at=1000.25),
        "over": _one(_migration(), resumed_at=1000.35),
        # Unknown guest-visible downtime: QEMU's, against the limit the adaptation raised.
        "raised": _one(_migration(downtime_ms=450, downtime_limit_ms=600, adaptations=[ADAPTED_DOWNTIME])),
        # An earlier run completed it: nothing measured, nothing judged.
        "finish": _one({"skipped": True, "changed": False}, action="finish"),
        # Recovered post-copy: the resume reports only itself; what the adaptation did before is kept.
        "recovered": _one(_migration(downtime_ms=30, adapt=False, downtime_limit_ms=300), resumed_at=1000.48,
                          adaptation={"adapt": True, "adaptations": [ADAPTED_POSTCOPY], "downtime_limit_ms": 500}),
    }, {"result": "migrate_result", "message": "migrate_message"}, role="migrate")

    def judged(name):
        r = got[name]["result"]
        return r["status"], r["guest_visible_downtime_ms"], r["downtime_limit_ms"], r["downtime_within_limit"]
    assert judged("within") == ("completed", 250.0, 300, True)
    assert judged("over") == ("completed", 350.0, 300, False)
    assert "over the 300 ms limit" in got["over"]["message"] and "limit" not in got["within"]["message"]
    assert judged("raised") == ("completed", None, 600, True)
    assert "adapted: downtime at 2.40 s (pass 1: pass 1 shrank the remainder only to 95 %)" \
        in " ".join(got["raised"]["message"].split())
    assert judged("finish") == ("completed", None, 300, None)
    assert judged("recovered") == ("completed", 480.0, 500, True)
    assert got["recovered"]["result"]["adaptations"] == [ADAPTED_POSTCOPY]
    assert got["recovered"]["result"]["adapt"] is True


def _evac(result, message="", position=1):
    vm = {"name": "vm1", "destination": "hv2", "position": position, "predicted_total_time_ms": 5000,
          "predicted_downtime_ms": 20}
    return {"_evacuate_lines": [{"vm": vm, "result": result, "message": message}],
            "_evacuate_plan": {"plan": {"order": [{}]}}, "_evacuate_started_at": 0}


def test_evacuate_one_line_shows_the_adaptations_and_the_downtime_against_its_limit(tmp_path):
    task = task_named(("roles", "evacuate", "tasks", "record.yml"), "Finished")
    task["register"] = "_line"
    aborted = ("Migration of vm1 from hv1 to hv2 failed: pre-copy would not converge: pass 1 shrank the remainder "
               "only to 98 %; cancelled. The VM keeps running on hv1.")
    got = run_task_per_host(tmp_path, task, {
        "switched": _evac(_migration(method="precopy", downtime_ms=40, guest_visible_downtime_ms=55.0,
                                     downtime_within_limit=True, adaptations=[ADAPTED_POSTCOPY])),
        "over": _evac(_migration(downtime_ms=330, downtime_within_limit=False)),
        "aborted": _evac(dict(_migration(status="aborted", adaptations=[dict(ADAPTED_POSTCOPY, action="abort")]),
                              whereabouts="rollback"), message=aborted),
    }, {"line": "_line.results[0].msg"})
    line = dict((k, " ".join(v["line"].split())) for k, v in got.items())
    assert "downtime 40 ms (predicted 20; guest-visible 55.0 ms) within the 300 ms limit" in line["switched"]
    assert "adapted: postcopy at 3.10 s (pass 1: pass 1 shrank the remainder only to 95 %)" in line["switched"]
    assert "downtime 330 ms (predicted 20) over the 300 ms limit" in line["over"] and "adapted" not in line["over"]
    assert line["aborted"] == aborted  # the error says it already


def test_migrate_one_hands_the_adaptation_options_to_walm_migrate_or_leaves_them_to_it(tmp_path):
    task = task_named(("roles", "migrate", "tasks", "main.yml"), "Migrate from the source")
    args = task["walm.qemu.walm_migrate"]
    # The module's arguments as a fact: a value that renders to omit drops out, as it does for the module.
    probe = {"name": "Arguments", "ansible.builtin.set_fact": {"_args": dict(
        (k, args[k]) for k in ("allow_postcopy", "adapt", "expect", "adaptation_actions", "max_downtime_limit_ms"))}}
    base = {"migrate_vm": "vm1", "_migrate_where": {"action": "migrate"}}
    expect = {"method": "precopy", "converges": True, "total_time_ms": 850}
    got = run_task_per_host(tmp_path, probe, {
        # migrate_vm.yml passes what it was given, null for the rest.
        "unset": dict(base, migrate_adapt=None, migrate_expect=None, migrate_adaptation_actions=None,
                      migrate_max_downtime_limit_ms=None),
        "given": dict(base, migrate_allow_postcopy=False, migrate_adapt=False, migrate_expect=expect,
                      migrate_adaptation_actions=["downtime", "abort"], migrate_max_downtime_limit_ms=4000),
        # The evacuation: a VM without a decision has no expectation.
        "undecided": dict(base, migrate_adapt=True, migrate_expect=None),
    }, {"args": "_args"}, role="migrate")
    assert got["unset"]["args"] == {"allow_postcopy": True}
    assert got["given"]["args"] == {"allow_postcopy": False, "adapt": False, "expect": expect,
                                    "adaptation_actions": ["downtime", "abort"], "max_downtime_limit_ms": 4000}
    assert got["undecided"]["args"] == {"allow_postcopy": True, "adapt": True}


# -- the operator's playbooks: no lab host as default -------------------------------------------------------------

@pytest.mark.parametrize("book, extra, message", [
    ("evacuate_host.yml", [], "got walm_source=unset, walm_destinations=unset"),
    ("evacuate_host.yml", ["-e", "walm_source=walm-src", "-e", '{"walm_destinations": ["hv2"]}'],
     "got walm_source=walm-src, which is not in the inventory"),
    ("migrate_vm.yml", ["-e", "walm_vm_name=vm1"], "walm_source=unset, walm_destination=unset"),
    ("migrate_vm.yml", ["-e", "walm_vm_name=vm1", "-e", "walm_source=hv1", "-e", "walm_destination=walm-dst"],
     "walm_destination=walm-dst; each host must be in the inventory"),
])
def test_playbooks_refuse_to_run_without_their_hosts(tmp_path, book, extra, message):
    """Run against an inventory without the lab's hosts, a playbook names the variables to set and fails (no
    default to a lab host that would match nothing and exit 0); no task runs on a hypervisor."""
    inv = local_inventory(tmp_path, {"hv1": {}, "hv2": {}})
    rc, out = playbook(inv, os.path.join("playbooks", book), *extra)
    assert rc != 0, out[-3000:]
    assert message in " ".join(out.split()), out[-3000:]
    assert "Nothing was touched." in out
    assert set(recap(out)) == {"localhost"}, out[-2000:]  # only the check ran
