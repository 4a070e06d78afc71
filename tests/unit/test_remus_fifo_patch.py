"""Patch 0005 against the real ``xen.remus.device`` of Xen 4.1.6.1 and 4.4.4.

The remus script finds a Remus disk's control FIFOs from the disk's uname
(``ReplicatedDisk.__init__``).  Stock, it matches ``tap:.*(remus.*)\\|``
greedily, so a stack with the blktap2 ``log`` driver under remus
(``remus:H:P|log:IMG|aio:IMG``, the layer xen-remus-ext reads as its dirty
tracker on xend) names a FIFO that no tapdisk opens.  Here the release's own
device.py is unpacked from ``../shared/xen-src`` (skipped when absent),
once as shipped and once with our patch, and run under Python 2.7 (its
syntax) against FIFOs in a temporary directory.  Only the netlink and
qdisc modules (network buffering, not used by disks) are stubbed.
"""
from __future__ import absolute_import, division, print_function

import glob
import json
import os
import subprocess
import tarfile

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCHIVES = sorted(glob.glob(os.path.join(TOP, "..", "shared", "xen-src", "xen-*-xend.tar.gz")))
DEVICE = "tools/python/xen/remus/device.py"
PATCH = "0005-remus-fifo-of-a-stacked-remus-disk.patch"
FIFO = "remus_192.0.2.2_9000"

RUN = r"""
import json, os, sys, types
sys.path.insert(0, sys.argv[1])
for name in ('netlink', 'qdisc'):
    sys.modules[name] = types.ModuleType(name)
import device
device.ReplicatedDisk.FIFODIR = sys.argv[2]
class Disk(object):
    def __init__(self, uname):
        self.uname = uname
out = {}
for uname in json.loads(sys.argv[3]):
    try:
        d = device.ReplicatedDisk(Disk(uname))
        out[uname] = ['ok', os.path.basename(d.ctlfd.name), os.path.basename(d.msgfd.name)]
        d.uninstall()
    except Exception, exc:
        out[uname] = ['error', '%s: %s' % (type(exc).__name__, exc)]
print json.dumps(out)
"""

STACKED = "tap:remus:192.0.2.2:9000|log:/var/lib/xen/images/web1.img|aio:/var/lib/xen/images/web1.img"
PLAIN = "tap:remus:192.0.2.2:9000|aio:/srv/remus/web1.img"
TAPDISK = "tap:tapdisk:remus:192.0.2.2:9000|aio:/var/lib/xen/images/web1.img"


def python27():
    for cand in (os.path.join(TOP, ".venv", "py27", "bin", "python"), "python2.7", "python2"):
        try:
            out = subprocess.check_output([cand, "-c", "import sys; print(sys.version_info[0])"],
                                          stderr=subprocess.STDOUT)
        except (OSError, subprocess.CalledProcessError):
            continue
        if out.strip() == b"2":
            return cand
    return None


PY27 = python27()
pytestmark = [pytest.mark.skipif(not ARCHIVES, reason="no ../shared/xen-src/xen-*-xend.tar.gz"),
              pytest.mark.skipif(PY27 is None, reason="no Python 2.7 (xend's interpreter)")]


def unpack(archive, dest):
    """The release's tools/python/xen/remus (device.py and util.py) under ``dest``."""
    with tarfile.open(archive) as tf:
        top = tf.getnames()[0].split("/")[0]
        members = []
        for m in tf.getmembers():
            rel = m.name[len(top) + 1:]
            if rel.startswith("tools/python/xen/remus/") and rel.endswith((".py",)):
                m.name = rel
                members.append(m)
        tf.extractall(dest, members=members)
    return os.path.join(dest, os.path.dirname(DEVICE))


def run_device(remus_dir, fifo_dir, unames):
    out = subprocess.check_output([PY27, "-c", RUN, remus_dir, fifo_dir, json.dumps(unames)])
    return json.loads(out.decode("utf-8").strip().splitlines()[-1])


@pytest.mark.parametrize("archive", ARCHIVES, ids=[os.path.basename(a) for a in ARCHIVES])
def test_the_patched_remus_script_opens_the_remus_layer_fifo(tmp_path, archive):
    version = os.path.basename(archive)[len("xen-"):-len("-xend.tar.gz")]
    series = "xen-" + ".".join(version.split(".")[:2])
    fifo_dir = str(tmp_path / "tap")
    os.mkdir(fifo_dir)
    for name in (FIFO, FIFO + ".msg"):
        os.mkfifo(os.path.join(fifo_dir, name))
    stock = unpack(archive, str(tmp_path / "stock"))
    patched_top = str(tmp_path / "patched")
    patched = unpack(archive, patched_top)
    subprocess.check_call(["patch", "-s", "-p1", "-F0", "-d", patched_top, "-i",
                           os.path.join(TOP, "patches", series, PATCH)])
    unames = [STACKED, PLAIN, TAPDISK]

    before = run_device(stock, fifo_dir, unames)
    # as shipped: the greedy match takes remus:H:P|log:IMG; no such FIFO
    assert before[STACKED][0] == "error", before
    assert before[PLAIN] == ["ok", FIFO, FIFO + ".msg"]

    after = run_device(patched, fifo_dir, unames)
    for uname in unames:
        assert after[uname] == ["ok", FIFO, FIFO + ".msg"], (uname, after[uname])
    assert sorted(os.listdir(fifo_dir)) == [FIFO, FIFO + ".msg"]   # nothing created beside them

