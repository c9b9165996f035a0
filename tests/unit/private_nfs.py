"""A throwaway userspace NFS server for tests that need `nfs://` without the lab.

rpcbind and nfs-ganesha (FSAL VFS) run in their own network, mount and PID namespaces made with `unshare` (no
`ip netns` name, so nothing appears in /run/netns and the lab's tools never see it). The server listens on the
namespace's loopback only, so no traffic leaves it; commands reach it through `nsenter --net`. Stopping the
namespace's first process (ganesha, PID 1 in there) makes the kernel end everything else in it.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

GANESHA = "/usr/bin/ganesha.nfsd"
RPCBIND = "/usr/sbin/rpcbind"

CONF = """\
# Like the lab's export (roles/lab/templates/ganesha.conf.j2), on loopback. No Bind_addr: ganesha resolves it
# with AI_ADDRCONFIG, which finds nothing in a namespace that has only lo.
NFS_CORE_PARAM {{
    Protocols = 3, 4;
    Enable_UDP = false;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Mount_Path_Pseudo = true;
}}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {dir}/recovery; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = {dir}/export;
    Pseudo = /walm;
    Protocols = 3, 4;
    Transports = TCP;
    Access_Type = None;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL {{ Name = VFS; }}
    CLIENT {{ Clients = 127.0.0.1; Access_Type = RW; }}
}}
"""

INNER = (
    "set -e; ip link set lo up; mount -t tmpfs -o mode=0755,size=16m walm-test-run /run; "
    "{rpcbind} -f & i=0; until rpcinfo -p 127.0.0.1 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 100 ]; sleep 0.1; "
    "done; exec {ganesha} -F -N NIV_EVENT -f {dir}/ganesha.conf -L {dir}/ganesha.log -p /run/ganesha.pid"
)


def available():
    """Why a private NFS server cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (namespaces)"
    for tool in (GANESHA, RPCBIND, shutil.which("unshare"), shutil.which("nsenter"), shutil.which("nfs-ls"),
                 shutil.which("qemu-img")):
        if not tool or not os.path.exists(tool):
            return "missing %s (scripts/install.sh installs it)" % (tool or "a tool")
    return None


class PrivateNfs(object):
    url = "nfs://127.0.0.1/walm"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="walm-test-nfs-")
        self.export = os.path.join(self.dir, "export")
        self.proc = None
        self.init_pid = None
        self._out = None

    def start(self, timeout_s=20):
        os.makedirs(self.export)
        os.makedirs(os.path.join(self.dir, "recovery"))
        with open(os.path.join(self.dir, "ganesha.conf"), "w") as f:
            f.write(CONF.format(dir=self.dir))
        inner = INNER.format(rpcbind=RPCBIND, ganesha=GANESHA, dir=self.dir)
        self._out = open(os.path.join(self.dir, "out"), "w")
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child=SIGTERM", "--mount-proc",
             "sh", "-c", inner],
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("private NFS server exited: %s" % self.log())
            self.init_pid = self.init_pid or _child_of(self.proc.pid)
            if self.init_pid and self.run(["nfs-ls", self.url + "/"], check=False).returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("private NFS server not ready after %d s: %s" % (timeout_s, self.log()))

    def netns_argv(self, argv):
        """argv run inside the server's network namespace (where nfs://127.0.0.1 is the server)."""
        return ["nsenter", "--net=/proc/%d/ns/net" % self.init_pid, "--"] + list(argv)

    def run(self, argv, check=True, timeout=120, **kwargs):
        proc = subprocess.run(self.netns_argv(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=timeout, check=False, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError("%s failed (exit %d): %s" % (" ".join(argv), proc.returncode, proc.stdout))
        return proc

    def log(self):
        out = []
        for name in ("out", "ganesha.log"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                out.append(open(p, errors="replace").read()[-3000:])
        return "\n".join(out)

    def stop(self, timeout_s=15):
        """Stop the server by its PIDs (SIGTERM, then SIGKILL) and remove its files."""
        if self.proc and self.proc.poll() is None and self.init_pid:
            # To ganesha itself: unshare --fork blocks SIGTERM while it waits for its child, so a SIGTERM sent to
            # unshare reaches nobody (stop() used to wait out the whole timeout, 15 s per test module).
            _signal(self.init_pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _signal(self.init_pid, signal.SIGKILL)  # PID 1 of the namespace: takes rpcbind along
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # unshare dies, and --kill-child=SIGTERM ends ganesha if it was never found
            self.proc.wait(5)
        if self._out:
            self._out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _child_of(pid):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (IOError, OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            return int(entry)
    return None
