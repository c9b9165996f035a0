"""Where the unit tests find the collection's files, whatever their own depth under tests/unit.

ROOT is the collection's root (the directory holding galaxy.yml): the checkout under plain pytest, the copy at
.../ansible_collections/walm/qemu under ansible-test. COLLECTIONS is the directory holding ansible_collections/walm/qemu
for a child `ansible` or `ansible-doc`: the collection's own parent tree when it sits in one (ansible-test, an installed
collection), else the .collections tree scripts/install.sh makes in a checkout (as tests/conftest.py chooses).

Imported as ansible_collections.walm.qemu.tests.unit.paths, by plain pytest and ansible-test alike.
"""

import os


def _root():
    here = os.path.dirname(os.path.realpath(__file__))
    while not os.path.isfile(os.path.join(here, "galaxy.yml")):
        parent = os.path.dirname(here)
        if parent == here:
            raise RuntimeError("no galaxy.yml above %s" % os.path.realpath(__file__))
        here = parent
    return here


ROOT = _root()
_PARTS = ROOT.split(os.sep)
if _PARTS[-3:] == ["ansible_collections", "walm", "qemu"]:
    COLLECTIONS = os.sep.join(_PARTS[:-3])
else:
    COLLECTIONS = os.path.join(ROOT, ".collections")
