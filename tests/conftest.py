"""Make the collection importable as ansible_collections.walm.qemu: from a checkout that lives at
.../ansible_collections/walm/qemu (as ansible-test and an installed collection have it), or from a plain clone through
the .collections link scripts/install.sh makes."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_parts = ROOT.split(os.sep)
if _parts[-3:-2] == ["ansible_collections"] and _parts[-2:] == ["walm", "qemu"]:
    COLLECTIONS = os.sep.join(_parts[:-3])
else:
    COLLECTIONS = os.path.join(ROOT, ".collections")
if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "walm", "qemu")):
    raise RuntimeError("run scripts/install.sh first: it links this checkout under .collections/")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
