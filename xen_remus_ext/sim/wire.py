"""Byte formats of the simulator: block-remus messages and the agent's RPC.

block-remus (docs/xen-facts.md section 5): a 4-byte ASCII op; ``wreq`` carries a
12-byte header (uint32 sector count, uint64 start sector, host byte order,
packed) and ``count * 512`` bytes of data; ``creq`` has no body; the backup
answers ``done``.

The simulator carries the checkpoint's memory in the same ordered stream
(op ``mchk``: uint32 length + JSON), standing in for the xc_save stream that
real Remus sends to the backup's relocation port: one ordered stream makes a
checkpoint's disk and memory commit one event, as libxc's "last complete
checkpoint" and block-remus' ``creq`` do together on a real backup.  ``stop``
(no body) ends protection without a failover; the real sender has no such
message (stopping ``remus`` looks like a dead primary to the backup).

The agent RPC is one JSON object per line over a stream socket:
``{"op": NAME, "args": {...}}`` -> ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": TEXT, "kind": CLASSNAME}``.
"""
from __future__ import absolute_import, division, print_function

import json
import socket
import struct

from xen_remus_ext.compat import to_bytes, to_text
from xen_remus_ext.errors import ProtocolError, ToolstackError

SECTOR = 512
MAX_WRITE = 4096          # the backup rejects a larger wreq
HEARTBEAT_MS = 1000       # block-remus and libxc read timeout
WREQ_HEADER = struct.Struct("=IQ")
LEN = struct.Struct("=I")

OP_WREQ = b"wreq"
OP_CREQ = b"creq"
OP_DONE = b"done"
OP_MCHK = b"mchk"
OP_STOP = b"stop"
OPS = (OP_WREQ, OP_CREQ, OP_DONE, OP_MCHK, OP_STOP)


def format_wreq(sector, data):
    # type: (int, bytes) -> bytes
    """One ``wreq`` message writing ``data`` (whole sectors) at ``sector``."""
    if len(data) % SECTOR or not data:
        raise ProtocolError("wreq: expected a whole number of %d-byte sectors, got %d bytes"
                            % (SECTOR, len(data)))
    if len(data) > MAX_WRITE:
        raise ProtocolError("wreq: expected at most %d bytes, got %d" % (MAX_WRITE, len(data)))
    return OP_WREQ + WREQ_HEADER.pack(len(data) // SECTOR, sector) + data


def format_mchk(state):
    # type: (dict) -> bytes
    body = to_bytes(json.dumps(state, sort_keys=True))
    return OP_MCHK + LEN.pack(len(body)) + body


def recv_exact(sock, n):
    """Read exactly ``n`` bytes; :raises EOFError: the peer closed first."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise EOFError("peer closed with %d bytes outstanding" % n)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class SockReader(object):
    """Buffered reads from a socket (few recv calls for many small
    messages); a timeout or EOF propagates as from the socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError("peer closed with %d bytes outstanding" % (n - len(self.buf)))
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _Unbuffered(object):
    def __init__(self, sock):
        self.sock = sock

    def read_exact(self, n):
        return recv_exact(self.sock, n)


def read_message(src):
    """Read one block-remus (or ``mchk``/``stop``) message from a socket or
    a :class:`SockReader`.

    :returns: ``(op, payload)``: for ``wreq`` payload is ``(sector, data)``,
        for ``mchk`` the decoded dict, else None.
    :raises EOFError: peer closed; :raises socket.timeout: silence;
    :raises ProtocolError: unknown op or oversized write.
    """
    rd = src if hasattr(src, "read_exact") else _Unbuffered(src)
    op = rd.read_exact(4)
    if op == OP_WREQ:
        count, sector = WREQ_HEADER.unpack(rd.read_exact(WREQ_HEADER.size))
        if count * SECTOR > MAX_WRITE:
            raise ProtocolError("wreq: expected at most %d bytes, got %d sectors"
                                % (MAX_WRITE, count))
        return op, (sector, rd.read_exact(count * SECTOR))
    if op == OP_MCHK:
        (size,) = LEN.unpack(rd.read_exact(LEN.size))
        return op, json.loads(to_text(rd.read_exact(size)))
    if op in (OP_CREQ, OP_DONE, OP_STOP):
        return op, None
    raise ProtocolError("remus stream: expected one of %s, got %r"
                        % (b"/".join(OPS).decode("ascii"), op))


# ---------------------------------------------------------------- agent RPC

def parse_address(addr):
    """``unix:/path`` or ``/path`` -> (AF_UNIX, path); ``HOST:PORT`` -> (AF_INET, (host, port))."""
    if addr.startswith("unix:"):
        return socket.AF_UNIX, addr[5:]
    if addr.startswith("/"):
        return socket.AF_UNIX, addr
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ToolstackError("agent address: expected unix:PATH or HOST:PORT, got %r" % (addr,))
    return socket.AF_INET, (host, int(port))


def connect(addr, timeout=5.0):
    family, where = parse_address(addr)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(where)
    except (socket.error, OSError):
        sock.close()
        raise
    return sock


class LineReader(object):
    """Reads newline-terminated lines from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    raise EOFError("peer closed mid-line")
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


def send_json(sock, obj):
    sock.sendall(to_bytes(json.dumps(obj, sort_keys=True)) + b"\n")


def decode_json_line(line):
    try:
        return json.loads(to_text(line))
    except ValueError as exc:
        raise ProtocolError("agent rpc: expected a JSON line, got %r (%s)" % (line[:80], exc))
