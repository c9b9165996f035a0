# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Rename and remove files behind an `nfs://SERVER/EXPORT/FILE` URL, without a kernel NFS mount.

Hosts that reach shared storage only through QEMU's userspace `nfs://` driver (the lab; any host without kernel
NFS) have no mount point to `mv` in. `qemu-img` creates and converts images over `nfs://` but cannot rename or
delete them, and libnfs-utils ships only nfs-ls, nfs-cat and nfs-cp. QEMU's driver is built on libnfs, which is
therefore installed wherever `nfs://` disks work: this module calls its synchronous API through ctypes. An NFS
RENAME within one directory is atomic on the server, which is what replacing an image in place needs.
"""

from __future__ import absolute_import, division, print_function

import ctypes
import ctypes.util
import errno
import os

from .errors import WalmError

# Sonames of libnfs in Debian 12 (13), Debian 13 (14) and newer releases (16), tried after the linker's own answer.
SONAMES = ("libnfs.so.16", "libnfs.so.14", "libnfs.so.13", "libnfs.so.11", "libnfs.so")


class _NfsUrl(ctypes.Structure):
    # The first three members of libnfs's `struct nfs_url`, stable since libnfs 1.x; later members are not read.
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p), ("file", ctypes.c_char_p)]


_LIB = None


def _lib():
    global _LIB
    if _LIB is not None:
        return _LIB
    names = []
    found = ctypes.util.find_library("nfs")
    if found:
        names.append(found)
    names.extend(SONAMES)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise WalmError("libnfs is not installed on this host; it comes with QEMU's nfs:// driver "
                        "(Debian: qemu-block-extra)")
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    lib.nfs_init_context.restype = vp
    lib.nfs_init_context.argtypes = []
    lib.nfs_destroy_context.restype = None
    lib.nfs_destroy_context.argtypes = [vp]
    lib.nfs_get_error.restype = cp
    lib.nfs_get_error.argtypes = [vp]
    lib.nfs_parse_url_full.restype = ctypes.POINTER(_NfsUrl)
    lib.nfs_parse_url_full.argtypes = [vp, cp]
    lib.nfs_destroy_url.restype = None
    lib.nfs_destroy_url.argtypes = [ctypes.POINTER(_NfsUrl)]
    lib.nfs_mount.restype = ctypes.c_int
    lib.nfs_mount.argtypes = [vp, cp, cp]
    lib.nfs_umount.restype = ctypes.c_int
    lib.nfs_umount.argtypes = [vp]
    lib.nfs_rename.restype = ctypes.c_int
    lib.nfs_rename.argtypes = [vp, cp, cp]
    lib.nfs_unlink.restype = ctypes.c_int
    lib.nfs_unlink.argtypes = [vp, cp]
    _LIB = lib
    return lib


def is_nfs_url(file):
    return str(file).startswith("nfs://")


def split_query(url):
    """('nfs://srv/export/file', '?version=3') from a URL with libnfs options; the query may be empty."""
    base, sep, query = url.partition("?")
    return base, sep + query


class NfsDir(object):
    """The directory of one `nfs://` URL, mounted through libnfs for the lifetime of a `with` block.

    Paths given to the methods are file names in that directory, as libnfs splits the URL (the same way QEMU's
    nfs driver mounts the directory of an image).
    """

    def __init__(self, url, timeout_s=60):
        self.url = url
        self.timeout_s = timeout_s
        self._ctx = None
        self.server = self.path = self.file = None

    def __enter__(self):
        lib = _lib()
        self._ctx = lib.nfs_init_context()
        if not self._ctx:
            raise WalmError("libnfs: cannot create a context")
        try:
            parsed = lib.nfs_parse_url_full(self._ctx, self.url.encode())
            if not parsed:
                raise WalmError("cannot parse NFS URL %s: %s" % (self.url, self._error()))
            try:
                self.server = parsed.contents.server.decode()
                self.path = parsed.contents.path.decode()
                self.file = parsed.contents.file.decode()
            finally:
                lib.nfs_destroy_url(parsed)
            if lib.nfs_mount(self._ctx, self.server.encode(), self.path.encode()) != 0:
                raise WalmError("cannot mount %s:%s over NFS (from %s): %s"
                                % (self.server, self.path, self.url, self._error()))
        except Exception:
            lib.nfs_destroy_context(self._ctx)
            self._ctx = None
            raise
        return self

    def __exit__(self, *exc):
        if self._ctx:
            lib = _lib()
            lib.nfs_umount(self._ctx)
            lib.nfs_destroy_context(self._ctx)
            self._ctx = None
        return False

    def _error(self):
        msg = _lib().nfs_get_error(self._ctx) if self._ctx else None
        return msg.decode(errors="replace") if msg else "unknown error"

    def rename(self, old, new):
        rc = _lib().nfs_rename(self._ctx, old.encode(), new.encode())
        if rc != 0:
            raise WalmError("NFS rename %s -> %s on %s:%s failed: %s"
                            % (old, new, self.server, self.path, self._error()))

    def unlink(self, name, missing_ok=False):
        """Remove a file; returns False if it did not exist and missing_ok."""
        rc = _lib().nfs_unlink(self._ctx, name.encode())
        if rc == 0:
            return True
        if missing_ok and rc == -errno.ENOENT:
            return False
        raise WalmError("NFS remove %s on %s:%s failed: %s" % (name, self.server, self.path, self._error()))


def _same_directory(a, b):
    """Both URLs' file names, if they name files in the same NFS directory with the same options."""
    (base_a, q_a), (base_b, q_b) = split_query(a), split_query(b)
    dir_a, name_a = base_a.rsplit("/", 1)
    dir_b, name_b = base_b.rsplit("/", 1)
    if dir_a != dir_b or q_a != q_b or not name_a or not name_b:
        raise WalmError("%s and %s are not files in the same NFS directory" % (a, b))
    return name_a, name_b


def rename(old, new):
    """Atomically replace `new` by `old`: both local paths, or both `nfs://` URLs in one directory."""
    if not is_nfs_url(old) and not is_nfs_url(new):
        os.rename(old, new)
        return
    _same_directory(old, new)
    with NfsDir(old) as d:
        # libnfs names the file relative to the mounted directory, with a leading slash.
        new_file = "/" + split_query(new)[0].rsplit("/", 1)[1]
        d.rename(d.file, new_file)


def remove(path, missing_ok=True):
    """Remove a local file or the file behind an `nfs://` URL; returns whether something was removed."""
    if not is_nfs_url(path):
        try:
            os.unlink(path)
            return True
        except OSError as exc:
            if missing_ok and exc.errno == errno.ENOENT:
                return False
            raise WalmError("cannot remove %s: %s" % (path, exc))
    with NfsDir(path) as d:
        return d.unlink(d.file, missing_ok=missing_ok)
