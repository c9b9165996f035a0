"""Tap names on a destination: the source's where this host has it free, else one of the host's own."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils import nicnames
from ansible_collections.walm.qemu.plugins.module_utils.vmdef import fingerprint, normalize


def nic(tap, mac="52:54:00:77:00:64", bridge="walm-br0"):
    return {"tap": tap, "mac": mac, "bridge": bridge}


OWN = list(nicnames.candidates("vm1", 0))[0]  # what vm1's first NIC is called where its tap is taken
OWN1 = list(nicnames.candidates("vm1", 1))[0]


@pytest.mark.parametrize("nics, held, existing, taps, renamed", [
    ([nic("tap0")], {}, set(), ["tap0"], []),
    # A tap that exists but that nobody holds (a leftover) is taken over, as when a VM starts under its own name.
    ([nic("tap0")], {}, {"tap0"}, ["tap0"], []),
    ([nic("tap0")], {"tap0": ["VM 'demo-idle' (QEMU pid 7)"]}, {"tap0"}, [OWN], [("tap0", OWN)]),
    # Only the held NIC changes; the second keeps its name.
    ([nic("tap0"), nic("tap1", "52:54:00:77:00:65")], {"tap0": ["x"]}, {"tap0"}, [OWN, "tap1"], [("tap0", OWN)]),
    ([nic("tap0"), nic("tap1", "52:54:00:77:00:65")], {"tap0": ["x"], "tap1": ["y"]}, set(), [OWN, OWN1],
     [("tap0", OWN), ("tap1", OWN1)]),
    # Our own name is taken too (held, or an interface of that name exists): the next candidate.
    ([nic("tap0")], {"tap0": ["x"], OWN: ["y"]}, set(), [OWN + "x1"], [("tap0", OWN + "x1")]),
    ([nic("tap0")], {"tap0": ["x"]}, {OWN, OWN + "x1"}, [OWN + "x2"], [("tap0", OWN + "x2")]),
    # Held by nobody but an empty list: free.
    ([nic("tap0")], {"tap0": []}, set(), ["tap0"], []),
])
def test_host_taps(nics, held, existing, taps, renamed):
    before = [dict(n) for n in nics]
    out, renames = nicnames.host_taps("vm1", nics, held, lambda name: name in existing)
    assert [n["tap"] for n in out] == taps
    assert [(old, new) for old, new, _holders in renames] == renamed
    # MAC and bridge are the guest's: kept.
    assert [(n["mac"], n["bridge"]) for n in out] == [(n["mac"], n["bridge"]) for n in nics]
    assert nics == before  # the caller's definition is not changed
    assert all(len(n["tap"]) <= 15 for n in out)


def test_renames_say_who_holds_the_tap():
    _nics, renames = nicnames.host_taps("vm1", [nic("tap0")], {"tap0": ["VM 'demo-idle' (QEMU pid 7)"]},
                                        lambda name: False)
    assert renames == [("tap0", OWN, ["VM 'demo-idle' (QEMU pid 7)"])]


def test_names_are_the_vms_own_and_stable():
    assert OWN == list(nicnames.candidates("vm1", 0))[0]
    assert OWN != list(nicnames.candidates("vm2", 0))[0]
    assert all(len(name) <= 15 for i in range(100) for name in nicnames.candidates("a" * 40, i))


def test_no_free_name_is_an_error_not_a_clash():
    with pytest.raises(ValueError, match="no free tap name for NIC 0 of VM 'vm1'"):
        nicnames.host_taps("vm1", [nic("tap0")], {"tap0": ["x"]}, lambda name: True)


def test_fingerprint_leaves_out_the_tap_name_only():
    base = {"name": "vm1", "memory_mib": 512, "nics": [nic("tap0")]}
    a = normalize(dict(base))
    b = normalize(dict(base, nics=[nic(OWN)]))
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(normalize(dict(base, nics=[nic("tap0", mac="52:54:00:77:00:99")])))
    assert fingerprint(a) != fingerprint(normalize(dict(base, nics=[nic("tap0", bridge="other")])))
    assert a["nics"][0]["tap"] == "tap0"  # fingerprinting does not change the definition
