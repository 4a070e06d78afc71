"""zstd compression of DATA records, negotiated in HELLO.

Real TCP (TLS) on 127.0.0.1 with a ResyncServer; compressible images made
of real text files from /usr/share, random images for the incompressible
case; ends that know only the per-record kind (as older peers do).  Plus
the codecs' own checks on hostile frames and stream pieces.
"""
from __future__ import absolute_import, division, print_function

import glob
import os

import pytest

from tests.adapter.resync_util import make_image, same, write_key
from xen_remus_ext.errors import ProtocolError, ValidationError
from xen_remus_ext.resync import api, receiver, sender
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
    assert events[-1]["compress"] == cz.STREAM
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


def mixed_image(path, size):
    """Text and random MiB in turn, the text repeating itself from far back
    (only a context kept across records finds that)."""
    text = open(text_image(path + ".text", MiB), "rb").read()
    rnd = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(text if i % 2 else rnd[:MiB // 2] + text[:MiB // 2])
    os.unlink(path + ".text")
    return path


def test_one_stream_spans_records_and_raw_ones_keep_it_in_step(server):
    srv, dst, key, tmp = server
    src = mixed_image(str(tmp / "src.img"), 4 * MiB)
    events = []
    res = api.resync(src, url(srv), key_file=key, mode="full", events=events.append)
    assert same(src, dst) and events[-1]["compress"] == cz.STREAM
    # the same records, each compressed alone (the kind older peers speak):
    # the text repeated from far back costs almost nothing in the stream
    per_record = _per_record_bytes(src)
    assert res.bytes_sent < per_record - MiB // 2, (res.bytes_sent, per_record)


def _per_record_bytes(src):
    c = cz.make(cz.ZSTD, sending=True)
    with open(src, "rb") as f:
        data = f.read()
    total = 0
    for off in range(0, len(data), MiB):
        flags, parts = c.pack(P.DATA, (P.U64.pack(off), data[off:off + MiB]))
        total += sum(len(p) for p in parts)
    return total


def test_an_older_receiver_gets_the_per_record_kind(server, monkeypatch):
    srv, dst, key, tmp = server
    monkeypatch.setattr(receiver.cz, "choose", lambda offered: cz.ZSTD if cz.ZSTD in offered else None)
    src = mixed_image(str(tmp / "src.img"), 4 * MiB)
    events = []
    res = api.resync(src, url(srv), key_file=key, mode="full", events=events.append)
    assert same(src, dst) and events[-1]["compress"] == cz.ZSTD and res.bytes_sent < 3 * MiB


def test_an_older_sender_gets_the_per_record_kind(server, monkeypatch):
    srv, dst, key, tmp = server
    offered = []
    monkeypatch.setattr(sender.cz, "offer", lambda choice: offered.append(choice) or [cz.ZSTD])
    src = text_image(str(tmp / "src.img"), 4 * MiB)
    events = []
    res = api.resync(src, url(srv), key_file=key, mode="full", events=events.append)
    assert offered == [cz.ZSTD]
    assert same(src, dst) and events[-1]["compress"] == cz.ZSTD and res.bytes_sent < 2 * MiB


def test_a_sender_refuses_a_kind_it_did_not_offer(server, monkeypatch):
    srv, dst, key, tmp = server
    monkeypatch.setattr(sender.cz, "offer", lambda choice: [cz.ZSTD])
    monkeypatch.setattr(receiver.cz, "choose", lambda offered: cz.STREAM)
    src = text_image(str(tmp / "src.img"), 4 * MiB)
    with open(dst, "rb") as f:
        before = f.read()
    with pytest.raises(ProtocolError) as ei:
        api.resync(src, url(srv), key_file=key, mode="full")
    assert "expected compression zstd or none" in str(ei.value) and cz.STREAM in str(ei.value)
    with open(dst, "rb") as f:
        assert f.read() == before


class _Counting(object):
    def __init__(self, c):
        self.c = c
        self.calls = 0

    def compress(self, data):
        self.calls += 1
        return self.c.compress(data)


class _CountingStream(_Counting):
    def flush(self, mode):
        return self.c.flush(mode)


@pytest.mark.parametrize("kind", [cz.ZSTD, cz.STREAM])
def test_skip_heuristic_and_recovery(kind):
    c = cz.make(kind, sending=True)
    if kind == cz.STREAM:
        c._s = spy = _CountingStream(c._s)
    else:
        c._c = spy = _Counting(c._c)
    c._probe = probe = _Counting(c._probe)
    sent = []                                              # (record, flags, wire parts), in order

    def pack(data):
        flags, parts = c.pack(P.DATA, (P.U64.pack(len(sent)), data))
        sent.append((data, flags, parts))
        return flags

    rnd = os.urandom(MiB)
    text = (b"compressible text, line after line\n" * 40000)[:MiB]
    assert pack(rnd) == 0                                  # judged by its samples: sent raw
    assert probe.calls == cz.SAMPLES and spy.calls == 0
    mixed = rnd[:MiB // 2] + text[:MiB // 4] + rnd[:MiB // 4]   # compressed files around text: worth it
    assert pack(mixed) == P.FLAG_ZSTD
    assert pack(text) == P.FLAG_ZSTD                       # the next big record is judged again
    assert len(sent[-1][2][1]) < MiB // 20
    # small records: compressed whole; one that does not shrink sends the next raw unseen
    spy.calls = 0
    small = [os.urandom(4096) for _ in range(4)]
    flags = [pack(x) for x in small]
    assert spy.calls == 2                                  # looked at the 1st and 3rd, not the 2nd and 4th
    # once in a stream, a piece is sent even when it did not shrink; a frame of its own is not
    looked = P.FLAG_ZSTD if kind == cz.STREAM else 0
    assert flags == [looked, 0, looked, 0]
    assert pack(text[:4096]) == 0                          # still inside the stretch
    assert pack(text[:4096]) == P.FLAG_ZSTD
    assert c.pack(P.MARK, (b"x" * 16,)) == (0, (b"x" * 16,))
    # the receiver decompresses the flagged records in order; raw ones never touch its context
    d = cz.make(kind, sending=False)
    for i, (data, flags, parts) in enumerate(sent):
        if flags:
            off, got = P.split_data(d.unpack(P.DATA, flags, b"".join(parts)))
            assert off == i and bytes(got) == bytes(data)
        else:
            assert bytes(parts[1]) == bytes(data)
    assert c.packed == sum(len(p[1]) + len(p[0]) - 8 for _, _, p in sent)


def test_hostile_frames_are_refused():
    import zstandard
    d = cz.make(cz.ZSTD, sending=False)
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


def test_hostile_stream_pieces_are_refused():
    import zstandard
    head = P.U64.pack(4096)
    text = (b"compressible text, line after line\n" * 40000)[:MiB]

    def piece(data, **params):
        p = zstandard.ZstdCompressionParameters.from_level(3, **params)
        o = zstandard.ZstdCompressor(compression_params=p).compressobj()
        return o.compress(data) + o.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    bomb = piece(b"\0" * (8 * MiB))
    good = piece(text)
    for payload, word in ((head + cz.LENGTH.pack(100) + bomb, "more than the 100 bytes"),
                          (head + cz.LENGTH.pack(MiB) + bomb, "more than the %d bytes" % MiB),
                          (head + cz.LENGTH.pack(MiB + 1) + good, "length from 1 to"),
                          (head + cz.LENGTH.pack(0) + good, "length from 1 to"),
                          (head + cz.LENGTH.pack(MiB), "a zstd-stream piece"),
                          (head + cz.LENGTH.pack(MiB) + b"not zstd at all", "undecodable"),
                          (head + cz.LENGTH.pack(MiB) + good[:len(good) // 2], "it holds"),
                          (head + cz.LENGTH.pack(MiB) + piece(text, window_log=cz.WINDOW_LOG + 2), "undecodable")):
        d = cz.make(cz.STREAM, sending=False)
        with pytest.raises(ProtocolError) as ei:
            d.unpack(P.DATA, P.FLAG_ZSTD, bytearray(payload))
        assert "DATA record" in str(ei.value) and word in str(ei.value), str(ei.value)
    # a compressed record may be a little over the plain bound; the header check knows it
    d = cz.make(cz.STREAM, sending=False)
    assert d.limit(P.DATA, P.FLAG_ZSTD) == cz.MAX_PACKED > P.LIMITS[P.DATA] == d.limit(P.DATA, 0)
    with pytest.raises(ProtocolError):
        P.check_header(P.DATA, P.FLAG_ZSTD, 0, cz.MAX_PACKED + 1, P.FLAG_ZSTD, d.limit(P.DATA, P.FLAG_ZSTD))
    P.check_header(P.DATA, P.FLAG_ZSTD, 0, cz.MAX_PACKED, P.FLAG_ZSTD, d.limit(P.DATA, P.FLAG_ZSTD))
