"""Checksum resync at 4 KiB precision: coarse digests, refined where they differ.

Real image files, scattered 4 KiB writes (how filesystems write): the data
that crosses is close to the changed bytes, not to the 64 KiB blocks they
fall in; ``digest_bytes`` reports the digest traffic beside ``bytes_sent``.
A receiver that only speaks version 1 gets whole blocks, as before.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import random
import subprocess
import sys

import pytest

from tests.adapter.resync_util import copy, make_image, same
from xen_remus_ext.errors import ProtocolError
from xen_remus_ext.resync import api, receiver, refine, sender, transport
from xen_remus_ext.resync import protocol as P

MiB = 1 << 20


def scatter(path, fraction, seed, bs=4096):
    """Rewrite ``fraction`` of the 4 KiB blocks of ``path`` at random; :returns: bytes changed."""
    size = os.path.getsize(path)
    rng = random.Random(seed)
    blocks = rng.sample(range(size // bs), max(1, int(size // bs * fraction)))
    with open(path, "r+b") as f:
        for b in blocks:
            f.seek(b * bs)
            f.write(os.urandom(bs))
    return len(blocks) * bs


@pytest.fixture
def scattered(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 16 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    return src, dst, scatter(dst, 0.01, 1)


def test_scattered_4k_writes_cross_as_4k(scattered):
    src, dst, changed = scattered
    res = api.resync(src, dst, mode="checksum")
    assert same(src, dst)
    assert changed <= res.bytes_sent - res.digest_bytes <= 1.1 * changed
    # 16 B per 64 KiB coarse digest, then 16 fine digests (+12 B) for each differing block
    assert res.digest_bytes <= (16 * MiB // 65536) * 16 + (changed // 4096) * (16 * 16 + 12 + 8) + 4096


def test_json_reports_digest_bytes(scattered):
    src, dst, changed = scattered
    p = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "resync", src, dst, "--mode", "checksum",
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    assert p.returncode == 0, err
    last = json.loads(out.decode("utf-8").splitlines()[-1])
    assert last["result"] == "ok" and 0 < last["digest_bytes"] < last["bytes_sent"]
    assert last["bytes_sent"] - last["digest_bytes"] <= 1.1 * changed
    assert same(src, dst)


def test_verify_reports_4k_extents(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    with open(dst, "r+b") as f:
        for off in (8192, 65536 * 5 + 4096 * 3, 2 * MiB + 4096 * 15):
            f.seek(off)
            f.write(b"x")
    res = api.verify(src, dst)
    assert not res.identical
    assert [(e.offset, e.length) for e in res.differing] == [(8192, 4096), (65536 * 5 + 4096 * 3, 4096),
                                                              (2 * MiB + 4096 * 15, 4096)]


class _V1(object):
    """The protocol module as a version-1 receiver sees it."""
    VERSIONS = (1,)

    def __getattr__(self, name):
        return getattr(P, name)


def test_version_1_receiver_gets_whole_blocks(scattered, monkeypatch):
    src, dst, changed = scattered
    monkeypatch.setattr(receiver, "P", _V1())
    # the receiver in a thread of this process, where the patch applies
    monkeypatch.setattr(api, "connect", lambda dest, **kw: transport.connect(dest, **dict(kw, local_process=False)))
    asked = []
    real = receiver.Receiver.session
    monkeypatch.setattr(receiver.Receiver, "session", lambda self, start: (asked.append(start), real(self, start)))
    res = api.resync(src, dst, mode="checksum")
    assert same(src, dst)
    assert "fine" not in asked[0]                     # a version-1 START: no field it does not know
    assert res.bytes_sent - res.digest_bytes >= 8 * changed   # whole 64 KiB blocks


def test_many_refinements_in_flight_stay_bounded(tmp_path, monkeypatch):
    """Half the blocks differ and the window is tiny: the sender waits for FINE
    answers while DIGESTS keep arriving; everything still lands."""
    monkeypatch.setattr(sender, "REFINE_WINDOW", 128 * 1024)
    src = make_image(str(tmp_path / "src.img"), 8 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    changed = scatter(dst, 0.3, 2)
    res = api.resync(src, dst, mode="checksum", verify=True)
    assert same(src, dst) and res.verified
    assert res.bytes_sent - res.digest_bytes <= 1.1 * changed


def test_refine_requests_are_checked():
    good = refine.pack_request([(0, 65536), (65536 * 3, 65536)])
    assert refine.unpack_request(good, 1 * MiB, 65536) == [(0, 65536), (65536 * 3, 65536)]
    for bad in (b"", b"x" * 13, refine.pack_request([(MiB - 4096, 65536)]),
                refine.pack_request([(65536, 65536), (0, 65536)]), refine.pack_request([(0, 65537)]),
                refine.pack_request([(0, 0)])):
        with pytest.raises(ProtocolError) as e:
            refine.unpack_request(bad, 1 * MiB, 65536)
        assert "REFINE record" in str(e.value)
    with pytest.raises(ProtocolError):
        refine.unpack_request(refine.pack_request([(i * 65536, 65536) for i in range(17)]), 64 * MiB, 65536)


def test_fine_answer_must_match_its_request():
    blocks = [(0, 65536), (131072, 4096)]
    digests = b"d" * (17 * 16)
    assert refine.split_answer(refine.pack_answer(refine.pack_request(blocks), digests), blocks, 4096, 16) == digests
    for bad in (refine.pack_answer(refine.pack_request([(0, 65536), (196608, 4096)]), digests),
                refine.pack_answer(refine.pack_request(blocks), digests[:-1]), b""):
        with pytest.raises(ProtocolError) as e:
            refine.split_answer(bad, blocks, 4096, 16)
        assert "FINE record" in str(e.value)
    for fine in (4095, 2048, 65536, 6000, True):
        with pytest.raises(ProtocolError):
            refine.check_fine(fine, 65536)
    refine.check_fine(0, 65536)
    refine.check_fine(4096, 65536)
