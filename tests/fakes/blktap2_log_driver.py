"""A double of blktap2's ``log`` driver (block-log.c, log.h; Xen 4.1-4.12).

Stands in for a tapdisk running ``log:NAME|aio:NAME`` (tapdisk needs blktap
in a Xen dom0).  It keeps the driver's observable behaviour:

* control socket ``<ctrl_dir>/log_<escaped basename>.ctl``, one connection
  at a time (a second one is closed at once); requests are read 20 bytes
  at a time and a short read is ignored, as in ``ctl_request``;
* ``shmp`` writes 0xdeadbeef at the start of the region and replies 256
  bytes (u32 8 MiB + ``/log_<escaped name>.wlog``); ``peek``/``clrw``/``getw``
  reply ``done``; ``kick`` a 20-byte ``kick`` message;
* the 8 MiB shared memory file ``<shm_dir>/log_<escaped name>.wlog``; an
  export writes ``{u64 sector, u32 count, 4 pad}`` records from offset 0,
  ends with a zero record, and stops unterminated when the first half is
  full (``writelog_export``); ``getw`` exports then clears all bits.

:meth:`LogDriverDouble.write` is the guest write (``tdlog_queue_write``).
Everything runs under one lock: tapdisk is single-threaded.
"""
from __future__ import absolute_import, division, print_function

import mmap
import os
import select
import socket
import struct
import threading

SHMSIZE = 8 * 1024 * 1024
RANGE = struct.Struct("@QI0Q")    # tapdisk's native struct disk_range


def _escape(text):
    return text.replace(":", "_").replace("/", "_")


class LogDriverDouble(object):
    def __init__(self, name, sectors, ctrl_dir, shm_dir):
        self.name = name
        self.sectors = sectors
        self.ctl_path = os.path.join(ctrl_dir, "log_%s.ctl" % _escape(name[name.rfind("/"):]))
        self.shm_name = "/log_%s.wlog" % _escape(name)
        self.shm_path = os.path.join(shm_dir, self.shm_name.lstrip("/"))
        self.bitmap = bytearray((sectors + 7) // 8)
        self.lock = threading.Lock()
        self.requests = []
        self._stop = False
        self._thread = None

    # -- the guest side ----------------------------------------------------------

    def write(self, sector, count):
        with self.lock:
            for s in range(sector, sector + count):
                self.bitmap[s >> 3] |= 1 << (s & 7)

    def _dirty(self, s):
        return self.bitmap[s >> 3] >> (s & 7) & 1

    # -- lifecycle -----------------------------------------------------------------

    def start(self):
        fd = os.open(self.shm_path, os.O_CREAT | os.O_RDWR, 0o750)
        try:
            os.ftruncate(fd, SHMSIZE)
            self.shm = mmap.mmap(fd, SHMSIZE)
        finally:
            os.close(fd)
        if os.path.exists(self.ctl_path):
            os.unlink(self.ctl_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.ctl_path)
        self.listener.listen(1)
        self._thread = threading.Thread(target=self._loop)
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        if self._thread is not None:
            self._thread.join(5)
        self.listener.close()
        for path in (self.ctl_path, self.shm_path):
            if os.path.exists(path):
                os.unlink(path)
        self.shm.close()

    # -- the control socket ---------------------------------------------------------

    def _loop(self):
        conn = None
        while not self._stop:
            rl = [self.listener] + ([conn] if conn is not None else [])
            ready, _, _ = select.select(rl, [], [], 0.05)
            for sock in ready:
                if sock is self.listener:
                    new, _ = self.listener.accept()
                    if conn is not None:
                        new.close()          # "control session in progress"
                    else:
                        conn = new
                else:
                    data = conn.recv(20)
                    if not data:
                        conn.close()
                        conn = None
                    elif len(data) < 20:
                        self.requests.append(("short", data))   # ignored, as the driver does
                    else:
                        self.requests.append(("msg", data))
                        self._do(conn, data[:4])
        if conn is not None:
            conn.close()

    def _do(self, conn, cmd):
        with self.lock:
            if cmd == b"shmp":
                self.shm[0:4] = struct.pack("=I", 0xdeadbeef)
                msg = struct.pack("=I", SHMSIZE) + self.shm_name.encode("ascii") + b"\0"
                conn.sendall(msg + b"\0" * (256 - len(msg)))
            elif cmd == b"peek":
                self._export()
                conn.sendall(b"done")
            elif cmd == b"clrw":
                self.bitmap[:] = bytearray(len(self.bitmap))
                conn.sendall(b"done")
            elif cmd == b"getw":
                self._export()
                self.bitmap[:] = bytearray(len(self.bitmap))
                conn.sendall(b"done")
            elif cmd == b"kick":
                conn.sendall(b"kick" + b"\0" * 16)

    def _export(self):
        pos, s, limit = 0, 0, SHMSIZE // 2
        while s < self.sectors:
            if not self._dirty(s):
                s += 1
                continue
            start = s
            while s < self.sectors and self._dirty(s):
                s += 1
            self.shm[pos:pos + RANGE.size] = RANGE.pack(start, s - start)
            pos += RANGE.size
            if pos >= limit:
                return
        self.shm[pos:pos + RANGE.size] = RANGE.pack(0, 0)
