"""The target's lock spans a whole connection, its verify phase included.

Race: sender A runs ``--mode full --verify``; between A's write phase and
the end of its verify, sender B syncs a source that differs from A's only in
blocks A's verify has already passed.  Without the lock B's writes land,
A's verify finds nothing and commits A's generation: a target marked
consistent whose bytes are not that generation's.
"""
from __future__ import absolute_import, division, print_function

import os
import threading
import time

import pytest

from tests.adapter.resync_util import copy, make_image, same, write_key
from xen_remus_ext.errors import TargetBusyError
from xen_remus_ext.resync import api, meta
from xen_remus_ext.resync.blockio import BlockFile
from xen_remus_ext.resync.transport import ResyncServer

MiB = 1 << 20
SIZE = 8 * MiB


@pytest.fixture
def rig(tmp_path):
    src = make_image(str(tmp_path / "src.img"), SIZE)
    src2 = copy(src, str(tmp_path / "src2.img"))
    with open(src2, "r+b") as f:                  # B's source differs in the first MiB only
        f.write(os.urandom(MiB))
    dst = str(tmp_path / "dst.img")
    with open(dst, "wb") as f:
        f.truncate(SIZE)
    key = write_key(str(tmp_path / "key"))
    srv = ResyncServer(("127.0.0.1", 0), key, {"d": dst}).start()
    yield src, src2, dst, key, "tcp://127.0.0.1:%d/d" % srv.address[1]
    srv.stop()


def test_no_second_writer_between_write_phase_and_verify(rig):
    src, src2, dst, key, url = rig
    in_verify = threading.Event()
    outcome = {}

    def events(ev):
        if ev.get("event") == "progress" and ev.get("phase") == "verify" and ev["done"] >= 3 * MiB:
            in_verify.set()

    def run_a():
        try:
            outcome["a"] = api.resync(src, url, key_file=key, mode="full", verify=True, rate=4 * MiB,
                                      events=events)
        except Exception as exc:     # reported below
            outcome["a"] = exc
    a = threading.Thread(target=run_a)
    a.start()
    assert in_verify.wait(30), outcome
    with pytest.raises(TargetBusyError) as ei:
        api.resync(src2, url, key_file=key, mode="checksum")
    assert "another resync" in str(ei.value)
    a.join(60)
    assert getattr(outcome["a"], "verified", None) is True, outcome["a"]
    got = meta.load(dst)
    assert got.consistent and got.current == meta.load(src).current
    assert same(src, dst)                        # the generation it carries is the bytes it holds


def test_a_verify_only_connection_keeps_writers_out(rig):
    src, src2, dst, key, url = rig
    api.resync(src, url, key_file=key, mode="full")
    started = threading.Event()
    outcome = {}

    def events(ev):
        if ev.get("event") == "progress" and ev["done"] >= 2 * MiB:
            started.set()

    def run_v():
        outcome["v"] = api.verify(src, url, key_file=key, rate=4 * MiB, events=events)
    v = threading.Thread(target=run_v)
    v.start()
    assert started.wait(30)
    with pytest.raises(TargetBusyError):
        api.resync(src2, url, key_file=key, mode="checksum", discard_target=True)
    v.join(60)
    assert outcome["v"].identical


def test_the_lock_is_released_when_the_connection_ends(rig):
    src, src2, dst, key, url = rig
    api.resync(src, url, key_file=key, mode="full", verify=True)
    with BlockFile(dst, write=True, exclusive=True):     # nobody holds it any more
        pass
    t0 = time.time()
    api.resync(src2, url, key_file=key, mode="checksum", discard_target=True)
    assert same(src2, dst) and time.time() - t0 < 30
