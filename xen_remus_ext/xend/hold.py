"""A Remus backup on xend that waits, paused, when its checkpoint stream breaks.

On xend the ``remus`` script on the primary connects to the backup's
relocation server (``receive``), writes a header (``LinuxGuestRecord``, the
length, the domain's config as an SXP: ``xen.remus.save.Saver.start`` ->
``image.makeheader``) and then the checkpoints.  The backup's xend restores
it as it restores a live migration: ``domain_restore_fd(fd,
relocating=True)`` -> ``XendCheckpoint.restore``, which unpauses the copy
as soon as ``xc_restore`` returns, i.e. when the stream ends, unless
``paused`` is set.  The relocation server cannot tell the two streams
apart, so a host-wide switch would also hold a failback's migration.

So the hold travels with the stream (patches/*/0007):

* sender: the remus script started with ``XEN_REMUS_EXT_HOLD=1`` in its
  environment (``xen-remus remus-sender start --hold``, what ``protect
  --hold-backup`` runs) adds the top-level field ``(xen_remus_ext_hold 1)``
  to the config in that header (:func:`marking` wraps
  ``xen.remus.image.makeheader``).  Without the variable the header is
  byte for byte what it was.  XendConfig reads known keys only, so an
  unpatched receiver ignores the field and behaves as before.
* receiver: the patched ``XendCheckpoint.restore`` asks :func:`restoring`
  once the domain exists; for a relocated stream carrying the mark it
  records the copy here (``<state dir>/hold/DOM.xend.json``, state
  ``receiving``) and restores it paused.  When ``xc_restore`` has returned
  (the stream ended and the last complete checkpoint is in place),
  :func:`restored` records ``held``.  A stream without the mark (a plain
  migration, a Remus stream started without a hold) is restored exactly as
  before.
* promote (``XendToolstack.remus_takeover``) unpauses the held copy, which
  is what stock restore would have done at the end of the stream; discard
  destroys it.  Both record the outcome here.

``xc_restore`` reports nothing per checkpoint (it prints its store and
console MFNs once, at the end), so the number of committed checkpoints is
not known on xend; a held copy has at least one (``xc_restore`` fails on a
stream without a complete checkpoint, and restore then destroys the copy).

Nothing here imports ``xen.*``: it runs inside xend and inside the remus
script, which pass their objects in.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import re
import time

from xen_remus_ext.paths import state_dir

#: the SXP field the sender adds to the stream's config
MARK = "xen_remus_ext_hold"
#: the remus script's environment variable asking for the mark
ENV = "XEN_REMUS_EXT_HOLD"
#: text the patched files carry (found by :func:`patched_file`)
SENTINEL = "_remus_hold"

RECEIVING, HELD, RELEASED, DISCARDED = "receiving", "held", "released", "discarded"
_SAFE = re.compile(r"[^A-Za-z0-9_.@+-]")


class HoldMarkError(ValueError):
    pass


# -- sender: the remus script's header --------------------------------------------------

def mark(dominfo, environ=None):
    """:returns: ``dominfo`` (the ``(domain ...)`` SXP as lists) with
    ``[MARK, '1']`` appended when ``environ[ENV]`` is ``1``, else
    ``dominfo`` itself, unchanged.
    :raises HoldMarkError: a hold is asked but ``dominfo`` is not a
        ``(domain ...)`` list (the script must not start unmarked)."""
    environ = os.environ if environ is None else environ
    asked = environ.get(ENV)
    if asked in (None, "", "0"):
        return dominfo
    if asked != "1":
        raise HoldMarkError("%s: expected 1 (hold the backup) or 0, got %r" % (ENV, asked))
    if not isinstance(dominfo, (list, tuple)) or not dominfo or dominfo[0] != "domain":
        raise HoldMarkError("%s=1: expected the domain's (domain ...) config to mark, got %r"
                            % (ENV, str(dominfo)[:80]))
    if marked(dominfo):
        return dominfo
    return list(dominfo) + [[MARK, "1"]]


def marking(makeheader, environ=None):
    """:returns: ``makeheader`` (xen.remus.image's) marking its config first (:func:`mark`)."""
    def makeheader_marked(dominfo):
        return makeheader(mark(dominfo, environ))
    makeheader_marked.__doc__ = makeheader.__doc__
    makeheader_marked.remus_hold = True
    return makeheader_marked


def marked(vmconfig):
    """Whether the config SXP (lists) carries ``(xen_remus_ext_hold 1)`` at its top level."""
    if not isinstance(vmconfig, (list, tuple)):
        return False
    for kid in vmconfig[1:]:
        if isinstance(kid, (list, tuple)) and len(kid) == 2 and kid[0] == MARK:
            return str(kid[1]) == "1"
    return False


# -- the record on the backup's host ----------------------------------------------------

def directory(base=None):
    return os.path.join(base or state_dir(), "hold")


def record_path(dom, base=None):
    return os.path.join(directory(base), "%s.xend.json" % _SAFE.sub("_", str(dom)))


def load(dom, base=None):
    """The record of the held copy ``dom`` on this host, or None.
    :raises ValueError: the file is not such a record (naming the file)."""
    path = record_path(dom, base)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (IOError, OSError):
        return None
    try:
        rec = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("%s: expected the JSON record of a held Remus backup, got unreadable data: %s"
                         % (path, exc))
    if not isinstance(rec, dict) or rec.get("state") not in (RECEIVING, HELD, RELEASED, DISCARDED):
        raise ValueError("%s: expected a JSON object with a state of %s, got %r"
                         % (path, "/".join((RECEIVING, HELD, RELEASED, DISCARDED)), rec))
    return rec


def save(dom, rec, base=None):
    path = record_path(dom, base)
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(json.dumps(rec, sort_keys=True).encode("utf-8"))
    os.rename(tmp, path)
    return rec


def set_state(dom, state, base=None, **extra):
    """Move the record of ``dom`` to ``state`` (``released``/``discarded``)."""
    rec = load(dom, base) or {"name": str(dom)}
    rec.update(extra)
    rec["state"] = state
    rec["%s_at" % state] = time.time()
    return save(dom, rec, base)


def current(dom, domid, base=None):
    """The record of ``dom`` when it describes the domain ``domid`` here now
    (``receiving`` or ``held``), else None: a record left by an earlier copy
    (another domid) says nothing of this one."""
    rec = load(dom, base)
    if rec is None or rec.get("state") not in (RECEIVING, HELD):
        return None
    if domid is None or rec.get("domid") != int(domid):
        return None
    return rec


# -- receiver: called by the patched XendCheckpoint.restore -------------------------------

def restoring(dominfo, vmconfig, relocating, log=None, base=None):
    """Inside xend's restore, once the domain exists: True (restore it
    paused) when the stream came through the relocation server and its
    config carries the mark; the copy is recorded as ``receiving``.
    Otherwise False and nothing is written."""
    if not relocating or not marked(vmconfig):
        return False
    name, domid = dominfo.getName(), dominfo.getDomid()
    rec = {"name": name, "domid": domid, "uuid": dominfo.get_uuid(), "state": RECEIVING,
           "since": time.time(), "xend_pid": os.getpid(), "checkpoints": None, "toolstack": "xend"}
    try:
        save(name, rec, base)
    except (IOError, OSError) as exc:
        # still held: resuming it would be the unsafe choice
        if log is not None:
            log.error("xen-remus-ext: %s: cannot record the held backup copy in %s: %s",
                      name, record_path(name, base), exc)
    if log is not None:
        log.info("xen-remus-ext: %s (domain %s): the Remus stream asks for a hold; the copy stays "
                 "paused when the stream ends, until xen-remus hold release", name, domid)
    return True


def restored(dominfo, log=None, base=None):
    """Inside xend's restore: ``xc_restore`` returned (the stream ended) and
    the copy is complete at its last committed checkpoint; it stays paused."""
    name = dominfo.getName()
    try:
        rec = load(name, base) or {"name": name}
        rec.update(state=HELD, domid=dominfo.getDomid(), held_at=time.time(), complete=True)
        save(name, rec, base)
    except (IOError, OSError, ValueError) as exc:
        if log is not None:
            log.error("xen-remus-ext: %s: cannot record the held backup copy: %s", name, exc)
    if log is not None:
        log.warning("xen-remus-ext: %s (domain %s): the Remus stream ended; the copy is held paused at "
                    "its last committed checkpoint (xen-remus hold release %s resumes it)",
                    name, dominfo.getDomid(), name)


# -- what a running xend carries ----------------------------------------------------------

def patched_file(path):
    """Whether the Python source ``path`` carries this hold (our patch)."""
    if path.endswith((".pyc", ".pyo")):
        path = path[:-1]
    try:
        with open(path, "rb") as f:
            return SENTINEL.encode("ascii") in f.read()
    except (IOError, OSError):
        return False


def report(checkpoint_module=None, remus_package=None):
    """What the running xend (and the remus script beside it) carry, for
    ``xend.domain.remus_hooks``: ``restore`` (xend's XendCheckpoint
    restores a marked stream paused) and ``mark`` (xen.remus.image marks
    the stream when asked)."""
    restore = checkpoint_module is not None and getattr(checkpoint_module, SENTINEL, None) is not None
    mark_ok = False
    if remus_package is not None:
        mark_ok = patched_file(os.path.join(os.path.dirname(remus_package.__file__), "image.py"))
    return {"restore": bool(restore), "mark": bool(mark_ok)}
