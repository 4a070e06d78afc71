"""A STRICT fake ``tap-ctl`` (stands in for blktap2's tap-ctl of Xen 4.1,
which needs the blktap2 kernel driver and running tapdisks).

It is a :class:`ports.Runner`: the adapter under test runs argv lists
through it.  Only the argv shapes our adapter may send are accepted, exactly
as tap-ctl.c's getopt strings take them from us:

* ``tap-ctl list``
* ``tap-ctl pause -p PID -m MINOR``
* ``tap-ctl unpause -p PID -m MINOR [-a PARAMS]``

Anything else fails the test (Ganeti's "Unhandled command").  State: a list
of vbds ``{pid, minor, state, stack}`` (``pid`` None for an orphaned minor).
Behaviour follows the 4.1.0 sources: ``list`` prints tap_ctl_list_dict's
``pid=%d minor=%d state=%d args=%s:%s`` (fields left out when unknown; args
is the TOP image of the stack, and a paused vbd has none);
``pause`` of a known vbd closes its images and sets TD_VBD_CLOSED |
TD_VBD_PAUSED (pausing a paused vbd succeeds again, as tapdisk_vbd_pause
does); ``unpause`` of a vbd that is not paused fails with EINVAL, and with
``-a`` the vbd takes PARAMS as its new stack (``|``-separated ``TYPE:PARAMS``
tokens of known driver types, else EINVAL).  A pid/minor pair no tapdisk
serves exits with EINVAL too.  tap-ctl reports these through syslog, so
stderr is empty; ``fail`` makes a chosen command exit with a chosen errno
and stderr text.
"""
from __future__ import absolute_import, division, print_function

import errno

from xen_remus_ext.ports import Runner

#: tapdisk-disktype.c, 4.1.0
DRIVERS = ("aio", "sync", "vmdk", "vhdsync", "vhd", "ram", "qcow", "bc", "log", "remus", "vhdi")
TD_VBD_CLOSED = 0x0002
TD_VBD_PAUSED = 0x0020


class FakeTapCtl(Runner):
    """:param vbds: iterable of dicts ``pid, minor, stack`` (optional ``state``)."""

    def __init__(self, vbds, prog="tap-ctl"):
        self.prog = prog
        self.vbds = [dict(v, state=v.get("state", 0)) for v in vbds]
        self.calls = []
        self.fail = {}      # (verb, params or None) -> (errno, stderr text)

    # -- what tap-ctl prints ----------------------------------------------------
    @staticmethod
    def _top(vbd):
        if vbd["stack"] is None or vbd["state"] & TD_VBD_CLOSED:
            return None, None
        typ, _, name = vbd["stack"].split("|", 1)[0].partition(":")
        return typ, name

    def render_list(self, tty=False):
        lines = []
        for v in self.vbds:
            typ, name = self._top(v)
            if tty:   # tap_ctl_list_row
                lines.append("%8s %2s %4s %10s %s" % (
                    "-" if v["pid"] is None else "%d" % v["pid"], "%d" % v["minor"],
                    "-" if v["pid"] is None else "%x" % v["state"], typ or "-", name or "-"))
                continue
            parts = []   # tap_ctl_list_dict
            if v["pid"] is not None:
                parts.append("pid=%d" % v["pid"])
            parts.append("minor=%d" % v["minor"])
            if v["pid"] is not None:
                parts.append("state=%d" % v["state"])
            if typ is not None:
                parts.append("args=%s:%s" % (typ, name))
            lines.append(" ".join(parts))
        return "".join(line + "\n" for line in lines)

    # -- Runner ---------------------------------------------------------------------
    def run(self, argv, input=None, timeout=None, env=None):
        argv = list(argv)
        self.calls.append(argv)
        if argv[:1] != [self.prog]:
            raise AssertionError("fake tap-ctl: unhandled command %r" % (argv,))
        cmd = argv[1:]
        if cmd == ["list"]:
            return 0, self.render_list().encode("ascii"), b""
        if len(cmd) == 5 and cmd[0] == "pause" and cmd[1] == "-p" and cmd[3] == "-m":
            return self._pause(self._int(argv, cmd[2]), self._int(argv, cmd[4]))
        if len(cmd) in (5, 7) and cmd[0] == "unpause" and cmd[1] == "-p" and cmd[3] == "-m" \
                and (len(cmd) == 5 or cmd[5] == "-a"):
            return self._unpause(self._int(argv, cmd[2]), self._int(argv, cmd[4]),
                                 cmd[6] if len(cmd) == 7 else None)
        raise AssertionError("fake tap-ctl: unhandled command %r" % (argv,))

    @staticmethod
    def _int(argv, text):
        if not text.isdigit() or str(int(text)) != text:
            raise AssertionError("fake tap-ctl: expected a decimal number, got %r in %r" % (text, argv))
        return int(text)

    def _find(self, pid, minor):
        for v in self.vbds:
            if v["pid"] == pid and v["minor"] == minor:
                return v
        return None

    def _failing(self, verb, params):
        code, text = self.fail.get((verb, params), (0, ""))
        return (code, b"", text.encode("ascii")) if code else None

    def _pause(self, pid, minor):
        v = self._find(pid, minor)
        if v is None:
            return errno.EINVAL, b"", b""
        failed = self._failing("pause", None)
        if failed:
            return failed
        v["state"] |= TD_VBD_CLOSED | TD_VBD_PAUSED
        return 0, b"", b""

    def _unpause(self, pid, minor, params):
        v = self._find(pid, minor)
        if v is None or not v["state"] & TD_VBD_PAUSED:
            return errno.EINVAL, b"", b""
        failed = self._failing("unpause", params)
        if failed:
            return failed
        stack = params if params is not None else v["stack"]
        if not stack or any(t.partition(":")[0] not in DRIVERS or not t.partition(":")[1]
                            for t in stack.split("|")):
            return errno.EINVAL, b"", b""
        v["stack"] = stack
        v["state"] &= ~(TD_VBD_CLOSED | TD_VBD_PAUSED)
        return 0, b"", b""
