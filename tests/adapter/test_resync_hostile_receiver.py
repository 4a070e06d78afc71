"""A receiver that lies: the sender ends with a clear XenRemusError, never a traceback.

The "receiver" is a small script run as the ssh-started receiver would be
(``XEN_REMUS_REMOTE_CMD``; ``-s env`` stands in for ssh, so ``HOST`` is an
``env`` assignment).  It speaks real framing and lies in one place per case.
"""
from __future__ import absolute_import, division, print_function

import sys

import pytest

from tests.adapter.resync_util import copy, make_image
from xen_remus_ext.errors import XenRemusError
from xen_remus_ext.resync import api

SCRIPT = r'''
import json, os, struct, sys
H = struct.Struct("!BBHI")
rd, wr = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin, os.fdopen(1, "wb", 0)
def recv():
    hdr = rd.read(8)
    if len(hdr) < 8:
        sys.exit(0)
    t, f, r, n = H.unpack(hdr)
    return t, rd.read(n)
def send(t, body):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    wr.write(H.pack(t, 0, 0, len(body)) + body)
case = sys.argv[1]
size = int(sys.argv[2])
recv()
send(1, {"magic": "xen-remus-resync", "version": 1, "digests": ["xxh3-128"], "nonce": "ab" * 16, "auth": None})
info = {"size": size, "path": "/x", "meta": None, "journal": None}
if case == "size-type":
    info["size"] = "lots"
if case == "meta-garbage":
    info["meta"] = {"disk": "/x", "size": size, "consistent": True, "current": 5}
if case == "deep-info":
    send(3, b"[" * 60000)
    sys.exit(0)
if case == "oversized":
    wr.write(H.pack(3, 0, 0, 1 << 30))
    sys.exit(0)
send(3, info)
t, body = recv()
ack = {"ok": True, "done": []}
if case == "done-garbage":
    ack["done"] = "xyz"
send(4, ack)
while True:
    t, body = recv()
    if t == 5 and not body:
        break
if case == "digest-offset":
    send(0x10, struct.pack("!QI", 12345, 1 << 20) + b"\0" * 256)
elif case == "result-garbage":
    for off in range(0, size, 1 << 20):
        n = min(1 << 20, size - off)
        send(0x10, struct.pack("!QI", off, n) + b"\0" * (16 * ((n + 65535) // 65536)))
    while True:
        t, body = recv()
        if t == 0x30:
            break
    send(0x31, {"ok": True, "bytes_read": "many"})
sys.stdin.read()
'''


@pytest.mark.parametrize("case,word", [
    ("size-type", "INFO record: expected size"),
    ("meta-garbage", "current"),
    ("oversized", "at most"),
    ("deep-info", "INFO record: expected a JSON object, got one nested too deep"),
    ("done-garbage", "START record: expected done"),
    ("digest-offset", "DIGESTS record"),
    ("result-garbage", "RESULT record: expected bytes_read"),
])
def test_lying_receiver(tmp_path, monkeypatch, case, word):
    script = str(tmp_path / "liar.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    src = make_image(str(tmp_path / "src.img"), 2 << 20)
    dst = copy(src, str(tmp_path / "dst.img"))
    monkeypatch.setenv("XEN_REMUS_REMOTE_CMD", "%s %s %s %d" % (sys.executable, script, case, 2 << 20))
    with pytest.raises(XenRemusError) as ei:
        api.resync(src, "XRE=1:" + dst, ssh="env", mode="checksum")
    assert word in str(ei.value)
    assert str(ei.value).startswith("XRE=1:" + dst)        # names the peer
