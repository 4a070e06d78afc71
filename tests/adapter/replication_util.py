"""A model of Xen's side of `xl remus` for the relay tests: a guest writing
numbered records through NBD, libxc's checkpoint loop writing the stream into
a pipe, and a stand-in `xl migrate-receive` (fake_xl_receive.py).

The guest's state is what a checkpoint captures: ``acked`` (the last record
whose write completed) and ``inflight`` (a record sent, not yet completed).
It changes only while the guest holds its "CPU"; libxc's suspend takes the
CPU, so a completion that arrives while suspended waits, as in a real guest.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import socket
import struct
import sys
import threading

from xen_remus_ext.replication import synth as X
from xen_remus_ext.replication import stream as S

SECTOR = 512


#: the product's CLI run as a separate process from this tree
HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
CLI = [sys.executable, "-m", "xen_remus_ext.cli.main"]


def env():
    """The environment that makes :data:`CLI` import this tree."""
    e = dict(os.environ)
    e["PYTHONPATH"] = TOP + os.pathsep + e.get("PYTHONPATH", "")
    return e


def record(n):
    return ("REC %08d" % n).encode("ascii").ljust(SECTOR, b"\0")


def records_on(path, limit=100000):
    """{n: ok} for every sector n >= 1 holding a record (ok: its content is right)."""
    out = {}
    with open(path, "rb") as f:
        data = f.read()
    for off in range(SECTOR, len(data), SECTOR):
        sec = data[off:off + SECTOR]
        if sec.startswith(b"REC "):
            n = int(sec[4:12])
            out[off // SECTOR] = (n == off // SECTOR and sec == record(n))
    return out


def check_disk(path, acked, inflight):
    """(lost, future): records 1..acked missing or wrong; records beyond what
    the checkpointed guest had issued (acked, plus its in-flight one)."""
    recs = records_on(path)
    lost = [n for n in range(1, acked + 1) if not recs.get(n)]
    allowed = acked + (1 if inflight == acked + 1 else 0)
    future = sorted(n for n in recs if n > allowed)
    return lost, future


class NbdClient(object):
    """Minimal NBD client (fixed newstyle, EXPORT_NAME, simple replies)."""

    def __init__(self, path, export):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self._recv(18)
        self.s.sendall(struct.pack(">I", 3))
        name = export.encode()
        self.s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, len(name)) + name)
        self.size = struct.unpack(">QH", self._recv(10))[0]
        self.handle = 0

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError("server closed")
            buf += chunk
        return buf

    def send_write(self, offset, data):
        self.handle += 1
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, self.handle, offset, len(data)) + data)
        return self.handle

    def wait_reply(self):
        magic, err, handle = struct.unpack(">IIQ", self._recv(16))
        assert magic == 0x67446698 and err == 0, (magic, err)
        return handle


class Guest(object):
    def __init__(self, nbd, pace=0.0):
        self.nbd = nbd
        self.cpu = threading.Lock()
        self.acked = 0
        self.inflight = None
        self.stop = False
        self.pace = pace
        self.thread = threading.Thread(target=self._run)
        self.thread.daemon = True

    def _run(self):
        import time
        try:
            while not self.stop:
                with self.cpu:
                    n = self.acked + 1
                    self.inflight = n
                    self.nbd.send_write(n * SECTOR, record(n))
                self.nbd.wait_reply()         # the device works; the guest does not hold the CPU
                with self.cpu:
                    self.acked, self.inflight = n, None
                if self.pace:
                    time.sleep(self.pace)
        except (EOFError, OSError, socket.error):
            return

    def snapshot(self):
        return self.acked, self.inflight


def snapshot_page(acked, inflight):
    return ("SNAP %d %d" % (acked, inflight or 0)).encode("ascii").ljust(4096, b"\0")


def page_record(pages):
    body = struct.pack("<II", len(pages), 0) + b"".join(struct.pack("<Q", 7 + i) for i in range(len(pages)))
    return X.rec(S.LIBXC_PAGE_DATA, body + b"".join(pages))


class Libxc(object):
    """The save loop of a checkpointed PV stream, writing into ``fd``:
    suspend (take the guest's CPU), dirty pages (a snapshot of the guest),
    the tail up to CHECKPOINT, resume, then libxl's CHECKPOINT_END."""

    def __init__(self, fd, guest, interval=0.02):
        self.fd = fd
        self.guest = guest
        self.interval = interval
        self.snapshots = []       # per checkpoint: (acked, inflight)
        self.stop = False
        self.error = None
        self.thread = threading.Thread(target=self._run)
        self.thread.daemon = True

    def _write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def _run(self):
        import time
        try:
            self._write(X.xl_header() + X.libxl_header() + X.rec(S.LIBXL_LIBXC_CONTEXT) + X.libxc_headers()
                        + X.rec(S.LIBXC_X86_PV_INFO, b"\0" * 8) + X.rec(S.LIBXC_STATIC_DATA_END)
                        + X.rec(S.LIBXC_X86_PV_P2M_FRAMES, b"\0" * 24) + X.page_data(list(range(8))))
            while not self.stop:
                self.guest.cpu.acquire()                      # suspend
                try:
                    snap = self.guest.snapshot()
                    self._write(page_record([snapshot_page(*snap), b"\x55" * 4096]) + X.checkpoint_tail())
                finally:
                    self.guest.cpu.release()                  # resume (postcopy)
                self._write(X.rec(S.LIBXL_CHECKPOINT_END))
                self.snapshots.append(snap)
                time.sleep(self.interval)
        except OSError as exc:
            self.error = exc


def parse_receiver_report(text):
    for line in text.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError("no report from the fake receiver: %r" % text)
