"""Dirty extents from blktap2's ``log`` driver (Xen 4.1-4.12, block-log.c, log.h).

The driver, stacked in a tapdisk (``log:NAME|aio:NAME``), sets one bit per
512-byte sector the guest writes, in a bitmap private to tapdisk.  Clients
reach it through:

* a Unix stream control socket ``/var/run/tap/log_<F>.ctl``, where ``<F>``
  is the part of NAME from its last ``/`` on (the slash included) with every
  ``:`` and ``/`` turned into ``_`` - so ``/var/lib/xen/images/g.img`` gives
  ``/var/run/tap/log__g.img.ctl``.  It serves one connection at a time
  (others are closed at once).  A request is a 20-byte ``struct
  log_ctlmsg`` (4-byte command, 16 bytes of parameters); a shorter read is
  ignored by the driver, so all 20 bytes must go in one write.  Commands
  and replies:

  ========  ====================================================
  ``shmp``  256 bytes: u32 region size (8 MiB), then the shm name
            (``/log_<NAME with : and / -> _>.wlog``), NUL-terminated
  ``peek``  ``done``: the dirty ranges were exported to the region
  ``clrw``  ``done``: the bitmap was cleared
  ``getw``  ``done``: export then clear, in one step of tapdisk's
            single-threaded loop (no write can fall in between)
  ``kick``  a 20-byte ``kick`` message (read-ring plumbing, unused here)
  ========  ====================================================

* the POSIX shared memory object (``/dev/shm/log_....wlog``, 8 MiB): an
  export writes, from offset 0, ``struct disk_range {u64 sector; u32
  count;}`` records in the dom0's native layout (C's ``sizeof``: 16 bytes
  on x86_64, 12 on 32-bit x86 where a u64 is 4-byte aligned) for each
  run of dirty sectors, ended by an all-zero record.  The list may use only
  the first half (4 MiB = 262144 records); when it is full the export stops
  without a terminator, and since ``getw`` clears the whole bitmap anyway,
  the runs beyond are lost.

So :class:`Blktap2LogTracker` uses ``getw`` (atomic) at every
:meth:`dirty_extents` and accumulates what it got, because the driver
forgets it.  It stops being trustworthy when an export overflowed, when
the driver was restarted since :meth:`mark` (the control socket is a new
inode: its bitmap started empty, writes in between are unknown), or when
the driver cannot be reached.  With ``state_path`` the accumulated extents
survive the process (resumed resyncs).
"""
from __future__ import absolute_import, division, print_function

import errno
import json
import logging
import os
import socket
import struct
import time

from xen_remus_ext.compat import atomic_write, to_bytes, to_text
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.model import Extent
from xen_remus_ext.ports import Tracker
from xen_remus_ext.trackers import merge_extents

LOG = logging.getLogger(__name__)

CTRL_DIR = "/var/run/tap"
SHM_DIR = "/dev/shm"
SECTOR = 512
SHMSIZE = 8 * 1024 * 1024
CTLMSG_LEN = 20
#: ``struct disk_range`` as tapdisk's compiler lays it out: native order and
#: alignment, padded to its u64's alignment (the trailing ``0Q``)
RANGE = struct.Struct("@QI0Q")
RANGES_MAX = (SHMSIZE // 2) // RANGE.size
#: what ``shmp`` writes at the start of the region (block-log.c)
DEADBEEF = struct.pack("=I", 0xdeadbeef)
REPLY_LEN = {b"shmp": 256, b"peek": 4, b"clrw": 4, b"getw": 4, b"kick": CTLMSG_LEN}


class _Refused(ResyncError):
    """The driver closed the connection without a reply."""


def state_file(dom, vdev, base=None):
    """Where a failback keeps the log tracker of ``dom``'s disk ``vdev``
    (its mark and the extents read so far): the xend migration hook, another
    process, reopens it from there (:func:`reopen`)."""
    from xen_remus_ext.paths import state_dir
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in "%s-%s" % (dom, vdev))
    return os.path.join(base or state_dir(), "trackers", "%s.blktap2-log.json" % safe)


def reopen(state_path, **kw):
    """The :class:`Blktap2LogTracker` a :meth:`Blktap2LogTracker.mark` saved
    at ``state_path`` (in another process), or None when there is none."""
    try:
        with open(state_path, "rb") as f:
            name = json.loads(to_text(f.read())).get("name")
    except (IOError, OSError, ValueError):
        return None
    return Blktap2LogTracker(name, state_path=state_path, **kw) if name else None


def _escape(text):
    return text.replace(":", "_").replace("/", "_")


def ctl_path(name, ctrl_dir=CTRL_DIR):
    """The driver's control socket for ``name`` (block-log.c ``ctl_makepath``)."""
    cut = name.rfind("/")
    if cut < 0:
        raise ResyncError("blktap2 log %s: expected a path (the driver needs a '/' in the name)" % (name,))
    return os.path.join(ctrl_dir, "log_%s.ctl" % _escape(name[cut:]))


def shm_name(name):
    """The shared memory object name for ``name`` (block-log.c ``shmem_open``)."""
    return "/log_%s.wlog" % _escape(name)


class Blktap2LogTracker(Tracker):
    """:class:`ports.Tracker` over one tapdisk ``log`` driver.

    States: unmarked -> marked (:meth:`mark`) -> reports accumulate
    (:meth:`dirty_extents`) -> :meth:`clear` empties them; a lost write
    (overflow, driver restart) makes :meth:`trustworthy` False until the
    next :meth:`mark`.

    :param name: the NAME the log driver was opened with (the image path)
    :param state_path: optional JSON file keeping the accumulated state
    """

    name = "blktap2-log"

    def __init__(self, name, ctrl_dir=CTRL_DIR, shm_dir=SHM_DIR, state_path=None, timeout=5.0):
        self.image = name
        self.ctrl = ctl_path(name, ctrl_dir)
        self.shm_dir = shm_dir
        self.state_path = state_path
        self.timeout = timeout
        self._state = {"marked": False, "lost": None, "identity": None, "extents": []}
        if state_path and os.path.exists(state_path):
            with open(state_path, "rb") as f:
                self._state = json.loads(to_text(f.read()))

    # -- wire ------------------------------------------------------------------

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.ctrl)
        except (socket.error, OSError) as exc:
            sock.close()
            raise ResyncError("blktap2 log %s: cannot connect to %s: %s" % (self.image, self.ctrl, exc))
        return sock

    def _call(self, sock, cmd):
        cmd = to_bytes(cmd)
        want = REPLY_LEN[cmd]
        reply = b""
        try:
            sock.sendall(cmd + b"\0" * (CTLMSG_LEN - len(cmd)))
            while len(reply) < want:
                chunk = sock.recv(want - len(reply))
                if not chunk:
                    break
                reply += chunk
        except (socket.error, OSError) as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                raise ResyncError("blktap2 log %s: %s on %s: %s" % (self.image, to_text(cmd), self.ctrl, exc))
        if len(reply) < want:
            raise _Refused("blktap2 log %s: %s: expected a %d-byte reply, got %d (another control "
                           "session open?)" % (self.image, to_text(cmd), want, len(reply)))
        if want == 4 and reply != b"done":
            raise ResyncError("blktap2 log %s: %s: expected 'done', got %r" % (self.image, to_text(cmd), reply))
        return reply

    def session(self, cmds, attempts=20):
        """Run ``cmds`` on one control connection; :returns: their replies.

        The driver takes one session at a time and notices a closed one only
        on its next poll, so a connection that is dropped before its first
        reply is retried for about a second.
        """
        for attempt in range(attempts):
            sock = self._connect()
            replies = []
            try:
                for cmd in cmds:
                    replies.append(self._call(sock, cmd))
                return replies
            except _Refused:
                if replies or attempt == attempts - 1:
                    raise
            finally:
                sock.close()
            time.sleep(0.05)

    def request(self, cmd):
        """Send one 20-byte command in its own session; :returns: the reply bytes."""
        return self.session([cmd])[0]

    def _shm_path(self, reply):
        (size,) = struct.unpack("=I", reply[:4])
        name = to_text(reply[4:].split(b"\0", 1)[0])
        if size != SHMSIZE or not name.startswith("/log_"):
            raise ResyncError("blktap2 log %s: shmp: expected %d bytes at /log_*.wlog, got %d at %r"
                              % (self.image, SHMSIZE, size, name))
        return os.path.join(self.shm_dir, name.lstrip("/"))

    def shm_path(self):
        return self._shm_path(self.request(b"shmp"))

    def _identity(self):
        try:
            st = os.stat(self.ctrl)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return [st.st_dev, st.st_ino]

    def _export(self, cmd):
        """Run ``peek``/``getw`` and read the ranges; :returns: (extents, overflowed)."""
        shmp, _ = self.session([b"shmp", cmd])
        return self._read_region(self._shm_path(shmp))

    def _read_region(self, path):
        """The ranges the last export left in the shm region: (extents, overflowed)."""
        with open(path, "rb") as f:
            region = f.read(SHMSIZE // 2)
        extents = []
        for i in range(0, len(region) - RANGE.size + 1, RANGE.size):
            sector, count = RANGE.unpack_from(region, i)
            if sector == 0 and count == 0:
                return extents, False
            extents.append(Extent(sector * SECTOR, count * SECTOR))
        return extents, True

    # -- Tracker ---------------------------------------------------------------

    def _save(self):
        if self.state_path:
            d = os.path.dirname(self.state_path)
            if d and not os.path.isdir(d):
                os.makedirs(d, 0o700)
            self._state["name"] = self.image
            atomic_write(self.state_path, to_bytes(json.dumps(self._state)), 0o600)

    def mark(self):
        self._shm_path(self.session([b"shmp", b"clrw"])[0])
        self._state = {"marked": True, "lost": None, "identity": self._identity(), "extents": []}
        self._save()

    def dirty_extents(self):
        if not self._state["marked"]:
            raise ResyncError("blktap2 log %s: dirty_extents() before mark()" % (self.image,))
        if self._identity() != self._state["identity"]:
            self._lose("the log driver was restarted since the mark (new control socket)")
        if self._state.get("exporting"):
            self._recover_export()
        # getw clears the driver's bitmap: until its ranges are saved they live
        # only in this process and in the shm region, so say first that an
        # export is under way (a process killed in between leaves it said)
        self._state["exporting"] = True
        self._save()
        got, overflowed = self._export(b"getw")
        if overflowed:
            self._lose("more than %d dirty runs in one export; the rest were cleared" % RANGES_MAX)
        merged = merge_extents([Extent(o, n) for o, n in self._state["extents"]] + got)
        self._state["extents"] = [[e.offset, e.length] for e in merged]
        self._state["exporting"] = False
        self._save()
        return merged

    def _recover_export(self):
        """An earlier getw (another process's, killed, or a failed call) may
        have cleared the bitmap without its ranges being saved.  Its session
        began with ``shmp``, which writes 0xdeadbeef over the region's start;
        an export that ran after it overwrote that with its ranges.  So the
        marker still there means the getw never ran (the bitmap kept every
        bit); otherwise the region holds that export's ranges: merge them.
        The region is read as a file: another ``shmp`` would overwrite it."""
        path = os.path.join(self.shm_dir, shm_name(self.image).lstrip("/"))
        try:
            with open(path, "rb") as f:
                head = f.read(4)
            got, overflowed = ([], False) if head == DEADBEEF else self._read_region(path)
        except (IOError, OSError) as exc:
            self._state["exporting"] = False
            self._lose("an interrupted export's ranges could not be read back (%s)" % (exc,))
            return
        if overflowed:
            self._lose("an interrupted export overflowed; its ranges beyond were cleared")
        LOG.info("blktap2 log %s: an export was interrupted; %d range(s) read back from %s",
                 self.image, len(got), path)
        merged = merge_extents([Extent(o, n) for o, n in self._state["extents"]] + got)
        self._state["extents"] = [[e.offset, e.length] for e in merged]
        self._state["exporting"] = False
        self._save()

    def _lose(self, why):
        if not self._state["lost"]:
            LOG.warning("blktap2 log %s: not trustworthy: %s", self.image, why)
            self._state["lost"] = why
            self._save()

    def clear(self):
        self._state["extents"] = []
        self._save()

    def trustworthy(self):
        if not self._state["marked"] or self._state["lost"]:
            return False
        return self._identity() == self._state["identity"]

    @property
    def lost_reason(self):
        return self._state["lost"]
