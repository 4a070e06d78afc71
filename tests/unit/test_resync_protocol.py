"""Framing, bounds and channels of the resync protocol; keyed digests; token bucket."""
from __future__ import absolute_import, division, print_function

import os
import socket
import threading

import pytest

from xen_remus_ext.errors import ProtocolError, ResyncError
from xen_remus_ext.resync import digest as dg
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.ratelimit import TokenBucket


def sock_pair():
    a, b = socket.socketpair()
    return P.StreamChannel(sock=a, peer="a"), P.StreamChannel(sock=b, peer="b")


def test_stream_roundtrip_counts_bytes_and_passes_big_payloads():
    a, b = sock_pair()
    big = os.urandom(P.MAX_DATA)
    got = []
    t = threading.Thread(target=lambda: got.extend([b.recv(), b.recv(), b.recv()]))
    t.start()
    a.send_json(P.HELLO, {"x": 1})
    a.send(P.DATA, P.U64.pack(12345), memoryview(big))
    a.send(P.BYE)
    t.join()
    assert got[0][0] == P.HELLO and P.decode_json(P.HELLO, got[0][1]) == {"x": 1}
    assert got[1][0] == P.DATA
    off, data = P.split_data(got[1][1])
    assert off == 12345 and data.tobytes() == big
    assert got[2] == (P.BYE, bytearray())
    assert a.bytes_out == b.bytes_in == 3 * P.HEADER.size + len(P.encode_json({"x": 1})) + 8 + len(big)
    a.close()
    b.close()


def test_pipe_channel():
    r1, w1 = os.pipe()
    ch_w = P.StreamChannel(rfd=r1, wfd=w1)
    ch_w.send(P.MARK, P.U64U64.pack(0, 10))
    mtype, payload = ch_w.recv()
    assert mtype == P.MARK and P.unpack_ranges(payload, 10) == [(0, 10)]
    os.close(r1)
    os.close(w1)


@pytest.mark.parametrize("hdr,word", [
    (P.HEADER.pack(0x55, 0, 0, 0), "known type"),
    (P.HEADER.pack(P.DATA, 0, 0, P.LIMITS[P.DATA] + 1), "at most"),
    (P.HEADER.pack(P.BYE, 0, 0, 1), "at most 0"),
    (P.HEADER.pack(P.START, 0, 7, 0), "reserved"),
])
def test_bad_headers_rejected_before_payload(hdr, word):
    a, b = socket.socketpair()
    ch = P.StreamChannel(sock=b)
    a.sendall(hdr)           # no payload follows: recv must not wait for it
    with pytest.raises(ProtocolError) as ei:
        ch.recv()
    assert word in str(ei.value)
    a.close()
    ch.close()


def test_eof_and_json_errors():
    a, b = sock_pair()
    a.send(P.HELLO, b"[1, 2]")
    with pytest.raises(ProtocolError) as ei:
        b.recv_json(P.HELLO)
    assert "JSON object" in str(ei.value)
    a.send_json(P.INFO, {})
    with pytest.raises(ProtocolError) as ei:
        b.recv_json(P.HELLO)
    assert "expected HELLO record, got INFO" in str(ei.value)
    a.send_error("disk on fire")
    with pytest.raises(ResyncError) as ei:
        b.recv_json(P.RESULT)
    assert "disk on fire" in str(ei.value)
    a.close()
    with pytest.raises(ProtocolError) as ei:
        b.recv()
    assert "closed" in str(ei.value)


def test_ranges_bounds():
    payloads = P.pack_ranges([(i * 10, i * 10 + 5) for i in range(5000)])
    assert len(payloads) == 2 and all(len(p) <= P.LIMITS[P.RANGES] for p in payloads)
    with pytest.raises(ProtocolError):
        P.unpack_ranges(P.U64U64.pack(5, 50), 40)
    with pytest.raises(ProtocolError):
        P.unpack_ranges(P.U64U64.pack(5, 5), 40)
    with pytest.raises(ProtocolError):
        P.unpack_ranges(b"\0" * 15, 40)


def test_local_pair_no_copy_and_close():
    s, r = P.local_pair(depth=2)
    data = bytearray(os.urandom(P.BIG * 2))
    s.send(P.DATA, P.U64.pack(7), memoryview(data))
    mtype, payload = r.recv()
    off, got = P.split_data(payload)
    assert off == 7 and bytes(got.tobytes()) == bytes(data)
    data[0] ^= 0xFF
    assert got[0:1].tobytes() == bytes(data[0:1])   # the very buffer, not a copy
    assert s.bytes_out == r.bytes_in == P.HEADER.size + 8 + len(data)
    with pytest.raises(ProtocolError):
        s.send(P.DATA, b"x" * (P.LIMITS[P.DATA] + 1))
    s.close()
    with pytest.raises(ProtocolError):
        r.recv()
    with pytest.raises(ResyncError):
        r.send(P.BYE)


def test_keyed_digests():
    data = os.urandom(65536)
    for name in dg.available():
        h1, h2 = dg.make(name, b"k" * 32), dg.make(name, b"j" * 32)
        assert len(h1(data)) == dg.digest_size(name)
        assert h1(data) == h1(memoryview(data)) != h2(data)
        flipped = bytearray(data)
        flipped[-1] ^= 1
        assert h1(data) != h1(bytes(flipped))
    assert dg.FAST in dg.available()
    with pytest.raises(ProtocolError):
        dg.make("md5", b"k" * 32)


def test_token_bucket_with_injected_clock():
    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s
    tb = TokenBucket(1000, burst=500, clock=lambda: now[0], sleep=sleep)
    tb.consume(500)
    assert slept == []
    tb.consume(1000)
    assert slept == [pytest.approx(1.0)]
    now[0] += 10                   # idle time refills only up to the burst
    tb.consume(500)
    assert len(slept) == 1
    tb.consume(250)
    assert slept[-1] == pytest.approx(0.25)
    free = TokenBucket(None, sleep=sleep)
    free.consume(10 ** 12)
    assert len(slept) == 2
