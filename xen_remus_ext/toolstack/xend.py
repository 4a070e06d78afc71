"""xend adapter: the legacy XML-RPC API xm uses (Xen 4.0-4.4; docs/xen-facts.md 1, 3, 4).

Transport: ``httpu:///var/run/xend/xmlrpc.sock`` (HTTP over xend's Unix
socket, handler ``/RPC2``) unless ``XM_SERVER`` names another URI; ``http://``
and ``https://`` URIs go through the standard transports.  A PEER's xend is
reached as ``ssh://HOST[/SOCKET]``: each call runs ``SSH... HOST xen-remus
xend-relay`` (:func:`relay`), which joins ssh's stdin/stdout to the peer's
xend Unix socket, as the xl path runs ``ssh HOST xl``.  xend's TCP XML-RPC
server (``http://HOST:8006/``) is off by default, binds to localhost, and
its legacy ``xend.*`` methods take no authentication: exposing it is
remote root, so nothing here needs it.  ``allow_none``
is on, as in xend's own ServerProxy (migrate passes ``ssl=None``).

Calls, as XMLRPCServer.py registers them (4.1.0):

* ``xend.domains_with_state(detail, state, full)`` -> list of ``(domain ...)``
  SXP lists (``state`` 'all' as xm list passes it; ``xend.domains`` is
  ``state`` 'running' only and omits paused domains);
* ``xend.domain(dom, full)`` -> one ``(domain ...)``; an unknown domain is
  Fault 3 (``ERROR_INVALID_DOMAIN``) with the name as the fault string;
* ``xend.domain.<name>`` for every ``XendDomain.domain_<name>``: ``pause``,
  ``unpause``, ``destroy``, ``save(dom, dst, checkpoint)``,
  ``migrate(dom, dst, live, port, node, ssl, chs)``; ``xend.domain.restore``
  (src, paused) returns the restored domain's SXP;
* ``xend.node.info()`` -> ``[[key, value], ...]`` with ``free_memory`` in
  MiB and ``xen_major``/``xen_minor``/``xen_extra``.

A top-level string result arrives ``repr()``-escaped (xend's
``_marshaled_dispatch``); :func:`_unescape` undoes that without ``exec``.
Faults become :class:`ToolstackError` carrying xend's message.

Remus on xend is the ``remus`` script (``tools/remus/remus``), which must run
on the PRIMARY (it opens that host's tapdisk FIFOs and checkpoints through
its libxc).  For this host it runs in the background through
:class:`RemusProcesses`; for a peer (``ssh`` given) the same command runs
there: ``SSH... HOST xen-remus remus-sender start|stop|status ...``.  The
script's options: ``remus [-i MS] [-p PORT]
[--no-net] [--blackhole] DOMAIN HOST``.  It has no switch for disks (the
domain's ``tap:remus:`` unames decide) nor an unsafe mode, so those options
are refused here rather than silently ignored.

:meth:`XendToolstack.retarget_disks` re-points a paused domain's blktap2
remus disks at another backup without restarting it: ``tap-ctl pause`` and
``tap-ctl unpause -a NEWSTACK`` on each disk's tapdisk (toolstack/tapctl.py),
found through the vbd backend in xenstore, whose ``tapdisk-params`` (what
xend reports as the uname, so what the ``remus`` script reads) is then
rewritten.  It needs the injected :class:`ports.Runner` and this host's
:class:`ports.XenStore`.

A held backup (for a cluster manager; xend/hold.py): with patches 0007 and
0008 on both hosts, ``remus_start(hold=True)`` runs the ``remus`` script
with ``XEN_REMUS_EXT_HOLD=1``, which marks the config at the head of the
stream; the backup's xend then restores that copy paused and leaves it
paused when the stream breaks, and records it in
``<state dir>/hold/DOM.xend.json``.  :meth:`XendToolstack.remus_takeover`
unpauses it, :meth:`XendToolstack.remus_discard` destroys it,
:meth:`XendToolstack.remus_backup` reports it.  :meth:`XendToolstack.check_hold`
asks the running xend (``xend.domain.remus_hooks``) whether it carries both.
"""
from __future__ import absolute_import, division, print_function

import codecs
import errno
import json
import logging
import os
import select
import socket
import subprocess
import tempfile

import six
from six.moves import http_client
from six.moves import xmlrpc_client as xmlrpclib

from xen_remus_ext.compat import string_types
from xen_remus_ext.config import sxp as sxp_mod
from xen_remus_ext.errors import ConfigError, ToolstackError, XenRemusError, XenStoreError
from xen_remus_ext.ports import Toolstack
from xen_remus_ext.toolstack import tapctl
from xen_remus_ext.toolstack.processes import RemusProcesses
from xen_remus_ext.xend import hold as xend_hold

LOG = logging.getLogger(__name__)

DEFAULT_URI = "httpu:///var/run/xend/xmlrpc.sock"
XML_RPC_SOCKET = "/var/run/xend/xmlrpc.sock"

#: xend/XendClient.py fault codes
ERROR_INTERNAL = 1
ERROR_GENERIC = 2
ERROR_INVALID_DOMAIN = 3


class UnixHTTPConnection(http_client.HTTPConnection):
    """HTTP over a Unix stream socket; ``host`` is the socket path."""

    def __init__(self, path, timeout=None):
        http_client.HTTPConnection.__init__(self, "localhost")
        self.socket_path = path
        self._xre_timeout = timeout

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self._xre_timeout is not None:
            sock.settimeout(self._xre_timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class UnixTransport(xmlrpclib.Transport):
    """xmlrpclib/xmlrpc.client transport to an ``httpu://`` socket.

    Both Pythons' Transport call ``make_connection(host)`` and then speak
    HTTP/1.x on what it returns; the handler is always ``/RPC2``.
    """

    def __init__(self, socket_path, timeout=None):
        xmlrpclib.Transport.__init__(self)
        self.socket_path = socket_path
        self.timeout = timeout

    def make_connection(self, host):
        return UnixHTTPConnection(self.socket_path, self.timeout)

    def request(self, host, handler, request_body, verbose=0):
        return xmlrpclib.Transport.request(self, host, "/RPC2", request_body, verbose)


class SshRelayConnection(http_client.HTTPConnection):
    """HTTP to a peer's xend Unix socket through ``SSH... HOST xen-remus xend-relay``."""

    def __init__(self, argv, timeout=None):
        http_client.HTTPConnection.__init__(self, "localhost")
        self.argv = list(argv)
        self._xre_timeout = timeout
        self._proc = None
        self._err = None

    def connect(self):
        mine, theirs = socket.socketpair()
        self._err = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(self.argv, stdin=theirs.fileno(), stdout=theirs.fileno(),
                                          stderr=self._err, close_fds=True)
        except (OSError, IOError) as exc:
            mine.close()
            raise socket.error(exc.errno or errno.EIO, "cannot run %s: %s" % (self.argv[0], exc))
        finally:
            theirs.close()
        if self._xre_timeout is not None:
            mine.settimeout(self._xre_timeout)
        self.sock = mine

    def stderr_text(self):
        if self._err is None:
            return ""
        self._err.seek(0)
        return self._err.read().decode("utf-8", "replace").strip()

    def close(self):
        http_client.HTTPConnection.close(self)
        proc, self._proc = self._proc, None
        if proc is not None:
            for _ in range(100):
                if proc.poll() is not None:
                    break
                select.select([], [], [], 0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class SshTransport(xmlrpclib.Transport):
    """xmlrpclib transport: one ``SSH... HOST xen-remus xend-relay [--socket S]`` per request."""

    def __init__(self, ssh_argv, host, socket_path=None, timeout=None):
        xmlrpclib.Transport.__init__(self)
        self.argv = list(ssh_argv) + [host, "xen-remus", "xend-relay"]
        if socket_path:
            self.argv += ["--socket", socket_path]
        self.timeout = timeout
        self.last = None

    def make_connection(self, host):
        self.last = SshRelayConnection(self.argv, self.timeout)
        return self.last

    def request(self, host, handler, request_body, verbose=0):
        try:
            return xmlrpclib.Transport.request(self, host, "/RPC2", request_body, verbose)
        except (socket.error, IOError, OSError, http_client.HTTPException) as exc:
            why = self.last.stderr_text() if self.last is not None else ""
            raise six.raise_from(ToolstackError("%s: %s%s" % (" ".join(self.argv), exc or "no answer",
                                                               "; ssh: %s" % why if why else "")), exc)
        finally:
            if self.last is not None:
                self.last.close()


def relay(socket_path=None, infd=0, outfd=1):
    """Join ``infd``/``outfd`` (ssh's stdin/stdout) to xend's Unix socket
    until both directions ended (``xen-remus xend-relay``).

    :raises ToolstackError: xend's socket does not answer.
    """
    path = socket_path or XML_RPC_SOCKET
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except socket.error as exc:
        sock.close()
        raise ToolstackError("xend at %s: cannot connect: %s (is xend running?)" % (path, exc))
    to_sock = True
    try:
        while True:
            rlist = [sock] + ([infd] if to_sock else [])
            ready, _, _ = select.select(rlist, [], [])
            if to_sock and infd in ready:
                data = os.read(infd, 65536)
                if data:
                    sock.sendall(data)
                else:
                    to_sock = False
                    sock.shutdown(socket.SHUT_WR)
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return 0
                while data:
                    n = os.write(outfd, data)
                    data = data[n:]
    finally:
        sock.close()


def ssh_uri(host, socket_path=None):
    """The URI of ``host``'s xend over ssh."""
    return "ssh://%s%s" % (host, socket_path or "")


def server_proxy(uri=None, timeout=None, ssh=None):
    """A ServerProxy for ``uri`` (default: ``$XM_SERVER`` or xend's socket).

    :param ssh: argv prefix of ssh for ``ssh://HOST[/SOCKET]`` URIs (default ``["ssh"]``)
    """
    uri = uri or os.environ.get("XM_SERVER") or DEFAULT_URI
    scheme, _, rest = uri.partition(":")
    if scheme == "ssh":
        hostpart = rest[2:] if rest.startswith("//") else rest
        host, slash, path = hostpart.partition("/")
        if not host:
            raise ToolstackError("xend URI %s: expected ssh://HOST[/SOCKET]" % uri)
        transport = SshTransport(list(ssh or ["ssh"]), host, "/" + path if slash else None, timeout)
        return xmlrpclib.ServerProxy("http://localhost/RPC2", transport=transport, allow_none=True)
    if scheme == "httpu":
        path = rest[2:] if rest.startswith("//") else rest
        if not path.startswith("/"):
            raise ToolstackError("xend URI %s: expected httpu:///ABSOLUTE/SOCKET, got a relative path" % uri)
        return xmlrpclib.ServerProxy("http://localhost/RPC2", transport=UnixTransport(path, timeout),
                                     allow_none=True)
    if scheme in ("http", "https"):
        return xmlrpclib.ServerProxy(uri, allow_none=True)
    raise ToolstackError("xend URI %s: expected httpu://, ssh://, http:// or https://" % uri)


def _unescape(value):
    """Undo xend's ``repr(s)[1:-1]`` of string results."""
    if not isinstance(value, string_types) or "\\" not in value:
        return value
    if six.PY2 and isinstance(value, str):
        return value.decode("string_escape")
    raw = value.encode("latin-1", "backslashreplace") if not isinstance(value, bytes) else value
    try:
        return codecs.decode(raw, "unicode_escape")
    except UnicodeDecodeError:
        return value


class XendToolstack(Toolstack):
    """:class:`ports.Toolstack` over xend's XML-RPC server.

    :param uri: xend URI (default ``$XM_SERVER`` or httpu:///var/run/xend/xmlrpc.sock)
    :param remus: argv prefix of the remus script (default ``["remus"]``)
    :param processes: :class:`RemusProcesses` keeping the sender PIDs
    :param host: this host's name, put into DomainInfo
    :param runner: a :class:`ports.Runner` for ``tap-ctl`` (retarget_disks)
    :param xenstore: this host's :class:`ports.XenStore` (retarget_disks)
    :param tap_ctl: argv prefix of tap-ctl (default ``["tap-ctl"]``)
    :param ssh: argv prefix of ssh when this is a PEER's xend (``uri``
        ``ssh://HOST``): its Remus sender then runs on that host, through
        ``runner`` (which is required for it)
    :param tracker: ``"fiemap"`` (reflink + FIEMAP on the disk's image
        file, where its filesystem can clone) or None.  Either way a disk
        whose tapdisk stack carries blktap2's log driver is tracked by it
        (:meth:`tracker_choice`).
    """

    kind = "xend"
    TRACKERS = ("fiemap",)

    #: xend's migrate resumes the domain on arrival; the device-migrate hook
    #: sends failback's final disk delta while it is suspended (xend/hook.py)
    migrates_paused = False

    def __init__(self, uri=None, remus=None, processes=None, host=None, timeout=None, runner=None,
                 xenstore=None, tap_ctl=None, ssh=None, tracker=None):
        self.uri = uri or os.environ.get("XM_SERVER") or DEFAULT_URI
        self.ssh = list(ssh) if ssh else None
        if tracker is not None and tracker not in self.TRACKERS:
            raise ToolstackError("xend tracker: expected one of %s, got %r" % (", ".join(self.TRACKERS), tracker))
        self.tracker = tracker
        self.remus = list(remus or ["remus"])
        self.processes = processes or RemusProcesses()
        self.host = host
        self.timeout = timeout
        self.runner = runner
        self.xenstore = xenstore
        self.tap_ctl = list(tap_ctl or ["tap-ctl"])
        self._proxy = None

    def _server(self):
        if self._proxy is None:
            self._proxy = server_proxy(self.uri, self.timeout, ssh=self.ssh)
        return self._proxy

    def call(self, method, *args):
        """Call ``method`` (dotted, e.g. ``xend.domain.pause``) and return its result."""
        fn = self._server()
        for part in method.split("."):
            fn = getattr(fn, part)
        shown = "%s(%s)" % (method, ", ".join(repr(a) if not isinstance(a, string_types) else a for a in args))
        try:
            return _unescape(fn(*args))
        except xmlrpclib.Fault as exc:
            if exc.faultCode == ERROR_INVALID_DOMAIN:
                msg = "xend %s: no such domain %s" % (shown, exc.faultString)
            else:
                msg = "xend %s: %s" % (shown, exc.faultString.strip())
            err = ToolstackError(msg)
            err.fault_code = exc.faultCode
            raise six.raise_from(err, exc)
        except xmlrpclib.ProtocolError as exc:
            raise six.raise_from(ToolstackError("xend %s at %s: HTTP %s %s" % (shown, self.uri, exc.errcode,
                                                                               exc.errmsg)), exc)
        except (socket.error, IOError, OSError, http_client.HTTPException) as exc:
            self._proxy = None
            raise six.raise_from(ToolstackError("xend at %s: cannot call %s: %s (is xend running?)"
                                                % (self.uri, shown, exc)), exc)

    # -- queries ---------------------------------------------------------------

    def _info(self, sxpr):
        try:
            return sxp_mod.domain_info_from_sxp(sxpr, host=self.host)
        except ConfigError as exc:
            raise ToolstackError("xend returned a domain record we cannot read: %s" % exc.reason)

    def list_domains(self):
        # every state, as xm list asks: xend.domains lists only domains in the
        # running state, so a paused one (a Remus backup copy, a domain that a
        # failback left paused) would look absent
        return [self._info(s) for s in self.call("xend.domains_with_state", True, "all", False)]

    def domain_info(self, dom):
        return self._info(self.call("xend.domain", dom, False))

    def migrating_away(self, dom):
        # XendCheckpoint.save renames the source for the whole save (and names it
        # back if the migration fails)
        for info in self.list_domains():
            if info.name == "migrating-%s" % (dom,) and info.domid != 0:
                return info
        return None

    def domain_config(self, dom):
        sxpr = self.call("xend.domain", dom, True)
        try:
            return sxp_mod.domain_config_from_sxp(sxpr, path="xend:%s" % (dom,))
        except ConfigError as exc:
            raise ToolstackError("xend's config of %s: %s" % (dom, exc))

    def host_info(self):
        pairs = self.call("xend.node.info")
        info = {}
        for item in pairs:
            if isinstance(item, (list, tuple)) and len(item) >= 2:
                info[item[0]] = item[1]
        try:
            info["free_memory"] = int(info["free_memory"])
            info["xen_version"] = "%s.%s%s" % (info["xen_major"], info["xen_minor"], info.get("xen_extra", ""))
        except (KeyError, ValueError) as exc:
            raise ToolstackError("xend.node.info: expected free_memory and xen_major/minor, got %s" % (exc,))
        return info

    def check_migrate_hook(self):
        ok, detail = self.migrate_hook()
        return None if ok else detail

    def _hooks_report(self):
        """xend's ``remus_hooks`` answer, or ``(None, why)`` when it has none."""
        try:
            rep = self.call("xend.domain.remus_hooks")
        except ToolstackError as exc:
            return None, str(exc)
        if isinstance(rep, dict) and rep.get("Status") == "Failure":
            return None, "xend.domain.remus_hooks: %s" % (rep.get("ErrorDescription"),)   # unknown method
        if not isinstance(rep, dict):
            return None, "xend.domain.remus_hooks: expected a dict, got %r" % (rep,)
        return rep, None

    def check_hold(self):
        """None when this xend holds a marked Remus stream's copy (patch
        0007, our package loaded) and its remus script marks a stream when
        asked (patch 0008); else why not.  Both hosts must carry them: the
        primary's marks, the backup's holds (the failback preflight asks both)."""
        where = " on %s" % self.host if self.host else ""
        rep, why = self._hooks_report()
        if rep is None:
            return ("the xend%s has no xen-remus-ext methods (%s): it resumes a Remus backup by itself "
                    "when the checkpoint stream breaks (apply patches/ 0002, 0007 and 0008, install the "
                    "package, restart xend)" % (where, why))
        held = rep.get("hold")
        if not isinstance(held, dict):
            return ("the xend%s runs a xen-remus-ext without the held backup: it resumes a Remus backup "
                    "by itself when the checkpoint stream breaks (upgrade the package, restart xend)" % where)
        if not held.get("restore"):
            return ("the xend%s lacks patch 0007 (XendCheckpoint.restore holding a marked Remus stream), "
                    "or started before it was applied: it resumes a Remus backup by itself when the "
                    "checkpoint stream breaks" % where)
        if not held.get("mark"):
            return ("xen/remus/image.py%s lacks patch 0008: the remus script cannot mark its stream for "
                    "a held backup" % where)
        return None

    def hold_on_stream_break(self, hold=True):
        """Nothing to set on an xend backup: the primary asks for the hold per
        stream (``remus_start(hold=True)`` marks it).  Checks that this xend
        would hold such a stream.

        :raises ToolstackError: :meth:`check_hold`'s reason (only for ``hold=True``)."""
        if hold:
            why = self.check_hold()
            if why is not None:
                raise ToolstackError("hold a Remus backup for promote: %s" % why)

    def _hold_record(self, dom, what):
        """(record, domain info) of the copy of ``dom`` this host's xend
        holds or receives; :raises ToolstackError: none here."""
        if self.ssh is not None:
            raise ToolstackError("%s of %s: run it on the backup %s itself (its xend's record is local "
                                 "there)" % (what, dom, self.host))
        try:
            rec = xend_hold.load(dom)
        except ValueError as exc:
            raise ToolstackError("%s of %s: %s" % (what, dom, exc))
        info = found = None
        if rec is None:
            found = "no record"
        elif rec.get("state") not in (xend_hold.RECEIVING, xend_hold.HELD):
            found = "a record saying %s (domain %s)" % (rec.get("state"), rec.get("domid"))
        else:
            info = self._find(dom)
            if info is None:
                found = "the record of domain %s, but no domain %s here" % (rec.get("domid"), dom)
            elif xend_hold.current(dom, info.domid) is None:
                found = "the record of domain %s, but %s is domain %s now" % (rec.get("domid"), dom, info.domid)
        if found is not None:
            raise ToolstackError("%s of %s: expected a Remus backup copy held by this xend (%s), found %s"
                                 % (what, dom, xend_hold.record_path(dom), found))
        return rec, info

    def _find(self, dom):
        for info in self.list_domains():
            if info.name == str(dom) or str(info.domid) == str(dom):
                return info
        return None

    def _peer_hold(self, verb, dom):
        """``xen-remus hold VERB --toolstack xend DOM`` on the peer (its
        xend's record is local there): ``(rc, stdout, stderr)``."""
        if self.runner is None:
            raise ToolstackError("xend at %s: the held backup's record is on that host; expected a Runner to "
                                 "ask it over ssh, got none" % self.host)
        return self._on_peer(["xen-remus", "-q", "hold", verb, "--toolstack", "xend", str(dom)])

    def _on_peer(self, command):
        """Run ``command`` on the peer through ssh: ``(rc, stdout, stderr)`` as text."""
        argv = list(self.ssh) + [self.host] + list(command)
        try:
            rc, out, err = self.runner.run(argv, timeout=60)
        except (OSError, IOError) as exc:
            raise ToolstackError("%s: cannot run: %s" % (" ".join(argv), exc))
        out = out.decode("utf-8", "replace") if isinstance(out, bytes) else (out or "")
        err = err.decode("utf-8", "replace") if isinstance(err, bytes) else (err or "")
        return rc, out, err

    def remus_backup(self, dom):
        """The copy of ``dom`` here is a held Remus stream's (the record this
        xend wrote for it, same domid): ``receiving`` while its stream
        flows, ``broken`` once it ended (held, complete at its last committed
        checkpoint).  The count of checkpoints is not known on xend (None).
        Copies of streams without a hold are not told apart from a paused
        domain (None).  On a peer the record is read there (``xen-remus hold
        show`` over ssh)."""
        if self.ssh is not None:
            rc, out, _err = self._peer_hold("show", dom)
            try:
                rec = json.loads(out) if rc == 0 else None
            except ValueError:
                rec = None
            if not isinstance(rec, dict):
                return None
        else:
            try:
                rec = xend_hold.load(dom)
            except ValueError as exc:
                raise ToolstackError(str(exc))
        if rec is None or rec.get("state") not in (xend_hold.RECEIVING, xend_hold.HELD):
            return None
        info = self._find(dom)
        if info is None or rec.get("domid") != info.domid:
            return None
        held = rec["state"] == xend_hold.HELD
        return {"state": "broken" if held else "receiving", "checkpoints": rec.get("checkpoints"),
                "held": held, "complete": bool(rec.get("complete"))}

    def remus_takeover(self, dom, timeout=None):
        """Resume the held copy of ``dom`` (its stream ended; the old primary
        is fenced): what xend's restore would have done at the end of the
        stream, an unpause.  :raises ToolstackError: no held copy here, or
        its stream still flows."""
        rec, info = self._hold_record(dom, "takeover")
        if rec["state"] != xend_hold.HELD:
            raise ToolstackError("takeover of %s: its checkpoint stream still flows (the primary sends): "
                                 "expected it to have ended, got the copy %s" % (dom, rec["state"]))
        if info.paused:
            self.unpause(info.domid)
        after = self.domain_info(info.domid)
        if after.paused:
            raise ToolstackError("takeover of %s: expected it running after the unpause, got it paused" % (dom,))
        xend_hold.set_state(dom, xend_hold.RELEASED)
        LOG.warning("%s (domain %s): the held Remus backup copy runs from its last committed checkpoint",
                    dom, info.domid)

    def remus_discard(self, dom):
        """Destroy the held (or still receiving) backup copy of ``dom`` here
        without resuming it.  Only a copy this xend recorded as held is
        destroyed: on xend a backup copy has the domain's own name, and a
        paused domain may be a primary.  On a peer: ``xen-remus hold discard``
        there, over ssh, which checks the same."""
        if self.ssh is not None:
            rc, out, err = self._peer_hold("discard", dom)
            if rc != 0:
                raise ToolstackError("discard the backup copy of %s on %s: xen-remus hold discard exit %d: %s"
                                     % (dom, self.host, rc, (err or out).strip() or "(no message)"))
            return
        rec, info = self._hold_record(dom, "discard")
        self.destroy(info.domid)
        xend_hold.set_state(dom, xend_hold.DISCARDED)
        LOG.warning("%s (domain %s): the Remus backup copy (%s) destroyed without resuming it",
                    dom, info.domid, rec["state"])

    def migrate_hook(self, config_path=None):
        """Whether THIS running xend sends a failback's final delta at
        device-migrate step 2; without it xend resumes the domain at the
        destination on a stale disk.

        Asks xend (``xend.domain.remus_hooks``, present when our package is
        loaded by a patched xend); an xend without it can only have the tool
        route, so its config file is read (``config_path``, default
        ``$XEND_CONFIG`` or /etc/xen/xend-config.sxp), and a file changed
        after xend started (its socket's age) does not count: xend reads it
        at start.

        :returns: ``(ok, detail)``
        """
        try:
            rep = self.call("xend.domain.remus_hooks")
        except ToolstackError as exc:
            rep = None
            why = str(exc)
        if isinstance(rep, dict) and rep.get("Status") == "Failure":
            why = "xend.domain.remus_hooks: %s" % (rep.get("ErrorDescription"),)   # xend's unknown-method answer
            rep = None
        if isinstance(rep, dict):
            if rep.get("tool_is_ours"):
                return True, "xend runs %s at each migrate step" % rep.get("migration_tool")
            if rep.get("blktap_override"):
                return True, "xend's %s carry the migrate override" % ", ".join(rep["blktap_override"])
            return False, ("the running xend has no migrate hook (external-migration-tool %r, no blktap "
                           "override): install it (xen-remus hook-config install) and restart xend"
                           % (rep.get("migration_tool") or ""))
        from xen_remus_ext.xend import xend_config
        path = xend_config.config_path(config_path)
        try:
            settings = xend_config.read_xend_config(path)
        except XenRemusError as exc:
            return False, "xend has no remus methods (%s) and its config is unreadable: %s" % (why, exc)
        if not settings.hook_installed:
            return False, ("xend has no remus methods and %s names no xen-remus external-migration-tool "
                           "(%r): run xen-remus hook-config install and restart xend"
                           % (path, settings.migration_tool or ""))
        started = _xend_started(self.uri)
        if started is not None and os.path.getmtime(path) > started:
            return False, ("%s names the hook, but it changed after xend started (xend reads it at "
                           "start): restart xend" % path)
        return True, "%s names %s as external-migration-tool" % (path, settings.migration_tool)

    def tracks_writes(self):
        return True

    def serve_final_delta(self, dom, host, send):
        """xend's migration hook asks this process for the final delta over
        a Unix socket in the state directory (toolstack/delta_handoff.py)."""
        from xen_remus_ext.toolstack.delta_handoff import Server
        return Server(dom, host, send)

    def _disk(self, dom, vdev):
        for d in self.domain_config(dom).disks:
            if _vdev(d.vdev) == _vdev(vdev) and d.path:
                return d
        raise ToolstackError("xend tracker of %s: expected a disk %s with an image file, got none" % (dom, vdev))

    def tracker_choice(self, dom, vdev):
        """blktap2's log driver where the disk's tapdisk stack carries it
        (``remus:H:P|log:NAME|aio:PATH``), else reflink + FIEMAP where the
        image's filesystem can clone (and ``tracker="fiemap"``), else none:
        the final pass compares checksums."""
        from xen_remus_ext.config.disk import log_layer
        d = self._disk(dom, vdev)
        name = log_layer(d.uname)
        if name:
            return "blktap2-log", "its tapdisk stack carries blktap2's log driver (log:%s)" % name
        if self.tracker != "fiemap":
            return None, "no log driver in its tapdisk stack, and the fiemap tracker is off"
        from xen_remus_ext.trackers.fiemap import reflink_probe
        why = reflink_probe(d.path)
        if why is None:
            return "fiemap", "no log driver in its tapdisk stack; the image's filesystem can reflink"
        return None, "no log driver in its tapdisk stack, and %s" % why

    def tracker_for(self, dom, vdev):
        """:returns: the (unmarked) tracker :meth:`tracker_choice` names:
        :class:`Blktap2LogTracker` (its state kept in the state directory,
        so that the migration hook's process can read it too),
        :class:`FiemapTracker`, or None."""
        kind, why = self.tracker_choice(dom, vdev)
        LOG.info("%s %s: dirty-block tracker %s: %s", dom, vdev, kind or "none (checksums)", why)
        if kind is None:
            return None
        d = self._disk(dom, vdev)
        if kind == "blktap2-log":
            from xen_remus_ext.config.disk import log_layer
            from xen_remus_ext.trackers.blktap2_log import Blktap2LogTracker, state_file
            return Blktap2LogTracker(log_layer(d.uname), state_path=state_file(dom, vdev))
        from xen_remus_ext.trackers.fiemap import FiemapTracker
        return FiemapTracker(d.path)

    # -- lifecycle ---------------------------------------------------------------

    def pause(self, dom):
        self.call("xend.domain.pause", dom)

    def unpause(self, dom):
        self.call("xend.domain.unpause", dom)

    def destroy(self, dom):
        self.call("xend.domain.destroy", dom)

    def create_from_file(self, path):
        """``xm create PATH`` on this host (xm reads the Python config; xend
        only ever sees the SXP it builds)."""
        if self.runner is None or self.ssh:
            raise ToolstackError("%s: xm create runs on the domain's own host; expected a local xend "
                                 "with a Runner" % path)
        argv = ["xm", "create", path]
        try:
            rc, out, err = self.runner.run(argv, timeout=120)
        except (OSError, IOError) as exc:
            raise ToolstackError("%s: cannot run: %s" % (" ".join(argv), exc))
        if rc != 0:
            msg = (err or out or b"")
            msg = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
            raise ToolstackError("%s: exit %d: %s" % (" ".join(argv), rc, msg.strip() or "(no output)"))

    def save(self, dom, path, checkpoint=False):
        self.call("xend.domain.save", dom, path, bool(checkpoint))

    def restore(self, path, paused=False):
        return self._info(self.call("xend.domain.restore", path, bool(paused)))

    def migrate(self, dom, dst, live=True, port=None, paused=False, ssh=None, config=None, ssl=None, node=-1):
        """``xm migrate``: memory only.  xend cannot leave the domain paused on
        arrival, tunnel through ssh or send another config; those are xl's."""
        for name, val in (("paused", paused), ("ssh", ssh), ("config", config)):
            if val:
                raise ToolstackError("xend migrate of %s: option %s exists only with xl (got %r)" % (dom, name, val))
        self.call("xend.domain.migrate", dom, dst, bool(live), int(port or 0), int(node), ssl, False)

    # -- remus -------------------------------------------------------------------

    def remus_argv(self, dom, host, interval_ms=200, port=None, net=True, disk=True, blackhole=False,
                   unsafe=False):
        if not disk:
            raise ToolstackError("remus on xend: disks are replicated by their tap:remus: unames; "
                                 "there is no switch to turn that off (asked for disk=False)")
        if unsafe:
            raise ToolstackError("remus on xend has no unsafe mode (that is xl remus -F)")
        argv = list(self.remus) + ["-i", str(int(interval_ms))]
        if port:
            argv += ["-p", str(int(port))]
        if not net:
            argv.append("--no-net")
        if blackhole:
            argv.append("--blackhole")
        return argv + [str(dom), host]

    def _remote(self, verb, args, ok=(0,)):
        """Run ``xen-remus remus-sender VERB ARGS`` on the peer; :returns: (rc, stdout)."""
        if self.runner is None:
            raise ToolstackError("xend at %s: the Remus sender runs on that host, through ssh; "
                                 "expected a Runner, got none" % self.host)
        rc, out, err = self._on_peer(["xen-remus", "remus-sender", verb] + list(args))
        if rc not in ok:
            raise ToolstackError("on %s: xen-remus remus-sender %s %s: exit %d: %s"
                                 % (self.host, verb, " ".join(args), rc, (err or out).strip() or "(no output)"))
        return rc, out

    def remus_start(self, dom, host, interval_ms=200, port=None, net=True, disk=True,
                    blackhole=False, unsafe=False, hold=False):
        """Start the ``remus`` script protecting ``dom`` toward ``host``, on
        the host that runs ``dom`` (this one, or the peer over ssh).
        ``hold``: the stream is marked (``XEN_REMUS_EXT_HOLD=1``), so that the
        backup's xend keeps its copy paused when the stream breaks; refused
        where :meth:`check_hold` says why not."""
        if hold:
            if blackhole:
                raise ToolstackError("remus of %s: a blackhole backup has no copy to hold" % (dom,))
            why = self.check_hold()
            if why is not None:
                raise ToolstackError("remus of %s with a held backup: %s" % (dom, why))
        argv = self.remus_argv(dom, host, interval_ms, port, net, disk, blackhole, unsafe)
        if self.ssh is not None:
            _, out = self._remote("start", (["--hold"] if hold else []) + argv[len(self.remus):])
            pid = out.strip().split()[-1] if out.strip() else ""
            return int(pid) if pid.isdigit() else None
        # an unknown domain is refused here: the script may take longer to say so
        # than start() watches it (0.5 s) on a loaded host
        self.domain_info(dom)
        env = {"XM_SERVER": self.uri} if self.uri != DEFAULT_URI else {}
        env[xend_hold.ENV] = "1" if hold else "0"
        return self.processes.start(dom, argv, env=env, match=argv[len(self.remus):])

    def remus_stop(self, dom):
        if self.ssh is not None:
            rc, _ = self._remote("stop", [str(dom)], ok=(0, 1))
            return rc == 0
        return self.processes.stop(dom)

    def remus_running(self, dom):
        if self.ssh is not None:
            rc, _ = self._remote("status", [str(dom)], ok=(0, 1))
            return rc == 0
        return self.processes.running(dom)

    # -- blktap2 remus disks -------------------------------------------------------

    def retarget_disks(self, dom, config):
        """Re-point the remus disks of the PAUSED domain ``dom`` to the
        targets their unames name in ``config`` (a :class:`model.DomainConfig`
        from ``failback.preflight.plan_direction``); the next ``remus`` run
        replicates there.  Only the remus layer may change; disks whose uname
        is unchanged are left alone (so a rerun after a partial run finishes
        the rest).  Each disk: its vbd backend (``dev`` = the vdev) gives the
        minor (``params`` = /dev/xen/blktap-2/tapdevN), ``tap-ctl list`` the
        tapdisk's pid (and that it runs the old remus target), then ``tap-ctl
        pause -p PID -m MINOR``, ``tap-ctl unpause -p PID -m MINOR -a
        NEWSTACK`` and the backend's ``tapdisk-params`` rewritten.  Everything
        is checked before the first disk is touched; an unpause that fails is
        retried with the old stack so the disk is not left paused.

        (xl has no such method: ``xl remus`` has no ``remus:`` uname to
        re-point; its disks replicate through DRBD or not at all.)

        :returns: the vdevs re-pointed.
        :raises ToolstackError: not paused, no runner/xenstore, a disk not
            a blktap2 remus disk, its tapdisk not found or running something
            else, or tap-ctl failed (with its exit status and stderr).
        """
        lacks = self.check_retarget()
        if lacks:
            raise ToolstackError("xend retarget_disks of %s: %s" % (dom, lacks))
        info = self.domain_info(dom)
        if not info.paused:
            raise ToolstackError("xend retarget_disks of %s: expected the domain paused, got state %s"
                                 % (dom, info.state))
        wanted = self._retarget_plan(dom, config)
        if not wanted:
            return []
        backends = self._vbd_backends(info.domid)
        entries = tapctl.parse_list(tapctl.run(self.runner, tapctl.list_argv(self.tap_ctl)))
        steps = [self._retarget_step(dom, vdev, old, new, backends, entries) for vdev, old, new in wanted]
        for step in steps:
            if not step["tapdisk_done"]:
                self._repoint(dom, step)
            self._xs_write(step["backend"] + "/tapdisk-params", step["new_params"])
            LOG.info("%s %s: remus disk re-pointed: %s -> %s", dom, step["vdev"], step["old_params"],
                     step["new_params"])
        return [step["vdev"] for step in steps]

    def check_retarget(self):
        """:returns: None if :meth:`retarget_disks` has what it needs, else why not."""
        if self.runner is None or self.xenstore is None:
            return "expected a Runner for tap-ctl and this host's xenstore, got %s" % (
                "neither" if self.runner is None and self.xenstore is None else
                "no runner" if self.runner is None else "no xenstore")
        return None

    def _retarget_plan(self, dom, config):
        """``[(vdev, old DiskSpec, new DiskSpec)]`` of the remus disks whose uname changes."""
        current = dict((_vdev(d.vdev), d) for d in self.domain_config(dom).disks)
        out = []
        for new in config.disks:
            if new.remus is None:
                continue
            vdev = _vdev(new.vdev)
            old = current.get(vdev)
            if old is None:
                raise ToolstackError("xend retarget_disks of %s: expected disk %s, got %s"
                                     % (dom, vdev, ", ".join(sorted(current)) or "no disks"))
            if old.uname == new.uname:
                continue
            old_stack, new_stack = tapctl.tapdisk_stack(old.uname), tapctl.tapdisk_stack(new.uname)
            if not (old_stack.startswith("remus:") and new_stack.startswith("remus:")):
                raise ToolstackError("xend retarget_disks of %s: disk %s: expected blktap2 remus unames, got "
                                     "%r -> %r" % (dom, vdev, old.uname, new.uname))
            if len(new_stack) > tapctl.MAX_PARAMS:
                raise ToolstackError("xend retarget_disks of %s: disk %s: expected a tapdisk stack of at most "
                                     "%d characters (tap-ctl unpause -a), got %d"
                                     % (dom, vdev, tapctl.MAX_PARAMS, len(new_stack)))
            if old_stack.split("|", 1)[1:] != new_stack.split("|", 1)[1:]:
                raise ToolstackError("xend retarget_disks of %s: disk %s: expected only the remus target to "
                                     "change, got %r -> %r" % (dom, vdev, old.uname, new.uname))
            out.append((vdev, old, new))
        return out

    def _vbd_backends(self, domid):
        """``{vdev: (backend path, params, tapdisk-params)}`` of the domain's vbds."""
        base = "/local/domain/0/backend/vbd/%d" % domid
        out = {}
        try:
            for devid in self.xenstore.list(base):
                path = "%s/%s" % (base, devid)
                dev = self.xenstore.read(path + "/dev", "")
                if dev:
                    out[_vdev(dev)] = (path, self.xenstore.read(path + "/params", ""),
                                       self.xenstore.read(path + "/tapdisk-params", ""))
        except XenStoreError as exc:
            six.raise_from(ToolstackError("xenstore %s: cannot read the vbd backends: %s" % (base, exc)), exc)
        return out

    def _retarget_step(self, dom, vdev, old, new, backends, entries):
        """Check one disk and say what to do with it (nothing changes here)."""
        what = "xend retarget_disks of %s: disk %s" % (dom, vdev)
        if vdev not in backends:
            raise ToolstackError("%s: expected a vbd backend with dev=%s, got %s"
                                 % (what, vdev, ", ".join(sorted(backends)) or "none"))
        path, params, tparams = backends[vdev]
        minor = tapctl.minor_of(params)
        if minor is None:
            raise ToolstackError("%s: expected %s/params = %sN (a blktap2 device), got %r"
                                 % (what, path, tapctl.TAP_DEV, params))
        old_params, new_params = old.uname.split(":", 1)[1], new.uname.split(":", 1)[1]
        if tparams not in (old_params, new_params):
            raise ToolstackError("%s: expected %s/tapdisk-params = %r, got %r"
                                 % (what, path, old_params, tparams))
        old_stack, new_stack = tapctl.tapdisk_stack(old.uname), tapctl.tapdisk_stack(new.uname)
        mine = [e for e in entries if e.minor == minor and e.pid is not None]
        if len(mine) != 1:
            raise ToolstackError("%s: expected one tapdisk serving minor %d in `tap-ctl list`, got %d"
                                 % (what, minor, len(mine)))
        entry = mine[0]
        if entry.args == tapctl.top_args(new_stack):
            done = True          # an earlier run re-pointed the tapdisk; xenstore may lag
        elif entry.args == tapctl.top_args(old_stack) or (entry.args is None and entry.paused):
            done = False         # (paused with no image: an earlier run stopped between pause and unpause)
        else:
            raise ToolstackError("%s: expected tapdisk %d minor %d to run %s, got %s"
                                 % (what, entry.pid, minor, tapctl.top_args(old_stack), entry.args or "nothing"))
        return {"vdev": vdev, "backend": path, "pid": entry.pid, "minor": minor, "old_stack": old_stack,
                "new_stack": new_stack, "old_params": old_params, "new_params": new_params,
                "tapdisk_done": done}

    def _repoint(self, dom, step):
        pid, minor = step["pid"], step["minor"]
        tapctl.run(self.runner, tapctl.pause_argv(self.tap_ctl, pid, minor))
        try:
            tapctl.run(self.runner, tapctl.unpause_argv(self.tap_ctl, pid, minor, step["new_stack"]))
        except ToolstackError as exc:
            try:
                tapctl.run(self.runner, tapctl.unpause_argv(self.tap_ctl, pid, minor, step["old_stack"]))
                back = "it runs %s again" % step["old_stack"]
            except ToolstackError as exc2:
                back = "and resuming it with %s failed too (%s): the disk is PAUSED" % (step["old_stack"], exc2)
            six.raise_from(ToolstackError("xend retarget_disks of %s: disk %s: %s; %s"
                                          % (dom, step["vdev"], exc, back)), exc)

    def _xs_write(self, path, value):
        try:
            self.xenstore.write(path, value)
        except XenStoreError as exc:
            six.raise_from(ToolstackError("xenstore write %s: %s" % (path, exc)), exc)


def _xend_started(uri):
    """When the local xend started (its XML-RPC socket's mtime), or None."""
    scheme, _, rest = (uri or DEFAULT_URI).partition(":")
    if scheme != "httpu":
        return None
    try:
        return os.stat(rest[2:] if rest.startswith("//") else rest).st_mtime
    except OSError:
        return None


def _vdev(dev):
    """A guest device name without xend's ``:disk``/``:cdrom`` suffix (or ``ioemu:`` prefix)."""
    if dev.startswith("ioemu:"):
        dev = dev[len("ioemu:"):]
    return dev.split(":", 1)[0]
