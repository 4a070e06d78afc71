"""zstd compression of DATA records, negotiated in HELLO.

Real TCP (TLS) on 127.0.0.1 with a ResyncServer; compressible images made
of real text files from /usr/share, random images for the incompressible
case.  Plus the codec's own checks on hostile frames.
"""
from __future__ import absolute_import, division, print_function

import glob
import os

import pytest

from tests.adapter.resync_util import make_image, same, write_key
from xen_remus_ext.errors import ProtocolError, ValidationError
from xen_remus_ext.resync import api, receiver
from xen_remus_ext.resync import compress as cz
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.transport import ResyncServer

MiB = 1 << 20
pytestmark = pytest.mark.skipif(not cz.available(), reason="needs the zstandard module")


def text_image(path, size):
    """An image of real text files from this machine (compressible), zero padded."""
    files = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/doc/*/copyright"))
    with open(path, "wb") as out:
        n = 0
        while n < size:
            for p in files:
                try:
                    with open(p, "rb") as f:
                        data = f.read()
                except (IOError, OSError):
                    continue
                out.write(data[:size - n])
                n += min(len(data), size - n)
                if n >= size:
                    break
            if not files:
                out.write(b"a line of text that compresses well\n" * (size // 37 + 1))
                break
        out.truncate(size)
    return path


@pytest.fixture
def server(tmp_path):
    dst = str(tmp_path / "dst.img")
    with open(dst, "wb") as f:
        f.truncate(4 * MiB)
    key = write_key(str(tmp_path / "key"))
    srv = ResyncServer("127.0.0.1:0", key, {"d": dst}, cert=str(tmp_path / "cert.pem")).start()
    yield srv, dst, key, tmp_path
    srv.stop()


def url(srv):
    return "tcp://127.0.0.1:%d/d" % srv.address[1]


def test_compressible_data_crosses_compressed(server):
    srv, dst, key, tmp = server
    src = text_image(str(tmp / "src.img"), 4 * MiB)
    events = []
    res = api.resync(src, url(srv), key_file=key, mode="full", events=events.append)
    assert same(src, dst)
    assert res.bytes_sent < 2 * MiB                      # text: well under half
    assert events[-1]["compress"] == "zstd"
    res = api.resync(src, url(srv), key_file=key, mode="full", compress="none", events=events.append,
                     discard_target=True)
    assert same(src, dst) and res.bytes_sent >= 4 * MiB and events[-1]["compress"] is None


def test_random_data_goes_raw_without_growing(server):
    srv, dst, key, tmp = server
    src = make_image(str(tmp / "src.img"), 4 * MiB)
    res = api.resync(src, url(srv), key_file=key, mode="full", compress="zstd")
    assert same(src, dst)
    assert 4 * MiB <= res.bytes_sent <= 4 * MiB * 1.01


def test_auto_is_off_for_a_local_target(tmp_path):
    assert api.pick_codec("auto", str(tmp_path / "x")) is None
    assert api.pick_codec("auto", "host:/x") == cz.ZSTD
    assert api.pick_codec("auto", "tcp://h:1/x") == cz.ZSTD
    assert api.pick_codec("none", "tcp://h:1/x") is None
    with pytest.raises(ValidationError):
        api.ResyncOptions(compress="gzip")


def test_receiver_without_zstd_negotiates_down(server, monkeypatch):
    srv, dst, key, tmp = server
    monkeypatch.setattr(receiver.cz, "choose", lambda offered: None)
    src = text_image(str(tmp / "src.img"), 4 * MiB)
    events = []
    res = api.resync(src, url(srv), key_file=key, mode="full", compress="zstd", events=events.append)
    assert same(src, dst) and res.bytes_sent >= 4 * MiB and events[-1]["compress"] is None


class _Counting(object):
    def __init__(self, c):
        self.c = c
        self.calls = 0

    def compress(self, data):
        self.calls += 1
        return self.c.compress(data)


def test_skip_heuristic_and_recovery():
    c = cz.Codec(cz.ZSTD, sending=True)
    c._c = spy = _Counting(c._c)
    c._probe = probe = _Counting(c._probe)
    rnd = os.urandom(MiB)
    text = (b"compressible text, line after line\n" * 40000)[:MiB]
    head = P.U64.pack(0)
    assert c.pack(P.DATA, (head, rnd))[0] == 0            # judged by its samples: sent raw
    assert probe.calls == cz.SAMPLES and spy.calls == 0
    mixed = rnd[:MiB // 2] + text[:MiB // 4] + rnd[:MiB // 4]   # compressed files around text: worth it
    assert c.pack(P.DATA, (head, mixed))[0] == P.FLAG_ZSTD
    flags, parts = c.pack(P.DATA, (head, text))            # the next big record is judged again
    assert flags == P.FLAG_ZSTD and len(parts[1]) < MiB // 20
    d = cz.Codec(cz.ZSTD, sending=False)
    off, data = P.split_data(d.unpack(P.DATA, flags, head + parts[1]))
    assert off == 0 and bytes(data) == text
    # small records: compressed whole; one that does not shrink sends the next raw unseen
    spy.calls = 0
    small = [os.urandom(4096) for _ in range(4)]
    assert [c.pack(P.DATA, (head, x))[0] for x in small] == [0, 0, 0, 0]
    assert spy.calls == 2                                  # looked at the 1st and 3rd, not the 2nd and 4th
    assert c.pack(P.DATA, (head, text[:4096]))[0] == 0     # still inside the stretch
    assert c.pack(P.DATA, (head, text[:4096]))[0] == P.FLAG_ZSTD
    assert c.pack(P.MARK, (b"x" * 16,)) == (0, (b"x" * 16,))


def test_hostile_frames_are_refused():
    import zstandard
    d = cz.Codec(cz.ZSTD, sending=False)
    head = P.U64.pack(4096)
    big = zstandard.ZstdCompressor().compress(b"\0" * (P.MAX_DATA + 1))
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"abc" * 1000)
    for payload, word in ((head + b"not zstd at all", "zstd frame"), (head + big, "up to"),
                          (head + unsized, "up to"), (head[:4], "offset"),
                          (head + big[:len(big) // 2], "up to")):
        with pytest.raises(ProtocolError) as ei:
            d.unpack(P.DATA, P.FLAG_ZSTD, payload)
        assert "DATA record" in str(ei.value) and word in str(ei.value), str(ei.value)
    frame = zstandard.ZstdCompressor().compress(b"abc" * 1000)
    with pytest.raises(ProtocolError):
        d.unpack(P.DATA, P.FLAG_ZSTD, head + frame[:-3])   # truncated
