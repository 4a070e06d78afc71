"""A xenstored double that speaks the real xenstore wire protocol.

Spec: ``xen/include/public/io/xs_wire.h`` and ``docs/misc/xenstore.txt``
(Xen 4.1-4.18), behaviour of the C ``xenstored`` (``tools/xenstore``)
where clients can observe it:

* every message is a 16-byte header of four native ``uint32`` (type,
  req_id, tx_id, len) and ``len`` <= 4096 payload bytes; a reply echoes the
  request's type, req_id and tx_id, or has type ``ERROR`` and the errno's
  name followed by NUL (``"ENOENT\\0"``);
* READ replies with the raw value (no NUL); DIRECTORY and GET_PERMS with
  NUL-terminated strings; acks are ``"OK\\0"``;
* WRITE creates missing parents with empty values; MKDIR leaves existing
  nodes alone; RM of a missing node whose parent exists is OK, otherwise
  ENOENT; new nodes inherit their parent's permissions;
* relative paths are relative to ``/local/domain/<domid>`` of the
  connection (a Unix-socket client is dom0);
* transactions are optimistic per node (as xenstored since 4.9): the
  generation of every node a transaction touched is remembered at first
  access, and TRANSACTION_END "T" fails with EAGAIN if any of them changed
  meanwhile; watches for a transaction's changes fire at commit;
* a WATCH fires once at registration, then on every change of the watched
  node or a descendant, and for RM also for watches below the removed node;
  ``@introduceDomain``/``@releaseDomain`` fire on INTRODUCE/RELEASE, and
  ``@releaseDomain`` also on every domain state change the hypervisor
  reports (:meth:`XenstoredServer.domain_exception`, the real daemon's
  VIRQ_DOM_EXC: a domain paused, shut down, resumed or destroyed);
  toolstacks such as xend notice a guest's shutdown only through it;
* DIRECTORY_PART (4.9+) pages long child lists; RESET_WATCHES (4.6+)
  drops the caller's watches and transactions;
* permissions (``[wrbn]<domid>``, owner first) are stored and returned; a
  Unix-socket client is privileged (dom0), so they are not enforced.

The store starts as a freshly booted dom0 shows it: ``/tool/xenstored``
and ``/local/domain/0/{name,domid}``.

``serve(socket_path)`` runs in the foreground until SIGTERM/SIGINT;
:class:`XenstoredServer` can also run in a thread (``start()``/``stop()``).
One thread, one ``select`` loop, non-blocking writes: a client that does
not read its watch events cannot stall the others.
"""
from __future__ import absolute_import, division, print_function

import argparse
import errno
import logging
import os
import select
import signal
import socket
import stat
import struct
import sys
import threading

from xen_remus_ext.errors import XenStoreError

LOG = logging.getLogger(__name__)

HEADER = struct.Struct("=IIII")
PAYLOAD_MAX = 4096
PATH_MAX_ABS = 3072
PATH_MAX_REL = 2048

# xsd_sockmsg_type (xs_wire.h)
XS_DEBUG = 0
XS_DIRECTORY = 1
XS_READ = 2
XS_GET_PERMS = 3
XS_WATCH = 4
XS_UNWATCH = 5
XS_TRANSACTION_START = 6
XS_TRANSACTION_END = 7
XS_INTRODUCE = 8
XS_RELEASE = 9
XS_GET_DOMAIN_PATH = 10
XS_WRITE = 11
XS_MKDIR = 12
XS_RM = 13
XS_SET_PERMS = 14
XS_WATCH_EVENT = 15
XS_ERROR = 16
XS_IS_DOMAIN_INTRODUCED = 17
XS_RESUME = 18
XS_SET_TARGET = 19
XS_RESET_WATCHES = 21    # Xen 4.6+ (20 was XS_RESTRICT, removed)
XS_DIRECTORY_PART = 22   # Xen 4.9+

op_to_str = {
    XS_DEBUG: "DEBUG", XS_DIRECTORY: "DIRECTORY", XS_READ: "READ", XS_GET_PERMS: "GET_PERMS",
    XS_WATCH: "WATCH", XS_UNWATCH: "UNWATCH", XS_TRANSACTION_START: "TRANSACTION_START",
    XS_TRANSACTION_END: "TRANSACTION_END", XS_INTRODUCE: "INTRODUCE", XS_RELEASE: "RELEASE",
    XS_GET_DOMAIN_PATH: "GET_DOMAIN_PATH", XS_WRITE: "WRITE", XS_MKDIR: "MKDIR", XS_RM: "RM",
    XS_SET_PERMS: "SET_PERMS", XS_WATCH_EVENT: "WATCH_EVENT", XS_ERROR: "ERROR",
    XS_IS_DOMAIN_INTRODUCED: "IS_DOMAIN_INTRODUCED", XS_RESUME: "RESUME", XS_SET_TARGET: "SET_TARGET",
    XS_DIRECTORY_PART: "DIRECTORY_PART", XS_RESET_WATCHES: "RESET_WATCHES",
}

#: the errno names xs_wire.h's xsd_errors table carries
XSD_ERRORS = ("EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
              "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM")

SPECIAL_WATCHES = (b"@introduceDomain", b"@releaseDomain")
_PATH_CHARS = frozenset(bytearray(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/_@"))
_PERM_TYPES = frozenset(bytearray(b"wrbn"))


class XsdError(Exception):
    """An xenstored error reply; ``name`` is the errno name sent on the wire."""

    def __init__(self, name):
        if name not in XSD_ERRORS:
            raise ValueError("xenstored error: expected one of %s, got %r" % (", ".join(XSD_ERRORS), name))
        self.name = name
        Exception.__init__(self, name)


class Node(object):
    """One xenstore node: value bytes, perms (list of bytes), ordered child names, generation."""

    __slots__ = ("value", "perms", "children", "gen")

    def __init__(self, value=b"", perms=None, children=None, gen=0):
        self.value = value
        self.perms = list(perms or [b"n0"])
        self.children = list(children or [])
        self.gen = gen

    def copy(self):
        return Node(self.value, self.perms, self.children, self.gen)


def parent_of(path):
    """``/a/b`` -> ``/a``; ``/a`` -> ``/``; ``/`` -> None."""
    if path == b"/":
        return None
    head = path.rsplit(b"/", 1)[0]
    return head or b"/"


def basename_of(path):
    return path.rsplit(b"/", 1)[1]


def is_child_or_self(path, top):
    """True when ``path`` is ``top`` or lies below it."""
    if top == b"/":
        return path.startswith(b"/")
    return path == top or path.startswith(top + b"/")


def check_perm(perm):
    if len(perm) < 2 or bytearray(perm[:1])[0] not in _PERM_TYPES or not perm[1:].isdigit():
        raise XsdError("EINVAL")


class Store(object):
    """The committed tree: a flat dict of absolute path -> :class:`Node`."""

    def __init__(self, seed=True):
        self.gen = 1
        self.nodes = {b"/": Node(gen=self.gen)}
        if seed:
            view = LiveView(self)
            for path, value in ((b"/tool/xenstored", b""), (b"/local/domain/0/name", b"Domain-0"),
                                (b"/local/domain/0/domid", b"0")):
                write_node(view, path, value)

    def next_gen(self):
        self.gen += 1
        return self.gen


class LiveView(object):
    """Direct access to the committed store; records the paths it changed."""

    def __init__(self, store):
        self.store = store
        self.changed = []

    def get(self, path):
        return self.store.nodes.get(path)

    def put(self, path, node):
        node.gen = self.store.next_gen()
        self.store.nodes[path] = node

    def remove(self, path):
        self.store.nodes.pop(path, None)


class Transaction(object):
    """An open transaction: an overlay over the store plus the generations
    of every node seen (None for "absent") at first access."""

    def __init__(self, store, txid):
        self.store = store
        self.txid = txid
        self.overlay = {}    # path -> Node copy, or None when removed in the tx
        self.seen = {}       # path -> generation at first access (None: absent)
        self.changed = []    # (path, recursive) for the watches fired on commit

    def _see(self, path):
        if path not in self.seen:
            node = self.store.nodes.get(path)
            self.seen[path] = node.gen if node is not None else None

    def get(self, path):
        self._see(path)
        if path in self.overlay:
            return self.overlay[path]
        node = self.store.nodes.get(path)
        return node.copy() if node is not None else None

    def put(self, path, node):
        self._see(path)
        self.overlay[path] = node

    def remove(self, path):
        self._see(path)
        self.overlay[path] = None

    def conflicts(self):
        for path, gen in self.seen.items():
            node = self.store.nodes.get(path)
            if (node.gen if node is not None else None) != gen:
                return True
        return False

    def apply(self):
        live = LiveView(self.store)
        for path in sorted(self.overlay, key=len):
            node = self.overlay[path]
            if node is None:
                live.remove(path)
            else:
                live.put(path, node.copy())
        # removals may leave orphans below removed nodes that were never read in the tx
        for path in [p for p, n in self.overlay.items() if n is None]:
            for sub in [p for p in self.store.nodes if p.startswith(path + b"/")]:
                del self.store.nodes[sub]


# ---- tree operations on a view (LiveView or Transaction) --------------------

def _get_or_enoent(view, path):
    node = view.get(path)
    if node is None:
        raise XsdError("ENOENT")
    return node


def _create(view, path):
    """Create ``path`` and missing parents (empty values, inherited perms)."""
    missing = []
    cur = path
    while view.get(cur) is None:
        missing.append(cur)
        cur = parent_of(cur)
    parent = cur
    for p in reversed(missing):
        pnode = view.get(parent).copy()
        pnode.children.append(basename_of(p))
        view.put(parent, pnode)
        view.put(p, Node(b"", perms=pnode.perms))
        parent = p
    return view.get(path)


def write_node(view, path, value):
    node = view.get(path)
    if node is None:
        node = _create(view, path)
    node = node.copy()
    node.value = value
    view.put(path, node)


def mkdir_node(view, path):
    """:returns: True when something was created."""
    if view.get(path) is not None:
        return False
    _create(view, path)
    return True


def rm_node(view, path):
    """:returns: True when something was removed."""
    if path == b"/":
        raise XsdError("EINVAL")
    node = view.get(path)
    if node is None:
        if view.get(parent_of(path)) is not None:
            return False
        raise XsdError("ENOENT")
    stack = [path]
    while stack:
        cur = stack.pop()
        cnode = view.get(cur)
        if cnode is None:
            continue
        stack.extend((cur if cur != b"/" else b"") + b"/" + c for c in cnode.children)
        view.remove(cur)
    ppath = parent_of(path)
    pnode = view.get(ppath).copy()
    name = basename_of(path)
    pnode.children = [c for c in pnode.children if c != name]
    view.put(ppath, pnode)
    return True


def set_perms_node(view, path, perms):
    node = _get_or_enoent(view, path).copy()
    node.perms = list(perms)
    view.put(path, node)


class Watch(object):
    __slots__ = ("conn", "path", "token", "prefix")

    def __init__(self, conn, path, token, prefix):
        self.conn = conn
        self.path = path      # absolute (or special "@...")
        self.token = token
        self.prefix = prefix  # stripped from event paths when the watch was relative


class Connection(object):
    def __init__(self, sock, domid=0):
        self.sock = sock
        self.domid = domid
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.transactions = {}

    @property
    def home(self):
        return b"/local/domain/" + str(self.domid).encode("ascii")

    def queue(self, op, req_id, tx_id, payload):
        self.outbuf += HEADER.pack(op, req_id, tx_id, len(payload))
        self.outbuf += payload


class XenstoredServer(object):
    """The daemon: one listening Unix socket, many clients, one thread."""

    def __init__(self, socket_path, seed=True):
        self.socket_path = socket_path
        self.store = Store(seed=seed)
        self.conns = {}           # fileno -> Connection
        self.watches = []
        self.introduced = set([0])
        self.next_txid = 1
        self._after_reply = []
        self.listener = None
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread = None
        self._dom_exc = 0

    # -- lifecycle -----------------------------------------------------------

    def bind(self):
        """Listen on :attr:`socket_path`.  A stale socket there is replaced;
        any other file is refused, never deleted.  The path appears only
        once the socket listens (bound under a temporary name, then
        renamed), so a client that sees it is not refused."""
        try:
            mode = os.lstat(self.socket_path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISSOCK(mode):
            raise XenStoreError("xenstored double: %s: expected a Unix socket (or nothing) there, got %s; "
                                "left alone" % (self.socket_path,
                                                "a directory" if stat.S_ISDIR(mode) else "another kind of file"))
        d = os.path.dirname(os.path.abspath(self.socket_path))
        if not os.path.isdir(d):
            os.makedirs(d)
        tmp = "%s.%d" % (self.socket_path, os.getpid())
        if len(tmp) >= 108:   # sun_path: no room for the temporary name
            tmp = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if tmp is None:
                if mode is not None:
                    os.unlink(self.socket_path)
                sock.bind(self.socket_path)
                sock.listen(64)
            else:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                sock.bind(tmp)
                sock.listen(64)
                os.rename(tmp, self.socket_path)
        except (socket.error, OSError) as exc:
            sock.close()
            raise XenStoreError("xenstored double: cannot listen on %s: %s"
                                % (self.socket_path, getattr(exc, "strerror", None) or exc))
        sock.setblocking(False)
        self.listener = sock

    def start(self):
        """Bind and serve in a daemon thread; returns once clients can connect."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="xenstored-double")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def domain_exception(self):
        """The hypervisor's VIRQ_DOM_EXC: a domain changed state (shut down,
        paused, resumed, died).  The real xenstored then fires
        ``@releaseDomain`` (domain_cleanup); so does this one, from its
        loop.  Safe from any thread or a signal handler."""
        self._dom_exc += 1
        try:
            os.write(self._wake_w, b"e")
        except OSError:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def serve_forever(self):
        if self.listener is None:
            self.bind()
        try:
            while not self._stopping:
                rlist = [self.listener, self._wake_r] + [c.sock for c in self.conns.values()]
                wlist = [c.sock for c in self.conns.values() if c.outbuf]
                try:
                    readable, writable, _ = select.select(rlist, wlist, [])
                except (select.error, OSError) as exc:
                    if exc.args[0] == errno.EINTR:
                        continue
                    raise
                for sock in writable:
                    conn = self.conns.get(sock.fileno())
                    if conn is not None:
                        self._flush(conn)
                for sock in readable:
                    if sock is self.listener:
                        self._accept()
                    elif sock == self._wake_r:
                        os.read(self._wake_r, 64)
                        if self._dom_exc:
                            self._dom_exc = 0
                            self.fire(b"@releaseDomain")
                    else:
                        conn = self.conns.get(sock.fileno())
                        if conn is not None:
                            self._read(conn)
                for conn in list(self.conns.values()):
                    if conn.outbuf:
                        self._flush(conn)
        finally:
            for conn in list(self.conns.values()):
                self._drop(conn)
            self.listener.close()
            self.listener = None
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass

    # -- socket plumbing -----------------------------------------------------

    def _accept(self):
        try:
            sock, _ = self.listener.accept()
        except socket.error as exc:
            if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return
            raise
        sock.setblocking(False)
        self.conns[sock.fileno()] = Connection(sock)

    def _drop(self, conn):
        self.conns.pop(conn.sock.fileno(), None)
        self.watches = [w for w in self.watches if w.conn is not conn]
        conn.transactions.clear()
        conn.sock.close()

    def _flush(self, conn):
        try:
            n = conn.sock.send(bytes(conn.outbuf))
        except socket.error as exc:
            if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return
            self._drop(conn)
            return
        del conn.outbuf[:n]

    def _read(self, conn):
        try:
            data = conn.sock.recv(65536)
        except socket.error as exc:
            if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.inbuf += data
        while len(conn.inbuf) >= HEADER.size:
            op, req_id, tx_id, length = HEADER.unpack(bytes(conn.inbuf[:HEADER.size]))
            if length > PAYLOAD_MAX:
                LOG.warning("xenstored: client sent a %d-byte payload (max %d); dropping it", length, PAYLOAD_MAX)
                self._drop(conn)
                return
            if len(conn.inbuf) < HEADER.size + length:
                break
            payload = bytes(conn.inbuf[HEADER.size:HEADER.size + length])
            del conn.inbuf[:HEADER.size + length]
            self.handle(conn, op, req_id, tx_id, payload)

    # -- requests --------------------------------------------------------------

    def handle(self, conn, op, req_id, tx_id, payload):
        self._after_reply = []
        try:
            reply = self._dispatch(conn, op, tx_id, payload)
        except XsdError as exc:
            LOG.debug("xenstored: %s -> %s", op_to_str.get(op, op), exc.name)
            conn.queue(XS_ERROR, req_id, tx_id, exc.name.encode("ascii") + b"\0")
            return
        if len(reply) > PAYLOAD_MAX:   # xenstored's send_reply: E2BIG (clients page with DIRECTORY_PART)
            conn.queue(XS_ERROR, req_id, tx_id, b"E2BIG\0")
            return
        conn.queue(op, req_id, tx_id, reply)
        for watch, path in self._after_reply:
            self._event(watch, path)

    def _abs(self, conn, path):
        if not path:
            raise XsdError("EINVAL")
        if path.startswith(b"@"):
            raise XsdError("EINVAL")
        if any(c not in _PATH_CHARS for c in bytearray(path)):
            raise XsdError("EINVAL")
        if b"//" in path or (len(path) > 1 and path.endswith(b"/")):
            raise XsdError("EINVAL")
        if path.startswith(b"/"):
            if len(path) > PATH_MAX_ABS:
                raise XsdError("EINVAL")
            return path
        if len(path) > PATH_MAX_REL:
            raise XsdError("EINVAL")
        return conn.home + b"/" + path

    @staticmethod
    def _args(payload, count):
        """Split ``count`` NUL-terminated strings off the payload."""
        parts = payload.split(b"\0")
        if len(parts) < count + 1:
            raise XsdError("EINVAL")
        return parts[:count]

    def _view(self, conn, tx_id):
        if tx_id == 0:
            return LiveView(self.store)
        tx = conn.transactions.get(tx_id)
        if tx is None:
            raise XsdError("ENOENT")
        return tx

    def _dispatch(self, conn, op, tx_id, payload):
        handler = self._HANDLERS.get(op)
        if handler is None:
            raise XsdError("ENOSYS")
        return handler(self, conn, tx_id, payload)

    def _op_read(self, conn, tx_id, payload):
        path = self._abs(conn, self._args(payload, 1)[0])
        return _get_or_enoent(self._view(conn, tx_id), path).value

    def _op_directory(self, conn, tx_id, payload):
        path = self._abs(conn, self._args(payload, 1)[0])
        node = _get_or_enoent(self._view(conn, tx_id), path)
        return b"".join(c + b"\0" for c in node.children)

    def _op_directory_part(self, conn, tx_id, payload):
        """``path|offset|`` -> ``gencnt|`` + children from byte ``offset`` of the
        NUL-separated list; an empty string ends the list once it is complete."""
        path_b, off_b = self._args(payload, 2)
        node = _get_or_enoent(self._view(conn, tx_id), self._abs(conn, path_b))
        if not off_b.isdigit():
            raise XsdError("EINVAL")
        listing = b"".join(c + b"\0" for c in node.children)
        off = int(off_b)
        gen = str(node.gen).encode("ascii") + b"\0"
        if off >= len(listing):      # behind the list: just the empty string
            return gen + b"\0"
        room = PAYLOAD_MAX - len(gen) - 1
        rest = listing[off:]
        if len(rest) <= room:
            return gen + rest + b"\0"
        cut = rest.rfind(b"\0", 0, room) + 1
        return gen + rest[:cut]

    def _op_reset_watches(self, conn, tx_id, payload):
        self.watches = [w for w in self.watches if w.conn is not conn]
        conn.transactions.clear()
        return b"OK\0"

    def _op_get_perms(self, conn, tx_id, payload):
        path = self._abs(conn, self._args(payload, 1)[0])
        node = _get_or_enoent(self._view(conn, tx_id), path)
        return b"".join(p + b"\0" for p in node.perms)

    def _changed(self, view, path, recursive=False):
        if isinstance(view, Transaction):
            view.changed.append((path, recursive))
        else:
            self.fire(path, recursive)

    def _op_write(self, conn, tx_id, payload):
        nul = payload.find(b"\0")
        if nul < 0:
            raise XsdError("EINVAL")
        path = self._abs(conn, payload[:nul])
        view = self._view(conn, tx_id)
        write_node(view, path, payload[nul + 1:])
        self._changed(view, path)
        return b"OK\0"

    def _op_mkdir(self, conn, tx_id, payload):
        path = self._abs(conn, self._args(payload, 1)[0])
        view = self._view(conn, tx_id)
        if mkdir_node(view, path):
            self._changed(view, path)
        return b"OK\0"

    def _op_rm(self, conn, tx_id, payload):
        path = self._abs(conn, self._args(payload, 1)[0])
        view = self._view(conn, tx_id)
        if rm_node(view, path):
            self._changed(view, path, recursive=True)
        return b"OK\0"

    def _op_set_perms(self, conn, tx_id, payload):
        parts = payload.split(b"\0")
        if len(parts) < 3 or parts[-1] != b"":
            raise XsdError("EINVAL")
        path = self._abs(conn, parts[0])
        perms = parts[1:-1]
        for perm in perms:
            check_perm(perm)
        view = self._view(conn, tx_id)
        set_perms_node(view, path, perms)
        self._changed(view, path)
        return b"OK\0"

    def _op_watch(self, conn, tx_id, payload):
        wpath, token = self._args(payload, 2)
        if wpath in SPECIAL_WATCHES:
            abspath, prefix = wpath, None
        else:
            abspath = self._abs(conn, wpath)
            prefix = None if wpath.startswith(b"/") else conn.home + b"/"
        for w in self.watches:
            if w.conn is conn and w.path == abspath and w.token == token:
                raise XsdError("EEXIST")
        watch = Watch(conn, abspath, token, prefix)
        self.watches.append(watch)
        # xenstored acks, then fires every new watch once (clients read the initial state)
        self._after_reply.append((watch, abspath))
        return b"OK\0"

    def _op_unwatch(self, conn, tx_id, payload):
        wpath, token = self._args(payload, 2)
        abspath = wpath if wpath in SPECIAL_WATCHES else self._abs(conn, wpath)
        for i, w in enumerate(self.watches):
            if w.conn is conn and w.path == abspath and w.token == token:
                del self.watches[i]
                return b"OK\0"
        raise XsdError("ENOENT")

    def _op_transaction_start(self, conn, tx_id, payload):
        if tx_id != 0:
            raise XsdError("EBUSY")
        txid = self.next_txid
        self.next_txid = (self.next_txid % 0xFFFFFFFF) + 1
        conn.transactions[txid] = Transaction(self.store, txid)
        return str(txid).encode("ascii") + b"\0"

    def _op_transaction_end(self, conn, tx_id, payload):
        arg = self._args(payload, 1)[0]
        if arg not in (b"T", b"F"):
            raise XsdError("EINVAL")
        tx = conn.transactions.pop(tx_id, None)
        if tx is None:
            raise XsdError("ENOENT")
        if arg == b"T":
            if tx.conflicts():
                raise XsdError("EAGAIN")
            tx.apply()
            for path, recursive in tx.changed:
                self.fire(path, recursive)
        return b"OK\0"

    @staticmethod
    def _domid(arg):
        if not arg.isdigit():
            raise XsdError("EINVAL")
        return int(arg)

    def _op_get_domain_path(self, conn, tx_id, payload):
        domid = self._domid(self._args(payload, 1)[0])
        return b"/local/domain/" + str(domid).encode("ascii") + b"\0"

    def _op_is_domain_introduced(self, conn, tx_id, payload):
        domid = self._domid(self._args(payload, 1)[0])
        return b"T\0" if domid in self.introduced else b"F\0"

    def _op_introduce(self, conn, tx_id, payload):
        domid_s, mfn, port = self._args(payload, 3)
        domid = self._domid(domid_s)
        if not mfn.isdigit() or not port.isdigit():
            raise XsdError("EINVAL")
        if domid not in self.introduced:
            self.introduced.add(domid)
            self.fire(b"@introduceDomain")
        return b"OK\0"

    def _op_release(self, conn, tx_id, payload):
        domid = self._domid(self._args(payload, 1)[0])
        if domid == 0:
            raise XsdError("EINVAL")
        if domid not in self.introduced:
            raise XsdError("ENOENT")
        self.introduced.discard(domid)
        self.fire(b"@releaseDomain")
        return b"OK\0"

    def _op_resume(self, conn, tx_id, payload):
        domid = self._domid(self._args(payload, 1)[0])
        if domid not in self.introduced:
            raise XsdError("ENOENT")
        return b"OK\0"

    def _op_set_target(self, conn, tx_id, payload):
        a, b = self._args(payload, 2)
        self._domid(a)
        self._domid(b)
        return b"OK\0"

    def _op_debug(self, conn, tx_id, payload):
        parts = payload.split(b"\0")
        if parts[0] == b"print" and len(parts) > 1:
            LOG.info("xenstored debug: %s", parts[1].decode("ascii", "replace"))
            return b"OK\0"
        raise XsdError("EINVAL")

    _HANDLERS = {
        XS_DEBUG: _op_debug, XS_DIRECTORY: _op_directory, XS_READ: _op_read,
        XS_GET_PERMS: _op_get_perms, XS_WATCH: _op_watch, XS_UNWATCH: _op_unwatch,
        XS_TRANSACTION_START: _op_transaction_start, XS_TRANSACTION_END: _op_transaction_end,
        XS_INTRODUCE: _op_introduce, XS_RELEASE: _op_release, XS_GET_DOMAIN_PATH: _op_get_domain_path,
        XS_WRITE: _op_write, XS_MKDIR: _op_mkdir, XS_RM: _op_rm, XS_SET_PERMS: _op_set_perms,
        XS_IS_DOMAIN_INTRODUCED: _op_is_domain_introduced, XS_RESUME: _op_resume,
        XS_SET_TARGET: _op_set_target, XS_DIRECTORY_PART: _op_directory_part,
        XS_RESET_WATCHES: _op_reset_watches,
    }

    # -- watches -----------------------------------------------------------------

    def _event(self, watch, path):
        if watch.prefix is not None and path.startswith(watch.prefix):
            path = path[len(watch.prefix):]
        watch.conn.queue(XS_WATCH_EVENT, 0, 0, path + b"\0" + watch.token + b"\0")

    def fire(self, path, recursive=False):
        """Queue events for a change of ``path`` (and, for a removal, for
        watches on nodes below it)."""
        for w in list(self.watches):
            if path.startswith(b"@"):
                if w.path == path:
                    self._event(w, path)
            elif w.path.startswith(b"@"):
                continue
            elif is_child_or_self(path, w.path):
                self._event(w, path)
            elif recursive and is_child_or_self(w.path, path):
                self._event(w, w.path)


def serve(socket_path, seed=True):
    """Run the double in the foreground until SIGTERM or SIGINT."""
    server = XenstoredServer(socket_path, seed=seed)
    server.bind()

    def _stop(signum, frame):
        server._stopping = True
        os.write(server._wake_w, b"x")

    old = [(s, signal.signal(s, _stop)) for s in (signal.SIGTERM, signal.SIGINT)]
    try:
        server.serve_forever()
    finally:
        for s, h in old:
            signal.signal(s, h)
    return 0


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="xenstored-double", description="A xenstored speaking the xenstore wire protocol on a Unix socket.")
    parser.add_argument("--socket", required=True, metavar="PATH",
                        help="Unix socket to listen on (clients: XENSTORED_PATH=PATH)")
    parser.add_argument("--empty", action="store_true",
                        help="start with only / (no /tool/xenstored or /local/domain/0)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="xenstored: %(message)s")
    sys.stderr.write("xenstored double listening on %s\n" % args.socket)
    sys.stderr.flush()
    try:
        return serve(args.socket, seed=not args.empty)
    except XenStoreError as exc:
        sys.stderr.write("%s\n" % (exc,))
        return 1


if __name__ == "__main__":
    sys.exit(main())
