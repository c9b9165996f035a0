"""Make the checkout importable as ansible_collections.walm.qemu (scripts/install.sh creates the link)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".collections")
if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "walm", "qemu")):
    raise RuntimeError("run scripts/install.sh first: it links this checkout under .collections/")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
