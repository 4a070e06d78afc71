"""Patches 0007 and 0008 against the real XendCheckpoint.py and xen/remus/image.py
of Xen 4.1.6.1 and 4.4.4.

The release's ``tools/python`` is unpacked from ``../shared/xen-src`` (skipped
when absent) twice, once as shipped and once with our whole series, and run
under Python 2.7 (the files' syntax):

* sender: ``xen.remus.image.makeheader`` (what the remus script writes first)
  with and without ``XEN_REMUS_EXT_HOLD=1``; without it the header is byte for
  byte the stock one;
* receiver: ``XendCheckpoint.restore`` itself, fed a stream header through a
  pipe; the hypervisor side (xc, xc_restore through ``forkHelper``, the
  domain object, image, balloon, XendDomain's lock) is stubbed, and the test
  watches whether restore unpauses the domain;
* an unpatched receiver: the release's real ``XendConfig`` parses the marked
  config into exactly the settings of the unmarked one.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import subprocess
import tarfile

import pytest

from tests.unit.test_remus_fifo_patch import ARCHIVES, PY27, TOP, pytestmark  # noqa: F401

STANDINS = os.path.join(TOP, "tests", "xend", "standins")

COMMON = r"""
import json, os, sys, types, logging
if os.environ.get('XENHOLD_TEST_NO_PACKAGE'):
    sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or '.', 'xen_remus_ext'))]
    assert 'xen_remus_ext' not in sys.modules
top = sys.argv[1]
sys.path.insert(0, top)
path = types.ModuleType('xen.util.path')
for k in ('PREFIX', 'BINDIR', 'SBINDIR', 'LIBEXEC', 'LIBEXEC_BIN', 'LIBDIR', 'SHAREDIR', 'PRIVATE_BINDIR',
          'XENFIRMWAREDIR', 'XEN_CONFIG_DIR', 'XEN_SCRIPT_DIR', 'XEN_LOCK_DIR', 'XEN_RUN_DIR',
          'XEN_PAGING_DIR', 'XEN_DUMP_DIR', 'XEN_LOG_DIR', 'XEN_LIB_DIR', 'XEN_RUN_STORED',
          'PRIVATE_PREFIX', 'PRIVATE_LIBEXEC', 'XENSTORED_ROOTDIR', 'CONFIG_DIR'):
    setattr(path, k, '/nonexistent/' + k.lower())
sys.modules['xen.util.path'] = path
import xen.util
xen.util.path = path
def stub(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    pkg, _, leaf = name.rpartition('.')
    if pkg in sys.modules:
        setattr(sys.modules[pkg], leaf, m)
    return m
CONFIG = ['domain', ['domid', '7'], ['name', 'web1'], ['uuid', '0b6f6d5e-0000-4000-8000-000000000001'],
          ['memory', '64'], ['maxmem', '64'], ['vcpus', '1'],
          ['image', ['linux', ['kernel', '/boot/vmlinuz']]]]
"""

SENDER = COMMON + r"""
from xen.xend import sxp
import xen.remus
stub('xen.remus.vm', sxprtostr=sxp.to_string)
out = {}
try:
    from xen.remus import image
except ImportError, exc:
    print json.dumps({'import_error': str(exc)})
    sys.exit(0)
hdr = image.makeheader(CONFIG)
out['header'] = hdr.encode('hex')
print json.dumps(out)
"""

RECEIVER = COMMON + r"""
import struct
logging.basicConfig(level=logging.CRITICAL)
calls = []
class Lock(object):
    def release(self):
        pass
    def acquire(self):
        pass
class XD(object):
    domains_lock = Lock()
    def domain_lookup_nr(self, name):
        return None
    def restore_(self, vmconfig):
        calls.append(('restore_', vmconfig[0]))
        return Dominfo()
class Info(dict):
    def is_hvm(self):
        return False
class Dominfo(object):
    domid = 9
    def __init__(self):
        self.info = Info(platform={}, memory_dynamic_max=64 << 20, memory_static_max=64 << 20,
                         memory_static_min=64 << 20,
                         shadow_memory=0, image={})
    def getStorePort(self):
        return 1
    def getConsolePort(self):
        return 2
    def getDomid(self):
        return self.domid
    def getName(self):
        return 'web1'
    def get_uuid(self):
        return '0b6f6d5e-0000-4000-8000-000000000001'
    def completeRestore(self, store_mfn, console_mfn):
        calls.append(('completeRestore', store_mfn, console_mfn))
    def waitForDevices(self):
        pass
    def unpause(self):
        calls.append(('unpause',))
    def destroy(self):
        calls.append(('destroy',))
class Image(object):
    superpages = 0
    def getRequiredAvailableMemory(self, kb):
        return kb
    def getRequiredShadowMemory(self, a, b):
        return 0
    def setCpuid(self):
        pass
class XC(object):
    def domain_setmaxmem(self, *a):
        pass
    def physinfo(self):
        return {'virt_caps': ''}
    def shadow_mem_control(self, *a):
        return 0
import xen.lowlevel
stub('xen.lowlevel.xc', xc=XC, Error=Exception, error=Exception)
stub('xen.util.auxbin', pathTo=lambda name: '/usr/lib/xen/bin/' + name, scripts_dir=lambda: '/etc/xen/scripts')
stub('xen.util.xpopen', xPopen3=None)
import xen.xend
stub('xen.xend.balloon', free=lambda *a: None)
stub('xen.xend.image', create=lambda dominfo, info: Image())
stub('xen.xend.XendLogging', log=logging.getLogger('xend'))
stub('xen.xend.XendConfig', XendConfig=lambda sxp_obj: {'name_label': 'web1', 'uuid': 'u'})
stub('xen.xend.XendNode')
stub('xen.xend.XendDomain', instance=lambda: XD())
from xen.xend import XendCheckpoint
def forkHelper(cmd, fd, handler, closeToChild):
    calls.append(('xc_restore', cmd[0].rsplit('/', 1)[-1]))
    handler('store-mfn 5', None)
    handler('console-mfn 6', None)
XendCheckpoint.forkHelper = forkHelper
from xen.xend import sxp
results = {}
for key, cfg, relocating in json.loads(sys.argv[2]):
    del calls[:]
    text = sxp.to_string(cfg)
    r, w = os.pipe()
    os.write(w, XendCheckpoint.SIGNATURE + struct.pack('!i', len(text)) + text)
    os.close(w)
    XendCheckpoint.restore(XD(), r, relocating=relocating)
    os.close(r)
    results[key] = [list(c) for c in calls]
print json.dumps({'results': results, 'hooked': getattr(XendCheckpoint, '_remus_hold', None) is not None})
"""

XENDCONFIG = COMMON + r"""
import xen.lowlevel
sys.path.insert(0, sys.argv[2])       # the lab's stand-ins: hvclient for their xc
def no_store(*a, **kw):
    raise RuntimeError('no xenstore in this test')
stub('xen.lowlevel.xs', xs=no_store, error=RuntimeError)
stub('xen.lowlevel.ptsname', ptsname=no_store)
import xen.xend.XendDomain         # xend's own import order (XendConfig alone is circular)
from xen.xend.XendConfig import XendConfig
marked = CONFIG + [['xen_remus_ext_hold', '1']]
a, b = XendConfig(sxp_obj=CONFIG), XendConfig(sxp_obj=marked)
print json.dumps({'same': dict(a) == dict(b) and len(a) > 10,
                  'keys': sorted(k for k in b.keys() if 'remus' in str(k)),
                  'name': b['name_label']})
"""


def unpack(archive, dest, patched):
    version = os.path.basename(archive)[len("xen-"):-len("-xend.tar.gz")]
    series = "xen-" + ".".join(version.split(".")[:2])
    with tarfile.open(archive) as tf:
        top = tf.getnames()[0].split("/")[0]
        members = []
        for m in tf.getmembers():
            rel = m.name[len(top) + 1:]
            if rel.startswith("tools/python/"):
                m.name = rel
                members.append(m)
        tf.extractall(dest, members=members)
    if patched:
        with open(os.path.join(TOP, "patches", series, "series")) as f:
            for name in f.read().split():
                if name.endswith(".patch"):
                    subprocess.check_call(["patch", "-s", "-p1", "-F0", "-d", dest, "-i",
                                           os.path.join(TOP, "patches", series, name)])
    return os.path.join(dest, "tools", "python")


def run27(script, args, env_extra=None, with_package=True):
    env = dict(os.environ)
    env.pop("XEN_REMUS_EXT_HOLD", None)
    env["PYTHONPATH"] = TOP if with_package else ""
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(env_extra or {})
    if not with_package:        # the venv may have it installed too: COMMON drops that from sys.path
        env["XENHOLD_TEST_NO_PACKAGE"] = "1"
    out = subprocess.check_output([PY27, "-c", script] + list(args), env=env, cwd="/")
    return json.loads(out.decode("utf-8").strip().splitlines()[-1])


def header_config(hexed):
    raw = bytes(bytearray.fromhex(hexed))
    assert raw.startswith(b"LinuxGuestRecord")
    return raw[len("LinuxGuestRecord") + 4:].decode("ascii")


@pytest.fixture(params=ARCHIVES, ids=[os.path.basename(a) for a in ARCHIVES])
def trees(request, tmp_path):
    return (unpack(request.param, str(tmp_path / "stock"), False),
            unpack(request.param, str(tmp_path / "patched"), True))


def test_the_remus_script_marks_its_header_only_when_asked(trees, tmp_path):
    stock, patched = trees
    plain_stock = run27(SENDER, [stock])["header"]
    plain = run27(SENDER, [patched])["header"]
    assert plain == plain_stock                         # byte for byte the stock header
    assert "xen_remus_ext_hold" not in header_config(plain)
    asked = run27(SENDER, [patched], {"XEN_REMUS_EXT_HOLD": "1"})["header"]
    text = header_config(asked)
    assert text.endswith("(xen_remus_ext_hold 1))") and text[:-len(" (xen_remus_ext_hold 1))")] + ")" == \
        header_config(plain)
    assert run27(SENDER, [stock], {"XEN_REMUS_EXT_HOLD": "1"})["header"] == plain_stock   # stock ignores it
    # a hold asked where the package cannot be imported: the script stops, it sends nothing unmarked
    got = run27(SENDER, [patched], {"XEN_REMUS_EXT_HOLD": "1"}, with_package=False)
    assert "XEN_REMUS_EXT_HOLD is set" in got.get("import_error", ""), got
    assert "header" in run27(SENDER, [patched], {}, with_package=False)


def test_the_patched_restore_keeps_only_a_marked_relocated_stream_paused(trees, tmp_path):
    stock, patched = trees
    config = ["domain", ["domid", "7"], ["name", "web1"], ["memory", "64"]]
    marked = config + [["xen_remus_ext_hold", "1"]]
    cases = json.dumps([["migration", config, True], ["remus-held", marked, True], ["file", marked, False]])
    state = str(tmp_path / "state")
    got = run27(RECEIVER, [patched, cases], {"XEN_REMUS_STATE_DIR": state})
    assert got["hooked"]
    res = got["results"]
    for key in ("migration", "file"):
        assert res[key][-1] == ["unpause"], (key, res[key])
    assert ["completeRestore", 5, 6] in res["remus-held"] and ["unpause"] not in res["remus-held"]
    with open(os.path.join(state, "hold", "web1.xend.json")) as f:
        rec = json.load(f)
    assert rec["state"] == "held" and rec["domid"] == 9 and rec["complete"] is True
    # the same xend without our package (its import fails): stock behaviour
    shutil.rmtree(state)
    got = run27(RECEIVER, [patched, cases], {"XEN_REMUS_STATE_DIR": state}, with_package=False)
    assert not got["hooked"] and all(r[-1] == ["unpause"] for r in got["results"].values())
    assert not os.path.exists(state)
    # an unpatched receiver restores a marked stream as any other
    got = run27(RECEIVER, [stock, cases], {"XEN_REMUS_STATE_DIR": state})
    assert not got["hooked"] and all(r[-1] == ["unpause"] for r in got["results"].values())
    assert not os.path.exists(state)


def test_an_unpatched_xendconfig_ignores_the_mark(trees, tmp_path):
    stock, _ = trees
    low = os.path.join(stock, "xen", "lowlevel")
    for name in ("xc.py", "acm.py"):
        shutil.copy(os.path.join(STANDINS, "xen", "lowlevel", name), os.path.join(low, name))
    got = run27(XENDCONFIG, [stock, STANDINS])
    assert got == {"same": True, "keys": [], "name": "web1"}
