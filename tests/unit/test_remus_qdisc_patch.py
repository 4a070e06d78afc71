"""Patch 0009 against the real ``xen.remus.netlink`` of Xen 4.1.6.1 and 4.4.4.

The remus script asks ``rtnl.getqdisc(ifb)`` before it installs its network
buffer, and refuses when the answer is a qdisc other than ingress,
pfifo_fast or mq.  Stock ``getqdisc`` returns the first entry of the dump,
of whichever device; Linux 6.x answers that dump with every device's qdiscs,
lo's noqueue first (the xend lab runs the tree's own netlink module against
its kernel and sees it, scenario a).  Here the dump is the one that kernel
gave, fed to the release's own netlink.py (as shipped and with our series)
under Python 2.7; only the C socket module is stubbed.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import subprocess
import tarfile

import pytest

from tests.unit.test_remus_fifo_patch import ARCHIVES, PY27, TOP, pytestmark  # noqa: F401

RUN = r"""
import json, sys, types
low = types.ModuleType('xen.lowlevel.netlink')
class rtnl(object):
    pass
low.rtnl = rtnl
for name in ('xen', 'xen.lowlevel'):
    sys.modules[name] = types.ModuleType(name)
    sys.modules[name].__path__ = []
sys.modules['xen'].lowlevel = sys.modules['xen.lowlevel']
sys.modules['xen.lowlevel'].netlink = low
sys.modules['xen.lowlevel.netlink'] = low
sys.path.insert(0, sys.argv[1])
import netlink
r = netlink.rtnl()
# what Linux 6.x answered in a namespace with lo and ifb0 (index 2)
r.getlinks = lambda: {1: {'index': 1, 'name': 'lo'}, 2: {'index': 2, 'name': 'ifb0'}}
r.getqdiscs = lambda dev=None: {1: {'index': 1, 'kind': 'noqueue'}, 2: {'index': 2, 'kind': 'pfifo_fast'}}
out = {'by_index': r.getqdisc(2)['kind'], 'by_name': r.getqdisc('ifb0')['kind']}
try:
    r.getqdisc('ifb9')
    out['unknown'] = 'no error'
except Exception, exc:
    out['unknown'] = '%s: %s' % (type(exc).__name__, exc)
print json.dumps(out)
"""


def unpack(archive, dest, patched):
    version = os.path.basename(archive)[len("xen-"):-len("-xend.tar.gz")]
    series = "xen-" + ".".join(version.split(".")[:2])
    with tarfile.open(archive) as tf:
        top = tf.getnames()[0].split("/")[0]
        members = []
        for m in tf.getmembers():
            rel = m.name[len(top) + 1:]
            if rel.startswith("tools/python/xen/remus/"):
                m.name = rel
                members.append(m)
        tf.extractall(dest, members=members)
    if patched:
        subprocess.check_call(["patch", "-s", "-p1", "-F0", "-d", dest, "-i",
                               os.path.join(TOP, "patches", series, "0009-remus-qdisc-of-the-requested-device.patch")])
    return os.path.join(dest, "tools", "python", "xen", "remus")


def run(remus_dir):
    out = subprocess.check_output([PY27, "-c", RUN, remus_dir])
    return json.loads(out.decode("utf-8").strip().splitlines()[-1])


@pytest.mark.parametrize("archive", ARCHIVES, ids=[os.path.basename(a) for a in ARCHIVES])
def test_getqdisc_reads_the_requested_devices_entry(tmp_path, archive):
    stock = run(unpack(archive, str(tmp_path / "stock"), False))
    assert stock["by_index"] == stock["by_name"] == "noqueue"       # lo's: the script refused the buffer
    patched = run(unpack(archive, str(tmp_path / "patched"), True))
    assert patched["by_index"] == patched["by_name"] == "pfifo_fast"
    assert patched["unknown"] == "RTNLException: device ifb9 not found"
