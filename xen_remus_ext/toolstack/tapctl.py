"""blktap2's ``tap-ctl``: its ``list`` output, the argv we send, and a tap2
disk's tapdisk stack (Xen 4.1.0, ``tools/blktap2/control/tap-ctl.c``,
``tap-ctl-list.c``, ``tap-ctl-pause.c``, ``tap-ctl-unpause.c``;
docs/xen-facts.md sections 2 and 7).

``tap-ctl list`` prints one line per vbd.  To a pipe (``tap_ctl_list_dict``)::

    pid=%d minor=%d state=%d args=%s:%s

each ``key=value`` left out when unknown (pid/minor/state -1, or no image
open: a paused vbd has closed its images); ``args`` is ``TYPE:NAME`` of the
TOP image of the stack (tapdisk's ``images.next``), for a remus disk
``remus:HOST:PORT``.  To a terminal (``tap_ctl_list_row``)::

    "%8s %2s %4s %10s %s"  pid minor state(hex) type path, "-" when unknown

Both are parsed.  Commands: ``tap-ctl pause -p PID -m MINOR`` and ``tap-ctl
unpause -p PID -m MINOR [-a PARAMS]``; with ``-a`` tapdisk takes PARAMS as the
vbd's new stack (``tapdisk_vbd_parse_stack``: ``|``-separated ``TYPE:PARAMS``
tokens, e.g. ``remus:HOST:PORT|aio:/PATH``) before reopening it.  tap-ctl
reports errors through syslog and its exit status (an errno); usage errors
go to stderr.

A tap2 uname's stack: xend's ``Blktap2Controller.createDevice`` drops the
uname's class (``tap2:``/``tap:``) and an optional ``tapdisk:``/``ioemu:``
subtype and runs ``tap-ctl create -a DRIVER:FILE``; it keeps everything after
the class in the vbd backend's ``tapdisk-params`` key, from which it reports
the disk's uname back (``'tap:' + tapdisk-params``), while ``params`` names
the blktap2 device ``/dev/xen/blktap-2/tapdevMINOR``.
"""
from __future__ import absolute_import, division, print_function

import collections
import errno as errno_mod
import os

from xen_remus_ext.errors import ToolstackError

TAP_DEV = "/dev/xen/blktap-2/tapdev"
#: tapdisk-message.h: ``unpause -a`` PARAMS travel in a char[256], strncpy'd
#: (tap-ctl-unpause.c): anything longer would be cut silently
MAX_PARAMS = 256 - 1
#: tapdisk-vbd.h vbd state flags
TD_VBD_CLOSED = 0x0002
TD_VBD_PAUSED = 0x0020

_CLASSES = ("tap2", "tap")
_SUBTYPES = ("tapdisk", "ioemu")


class TapEntry(collections.namedtuple("TapEntry", "pid minor state type path")):
    """One ``tap-ctl list`` row; absent fields are None."""

    __slots__ = ()

    @property
    def args(self):
        return "%s:%s" % (self.type, self.path) if self.type is not None else None

    @property
    def paused(self):
        return self.state is not None and bool(self.state & TD_VBD_PAUSED)


def _int(value, base, line):
    try:
        return int(value, base)
    except ValueError:
        raise ToolstackError("tap-ctl list: expected a number, got %r in %r" % (value, line))


def parse_list(text):
    """``tap-ctl list`` output (either format) -> list of :class:`TapEntry`.

    :raises ToolstackError: a line in neither format.
    """
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if "=" in line.split(None, 1)[0]:
            fields = {}
            for pair in line.split(" "):
                key, sep, value = pair.partition("=")
                if not sep or key not in ("pid", "minor", "state", "args") or key in fields:
                    raise ToolstackError("tap-ctl list: expected pid= minor= state= args= fields, got %r"
                                         % line)
                fields[key] = value
            typ = path = None
            if "args" in fields:
                typ, sep, path = fields["args"].partition(":")
                if not sep:
                    raise ToolstackError("tap-ctl list: expected args=TYPE:PATH, got %r" % line)
            out.append(TapEntry(_int(fields["pid"], 10, line) if "pid" in fields else None,
                                _int(fields["minor"], 10, line) if "minor" in fields else None,
                                _int(fields["state"], 10, line) if "state" in fields else None, typ, path))
            continue
        cols = line.split(None, 4)
        if len(cols) != 5:
            raise ToolstackError("tap-ctl list: expected 5 columns (pid minor state type path), got %r" % line)
        pid, minor, state, typ, path = [None if c == "-" else c for c in cols]
        out.append(TapEntry(_int(pid, 10, line) if pid else None, _int(minor, 10, line) if minor else None,
                            _int(state, 16, line) if state else None, typ, path))
    return out


def tapdisk_stack(uname):
    """The tapdisk stack of a tap2 uname (``tap2:remus:H:P|aio:/x`` ->
    ``remus:H:P|aio:/x``; ``tap:tapdisk:remus:...`` likewise).

    :raises ToolstackError: not a ``tap``/``tap2`` uname.
    """
    cls, sep, rest = uname.partition(":")
    if cls not in _CLASSES or not sep:
        raise ToolstackError("disk %s: expected a blktap2 uname (tap2:... or tap:...), got another class"
                             % uname)
    sub, sep, tail = rest.partition(":")
    if sub in _SUBTYPES and sep:
        rest = tail
    return rest


def top_args(stack):
    """What ``tap-ctl list`` shows of a vbd running ``stack``: its first token."""
    return stack.split("|", 1)[0]


def minor_of(params):
    """The minor of a vbd backend ``params`` (``/dev/xen/blktap-2/tapdevN``), or None."""
    if not params or not params.startswith(TAP_DEV):
        return None
    tail = params[len(TAP_DEV):]
    return int(tail) if tail.isdigit() else None


def list_argv(tap_ctl):
    return list(tap_ctl) + ["list"]


def pause_argv(tap_ctl, pid, minor):
    return list(tap_ctl) + ["pause", "-p", str(int(pid)), "-m", str(int(minor))]


def unpause_argv(tap_ctl, pid, minor, stack=None):
    argv = list(tap_ctl) + ["unpause", "-p", str(int(pid)), "-m", str(int(minor))]
    return argv + ["-a", stack] if stack is not None else argv


def run(runner, argv, timeout=30.0):
    """Run one tap-ctl argv; :returns: stdout as text.

    :raises ToolstackError: non-zero exit, with the errno's name and stderr.
    """
    try:
        rc, out, err = runner.run(argv, timeout=timeout)
    except (OSError, IOError) as exc:
        raise ToolstackError("%s: cannot run: %s" % (" ".join(argv), exc))
    if rc:
        name = errno_mod.errorcode.get(rc)
        text = err.decode("utf-8", "replace").strip() if isinstance(err, bytes) else (err or "").strip()
        raise ToolstackError("%s: exit %d%s; stderr: %s" % (
            " ".join(argv), rc, " (%s: %s)" % (name, os.strerror(rc)) if name else "", text or "(empty)"))
    return out.decode("utf-8", "replace") if isinstance(out, bytes) else out
