"""memscan: non-zero guest memory sampled from the host, checked on memory whose content the test sets.

The scanner reads this test process's own pages through /proc/PID/pagemap and /proc/PID/mem, exactly as it reads
a QEMU's guest RAM; test_probe.py checks it on a real QEMU through walm_probe.
"""

import ctypes
import mmap
import os

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import memscan

MIB = 1024 * 1024
PAGE = 4096

# `info ramblock` as QEMU 10.0.2 prints it for a 512 MiB pc guest (lab), and the same without the HVA/RO columns.
RAMBLOCK_10 = """\
              Block Name    PSize              Offset               Used              Total                HVA  RO
                  pc.ram    4 KiB  0x0000000000000000 0x0000000020000000 0x0000000020000000 0x00007fa4b7e00000  rw
    /rom@etc/acpi/tables    4 KiB  0x00000000200c0000 0x0000000000020000 0x0000000000200000 0x00007fa4b6400000  ro
                 pc.bios    4 KiB  0x0000000020000000 0x0000000000040000 0x0000000000040000 0x00007fa524400000  ro
0000:00:02.0/virtio-net-pci.rom    4 KiB  0x0000000020080000 0x0000000000040000 0x0000000000040000 0x00007fa4b6800000  ro
"""
RAMBLOCK_OLD = """\
              Block Name    PSize              Offset               Used              Total
                  pc.ram    4 KiB  0x0000000000000000 0x0000000020000000 0x0000000020000000
                 pc.bios    4 KiB  0x0000000020000000 0x0000000000040000 0x0000000000040000
"""


def test_parse_ramblocks_with_host_addresses():
    blocks = memscan.parse_ramblocks(RAMBLOCK_10)
    assert [b["name"] for b in blocks] == ["pc.ram", "/rom@etc/acpi/tables", "pc.bios",
                                           "0000:00:02.0/virtio-net-pci.rom"]
    ram = blocks[0]
    assert (ram["used"], ram["hva"], ram["readonly"], ram["page_size"]) == (512 * MIB, 0x7fa4b7e00000, False, 4096)
    assert [b["name"] for b in memscan.guest_ram_blocks(blocks)] == ["pc.ram"]  # ROMs and small blocks out


def test_parse_ramblocks_without_host_addresses():
    blocks = memscan.parse_ramblocks(RAMBLOCK_OLD)
    assert [(b["name"], b["used"], b["hva"]) for b in blocks] == [("pc.ram", 512 * MIB, None),
                                                                  ("pc.bios", 256 * 1024, None)]


@pytest.fixture
def region():
    """64 MiB of this process's memory: a quarter written with data, an eighth written with zeros, the rest
    never touched."""
    size = 64 * MIB
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    pages = size // PAGE
    for i in range(pages):
        if i % 8 in (0, 1):
            m[i * PAGE:i * PAGE + 8] = b"WALMdata"  # non-zero
        elif i % 8 == 2:
            m[i * PAGE:(i + 1) * PAGE] = bytes(PAGE)  # backed, but zero
    address = ctypes.addressof(ctypes.c_char.from_buffer(m))
    yield {"name": "test.ram", "page_size": PAGE, "used": size, "hva": address, "readonly": False}
    m.close()  # pragma: no cover - the buffer export above may keep it open until collection


def test_scan_counts_only_non_zero_pages(region):
    r = memscan.scan(os.getpid(), [region], samples=4096, seed=1)
    # One page in four holds data: 16 of the 64 MiB; stratified samples over the 8-page pattern land close.
    assert r["ram_mib"] == 64.0 and r["samples"] == 4096
    assert 14.0 <= r["nonzero_mib"] <= 18.0, r
    assert r["nonzero_rel_error_pct"] < 10
    assert r["blocks"] == ["test.ram"]


def test_scan_every_page_when_samples_exceed_pages(region):
    small = dict(region, used=16 * MIB)  # 4096 pages, 1024 of them non-zero: every page is read
    r = memscan.scan(os.getpid(), [small], samples=8192)
    assert r["samples"] == 4096 and r["nonzero_mib"] == 4.0


def test_scan_finds_the_block_by_its_size_without_hva(region):
    # An odd size no other mapping of this process has: 64 MiB + 3 pages.
    size = 64 * MIB + 3 * PAGE
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_DONTFORK)  # as QEMU does with guest RAM: its own mapping, never merged with a neighbour
    m[0:4] = b"WALM"
    try:
        r = memscan.scan(os.getpid(), [{"name": "odd", "page_size": PAGE, "used": size, "hva": None,
                                        "readonly": False}], samples=size // PAGE)
        assert r["nonzero_mib"] == 0.0 and r["samples"] == size // PAGE  # one page of 16387: rounds to 0.0
        assert r["nonzero_rel_error_pct"] is not None  # but it was found (a zero count has no error figure)
    finally:
        m.close()


def test_refusals_are_reasons_not_guesses(region, tmp_path):
    with pytest.raises(memscan.MemScanError, match="no read-write RAM block"):
        memscan.scan(os.getpid(), [dict(region, readonly=True)])
    with pytest.raises(memscan.MemScanError, match="mappings have the size"):
        memscan.scan(os.getpid(), [dict(region, used=(64 * MIB + 5 * PAGE), hva=None)])
    with pytest.raises(memscan.MemScanError, match="pagemap"):
        memscan.scan(999999999, [region])
