"""Usage: listen_fds.py ADDR:PORT... -- COMMAND [ARG...]

Opens a TCP listening socket and a UDP socket on each ADDR:PORT (IPv6 as [ADDR]:PORT), hands them to COMMAND the
way systemd socket activation does (file descriptors from 3 on, LISTEN_FDS, LISTEN_PID) and execs COMMAND in
place, so it keeps this process's PID (the lab's pid files rely on that).

rpcbind is started through it: its -h option restricts only its UDP sockets, and without activation it listens on
TCP 0.0.0.0:111 and [::]:111. Given sockets, rpcbind serves on them instead of binding its own.

An IPv6 address the host does not have (IPv6 disabled) is skipped with a note; any other failure stops here.
Runs on the lab machine's Python 3.
"""

import errno
import fcntl
import os
import socket
import sys

FIRST_FD = 3  # SD_LISTEN_FDS_START


def parse(spec):
    """'10.77.0.2:111' -> (AF_INET, '10.77.0.2', 111); '[::1]:111' -> (AF_INET6, '::1', 111)."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError("%r is not ADDR:PORT or [ADDR]:PORT" % spec)
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host, int(port)


def open_sockets(specs):
    socks = []
    for spec in specs:
        family, host, port = parse(spec)
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(family, kind)
            try:
                if family == socket.AF_INET6:
                    # rpcbind refuses a dual-stack IPv6 socket; an IPv6 socket here serves IPv6 only.
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if kind == socket.SOCK_STREAM:
                    # A restarted daemon rebinds while old connections sit in TIME_WAIT.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
                if kind == socket.SOCK_STREAM:
                    s.listen(socket.SOMAXCONN)
            except OSError as exc:
                s.close()
                if family == socket.AF_INET6 and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    sys.stderr.write("listen_fds: skipping %s (%s): no IPv6 here\n" % (spec, exc.strerror))
                    break
                raise SystemExit("listen_fds: cannot listen on %s (%s): %s" % (
                    spec, "tcp" if kind == socket.SOCK_STREAM else "udp", exc.strerror))
            socks.append(s)
    return socks


def main(argv):
    if "--" not in argv:
        raise SystemExit(__doc__)
    cut = argv.index("--")
    specs, command = argv[:cut], argv[cut + 1:]
    if not specs or not command:
        raise SystemExit(__doc__)
    try:
        socks = open_sockets(specs)
    except ValueError as exc:
        raise SystemExit("listen_fds: %s" % exc)
    # Move the sockets to 3, 4, ... in order. Their current numbers may be among the targets, so first park every
    # socket on a free descriptor above the target range, then place it.
    parked = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, FIRST_FD + len(socks)) for s in socks]
    for s in socks:
        s.close()
    for i, fd in enumerate(parked):
        os.dup2(fd, FIRST_FD + i)  # dup2's copy is inheritable
        os.close(fd)
    env = dict(os.environ, LISTEN_FDS=str(len(socks)), LISTEN_PID=str(os.getpid()))
    env.pop("LISTEN_FDNAMES", None)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
