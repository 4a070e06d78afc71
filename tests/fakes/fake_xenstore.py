"""An in-memory :class:`ports.XenStore` for unit tests of the core.

Held to the same contract suite as PyxsXenStore on the xenstored double
(tests/adapter/test_contract_xenstore.py): text paths and values, parents
created empty by write, children in creation order, ENOENT/EINVAL errors as
:class:`XenStoreError` with the errno, optimistic transactions that raise
EAGAIN when a node they touched changed meanwhile, watches that fire once on
registration and then on every change at or below the watched path.

Hooks for tests: :meth:`conflict_next_commit` forces one EAGAIN.
"""
from __future__ import absolute_import, division, print_function

import collections
import contextlib
import errno
import re
import threading

from xen_remus_ext.compat import to_text
from xen_remus_ext.errors import ValidationError, XenStoreError
from xen_remus_ext.ports import XenStore

_PATH = re.compile(r"^/[a-zA-Z0-9\-/_@]*$")
_VALUE = re.compile(r"^[\x20-\x7f]*$")


def _check(path):
    path = to_text(path)
    if not _PATH.match(path) or "//" in path or (len(path) > 1 and path.endswith("/")):
        raise ValidationError("xenstore path: expected /[a-zA-Z0-9-/_@]*, got %r" % (path,))
    return path


def _parent(path):
    return path.rsplit("/", 1)[0] or "/"


def _err(what, code):
    return XenStoreError("%s: %s" % (what, errno.errorcode[code]), errno=code)


class _Tree(object):
    def __init__(self):
        self.values = collections.OrderedDict([("/", "")])
        self.gens = {"/": 0}
        self.gen = 0

    def children(self, path):
        pre = "/" if path == "/" else path + "/"
        return [p[len(pre):] for p in self.values if p != "/" and _parent(p) == path and p.startswith(pre)]


class _Ops(object):
    """Operations on the live tree (tx None) or inside a transaction."""

    def __init__(self, store, tx=None):
        self._s = store
        self._tx = tx

    # a transaction works on a private copy and remembers generations
    def _tree(self):
        return self._tx["tree"] if self._tx else self._s._tree

    def _touch(self, path):
        if self._tx is not None and path not in self._tx["seen"]:
            self._tx["seen"][path] = self._s._tree.gens.get(path)

    def _changed(self, path, recursive=False):
        tree = self._tree()
        tree.gen = self._s._tree.gen = max(tree.gen, self._s._tree.gen) + 1
        tree.gens[path] = tree.gen
        if self._tx is not None:
            self._tx["changed"].append((path, recursive))
        else:
            self._s._fire(path, recursive)

    def read(self, path, default=None):
        path = _check(path)
        self._touch(path)
        tree = self._tree()
        if path not in tree.values:
            if default is not None:
                return default
            raise _err("xenstore read %s" % path, errno.ENOENT)
        return tree.values[path]

    def write(self, path, value):
        path = _check(path)
        value = to_text(value)
        if not _VALUE.match(value):
            raise ValidationError("xenstore write %s: expected printable ASCII, got %r" % (path, value))
        tree = self._tree()
        missing = []
        cur = path
        while cur not in tree.values:
            missing.append(cur)
            self._touch(cur)
            cur = _parent(cur)
        self._touch(cur)
        for p in reversed(missing):
            tree.values[p] = ""
            tree.gens[_parent(p)] = tree.gen + 1
        self._touch(path)
        tree.values[path] = value
        self._changed(path)

    def mkdir(self, path):
        path = _check(path)
        if path not in self._tree().values:
            self.write(path, "")

    def list(self, path):
        path = _check(path)
        self._touch(path)
        tree = self._tree()
        if path not in tree.values:
            raise _err("xenstore list %s" % path, errno.ENOENT)
        return tree.children(path)

    def exists(self, path):
        path = _check(path)
        self._touch(path)
        return path in self._tree().values

    def delete(self, path):
        path = _check(path)
        if path == "/":
            raise _err("xenstore delete /", errno.EINVAL)
        tree = self._tree()
        self._touch(path)
        if path not in tree.values:
            if _parent(path) in tree.values:
                return
            raise _err("xenstore delete %s" % path, errno.ENOENT)
        for p in [p for p in tree.values if p == path or p.startswith(path + "/")]:
            self._touch(p)
            del tree.values[p]
            tree.gens.pop(p, None)
        self._touch(_parent(path))
        tree.gens[_parent(path)] = tree.gen + 1
        self._changed(path, recursive=True)


class FakeXenStore(XenStore):
    """In-memory xenstore (one per simulated host or test)."""

    def __init__(self):
        self._tree = _Tree()
        self._lock = threading.RLock()
        self._watches = []          # (path, token, queue)
        self._force_conflict = False
        self._ops = _Ops(self)

    def conflict_next_commit(self):
        self._force_conflict = True

    def read(self, path, default=None):
        with self._lock:
            return self._ops.read(path, default)

    def write(self, path, value):
        with self._lock:
            self._ops.write(path, value)

    def mkdir(self, path):
        with self._lock:
            self._ops.mkdir(path)

    def list(self, path):
        with self._lock:
            return self._ops.list(path)

    def delete(self, path):
        with self._lock:
            self._ops.delete(path)

    def exists(self, path):
        with self._lock:
            return self._ops.exists(path)

    @contextlib.contextmanager
    def transaction(self):
        with self._lock:
            snap = _Tree()
            snap.values = collections.OrderedDict(self._tree.values)
            snap.gens = dict(self._tree.gens)
            snap.gen = self._tree.gen
        tx = {"tree": snap, "seen": {}, "changed": []}
        yield _Ops(self, tx)
        with self._lock:
            if self._force_conflict or any(self._tree.gens.get(p) != g for p, g in tx["seen"].items()):
                self._force_conflict = False
                raise _err("xenstore transaction", errno.EAGAIN)
            touched = set(tx["seen"])
            for p in touched:
                if p in snap.values:
                    self._tree.values[p] = snap.values[p]
                else:
                    self._tree.values.pop(p, None)
            # keep creation order of the transaction's tree
            order = [p for p in snap.values if p in self._tree.values]
            rest = [p for p in self._tree.values if p not in snap.values]
            self._tree.values = collections.OrderedDict((p, self._tree.values[p]) for p in order + rest)
            for p in touched:
                self._tree.gen += 1
                if p in snap.values:
                    self._tree.gens[p] = self._tree.gen
                else:
                    self._tree.gens.pop(p, None)
            for p, recursive in tx["changed"]:
                self._fire(p, recursive)

    def watch(self, path, token):
        path, token = _check(path), to_text(token)
        q = _Queue()
        with self._lock:
            entry = (path, token, q)
            self._watches.append(entry)
            q.put((path, token))
        return _Stream(self, entry)

    def _fire(self, path, recursive=False):
        for wpath, token, q in list(self._watches):
            if path == wpath or path.startswith(wpath.rstrip("/") + "/"):
                q.put((path, token))
            elif recursive and wpath.startswith(path + "/"):
                q.put((wpath, token))


class _Queue(object):
    def __init__(self):
        self._items = collections.deque()
        self._cond = threading.Condition()

    def put(self, item):
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout):
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None


class _Stream(object):
    def __init__(self, store, entry):
        self._store = store
        self._entry = entry

    def next_event(self, timeout=None):
        return self._entry[2].get(timeout if timeout is not None else 1e9)

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_event()

    next = __next__

    def close(self):
        with self._store._lock:
            if self._entry in self._store._watches:
                self._store._watches.remove(self._entry)
