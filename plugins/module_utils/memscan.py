# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""How much of a VM's RAM is non-zero, estimated by sampling the QEMU process's guest memory from the host.

Pre-copy's first pass and post-copy's stream send every non-zero page in full and each zero page as a small
header, so the amount of non-zero guest memory, not the VM's size or the QEMU process's RSS, sets how long one
pass takes. A guest page is zero if the host never backed it (pagemap: neither present nor swapped) or if its
content is all zero bytes (a page the guest zeroed, e.g. freed memory with init_on_free, or an allocation with
init_on_alloc). QEMU's own zero-page check (buffer_is_zero) skips the same pages.

The RAM blocks and their host addresses come from QEMU (HMP `info ramblock`, through QMP's
human-monitor-command). Recent QEMUs print each block's host address (HVA column, e.g. 10.0); for older ones
without it, the block is the one read-write mapping of exactly its size in /proc/PID/maps, and a block
without exactly one such mapping is not sampled (the estimate is then refused, never guessed). For each read-write
block of at least MIN_BLOCK_MIB, `samples` pages are drawn at random positions spread evenly over the guest's
RAM (stratified: one per stratum); each is looked up in /proc/PID/pagemap and, when backed, read from
/proc/PID/mem. Reading as root faults nothing in: pagemap says which pages are backed, and only those are read.
"""

from __future__ import absolute_import, division, print_function

import math
import os
import random
import re
import struct

from .procfs import parse_maps

MIB = 1024 * 1024
MIN_BLOCK_MIB = 16
DEFAULT_SAMPLES = 8192
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_SWAPPED = 1 << 62

_HEX = r"0x[0-9a-fA-F]+"
_ROW = re.compile(r"^\s*(?P<name>\S.*?)\s+(?P<psize>\d+ \w?i?B)\s+(?P<offset>%s)\s+(?P<used>%s)\s+(?P<total>%s)"
                  r"(?:\s+(?P<hva>%s))?(?:\s+(?P<ro>ro|rw))?\s*$" % (_HEX, _HEX, _HEX, _HEX))
_PSIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}


class MemScanError(Exception):
    """Why the non-zero memory cannot be estimated; the probe reports it and goes on."""


def parse_ramblocks(text):
    """The rows of `info ramblock`: dicts with name, page_size, used, hva (None without the column), readonly."""
    blocks = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        number, unit = m.group("psize").split()
        blocks.append({
            "name": m.group("name"),
            "page_size": int(number) * _PSIZE_UNITS.get(unit, 1),
            "used": int(m.group("used"), 16),
            "hva": int(m.group("hva"), 16) if m.group("hva") else None,
            "readonly": m.group("ro") == "ro",
        })
    return blocks


def guest_ram_blocks(blocks):
    """The blocks that hold guest RAM: read-write, at least MIN_BLOCK_MIB (ROMs and device buffers are small)."""
    return [b for b in blocks if not b["readonly"] and b["used"] >= MIN_BLOCK_MIB * MIB]


def _locate(pid, blocks, proc):
    """Blocks without a host address (QEMU's `info ramblock` without the HVA column): the one read-write mapping
    of exactly the block's size."""
    try:
        with open("%s/%d/maps" % (proc, pid)) as f:
            maps = parse_maps(f.read())
    except (IOError, OSError) as exc:
        raise MemScanError("cannot read %s/%d/maps: %s" % (proc, pid, exc))
    out = []
    for b in blocks:
        if b["hva"] is not None:
            out.append(b)
            continue
        found = [start for start, size in maps if size == b["used"]]
        if len(found) != 1:
            raise MemScanError("QEMU's `info ramblock` gives no host address and %d mappings have the size of "
                               "RAM block %s (%d MiB)" % (len(found), b["name"], b["used"] // MIB))
        out.append(dict(b, hva=found[0]))
    return out


def _sample_positions(total_pages, samples, rng):
    """`samples` distinct page numbers in [0, total_pages), one drawn at random from each of as many strata."""
    if total_pages <= samples:
        return list(range(total_pages))
    stride = total_pages / float(samples)
    return [min(total_pages - 1, int(i * stride + rng.random() * stride)) for i in range(samples)]


def _is_zero(data):
    return not data.strip(b"\0")


def scan(pid, blocks, samples=DEFAULT_SAMPLES, proc="/proc", seed=None):
    """Estimate the non-zero guest memory of QEMU process `pid` from its guest RAM `blocks`.

    Returns a dict: nonzero_mib, ram_mib, samples, nonzero_rel_error_pct (the 95 % half-width of the
    estimate relative to it, for simple random sampling), blocks (names). Raises MemScanError when it cannot."""
    blocks = guest_ram_blocks(blocks)
    if not blocks:
        raise MemScanError("QEMU listed no read-write RAM block of at least %d MiB" % MIN_BLOCK_MIB)
    if any(b["hva"] is None for b in blocks):
        blocks = _locate(pid, blocks, proc)
    page = 4096
    layout = []  # (first page number over all blocks, block, pages)
    total_pages = 0
    for b in blocks:
        pages = b["used"] // page
        layout.append((total_pages, b, pages))
        total_pages += pages
    rng = random.Random(seed)
    positions = _sample_positions(total_pages, int(samples), rng)
    nonzero = 0
    try:
        pagemap = os.open("%s/%d/pagemap" % (proc, pid), os.O_RDONLY)
    except OSError as exc:
        raise MemScanError("cannot open %s/%d/pagemap: %s" % (proc, pid, exc.strerror or exc))
    try:
        try:
            mem = os.open("%s/%d/mem" % (proc, pid), os.O_RDONLY)
        except OSError as exc:
            raise MemScanError("cannot open %s/%d/mem: %s (root with CAP_SYS_PTRACE is needed)"
                               % (proc, pid, exc.strerror or exc))
        try:
            index = 0
            for pos in positions:
                while index + 1 < len(layout) and pos >= layout[index + 1][0]:
                    index += 1
                first, block, _pages = layout[index]
                addr = block["hva"] + (pos - first) * page
                entry = os.pread(pagemap, 8, (addr // page) * 8)
                if len(entry) != 8:
                    raise MemScanError("short read from pagemap at 0x%x" % addr)
                flags = struct.unpack("<Q", entry)[0]
                if not flags & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED):
                    continue
                data = os.pread(mem, page, addr)
                if len(data) != page:
                    raise MemScanError("short read from guest memory at 0x%x" % addr)
                if not _is_zero(data):
                    nonzero += 1
        except OSError as exc:
            raise MemScanError("reading guest memory of process %d failed: %s" % (pid, exc.strerror or exc))
        finally:
            os.close(mem)
    finally:
        os.close(pagemap)
    n = len(positions)
    ram_mib = total_pages * page / float(MIB)
    share = nonzero / float(n)
    rel = None
    if nonzero:
        # 95 % confidence half-width of a sampled proportion, relative to the estimate.
        rel = 100.0 * 1.96 * math.sqrt(share * (1 - share) / n) / share
    return {
        "nonzero_mib": round(share * ram_mib, 1),
        "ram_mib": round(ram_mib, 1),
        "samples": n,
        "nonzero_rel_error_pct": None if rel is None else round(rel, 1),
        "blocks": [b["name"] for b in blocks],
    }
