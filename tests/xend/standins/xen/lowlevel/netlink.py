"""xen.lowlevel.netlink for the xend lab.

The tree's own rtnetlink module (netlink.c and libnetlink.c, built at test
time as ``xenlab_kernel.netlink``) talks to the lab host's kernel in its
network namespace: the remus script's link and qdisc dumps, and every
request but one, are the kernel's.  The exception is the ``plug`` queueing
discipline Remus buffers a vif's output with: the lab's kernel has no
sch_plug (CONFIG_NET_SCH_PLUG), so adding, changing (``TC_PLUG_BUFFER`` at
each suspend, ``TC_PLUG_RELEASE_ONE`` at each commit) and deleting a plug
qdisc is answered here and counted in the host's hypervisor daemon.  Qdisc
dumps are the kernel's as it answers them: every device's qdiscs, lo's
noqueue first, whichever device the request names (patches/*/0009 makes the
script read the buffer device's own entry)."""
import struct

import hvclient

try:
    from xenlab_kernel.netlink import rtnl as _kernel_rtnl
except ImportError:  # only when the lab could not build the tree's module
    _kernel_rtnl = None

RTM_NEWQDISC = 36
RTM_DELQDISC = 37
RTM_GETQDISC = 38
NLM_F_CREATE = 0x400
TCA_KIND = 1
TCA_OPTIONS = 2
_NLMSG = struct.Struct("=IHHII")
_TCMSG = struct.Struct("=BxxxiIII")
_RTA = struct.Struct("=HH")
_ACTION = struct.Struct("=i")


class error(Exception):
    pass


def _attrs(msg, off):
    out = {}
    while off + _RTA.size <= len(msg):
        length, typ = _RTA.unpack_from(msg, off)
        if length < _RTA.size:
            break
        out[typ] = msg[off + _RTA.size:off + length]
        off += (length + 3) & ~3
    return out


def parse_qdisc_request(msg):
    """:returns: ``(type, flags, ifindex, kind, options)`` of a qdisc request, else None."""
    if len(msg) < _NLMSG.size + _TCMSG.size:
        return None
    _len, typ, flags, _seq, _pid = _NLMSG.unpack_from(msg, 0)
    if typ not in (RTM_NEWQDISC, RTM_DELQDISC):
        return None
    _family, ifindex, _handle, _parent, _info = _TCMSG.unpack_from(msg, _NLMSG.size)
    attrs = _attrs(msg, _NLMSG.size + _TCMSG.size)
    kind = attrs.get(TCA_KIND, b"").rstrip(b"\0")
    return typ, flags, ifindex, kind, attrs.get(TCA_OPTIONS, b"")


class rtnl(object):
    def __init__(self):
        if _kernel_rtnl is None:
            raise error("xend lab: the tree's netlink module was not built")
        self._k = _kernel_rtnl()
        self._plugs = set()

    def wilddump_request(self, *args):
        return self._k.wilddump_request(*args)

    def dump_request(self, *args):
        return self._k.dump_request(*args)

    def dump_filter(self, *args):
        return self._k.dump_filter(*args)

    def talk(self, msg):
        req = parse_qdisc_request(msg)
        if req is None:
            return self._k.talk(msg)
        typ, flags, ifindex, kind, opts = req
        if typ == RTM_NEWQDISC and kind == b"plug":
            if flags & NLM_F_CREATE:
                op = "add"
                self._plugs.add(ifindex)
            else:
                action = _ACTION.unpack_from(opts, 0)[0] if len(opts) >= _ACTION.size else -1
                op = {0: "buffer", 1: "release"}.get(action, "action-%d" % action)
        elif typ == RTM_DELQDISC and ifindex in self._plugs:
            op = "del"
            self._plugs.discard(ifindex)
        else:
            return self._k.talk(msg)
        try:
            hvclient.call("netbuf", ifindex, op)
        except hvclient.HvError as exc:
            raise IOError(str(exc))
