"""The primary's disk, served over NBD, with every write captured by epoch.

Adapter (files, sockets, threads).  dom0's kernel NBD client (``nbd-client``
from Debian, or any NBD client) connects; blkback exports ``/dev/nbdN`` to
the guest.  Every write goes to the image at once (the primary's disk is
always current) and, while a relay is attached on the control socket, into
the relay's queue tagged with the open epoch.  The relay's CUT closes the
epoch: the reply follows that epoch's last write on the same connection.

NBD: the fixed-newstyle handshake (NBD_OPT_EXPORT_NAME, INFO, GO, LIST,
ABORT; everything else answered ERR_UNSUP), simple replies, commands READ,
WRITE (FUA honoured), FLUSH (fsync), DISC.  One export per server.
"""
from __future__ import absolute_import, division, print_function

import errno
import logging
import os
import socket
import struct
import threading

from six.moves import queue

from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication import wire

LOG = logging.getLogger(__name__)

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003e889045565a9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_INVALID, REP_ERR_UNKNOWN = 0x80000001, 0x80000003, 0x80000006
TF_HAS_FLAGS, TF_READ_ONLY, TF_SEND_FLUSH, TF_SEND_FUA = 1, 2, 4, 8
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
CMD_FLAG_FUA = 1
MAX_REQUEST = 32 << 20
BASELINE_CHUNK = 256 << 10
QUEUE_FRAMES = 64

_REQ = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")
_OPT = struct.Struct(">QII")
_OPT_REPLY = struct.Struct(">QIII")


class CaptureDisk(object):
    """An image file whose writes are numbered into epochs while attached."""

    def __init__(self, path, readonly=False):
        self.path = path
        self.readonly = readonly
        try:
            self._fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except OSError as exc:
            raise ReplicationError("%s: %s" % (path, exc.strerror))
        self.size = os.lseek(self._fd, 0, os.SEEK_END)
        self._lock = threading.Lock()
        self._sink = None
        self.epoch = 0
        self._writes = 0
        self._bytes = 0

    # -- guest I/O (called by NBD connections) ----------------------------------
    def read(self, offset, length):
        with self._lock:
            return self._pread(offset, length)

    def _pread(self, offset, length):
        os.lseek(self._fd, offset, os.SEEK_SET)
        parts, left = [], length
        while left:
            chunk = os.read(self._fd, left)
            if not chunk:
                raise ReplicationError("%s: short read at %d" % (self.path, offset + length - left))
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def write(self, offset, data, fua=False):
        with self._lock:
            os.lseek(self._fd, offset, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self._sink is not None:
                self._sink.put(wire.write_frame(self.epoch, offset, data))
                self._writes += 1
                self._bytes += len(data)
        if fua:
            os.fsync(self._fd)

    def flush(self):
        os.fsync(self._fd)

    # -- the relay (called by the control connection) ---------------------------
    def attach(self, sink, baseline, first=None):
        """Start epoch 0 toward ``sink`` (a queue of encoded frames), after
        the frame ``first`` (the HELLO reply: once the relay has it, every
        later write is captured).  With ``baseline="full"`` epoch 0 begins
        with the whole disk, read chunk by chunk under the lock, so later
        writes always follow the data they change."""
        with self._lock:
            if self._sink is not None:
                raise ReplicationError("%s: a relay is already attached" % self.path)
            self._sink = sink
            self.epoch, self._writes, self._bytes = 0, 0, 0
            if first is not None:
                sink.put(first)
        if baseline == "full":
            off = 0
            while off < self.size:
                with self._lock:
                    n = min(BASELINE_CHUNK, self.size - off)
                    sink.put(wire.write_frame(0, off, self._pread(off, n)))
                    self._writes += 1
                    self._bytes += n
                off += n

    def cut(self):
        """Close the open epoch; its CUT frame follows its writes in the sink."""
        with self._lock:
            if self._sink is None:
                raise ReplicationError("%s: cut with no relay attached" % self.path)
            done = (self.epoch, self._writes, self._bytes)
            self._sink.put(wire.cut_frame(*done))
            self.epoch += 1
            self._writes, self._bytes = 0, 0
            return done

    def detach(self):
        with self._lock:
            self._sink = None

    def close(self):
        os.close(self._fd)


def _recv_exactly(sock, n):
    parts, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (n - left, n))
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class NbdServer(object):
    """Serves one :class:`CaptureDisk` as export ``name`` on ``listener``
    (a bound, listening socket) and a relay control socket on ``control``."""

    def __init__(self, disk, listener, control=None, name="disk"):
        self.disk = disk
        self.name = name
        self.listener = listener
        self.control = control
        self._stop = False
        self._threads = []

    def start(self):
        for target, sock in ((self._accept_nbd, self.listener), (self._accept_control, self.control)):
            if sock is None:
                continue
            t = threading.Thread(target=target, args=(sock,), name="nbd-accept")
            t.daemon = True
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop = True
        for sock in (self.listener, self.control):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except (OSError, socket.error):
                    pass
                sock.close()

    def _spawn(self, fn, conn):
        t = threading.Thread(target=fn, args=(conn,))
        t.daemon = True
        t.start()

    def _accept_nbd(self, sock):
        while not self._stop:
            try:
                conn, _ = sock.accept()
            except (OSError, socket.error):
                return
            self._spawn(self._serve_client, conn)

    def _accept_control(self, sock):
        while not self._stop:
            try:
                conn, _ = sock.accept()
            except (OSError, socket.error):
                return
            self._spawn(self._serve_relay, conn)

    # -- NBD ----------------------------------------------------------------------
    def _tflags(self):
        return TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | (TF_READ_ONLY if self.disk.readonly else 0)

    def _serve_client(self, conn):
        try:
            if self._handshake(conn):
                self._transmission(conn)
        except (EOFError, OSError, socket.error) as exc:
            LOG.debug("nbd client gone: %s", exc)
        except ReplicationError as exc:
            LOG.error("nbd: %s", exc)
        finally:
            conn.close()

    def _opt_reply(self, conn, opt, rtype, data=b""):
        conn.sendall(_OPT_REPLY.pack(REPLY_MAGIC, opt, rtype, len(data)) + data)

    def _handshake(self, conn):
        conn.sendall(NBDMAGIC + struct.pack(">QH", IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        cflags = struct.unpack(">I", _recv_exactly(conn, 4))[0]
        while True:
            magic, opt, length = _OPT.unpack(_recv_exactly(conn, _OPT.size))
            if magic != IHAVEOPT:
                raise ReplicationError("nbd client: option magic 0x%x" % magic)
            if length > 65536:
                raise ReplicationError("nbd client: option %d of %d bytes" % (opt, length))
            data = _recv_exactly(conn, length)
            if opt == OPT_EXPORT_NAME:
                if data.decode("utf-8", "replace") not in ("", self.name):
                    return False      # the protocol has no error reply here: close
                tail = b"" if cflags & FLAG_NO_ZEROES else bytes(bytearray(124))
                conn.sendall(struct.pack(">QH", self.disk.size, self._tflags()) + tail)
                return True
            if opt == OPT_ABORT:
                self._opt_reply(conn, opt, REP_ACK)
                return False
            if opt == OPT_LIST:
                name = self.name.encode("utf-8")
                self._opt_reply(conn, opt, REP_SERVER, struct.pack(">I", len(name)) + name)
                self._opt_reply(conn, opt, REP_ACK)
                continue
            if opt in (OPT_INFO, OPT_GO):
                if len(data) < 6:
                    self._opt_reply(conn, opt, REP_ERR_INVALID)
                    continue
                nlen = struct.unpack(">I", data[:4])[0]
                name = data[4:4 + nlen].decode("utf-8", "replace")
                if name not in ("", self.name):
                    self._opt_reply(conn, opt, REP_ERR_UNKNOWN)
                    continue
                self._opt_reply(conn, opt, REP_INFO, struct.pack(">HQH", 0, self.disk.size, self._tflags()))
                self._opt_reply(conn, opt, REP_ACK)
                if opt == OPT_GO:
                    return True
                continue
            self._opt_reply(conn, opt, REP_ERR_UNSUP)

    def _transmission(self, conn):
        size = self.disk.size
        while True:
            magic, flags, cmd, handle, offset, length = _REQ.unpack(_recv_exactly(conn, _REQ.size))
            if magic != REQUEST_MAGIC:
                raise ReplicationError("nbd client: request magic 0x%x" % magic)
            if length > MAX_REQUEST:
                raise ReplicationError("nbd client: request of %d bytes" % length)
            if cmd == CMD_DISC:
                return
            if cmd == CMD_READ:
                if offset + length > size:
                    conn.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, errno.EINVAL, handle))
                else:
                    data = self.disk.read(offset, length)
                    conn.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, handle) + data)
            elif cmd == CMD_WRITE:
                data = _recv_exactly(conn, length)
                if self.disk.readonly:
                    err = errno.EPERM
                elif offset + length > size:
                    err = errno.ENOSPC
                else:
                    self.disk.write(offset, data, fua=bool(flags & CMD_FLAG_FUA))
                    err = 0
                conn.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, err, handle))
            elif cmd == CMD_FLUSH:
                self.disk.flush()
                conn.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, handle))
            else:
                conn.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, errno.EINVAL, handle))

    # -- the relay's control connection ------------------------------------------------
    def _serve_relay(self, conn):
        sink = queue.Queue(QUEUE_FRAMES)
        done = threading.Event()

        def pump():
            failed = False
            while True:
                item = sink.get()
                if item is None:
                    done.set()
                    return
                if failed:
                    continue          # drain, so that writers never block on a dead relay
                try:
                    conn.sendall(item)
                except (OSError, socket.error) as exc:
                    LOG.warning("relay control connection: %s", exc)
                    failed = True
                    done.set()
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except (OSError, socket.error):
                        pass

        dec = wire.Decoder("relay control connection")
        attached = False
        sender = threading.Thread(target=pump)
        sender.daemon = True
        try:
            while not done.is_set():
                data = conn.recv(65536)
                if not data:
                    break
                for ftype, body in dec.feed(data):
                    if ftype == wire.HELLO and not attached:
                        hello = wire.parse_hello(body, "relay")
                        if hello.get("query"):
                            # what is served, without attaching (the relay's default --backup-disk)
                            conn.sendall(wire.hello_frame({"size": self.disk.size, "path": self.disk.path}))
                            return
                        baseline = hello.get("baseline", "none")
                        if baseline not in ("full", "none"):
                            raise ReplicationError("relay: baseline %r (full or none)" % (baseline,))
                        sender.start()
                        self.disk.attach(sink, baseline,
                                         wire.hello_frame({"size": self.disk.size, "path": self.disk.path}))
                        attached = True
                    elif ftype == wire.CUT and attached:
                        self.disk.cut()
                    else:
                        raise ReplicationError("relay: unexpected %s frame" % wire.NAMES[ftype])
        except (OSError, socket.error) as exc:
            LOG.warning("relay control connection: %s", exc)
        except ReplicationError as exc:
            LOG.error("%s", exc)
            if not attached:          # nothing else sends on conn yet: the relay hears why
                try:
                    conn.sendall(wire.frame(wire.ABORT, str(exc).encode("utf-8")[:4096]))
                except (OSError, socket.error):
                    pass
        finally:
            if attached:
                self.disk.detach()
            if attached or sender.ident is not None:
                sink.put(None)        # after detach nobody else puts: the pump drains to it
                sender.join()
            conn.close()
