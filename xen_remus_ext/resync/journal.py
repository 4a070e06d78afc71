"""The receiver's resume journal: byte ranges of the target already in sync.

One JSON file per target under ``state_dir()/journal/``, rewritten
atomically after the target was fdatasync'd (so every range it names is on
disk).  A rerun of the same resync (same source generation, size, mode and
block size) does not skip those ranges: it compares them by digests and
sends only what differs, because the key cannot tell that the source was
written since (docs/protocol.md, "Resume").  Anything else starts from zero.

Each record carries ``sum``, the SHA-256 of its other fields (canonical
JSON): a record that was torn or corrupted on disk, even into valid JSON
naming ranges never written, fails the check and is ignored (the resync
starts from zero) instead of being trusted.
"""
from __future__ import absolute_import, division, print_function

import hashlib
import json
import logging
import os

from xen_remus_ext.compat import atomic_write, to_bytes, to_text
from xen_remus_ext.errors import JournalError
from xen_remus_ext.resync import meta, plan

LOG = logging.getLogger(__name__)


def _checksum(d):
    body = dict((k, v) for k, v in d.items() if k != "sum")
    return hashlib.sha256(to_bytes(json.dumps(body, sort_keys=True))).hexdigest()


def journal_path(target):
    key = hashlib.sha1(to_bytes(os.path.realpath(target))).hexdigest()[:20]
    return os.path.join(meta.state_dir(), "journal", key + ".json")


class Journal(object):
    """Completed ranges of one resync session into ``target``."""

    def __init__(self, target, size, source_gen, mode, block_size, done=()):
        self.target = os.path.realpath(target)
        self.size = size
        self.source_gen = source_gen
        self.mode = mode
        self.block_size = block_size
        self.done = plan.normalize(done)

    def key(self):
        return {"size": self.size, "source_gen": self.source_gen, "mode": self.mode,
                "block_size": self.block_size}

    def to_dict(self):
        d = self.key()
        d["target"] = self.target
        d["done"] = [list(p) for p in self.done]
        return d

    def add(self, start, end):
        self.done = plan.normalize(self.done + [(start, end)])

    def save(self):
        """:raises JournalError: it cannot be written (e.g. the state dir is full)."""
        path = journal_path(self.target)
        rec = self.to_dict()
        rec["sum"] = _checksum(rec)
        try:
            if not os.path.isdir(os.path.dirname(path)):
                os.makedirs(os.path.dirname(path), 0o700)
            atomic_write(path, to_bytes(json.dumps(rec, sort_keys=True) + "\n"))
        except (IOError, OSError) as exc:
            raise JournalError("resume journal of %s: cannot write %s: %s"
                               % (self.target, path, getattr(exc, "strerror", None) or exc))

    @classmethod
    def load(cls, target):
        """:returns: the stored :class:`Journal` of ``target`` or None
        (a missing or unreadable journal means: start from zero)."""
        try:
            with open(journal_path(target), "rb") as f:
                d = json.loads(to_text(f.read()))
            if d.get("sum") != _checksum(d):
                LOG.warning("resume journal of %s: checksum mismatch (torn or corrupted record); "
                            "ignoring it, the resync starts from zero", target)
                return None
            return cls(target, int(d["size"]), d["source_gen"], d["mode"], int(d["block_size"]),
                       [(int(a), int(b)) for a, b in d["done"]])
        except (IOError, OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError):
            return None     # RuntimeError: RecursionError on 3, nested thousands deep


def remove(target):
    try:
        os.unlink(journal_path(target))
    except OSError:
        pass
