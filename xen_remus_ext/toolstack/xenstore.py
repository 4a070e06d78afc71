"""XenStore adapter on pyxs (docs/xen-facts.md section 7).

:class:`PyxsXenStore` implements :class:`ports.XenStore` with pyxs 0.4.1 on a
xenstored Unix socket (``XENSTORED_PATH``, else ``/var/run/xenstored/socket``)
or, on a real dom0 without the daemon socket, on XenBus
(``/dev/xen/xenbus``).  Paths and values are text at the port and bytes on
the wire; errors become :class:`errors.XenStoreError` keeping the errno.

Empty values: pyxs 0.4.1 checks every argument of a request against
``[\\x00\\x20-\\x7f]+``, so ``write(path, b"")`` raises ValueError before
anything is sent (fixed upstream in 36a991c, never released).  On the wire
an empty WRITE is just ``path\\0`` (xenstored takes everything after the
first NUL as the value), so for an empty value this adapter sends that
one-argument WRITE itself through the client's ``ack``; the bytes that reach
xenstored are the same as a fixed pyxs would send.  Other values pyxs cannot
carry (control characters, non-ASCII) are refused with ValidationError.

Transactions: ``with store.transaction() as tx:`` runs on a copy of the pyxs
client (same connection, own transaction id, as pyxs intends), commits on a
normal exit, rolls back on an exception; a conflicting commit raises
XenStoreError with ``errno == EAGAIN``.  :func:`ports.run_transaction` is the
retry loop around it, for any :class:`ports.XenStore`.

Watches: :meth:`PyxsXenStore.watch` returns a :class:`WatchStream` (an
iterator with ``next_event(timeout)`` and ``close()``) over a pyxs Monitor.
pyxs refuses monitors on XenBus, and so does this adapter.
"""
from __future__ import absolute_import, division, print_function

import contextlib
import copy
import errno as errno_mod
import logging
import os
import posixpath
import re

import six
from six.moves import queue

from xen_remus_ext.compat import to_bytes, to_text
from xen_remus_ext.errors import ValidationError, XenStoreError
from xen_remus_ext.ports import XenStore

try:
    import pyxs
    from pyxs.exceptions import PyXSError
except ImportError:  # pragma: no cover - pyxs is an install requirement
    pyxs = None
    PyXSError = None

LOG = logging.getLogger(__name__)

_EMBEDDED_ERRNO = re.compile(r"\((\d+), ")
_VALUE_OK = re.compile(b"^[\x20-\x7f]*$")


def _xs_error(what, exc):
    """Turn a pyxs error into XenStoreError, keeping the errno."""
    code = exc.args[0] if exc.args else None
    if isinstance(code, six.integer_types) and not isinstance(code, bool):
        name = errno_mod.errorcode.get(code, str(code))
        msg = "%s: %s (%s)" % (what, name, os.strerror(code)) if code else "%s: %s" % (what, exc)
        return XenStoreError(msg, errno=code or None)
    # pyxs' ConnectionError carries the socket error's args formatted into its text
    found = _EMBEDDED_ERRNO.search(str(code))
    if found and int(found.group(1)) in errno_mod.errorcode:
        num = int(found.group(1))
        return XenStoreError("%s: %s (%s)" % (what, errno_mod.errorcode[num], os.strerror(num)), errno=num)
    return XenStoreError("%s: %s" % (what, exc), errno=None)


class _Ops(object):
    """read/write/list/delete/exists over one pyxs client (plain or in a transaction)."""

    def __init__(self, client, where):
        self._c = client
        self._where = where

    def _call(self, what, fn, *args):
        try:
            return fn(*args)
        except ValueError as exc:  # pyxs' InvalidPath/InvalidPermission and its 7-bit check
            raise six.raise_from(ValidationError("xenstore %s: invalid path or value: %s" % (what, exc)), exc)
        except PyXSError as exc:
            raise six.raise_from(_xs_error("xenstore %s (%s)" % (what, self._where), exc), exc)

    def read(self, path, default=None):
        try:
            return to_text(self._call("read %s" % path, self._c.read, to_bytes(path)))
        except XenStoreError as exc:
            if exc.errno == errno_mod.ENOENT and default is not None:
                return default
            raise

    def write(self, path, value):
        bvalue = to_bytes(value)
        if not _VALUE_OK.match(bvalue):
            raise ValidationError("xenstore write %s: expected printable ASCII, got %r" % (path, value))
        bpath = to_bytes(path)
        if bvalue:
            self._call("write %s" % path, self._c.write, bpath, bvalue)
        else:
            from pyxs.helpers import check_path
            from pyxs._internal import NUL, Op
            self._call("write %s" % path, check_path, bpath)
            # see the module docstring: "path\0" is an empty WRITE on the wire
            self._call("write %s" % path, self._c.ack, Op.WRITE, bpath + NUL)

    def list(self, path):
        return [to_text(n) for n in self._call("list %s" % path, self._c.list, to_bytes(path))]

    def delete(self, path):
        self._call("delete %s" % path, self._c.delete, to_bytes(path))

    def exists(self, path):
        return bool(self._call("exists %s" % path, self._c.exists, to_bytes(path)))

    def mkdir(self, path):
        self._call("mkdir %s" % path, self._c.mkdir, to_bytes(path))

    def get_perms(self, path):
        return [to_text(p) for p in self._call("get_perms %s" % path, self._c.get_perms, to_bytes(path))]

    def set_perms(self, path, perms):
        self._call("set_perms %s" % path, self._c.set_perms, to_bytes(path), [to_bytes(p) for p in perms])


class PyxsXenStore(XenStore):
    """:class:`ports.XenStore` on pyxs.

    States: created (nothing opened) -> connected (first use, or
    :meth:`connect`) -> closed (:meth:`close`; a later call reconnects).

    :param unix_socket_path: xenstored socket; None: pyxs' default
        (``XENSTORED_PATH`` or ``/var/run/xenstored/socket``).
    :param xen_bus_path: use XenBus instead (only when no socket path is given).
    """

    def __init__(self, unix_socket_path=None, xen_bus_path=None):
        if pyxs is None:
            raise XenStoreError("pyxs is not installed (pip install pyxs)", errno=errno_mod.ENOSYS)
        self.unix_socket_path = unix_socket_path
        self.xen_bus_path = xen_bus_path
        self._client = None
        self._ops = None

    @property
    def where(self):
        if self.unix_socket_path or not self.xen_bus_path:
            return self.unix_socket_path or os.environ.get("XENSTORED_PATH") or "/var/run/xenstored/socket"
        return self.xen_bus_path

    def connect(self):
        if self._client is not None:
            return self
        client = pyxs.Client(unix_socket_path=self.unix_socket_path, xen_bus_path=self.xen_bus_path)
        try:
            client.connect()
        except PyXSError as exc:
            raise six.raise_from(_xs_error("cannot connect to xenstored at %s" % self.where, exc), exc)
        self._client = client
        self._ops = _Ops(client, self.where)
        return self

    def close(self):
        client, self._client, self._ops = self._client, None, None
        if client is not None:
            client.close()

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    def _o(self):
        return self.connect()._ops

    def read(self, path, default=None):
        return self._o().read(path, default)

    def write(self, path, value):
        self._o().write(path, value)

    def list(self, path):
        return self._o().list(path)

    def delete(self, path):
        self._o().delete(path)

    def exists(self, path):
        return self._o().exists(path)

    def mkdir(self, path):
        self._o().mkdir(path)

    def get_perms(self, path):
        return self._o().get_perms(path)

    def set_perms(self, path, perms):
        self._o().set_perms(path, perms)

    @contextlib.contextmanager
    def transaction(self):
        self.connect()
        txc = copy.copy(self._client)   # shares the router, has its own tx_id
        ops = _Ops(txc, self.where)
        ops._call("transaction start", txc.transaction)
        try:
            yield ops
        except BaseException:
            try:
                txc.rollback()
            except PyXSError as exc:
                LOG.warning("xenstore rollback failed: %s", exc)
            raise
        if not ops._call("transaction commit", txc.commit):
            raise XenStoreError("xenstore transaction (%s): EAGAIN (conflicting change, retry)" % self.where,
                                errno=errno_mod.EAGAIN)

    def watch(self, path, token):
        self.connect()
        try:
            monitor = self._client.monitor()
        except PyXSError as exc:
            raise six.raise_from(_xs_error("xenstore watch %s" % path, exc), exc)
        stream = WatchStream(monitor, self.where)
        stream.add(path, token)
        return stream


class WatchStream(object):
    """Events ``(path, token)`` (text) of one pyxs Monitor.

    The first event of each watch is the registration one xenstored sends.
    """

    def __init__(self, monitor, where):
        self._m = monitor
        self._where = where

    def add(self, path, token):
        try:
            self._m.watch(to_bytes(path), to_bytes(token))
        except PyXSError as exc:
            raise six.raise_from(_xs_error("xenstore watch %s (%s)" % (path, self._where), exc), exc)

    def _watched(self, wpath, token):
        # as Monitor.wait: an event counts if its path or a parent is watched
        while wpath and (wpath, token) not in self._m.unwatch_queue:
            wpath = posixpath.dirname(wpath) if wpath != b"/" else b""
        return bool(wpath)

    def next_event(self, timeout=None):
        """:returns: ``(path, token)`` or None after ``timeout`` seconds."""
        while True:
            try:
                ev = self._m.events.get(timeout=timeout) if timeout is not None else self._m.events.get(True, 1e9)
            except queue.Empty:
                return None
            path, token = ev
            if self._watched(path, token):
                return to_text(path), to_text(token)

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_event()

    next = __next__

    def close(self):
        try:
            self._m.close()
        except PyXSError as exc:
            LOG.debug("unwatch failed (%s): %s", self._where, exc)
