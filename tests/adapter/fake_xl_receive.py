"""Stand-in for `xl migrate-receive -r` in the relay tests.

Writes xl's banner, reads the stream from stdin like libxl/libxc do for
Remus (a checkpoint counts only once its CHECKPOINT_END is read), and at the
end of the stream (a failover) prints one JSON line: the checkpoint it would
resume from, the guest snapshot in it, and whether, each time a
CHECKPOINT_END arrived, the backup disk DISK already held that snapshot's
records (the relay must apply an epoch before handing over its commit).

usage: fake_xl_receive.py DISK [REPORT]   (REPORT: also write the JSON line there)
"""
from __future__ import absolute_import, division, print_function

import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.adapter.replication_util import check_disk  # noqa: E402
from xen_remus_ext.replication import stream as S  # noqa: E402


def main(disk, report=None):
    out = getattr(sys.stdout, "buffer", sys.stdout)
    out.write(b"xl migration receiver ready, send binary domain data.\n")
    out.flush()
    inp = getattr(sys.stdin, "buffer", sys.stdin)
    sc = S.StreamScanner()
    buf = bytearray()
    snap = None
    last = {"checkpoint": -1, "acked": None, "inflight": None}
    violations = []
    while True:
        data = os.read(inp.fileno(), 65536)
        if not data:
            break
        buf += data
        for el in sc.feed(data):
            if el.kind == S.LIBXC_RECORD and el.rtype == S.LIBXC_PAGE_DATA:
                start = el.end - S.padded(el.length)
                count = struct.unpack_from("<I", bytes(buf[start:start + 4]))[0]
                page = bytes(buf[start + 8 + 8 * count:start + 8 + 8 * count + 4096])
                if page.startswith(b"SNAP "):
                    a, i = page[5:].split(b"\0", 1)[0].split()
                    snap = (int(a), int(i) or None)
            elif el.kind == S.LIBXL_RECORD and el.rtype == S.LIBXL_CHECKPOINT_END:
                last = {"checkpoint": last["checkpoint"] + 1, "acked": snap[0], "inflight": snap[1]}
                lost, _future = check_disk(disk, snap[0], snap[1])
                if lost:
                    violations.append({"checkpoint": last["checkpoint"], "lost": lost[:5]})
    last["violations"] = violations
    last["bytes"] = sc.offset
    print(json.dumps(last))
    sys.stdout.flush()
    if report:
        with open(report + ".tmp", "w") as f:
            f.write(json.dumps(last) + "\n")
        os.rename(report + ".tmp", report)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
