"""An xend XML-RPC double on a Unix socket (stands in for xend 4.1-4.4).

Follows docs/xen-facts.md sections 1, 3, 4 and xend's XMLRPCServer.py (4.1.0):
the legacy ``xend.*`` methods with xend's signatures, a ``(domain ...)`` SXP
list per domain (devices only with ``full``, as ``sxpr(ignore_store)``),
faults with xend's codes (3 = invalid domain, fault string = the name;
2 = XendError with xend's messages, e.g. "Cannot pause privileged domain 0")
and xend's repr()-escaping of top-level string results.

State lives in memory.  ``save`` writes a file that starts like a real save
image (``LinuxGuestRecord``, ``!i`` length, the SXP) followed by a stand-in
for the libxc image; ``restore`` reads the SXP back.  ``migrate`` hands the
domain to another double registered with :meth:`XendDouble.add_peer` (the
stand-in for the relocation server on port 8002), or fails with xend's
"can't connect" error.
"""
from __future__ import absolute_import, division, print_function

import os
import socket
import struct
import threading
import uuid as uuid_mod

import six
from six.moves import xmlrpc_client as xmlrpclib
from six.moves import xmlrpc_server

from xen_remus_ext.config import sxp

SIGNATURE = b"LinuxGuestRecord"
ERROR_INTERNAL, ERROR_GENERIC, ERROR_INVALID_DOMAIN = 1, 2, 3


def invalid_domain(dom):
    return xmlrpclib.Fault(ERROR_INVALID_DOMAIN, str(dom))


def xend_error(msg):
    return xmlrpclib.Fault(ERROR_GENERIC, msg)


class Domain(object):
    def __init__(self, domid, name, memory=512, vcpus=1, kernel="/boot/vmlinuz-3.2.0-4-amd64",
                 disks=(), vifs=(), paused=False, uuid=None):
        self.domid = domid
        self.name = name
        self.memory = memory
        self.vcpus = vcpus
        self.kernel = kernel
        self.disks = list(disks)    # (cls, uname, dev, mode)
        self.vifs = list(vifs)      # (mac, bridge)
        self.paused = paused
        self.uuid = uuid or str(uuid_mod.uuid4())
        self.cpu_time = 1.25

    def state(self):
        if self.domid == 0:
            return "r-----"
        return "--p---" if self.paused else "-b----"

    def sxpr(self, full):
        out = ["domain", ["domid", self.domid], ["cpu_weight", 256], ["cpu_cap", 0],
               ["uuid", self.uuid], ["vcpus", self.vcpus], ["name", self.name],
               ["on_poweroff", "destroy"], ["on_reboot", "restart"], ["on_crash", "restart"],
               ["maxmem", self.memory], ["memory", self.memory], ["shadow_memory", 0],
               ["image", ["linux", ["kernel", self.kernel], ["args", "root=/dev/xvda1 ro"]]],
               ["status", 2 if not self.paused else 3], ["state", self.state()],
               ["store_mfn", 1234567], ["console_mfn", 1234566],
               ["cpu_time", self.cpu_time], ["online_vcpus", self.vcpus], ["start_time", 1795500000.5]]
        if full:
            for cls, uname, dev, mode in self.disks:
                out.append(["device", [cls, ["uname", uname], ["dev", dev + ":disk"], ["mode", mode],
                                       ["uuid", str(uuid_mod.uuid5(uuid_mod.NAMESPACE_URL, str(uname)))]]])
            for mac, bridge in self.vifs:
                out.append(["device", ["vif", ["mac", mac], ["bridge", bridge], ["script", "vif-bridge"]]])
        return out


def domain_from_sxp(sxpr, domid):
    cfg = sxp.domain_config_from_sxp(sxpr)
    disks = []
    for kid in sxpr[1:]:
        if isinstance(kid, list) and kid and kid[0] == "device" and kid[1][0] in ("vbd", "tap", "tap2"):
            d = dict((k[0], k[1]) for k in kid[1][1:] if isinstance(k, list) and len(k) == 2)
            disks.append((kid[1][0], d["uname"], d["dev"].split(":")[0], d.get("mode", "w")))
    return Domain(domid, cfg.name, cfg.memory, cfg.vcpus, cfg.kernel, disks,
                  uuid=sxp.child_value(sxpr, "uuid"))


class XendDouble(object):
    """The XendDomain/XendNode state behind the XML-RPC methods."""

    def __init__(self, hostname="hosta", free_memory=6945, xen=(4, 1, ".0")):
        self.hostname = hostname
        self.free_memory = free_memory
        self.xen = xen
        self.lock = threading.RLock()
        self.doms = {0: Domain(0, "Domain-0", memory=1024, vcpus=2, kernel=None)}
        self.next_domid = 1
        self.peers = {}
        self.calls = []

    def add_peer(self, host, other):
        self.peers[host] = other

    def add_domain(self, name, **kw):
        with self.lock:
            dom = Domain(self.next_domid, name, **kw)
            self.doms[dom.domid] = dom
            self.next_domid += 1
            return dom

    def lookup(self, dom):
        with self.lock:
            for d in self.doms.values():
                if str(d.domid) == str(dom) or d.name == dom or d.uuid == dom:
                    return d
        raise invalid_domain(dom)

    def _not_dom0(self, what, d, dom):
        if d.domid == 0:
            raise xend_error("Cannot %s privileged domain %s" % (what, dom))

    # -- the exported functions ------------------------------------------------

    def domains(self, detail=True, full=False):
        """As xend: ``domains_with_state(detail, DOM_STATE_RUNNING, full)``,
        so a paused domain is NOT listed (XendDomain.list filters by state)."""
        return self.domains_with_state(detail, "running", full)

    def domains_with_state(self, detail, state, full):
        """``state`` 'all' or a power state name (running, paused...)."""
        with self.lock:
            doms = sorted(self.doms.values(), key=lambda d: d.domid)
            if state != "all":
                doms = [d for d in doms if ("paused" if d.paused else "running") == state]
            return [d.sxpr(full) for d in doms] if detail else [d.name for d in doms]

    def domain(self, dom, full=0):
        return self.lookup(dom).sxpr(bool(full))

    def domain_pause(self, dom, state=False):
        d = self.lookup(dom)
        self._not_dom0("pause", d, dom)
        d.paused = True

    def domain_unpause(self, dom):
        d = self.lookup(dom)
        self._not_dom0("unpause", d, dom)
        d.paused = False

    def domain_destroy(self, dom):
        d = self.lookup(dom)
        self._not_dom0("destroy", d, dom)
        with self.lock:
            del self.doms[d.domid]

    def domain_save(self, dom, dst, checkpoint=False):
        d = self.lookup(dom)
        self._not_dom0("save", d, str(dom))
        text = sxp.format(d.sxpr(True)).encode("utf-8")
        try:
            with open(dst, "wb") as f:
                f.write(SIGNATURE + struct.pack("!i", len(text)) + text)
                f.write(b"libxc-image-stand-in:" + d.name.encode("utf-8"))
        except (IOError, OSError) as exc:
            raise xend_error("can't write guest state file %s: %s" % (dst, exc.strerror))
        if not checkpoint:
            with self.lock:
                del self.doms[d.domid]

    def domain_restore(self, src, paused=False):
        try:
            with open(src, "rb") as f:
                data = f.read()
        except (IOError, OSError) as exc:
            raise xend_error("can't read guest state file %s: %s" % (src, exc.strerror))
        if not data.startswith(SIGNATURE):
            raise xend_error("not a valid guest state file: signature read")
        (length,) = struct.unpack("!i", data[16:20])
        sxpr = sxp.parse(data[20:20 + length].decode("utf-8"))[0]
        with self.lock:
            d = domain_from_sxp(sxpr, self.next_domid)
            self.next_domid += 1
            d.paused = bool(paused)
            self.doms[d.domid] = d
        return d.sxpr(True)

    def domain_migrate(self, dom, dst, live=False, port=0, node=-1, ssl=None, chs=False):
        d = self.lookup(dom)
        self._not_dom0("migrate", d, dom)
        peer = self.peers.get(dst)
        if peer is None:
            raise xend_error("can't connect: [Errno -2] Name or service not known")
        with self.lock:
            del self.doms[d.domid]
        self.calls.append(("migrate", d.name, dst, live, port, node, ssl, chs))
        with peer.lock:
            d.domid = peer.next_domid
            peer.next_domid += 1
            d.paused = False
            peer.doms[d.domid] = d

    def node_info(self, show_numa=1):
        major, minor, extra = self.xen
        return [["system", "Linux"], ["host", self.hostname], ["release", "3.2.0-4-amd64"],
                ["version", "#1 SMP Debian 3.2.51-1"], ["machine", "x86_64"], ["nr_cpus", 2],
                ["nr_nodes", 1], ["cores_per_socket", 2], ["threads_per_core", 1], ["cpu_mhz", 2394],
                ["hw_caps", "178bf3ff:efd3fbff:00000000:00001310:00802001:00000000:000037ff:00000000"],
                ["virt_caps", "hvm"], ["total_memory", 8191], ["free_memory", self.free_memory],
                ["free_cpus", 0], ["xen_major", major], ["xen_minor", minor], ["xen_extra", extra],
                ["xen_caps", "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"],
                ["xen_scheduler", "credit"], ["xen_pagesize", 4096],
                ["platform_params", "virt_start=0xffff800000000000"],
                ["xen_changeset", "unavailable"], ["xen_commandline", "placeholder"],
                ["cc_compiler", "gcc version 4.7.2 (Debian 4.7.2-5)"], ["cc_compile_by", "root"],
                ["cc_compile_domain", "localdomain"], ["cc_compile_date", "Thu Jan 1 00:00:00 UTC 2015"],
                ["xend_config_format", 4]]


class _TCPServer(xmlrpc_server.SimpleXMLRPCServer):
    allow_reuse_address = True

    def _marshaled_dispatch(self, data, dispatch_method=None, path=None):
        params, method = xmlrpclib.loads(data)
        try:
            response = self._dispatch(method, params)
            if isinstance(response, str):      # xend: repr()[1:-1] of string results
                response = repr(response)[1:-1]
            out = xmlrpclib.dumps((response,), methodresponse=1, allow_none=1)
        except xmlrpclib.Fault as fault:
            out = xmlrpclib.dumps(fault, allow_none=1)
        except Exception as exc:  # xend turns any other exception into Fault 1
            out = xmlrpclib.dumps(xmlrpclib.Fault(ERROR_INTERNAL, str(exc)), allow_none=1)
        return out.encode("utf-8") if isinstance(out, six.text_type) else out


class _Server(_TCPServer):
    address_family = socket.AF_UNIX

    def server_bind(self):
        if os.path.exists(self.server_address):
            os.unlink(self.server_address)
        self.socket.bind(self.server_address)


class _Handler(xmlrpc_server.SimpleXMLRPCRequestHandler):
    disable_nagle_algorithm = False   # no TCP_NODELAY on a Unix socket (xend sets the same)
    def address_string(self):
        return "unix"

    def log_message(self, fmt, *args):
        pass


class XendServer(object):
    """Serve a :class:`XendDouble` on a Unix socket path (``httpu://``) or,
    given a ``(host, port)`` tuple, on TCP (``http://``, xend's
    xen-tcp-xmlrpc-server; port 0 picks a free one)."""

    def __init__(self, address, double=None):
        self.address = address
        self.socket_path = address if not isinstance(address, tuple) else None
        self.double = double or XendDouble()
        self.uri = "httpu://" + address if self.socket_path else None
        self._server = None
        self._thread = None

    def start(self):
        cls = _Server if self.socket_path else _TCPServer
        srv = cls(self.address, requestHandler=_Handler, logRequests=False, allow_none=True)
        if not self.socket_path:
            self.uri = "http://%s:%d/RPC2" % srv.server_address[:2]
        dbl = self.double
        for name, fn in (("xend.domains", dbl.domains), ("xend.domains_with_state", dbl.domains_with_state),
                         ("xend.domain", dbl.domain), ("xend.node.info", dbl.node_info)):
            srv.register_function(fn, name)
        for name in dir(dbl):
            if name.startswith("domain_"):
                srv.register_function(getattr(dbl, name), "xend.domain." + name[len("domain_"):])
        srv.register_introspection_functions()
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None
        if self.socket_path and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
