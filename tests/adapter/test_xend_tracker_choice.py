"""Which dirty-block tracker the xend adapter gives a disk, and the log
tracker's hand-over to the migration hook's process.

The choice: blktap2's ``log`` driver where the disk's tapdisk stack carries
it, reflink + FIEMAP where the image's filesystem can clone, else none (the
final pass compares checksums).  The log driver is the project's double of
block-log.c (tests/fakes/blktap2_log_driver.py: real Unix socket, real
shared-memory file); the tracker reading it is the product's.
"""
from __future__ import absolute_import, division, print_function

import os
import shutil
import tempfile

import pytest

from tests.fakes.blktap2_log_driver import LogDriverDouble
from xen_remus_ext import model
from xen_remus_ext.config import disk as disk_mod
from xen_remus_ext.model import Extent
from xen_remus_ext.toolstack.xend import XendToolstack
from xen_remus_ext.trackers import blktap2_log
from xen_remus_ext.trackers.blktap2_log import Blktap2LogTracker
from xen_remus_ext.trackers.fiemap import FiemapTracker, reflink_probe
from xen_remus_ext.xend import hook


class OneDomain(XendToolstack):
    """The adapter with its domain config given (xend's answer parsed)."""

    def __init__(self, uname, **kw):
        XendToolstack.__init__(self, uri="httpu:///nonexistent.sock", **kw)
        self.uname = uname

    def domain_config(self, dom):
        d = disk_mod.parse_disk_spec("%s,xvda,w" % self.uname)
        return model.DomainConfig(name=dom, disks=(d,))


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="xrtc")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def image_in(tmp):
    path = os.path.join(tmp, "web1.img")
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    return path


def test_a_stack_with_the_log_driver_gets_the_log_tracker(tmp, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", os.path.join(tmp, "state"))
    img = image_in(tmp)
    ts = OneDomain("tap2:remus:192.0.2.2:9000|log:%s|aio:%s" % (img, img), tracker="fiemap")
    kind, why = ts.tracker_choice("web1", "xvda")
    assert kind == "blktap2-log" and "log:%s" % img in why
    tr = ts.tracker_for("web1", "xvda")
    assert isinstance(tr, Blktap2LogTracker) and tr.image == img
    assert tr.state_path == blktap2_log.state_file("web1", "xvda")
    assert tr.state_path.startswith(os.path.join(tmp, "state", "trackers") + os.sep)


def test_without_the_log_driver_the_image_filesystem_decides(tmp):
    img = image_in(tmp)
    ts = OneDomain("tap2:remus:192.0.2.2:9000|aio:%s" % img, tracker="fiemap")
    kind, why = ts.tracker_choice("web1", "xvda")
    probe = reflink_probe(img)
    if probe is None:
        assert kind == "fiemap" and isinstance(ts.tracker_for("web1", "xvda"), FiemapTracker)
    else:
        assert kind is None and "cannot reflink" in why and probe in why
        assert ts.tracker_for("web1", "xvda") is None
    assert [n for n in os.listdir(tmp) if n.startswith(".remus-ext-probe")] == []   # the probe cleans up


def test_no_log_driver_and_fiemap_off_means_checksums(tmp):
    img = image_in(tmp)
    ts = OneDomain("tap2:remus:192.0.2.2:9000|aio:%s" % img)
    assert ts.tracker_choice("web1", "xvda") == (
        None, "no log driver in its tapdisk stack, and the fiemap tracker is off")
    assert ts.tracker_for("web1", "xvda") is None


def test_the_hook_process_reopens_the_log_tracker_the_failback_marked(tmp):
    """The failback marks the tracker and reads it during the pre-copy; the
    migration hook, another process, reopens it from the state file and
    gets every write since the mark that the pre-copy did not take."""
    ctrl, shm = os.path.join(tmp, "tap"), os.path.join(tmp, "shm")
    os.mkdir(ctrl)
    os.mkdir(shm)
    name = "/var/lib/xen/images/web1.img"
    drv = LogDriverDouble(name, 2048, ctrl, shm).start()
    try:
        state = blktap2_log.state_file("web1", "xvda", base=tmp)
        tr = Blktap2LogTracker(name, ctrl_dir=ctrl, shm_dir=shm, state_path=state)
        drv.write(10, 1)                      # before the mark: forgotten
        tr.mark()
        drv.write(100, 8)
        assert tr.dirty_extents() == [Extent(100 * 512, 8 * 512)]
        tr.clear()                            # the pre-copy pass sent those
        drv.write(300, 2)                     # written after the pre-copy's read
        again = blktap2_log.reopen(state, ctrl_dir=ctrl, shm_dir=shm)
        assert again is not None and again.trustworthy()
        drv.write(301, 3)                     # ...and up to the suspend
        assert again.dirty_extents() == [Extent(300 * 512, 4 * 512)]
        assert blktap2_log.reopen(os.path.join(tmp, "absent.json")) is None
    finally:
        drv.stop()


def test_the_hook_finds_the_journaled_log_tracker(tmp, monkeypatch):
    from xen_remus_ext.failback import journal
    rec = journal.new_record("web1", "192.0.2.1", "failback", "192.0.2.2", "xend", {}, 0.0)
    rec["disks"] = [{"vdev": "xvda", "src": "/img", "dest": "192.0.2.1:/img", "tracker": "blktap2-log"},
                    {"vdev": "xvdb", "src": "/img2", "dest": "192.0.2.1:/img2", "tracker": None}]
    journal.save(rec, tmp)
    state = blktap2_log.state_file("web1", "xvda", base=tmp)
    os.makedirs(os.path.dirname(state))
    with open(state, "w") as f:
        f.write('{"name": "/img", "marked": true, "lost": null, "identity": null, "extents": []}')
    get = hook.journal_trackers("web1", base=tmp)
    tr = get("xvda")
    assert isinstance(tr, Blktap2LogTracker) and tr.image == "/img"
    assert get("xvdb") is None
