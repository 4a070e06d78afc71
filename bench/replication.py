#!/usr/bin/env python
"""Costs of `xen-remus replicate`, measured against peers in the same run.

1. Guest writes through the NBD server: nbdcopy of SIZE into the export with
   no relay attached, and with a relay attached (every write also framed and
   queued toward the backup).  Ratio: captured / plain.
2. xl's stream through the two relays: CHECKPOINTS synthetic PV checkpoints
   of PAGES dirty pages written into a one-page pipe, relayed over a socket
   pair to a receiver that discards them, with the disk server attached;
   the peer is the same topology with a plain copy loop (no parsing, no
   framing, a default 64 KiB pipe).  Also the suspend window the cut adds
   (relay -> disk server -> relay), and the time from CHECKPOINT_END leaving
   the primary relay to its ACK.

usage: bench/replication.py [--size MiB] [--checkpoints N] [--pages N]
"""
from __future__ import absolute_import, division, print_function

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xen_remus_ext.replication import synth, wire  # noqa: E402
from xen_remus_ext.replication import stream as S  # noqa: E402
from xen_remus_ext.replication.nbd import CaptureDisk, NbdServer  # noqa: E402
from xen_remus_ext.replication.relay import BackupRelay, PrimaryRelay  # noqa: E402
from xen_remus_ext.replication.replica import Replica  # noqa: E402

NBDCOPY = "/usr/bin/nbdcopy"


def listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    return s


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


class Drain(object):
    """A relay's side of the control socket that only reads (capture cost)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.sendall(wire.hello_frame({"baseline": "none"}))
        self.bytes = 0
        t = threading.Thread(target=self._run)
        t.daemon = True
        t.start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except (OSError, socket.error):
                return
            if not data:
                return
            self.bytes += len(data)


def bench_nbd(tmp, size):
    if not os.path.exists(NBDCOPY):
        print("SKIP: nbd part (no %s; Debian libnbd-bin)" % NBDCOPY)
        return
    src = os.path.join(tmp, "src.img")
    with open(src, "wb") as f:
        f.write(os.urandom(size))
    img = os.path.join(tmp, "a.img")
    with open(img, "wb") as f:
        f.truncate(size)
    disk = CaptureDisk(img)
    srv = NbdServer(disk, listener(os.path.join(tmp, "n.sock")), listener(os.path.join(tmp, "c.sock")),
                    name="xvda").start()
    uri = "nbd+unix:///xvda?socket=%s" % os.path.join(tmp, "n.sock")
    times = {}
    for label in ("plain", "captured") * 5:
        drain = Drain(os.path.join(tmp, "c.sock")) if label == "captured" else None
        if drain:
            time.sleep(0.2)
        t0 = time.time()
        subprocess.check_call([NBDCOPY, src, uri])
        times.setdefault(label, []).append(time.time() - t0)
        if drain:
            drain.sock.shutdown(socket.SHUT_RDWR)
            time.sleep(0.2)
    srv.stop()
    disk.close()
    mib = size / float(1 << 20)
    plain, cap = median(times["plain"]), median(times["captured"])
    print("nbd writes  %5.0f MiB: plain %6.1f MiB/s, captured %6.1f MiB/s, ratio captured/plain %.2f"
          % (mib, mib / plain, mib / cap, plain / cap))


def make_stream(checkpoints, pages):
    out = bytearray(synth.xl_header() + synth.libxl_header() + synth.rec(S.LIBXL_LIBXC_CONTEXT)
                    + synth.libxc_headers() + synth.rec(S.LIBXC_X86_PV_INFO, b"\0" * 8)
                    + synth.rec(S.LIBXC_STATIC_DATA_END))
    body = synth.page_data(list(range(pages))) + synth.checkpoint_tail() + synth.rec(S.LIBXL_CHECKPOINT_END)
    return bytes(out), body, checkpoints


def writer(fd, head, body, n):
    def run():
        view = memoryview(head + body * n)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
    t = threading.Thread(target=run)
    t.daemon = True
    t.start()
    return t


def sink(fd):
    def run():
        while os.read(fd, 1 << 16):
            pass
    t = threading.Thread(target=run)
    t.daemon = True
    t.start()
    return t


def bench_relay(tmp, checkpoints, pages):
    head, body, n = make_stream(checkpoints, pages)
    total = len(head) + len(body) * n
    # peer: the same topology, plain copies
    r, w = os.pipe()
    sa, sb = socket.socketpair()
    out_r, out_w = os.pipe()
    t0 = time.time()
    wt = writer(w, head, body, n)

    def copy(src, dst, close):
        while True:
            data = os.read(src, 1 << 16)
            if not data:
                close()
                return
            v = memoryview(data)
            while v:
                v = v[os.write(dst, v):]
    a = threading.Thread(target=copy, args=(r, sa.fileno(), lambda: sa.shutdown(socket.SHUT_WR)))
    b = threading.Thread(target=copy, args=(sb.fileno(), out_w, lambda: os.close(out_w)))
    for t in (a, b):
        t.daemon = True
        t.start()
    st = sink(out_r)
    wt.join()
    st.join()
    plain = time.time() - t0
    # the relays, disk server attached, backup replica on a file
    img, bimg = os.path.join(tmp, "ra.img"), os.path.join(tmp, "rb.img")
    for p in (img, bimg):
        with open(p, "wb") as f:
            f.truncate(1 << 20)
    disk = CaptureDisk(img)
    srv = NbdServer(disk, None, listener(os.path.join(tmp, "rc.sock"))).start()
    r, w = os.pipe()
    sa, sb = socket.socketpair()
    ch_r, ch_w = os.pipe()       # the receiver's stdin
    back_r, back_w = os.pipe()
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.connect(os.path.join(tmp, "rc.sock"))
    primary = PrimaryRelay(r, back_w, sa.fileno(), sa.fileno(), ctl, baseline="none")
    replica = Replica(bimg, os.path.join(tmp, "spool"))
    backup = BackupRelay(sb.fileno(), sb.fileno(), ch_w, back_r, replica, timeout=5.0)
    res = {}

    def run(name, fn):
        try:
            res[name] = fn()
        except Exception as exc:   # the benchmark reports, never hides, a failure
            res[name] = exc
    t0 = time.time()
    pt = threading.Thread(target=run, args=("p", primary.run))
    bt = threading.Thread(target=run, args=("b", backup.run))
    for t in (pt, bt):
        t.daemon = True
        t.start()
    rcv = sink(ch_r)
    wt = writer(w, head, body, n)
    wt.join()
    while backup.report["committed"] < n - 1 and time.time() - t0 < 120:
        time.sleep(0.001)
    relayed = time.time() - t0
    sa.shutdown(socket.SHUT_RDWR)
    bt.join(10)
    rcv.join(10)
    srv.stop()
    replica.close()
    stats = primary.stats
    holds = [c["hold"] for c in stats["cuts"]]
    mib = total / float(1 << 20)
    print("xl stream   %5.1f MiB, %d checkpoints of %d pages: plain copy %6.1f MiB/s, relays %6.1f MiB/s, "
          "ratio relays/plain %.2f" % (mib, n, pages, mib / plain, mib / relayed, plain / relayed))
    print("per checkpoint: cut (added to the suspend window) median %.3f ms, max %.3f ms; "
          "CHECKPOINT_END -> ACK median %.3f ms; pipe %s bytes; acks %d"
          % (1000 * median(holds), 1000 * max(holds or [0]), 1000 * median(stats["ack_latency"]),
             stats["pipe"], stats["acks"]))
    if isinstance(res.get("p"), Exception):
        print("primary relay ended: %s" % res["p"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64, help="MiB copied through NBD (default 64)")
    ap.add_argument("--checkpoints", type=int, default=200)
    ap.add_argument("--pages", type=int, default=16, help="dirty pages per checkpoint (default 16)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="research-bench-repl-")
    try:
        t0 = time.time()
        bench_nbd(tmp, args.size << 20)
        bench_relay(tmp, args.checkpoints, args.pages)
        print("time: %.1f s" % (time.time() - t0))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
