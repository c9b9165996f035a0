"""The roles on the real lab, over SSH: walm.qemu.nfs_shared_storage in userspace mode (the lab's nfs-ganesha on
walm-dst, QEMU's nfs:// driver on both hosts) and walm.qemu.incoming_destination.

- Both hosts reach the export with nfs-ls, and learn it as nfs_shared_storage_disk_url_base; a second run changes nothing.
- A sparse qcow2 made on the export from walm-src (qemu-img over nfs://) is refused; with the fix it is replaced by a
  preallocated copy whose data reads back intact, once; an image a running QEMU uses is never replaced.
- incoming_destination starts the destination QEMU on walm-dst from the record of a VM running on walm-src: check
  mode starts nothing; the real run listens and publishes URI and capabilities; a second run reuses it; a request
  for other capabilities is refused while it waits.
The migration itself through the role is playbooks/migrate_vm.yml, exercised by test_migrate.py.
"""

import json
import os
import re
import signal
import subprocess
import tempfile
import textwrap
import time

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.qmp import QMP
from lab import HOSTS
from walmlab import INVENTORY, LAB_DIR, ROOT, VENV_BIN, pid_running, playbook, run, start_vm, state_dir, stop_vm

pytestmark = pytest.mark.lab

NFS_URL = "nfs://10.77.0.2/walm"
EXPORT_DIR = os.path.join(LAB_DIR, "export")
RECAP_RE = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def lab_playbook(text, extra_vars=None, check_mode=False, timeout=600):
    """Run a playbook given as text against the lab inventory; returns (rc, output)."""
    with tempfile.TemporaryDirectory(prefix="walm-it-roles-") as tmp:
        path = os.path.join(tmp, "play.yml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, path]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        if check_mode:
            argv.append("--check")
        # ansible.cfg's collections (walm.qemu, ansible.posix), whatever the caller's environment exports.
        proc = run(argv, timeout=timeout, check=False,
                   env={"ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".collections")})
    return proc.returncode, proc.stdout


def recap(output):
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
            for m in RECAP_RE.finditer(output)}


def in_src(*argv, check=True, timeout=300):
    """A command in walm-src's network namespace, where nfs://10.77.0.2 is the lab's NFS server."""
    return run(["ip", "netns", "exec", "walm-src"] + list(argv), timeout=timeout, check=check)


def qcow2_allocation(url):
    proc = in_src("qemu-img", "check", "--output=json", "-U", "-f", "qcow2", url, check=False)
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    return report.get("allocated-clusters", 0), report["total-clusters"]


# -- nfs_shared_storage, userspace mode ---------------------------------------------------------------------------

STORAGE_PLAY = """\
- name: Shared storage
  hosts: walm_lab
  gather_facts: false
  tasks:
    - name: Storage
      ansible.builtin.include_role:
        name: walm.qemu.nfs_shared_storage
      vars:
        nfs_shared_storage_mode: userspace
        nfs_shared_storage_server: walm-dst
    - name: Images
      ansible.builtin.include_role:
        name: walm.qemu.nfs_shared_storage
        tasks_from: check_images
      vars:
        nfs_shared_storage_images: "{{ images | default([]) }}"
        nfs_shared_storage_fix_sparse: "{{ fix | default(false) }}"
    - name: Report
      ansible.builtin.debug:
        msg: "REPORT {{ {'host': inventory_hostname, 'base': nfs_shared_storage_disk_url_base,
                         'images': nfs_shared_storage_image_report,
                         'fixed': nfs_shared_storage_fixed_images} | to_json }}"
"""


def storage(images=None, fix=False, check_mode=False):
    rc, out = lab_playbook(STORAGE_PLAY, {"images": images or [], "fix": fix}, check_mode=check_mode)
    reports = [json.loads(m) for m in re.findall(r'"msg": "REPORT (.*)"', out.replace('\\"', '"'))]
    return rc, out, {r["host"]: r for r in reports}


@pytest.fixture
def image(lab, request):
    """A fresh image name on the export; the files are removed afterwards (the export is a local directory)."""
    name = "it-roles-%s.qcow2" % request.node.name.replace("test_", "")[:24].replace("_", "-")
    yield name, "%s/%s" % (NFS_URL, name)
    for f in (name, name + ".walm-prealloc"):
        path = os.path.join(EXPORT_DIR, f)
        if os.path.exists(path):
            os.unlink(path)


def make_sparse(url):
    # As an operator would: qemu-img without preallocation, over nfs:// from a hypervisor.
    in_src("qemu-img", "create", "-f", "qcow2", url, "64M")
    in_src("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 8M 256k", "-c", "write -P 0xa5 40M 64k", url)
    allocated, total = qcow2_allocation(url)
    assert allocated < total
    return allocated, total


def test_export_reachable_from_every_host_and_idempotent(lab):
    rc, out, reports = storage()
    assert rc == 0, out[-4000:]
    assert set(reports) == set(HOSTS)
    assert all(r["base"] == NFS_URL for r in reports.values())
    rc, out, _report = storage()
    assert rc == 0 and all(h["changed"] == 0 for h in recap(out).values()), out[-4000:]


def test_sparse_image_refused_then_fixed_with_data_intact(image):
    name, url = image
    make_sparse(url)
    rc, out, _report = storage([url])
    assert rc != 0
    assert ("Sparse qcow2 images opened through QEMU's nfs:// driver: %s." % url) in out.replace("\n", " ")

    # Check mode says what it would convert and converts nothing.
    rc, out, reports = storage([url], fix=True, check_mode=True)
    assert rc == 0, out[-4000:]
    assert reports["walm-src"]["fixed"] == [url]
    assert qcow2_allocation(url)[0] < qcow2_allocation(url)[1]

    rc, out, reports = storage([url], fix=True)
    assert rc == 0, out[-4000:]
    assert reports["walm-src"]["fixed"] == [url] and reports["walm-dst"]["fixed"] == [url]
    assert reports["walm-src"]["images"][0]["affected"]
    allocated, total = qcow2_allocation(url)
    assert allocated == total
    read = in_src("qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 8M 256k", "-c", "read -P 0xa5 40M 64k",
                  "-c", "read -P 0 0 8M", url)
    assert "Pattern verification failed" not in read.stdout, read.stdout
    check = in_src("qemu-img", "check", "-f", "qcow2", url)
    assert "No errors were found" in check.stdout
    assert not os.path.exists(os.path.join(EXPORT_DIR, name + ".walm-prealloc"))

    # Now it passes, and a second fix changes nothing.
    rc, out, reports = storage([url], fix=True)
    assert rc == 0 and reports["walm-src"]["fixed"] == [], out[-4000:]
    assert not reports["walm-dst"]["images"][0]["affected"]


def test_image_in_use_by_qemu_is_never_replaced(image):
    name, url = image
    make_sparse(url)
    before = os.stat(os.path.join(EXPORT_DIR, name)).st_ino
    # A real QEMU on walm-src with the sparse image open through nfs:// (firmware only: no guest is needed, the
    # command line and the open image are what count). walm_vm would refuse to start a VM on a sparse nfs:// image.
    qemu = subprocess.Popen(["ip", "netns", "exec", "walm-src", "qemu-system-x86_64", "-accel", "tcg", "-m", "64",
                             "-nodefaults", "-display", "none", "-S",
                             "-drive", "file=%s,format=qcow2,if=none,id=d0,cache=none" % url,
                             "-device", "virtio-blk-pci,drive=d0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        assert qemu.poll() is None, "QEMU did not stay up"
        rc, out, _report = storage([url], fix=True)
    finally:
        qemu.send_signal(signal.SIGTERM)
        try:
            qemu.wait(15)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait(5)
    assert rc != 0
    assert ("that QEMU uses on at least one host: %s." % url) in out.replace("\n", " ")
    assert os.stat(os.path.join(EXPORT_DIR, name)).st_ino == before, "the image was replaced"
    assert qcow2_allocation(url)[0] < qcow2_allocation(url)[1]


# -- incoming_destination -----------------------------------------------------------------------------------------

DESTINATION_PLAY = """\
- name: Destination
  hosts: walm-dst
  gather_facts: false
  roles:
    - role: walm.qemu.incoming_destination
      incoming_destination_vm: "{{ vm }}"
      incoming_destination_source: walm-src
      incoming_destination_method: "{{ method | default('precopy') }}"
  post_tasks:
    - name: Report
      ansible.builtin.debug:
        msg: "REPORT {{ {'uri': incoming_destination_uri, 'capabilities': incoming_destination_capabilities,
                         'started': incoming_destination_started} | to_json }}"
"""


def destination(vm, method="precopy", check_mode=False):
    rc, out = lab_playbook(DESTINATION_PLAY, {"vm": vm, "method": method}, check_mode=check_mode)
    reports = [json.loads(m) for m in re.findall(r'"msg": "REPORT (.*)"', out.replace('\\"', '"'))]
    return rc, out, (reports[0] if reports else None)


VM_PREFIX = "it-id-"


def dst_status(name):
    with QMP(name, os.path.join(state_dir("walm-dst"), name + ".qmp"), 10) as q:
        return q.execute("query-status")["status"]


def test_incoming_destination_starts_the_twin_and_reuses_it(vm):
    start_vm(vm, "idle")

    rc, out, report = destination(vm, check_mode=True)
    assert rc == 0, out[-4000:]
    assert report["uri"] is None and report["started"] is True
    assert not pid_running("walm-dst", vm), "check mode started a QEMU"

    rc, out, report = destination(vm)
    assert rc == 0, out[-4000:]
    assert re.match(r"^tcp:10\.77\.0\.2:\d+$", report["uri"]), report
    assert report["started"] is True and report["capabilities"].get("events") is not None
    assert pid_running("walm-dst", vm) and dst_status(vm) == "inmigrate"
    record = json.load(open(os.path.join(state_dir("walm-dst"), vm + ".json")))
    source = json.load(open(os.path.join(state_dir("walm-src"), vm + ".json")))
    # The source's definition, only host paths differ.
    assert record["definition"] == source["definition"] and record["role"] == "incoming"

    rc, out, again = destination(vm)
    assert rc == 0 and again["uri"] == report["uri"] and again["started"] is False, out[-4000:]
    assert recap(out)["walm-dst"]["changed"] == 0

    # Waiting for a pre-copy, it must not be silently reused for a post-copy.
    rc, out, _report = destination(vm, method="postcopy")
    assert rc != 0 and "already waits here for a migration" in out
    assert dst_status(vm) == "inmigrate"


def test_incoming_destination_refuses_a_vm_not_running_on_the_source(lab):
    rc, out, _report = destination("it-id-no-such-vm")
    assert rc != 0 and "VM 'it-id-no-such-vm' is not known on this host" in out
    assert not pid_running("walm-dst", "it-id-no-such-vm")


# -- walm_vm through lab_vm: a second VM on a host ----------------------------------------------------------------

def test_a_second_vm_on_a_taken_tap_and_mac_is_refused_before_anything_is_made(vm):
    start_vm(vm, "idle")  # lab_vm's defaults: tap0, 52:54:00:77:00:64
    other = vm[:20] + "-b"
    try:
        proc = playbook("vm_start.yml", {"walm_host": "walm-src", "lab_vm_name": other, "lab_vm_workload": "idle"},
                        check=False)
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert "tap tap0 is held open by VM '%s' (QEMU pid %d)" % (vm, pid_running("walm-src", vm)) in proc.stdout
        assert "MAC 52:54:00:77:00:64 is used by VM '%s'" % vm in proc.stdout
        assert "definition.nics[].tap and .mac" in proc.stdout
        assert not os.path.exists(os.path.join(EXPORT_DIR, other + ".qcow2")), "its disk was made"
        assert not pid_running("walm-src", other) and pid_running("walm-src", vm)
        # With a tap and MAC of its own, the same VM starts beside the first.
        start_vm(other, "idle", tap="tap1", mac="52:54:00:77:00:65", ip="10.77.0.101/24")
        assert pid_running("walm-src", other) and pid_running("walm-src", vm)
    finally:
        stop_vm(other)
        disk = os.path.join(EXPORT_DIR, other + ".qcow2")
        if os.path.exists(disk):
            os.unlink(disk)


HYPERVISOR_PLAY = """
- hosts: walm_lab
  gather_facts: false
  # The lab's hosts share one filesystem, so one venv: one host at a time makes it, the others find it made.
  serial: 1
  roles:
    - role: walm.qemu.hypervisor
      vars:
        hypervisor_venv: "{{ venv }}"
        hypervisor_pip_extra_args: "--no-index --find-links {{ wheels }}"
        hypervisor_state_dir: "{{ walm_state_dir }}"
        hypervisor_state_dir_mode: "0755"
        hypervisor_bridge: "{{ walm_bridge }}"
  post_tasks:
    - name: The modules now run with the venv's Python, which has qemu.qmp
      ansible.builtin.command: "{{ ansible_python_interpreter }} -c 'import qemu.qmp, sys; print(sys.prefix)'"
      register: prefix
      changed_when: false
      check_mode: false
      when: not ansible_check_mode
    - name: Say where
      ansible.builtin.debug:
        msg: "PREFIX {{ inventory_hostname }} {{ prefix.stdout | default('none') }}"
"""


def test_hypervisor_role_provisions_the_lab_hosts_and_then_changes_nothing(lab):
    """walm.qemu.hypervisor on the lab's hosts with a venv of its own: check mode makes nothing, the first run
    makes the venv and sets the interpreter to it, the second run changes nothing. The lab's hosts cannot reach
    PyPI (their namespaces have no route out), so qemu.qmp comes from a wheelhouse the controller fills, as it
    would for hypervisors without internet access."""
    venv = os.path.join(LAB_DIR, "hypervisor-test-venv")
    wheels = os.path.join(LAB_DIR, "hypervisor-test-wheels")
    subprocess.run(["rm", "-rf", venv, wheels], check=True)
    run([os.path.join(VENV_BIN, "pip"), "download", "-q", "-d", wheels, "qemu.qmp>=0.0.3"], timeout=300)
    extra = {"venv": venv, "wheels": wheels}
    try:
        rc, out = lab_playbook(HYPERVISOR_PLAY, extra, check_mode=True)
        assert rc == 0, out[-4000:]
        assert not os.path.exists(venv), "check mode made the venv"
        assert all(r["failed"] == 0 for r in recap(out).values()), out[-3000:]

        rc, out = lab_playbook(HYPERVISOR_PLAY, extra, timeout=900)
        assert rc == 0, out[-4000:]
        first = recap(out)
        assert set(first) == set(HOSTS) and all(r["failed"] == 0 for r in first.values()), out[-3000:]
        # One shared filesystem: whichever host came first made the venv.
        assert sum(r["changed"] for r in first.values()) >= 1, first
        for host in HOSTS:
            assert "PREFIX %s %s" % (host, venv) in out, out[-3000:]

        rc, out = lab_playbook(HYPERVISOR_PLAY, extra)
        assert rc == 0, out[-4000:]
        second = recap(out)
        assert all(r["changed"] == 0 and r["failed"] == 0 for r in second.values()), (second, out[-3000:])
    finally:
        subprocess.run(["rm", "-rf", venv, wheels], check=False)
