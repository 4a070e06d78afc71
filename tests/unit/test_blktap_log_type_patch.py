"""Patch 0006 against the real BlktapController.py of Xen 4.1.6.1 and 4.4.4.

xend rebuilds a tap2 disk's uname as ``tap:STACK`` on a restore and on an
incoming migration, and ``Blktap2Controller.createDevice`` sends a stack
whose top driver is not in ``blktap2_disk_types`` to blktap1.  Stock, the
list lacks ``log``.  The release's own file is unpacked from
``../shared/xen-src`` (skipped when absent), our whole series applied, and
the list read back with Python 2.7's parser (the file's syntax).
"""
from __future__ import absolute_import, division, print_function

import os
import subprocess
import tarfile

import pytest

from tests.unit.test_remus_fifo_patch import ARCHIVES, PY27, TOP, pytestmark  # noqa: F401

FILE = "tools/python/xen/xend/server/BlktapController.py"
READ = r"""
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
for node in tree.body:
    if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ['blktap2_disk_types']:
        print ' '.join(ast.literal_eval(node.value))
"""


def series_of(archive):
    version = os.path.basename(archive)[len("xen-"):-len("-xend.tar.gz")]
    name = "xen-" + ".".join(version.split(".")[:2])
    with open(os.path.join(TOP, "patches", name, "series")) as f:
        return name, [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


@pytest.mark.parametrize("archive", ARCHIVES, ids=[os.path.basename(a) for a in ARCHIVES])
def test_the_patched_controller_sends_a_log_stack_to_blktap2(tmp_path, archive):
    top = str(tmp_path)
    with tarfile.open(archive) as tf:
        root = tf.getnames()[0].split("/")[0]
        members = []
        for m in tf.getmembers():
            rel = m.name[len(root) + 1:]
            if rel.startswith("tools/python/"):
                m.name = rel
                members.append(m)
        tf.extractall(top, members=members)
    path = os.path.join(top, FILE)
    before = subprocess.check_output([PY27, "-c", READ, path]).decode().split()
    assert "remus" in before and "log" not in before
    name, patches = series_of(archive)
    for patch in patches:
        subprocess.check_call(["patch", "-s", "-p1", "-F0", "-d", top, "-i",
                               os.path.join(TOP, "patches", name, patch)])
    after = subprocess.check_output([PY27, "-c", READ, path]).decode().split()
    assert after == before + ["log"]
