"""One simulated Xen host: a process playing dom0.

Runs, until its stdin closes or ``shutdown`` is asked:

* the agent: JSON-lines RPC on a Unix socket (``agent``), what xend's
  XML-RPC server is to xm; :class:`sim.toolstack.SimToolstack` is its client;
* the xenstored double (:mod:`sim.xenstored`) on ``xenstored`` and a pyxs
  client writing the domain keys xend writes (docs/xen-facts.md section 7);
* the relocation server on ``addr:reloc_port`` (``receive`` then the
  domain's config and memory; memory only, the disk stays behind);
* the block-remus server on ``addr:remus_port`` (:mod:`sim.remus`);
* the resync receiver (``resync.api.serve``) on ``addr:resync_port``,
  exporting the host's images, so a resync between hosts crosses a socket.

Guest-visible paths (``/var/lib/xen/images/x.img`` in a disk uname) live
under the host's ``root`` directory, as if ``root`` were the host's ``/``.

The config is a JSON file: ``name, root, agent, xenstored, addr,
reloc_port, remus_port, resync_port, peers`` (name -> {addr, reloc_port,
remus_port, resync_port}), ``netns`` (deleted on a clean exit) and
``on_stream_break`` (``resume``, the default, or ``wait``: a Remus backup
whose stream breaks stays paused for a promote) and ``remus_stop``
(``tell``, the default: a stopped sender tells its backup, which destroys
its copy; or ``end``: the stream just ends, as ``xl remus`` stopped by
SIGINT ends it, so a backup that holds keeps its copy paused).
"""
from __future__ import absolute_import, division, print_function

import json
import logging
import os
import socket
import struct
import sys
import threading
import time
import uuid as uuidlib

from xen_remus_ext.compat import to_bytes
from xen_remus_ext.config import disk as disk_mod
from xen_remus_ext.errors import ConfigError, ToolstackError, XenRemusError
from xen_remus_ext.sim import wire
from xen_remus_ext.sim.disk import DiskFile, create_image, file_digest
from xen_remus_ext.sim.domain import DEAD, INCOMING, PAUSED, RUNNING, SimDomain
from xen_remus_ext.sim.remus import RemusReceiver, RemusSender
from xen_remus_ext.sim.workload import check_disk_file

LOG = logging.getLogger(__name__)

SIGNATURE = b"LinuxGuestRecord"


def parse_uname(uname):
    """``(remus, path)``: remus is ``(host, port)`` or None; path the image.

    ``tap2:remus:H:P|aio:/p``, ``tap:tapdisk:remus:H:P|aio:/p``,
    ``tap2:aio:/p``, ``file:/p``, ``phy:/dev/x`` (read by the config
    package's parser, as every other part of the product reads them).
    """
    remus = None
    spec = disk_mod.parse_remus_uname(uname)
    if spec is not None:
        if not isinstance(spec.port, int):
            raise ToolstackError("disk %s: expected remus:HOST:PORT with a port 1-65535, got %r"
                                 % (uname, spec.port))
        remus = (spec.host, spec.port)
    path = disk_mod.uname_path(uname)
    if not path.startswith("/"):
        raise ToolstackError("disk %s: expected an absolute image path, got %r" % (uname, path))
    return remus, path


def vbd_devid(vdev):
    """Linux vbd number of a guest device name (xvda -> 51712)."""
    base = vdev.split(":")[0]
    if base.startswith("xvd") and len(base) == 4:
        return (202 << 8) | ((ord(base[3]) - ord("a")) << 4)
    if base.startswith("sd") and len(base) == 3:
        return (8 << 8) | ((ord(base[2]) - ord("a")) << 4)
    table = {"hda": 3 << 8, "hdb": (3 << 8) | 64, "hdc": 22 << 8, "hdd": (22 << 8) | 64}
    if base in table:
        return table[base]
    raise ToolstackError("disk %s: expected xvdX, sdX or hda..hdd, got %r" % (vdev, base))


class XsWriter(object):
    """The domain keys xend writes, through real pyxs (best effort)."""

    def __init__(self, sock_path):
        self.path = sock_path
        self.lock = threading.Lock()
        self.client = None

    def _client(self):
        if self.client is None:
            import pyxs
            self.client = pyxs.Client(unix_socket_path=self.path)
            self.client.connect()
        return self.client

    def apply(self, writes, deletes=()):
        with self.lock:
            try:
                c = self._client()
                for path in deletes:
                    if c.exists(to_bytes(path)):
                        c.delete(to_bytes(path))
                for path, value in writes:
                    c.write(to_bytes(path), to_bytes(value if value != "" else "-"))
            except Exception as exc:  # noqa: BLE001 - pyxs raises its own and socket errors
                LOG.warning("xenstore %s: %s", self.path, exc)
                self.close_locked()

    def close_locked(self):
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
            self.client = None


class Host(object):
    """The host's state and the agent's operations (``op_*``)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg["name"]
        self.root = cfg["root"]
        self.lock = threading.RLock()
        self.domains = {}
        self.next_domid = 1
        self.disks = {}
        self.trackers = {}
        self.current_trackers = {}
        self.marks = 0
        self.resync_server = None
        self.senders = {}
        self.events = []
        self.stopping = threading.Event()
        self.xs = XsWriter(cfg["xenstored"])
        self.boot_id = uuidlib.uuid4().hex[:8]
        self.on_stream_break = cfg.get("on_stream_break", "resume")

    # ------------------------------------------------------------- helpers
    def event(self, kind, *details):
        self.events.append({"t": time.time(), "host": self.name, "kind": kind,
                            "details": list(details)})
        LOG.info("%s: %s %s", self.name, kind, " ".join("%s" % d for d in details))

    def host_path(self, path):
        if not path.startswith("/"):
            raise ToolstackError("path %r: expected an absolute guest-visible path" % (path,))
        return os.path.join(self.root, path.lstrip("/"))

    def disk(self, path):
        real = self.host_path(path)
        with self.lock:
            if real not in self.disks:
                self.disks[real] = DiskFile(real)
                self.export(real)
            return self.disks[real]

    def find(self, dom, live_only=True):
        with self.lock:
            for d in self.domains.values():
                if d.state == DEAD and live_only:
                    continue
                if "%s" % d.domid == "%s" % dom or d.name == dom:
                    return d
        raise ToolstackError("domain %s on host %s: expected an existing domain, got none"
                             % (dom, self.name))

    def _open_disks(self, config):
        disks = {}
        for spec in config.get("disks", ()):
            _, path = parse_uname(spec["uname"])
            disks[spec["vdev"]] = self.disk(path)
        return disks

    def new_domain(self, config, memory, state):
        with self.lock:
            for d in self.domains.values():
                if d.name == config["name"] and d.state != DEAD:
                    raise ToolstackError("domain %s on host %s: expected a free name, got domid %d"
                                         % (d.name, self.name, d.domid))
            config = dict(config)
            config.setdefault("uuid", "%s" % uuidlib.uuid4())
            dom = SimDomain(self.next_domid, config, memory, self._open_disks(config), state)
            self.next_domid += 1
            self.domains[dom.domid] = dom
        self._xs_add(dom)
        dom.boot()
        return dom

    def create_incoming(self, config, memory):
        with self.lock:
            stale = [d for d in self.domains.values() if d.name == config["name"]
                     and d.state == INCOMING and getattr(d, "backup_state", None) == "broken"]
        for d in stale:   # a new stream replaces a copy whose stream broke
            self.destroy_domain(d)
            self.event("remus-backup-replaced", d.name, d.domid)
        dom = self.new_domain(config, memory, INCOMING)
        dom.backup_state = "receiving"
        self.event("remus-backup", dom.name, dom.domid)
        return dom

    def destroy_domain(self, dom):
        dom.destroy()
        with self.lock:
            self.domains.pop(dom.domid, None)
        self._xs_del(dom)

    def _xs_add(self, dom):
        base = "/local/domain/%d" % dom.domid
        vm = "/vm/%s" % dom.config["uuid"]
        w = [(base + "/name", dom.name), (base + "/domid", "%d" % dom.domid), (base + "/vm", vm),
             (base + "/memory/target", "%d" % (int(dom.config.get("memory", 64)) * 1024)),
             (vm + "/uuid", dom.config["uuid"]), (vm + "/name", dom.name),
             (vm + "/memory", "%d" % int(dom.config.get("memory", 64)))]
        for spec in dom.config.get("disks", ()):
            devid = vbd_devid(spec["vdev"])
            be = "/local/domain/0/backend/vbd/%d/%d" % (dom.domid, devid)
            fe = "%s/device/vbd/%d" % (base, devid)
            tparams = spec["uname"].split(":", 1)[1] if spec["uname"].startswith("tap") else ""
            w += [(fe + "/virtual-device", "%d" % devid), (fe + "/backend", be),
                  (fe + "/backend-id", "0"), (fe + "/state", "4"),
                  (be + "/params", "/dev/xen/blktap-2/tapdev%d" % dom.domid),
                  (be + "/mode", spec.get("mode", "w")), (be + "/dev", spec["vdev"]),
                  (be + "/type", "phy"), (be + "/frontend", fe),
                  (be + "/frontend-id", "%d" % dom.domid), (be + "/state", "4")]
            if tparams:
                w.append((be + "/tapdisk-params", tparams))
        self.xs.apply(w)

    def _xs_del(self, dom):
        self.xs.apply([], ["/local/domain/%d" % dom.domid, "/vm/%s" % dom.config["uuid"],
                           "/local/domain/0/backend/vbd/%d" % dom.domid])

    def resolve(self, dst, port_key):
        """A peer name or address -> ``(addr, port)`` of its ``port_key``."""
        peers = self.cfg.get("peers", {})
        if dst in peers:
            p = peers[dst]
            return p["addr"], p[port_key]
        for p in peers.values():
            if p["addr"] == dst:
                return p["addr"], p[port_key]
        raise ToolstackError("host %s: expected a known peer name or address, got %r (peers: %s)"
                             % (self.name, dst, ", ".join(sorted(peers)) or "none"))

    # ------------------------------------------------------------ agent ops
    def op_ping(self):
        return {"host": self.name, "boot_id": self.boot_id, "pid": os.getpid()}

    def op_host_info(self):
        c = self.cfg
        return {"host": self.name, "free_memory": 4096, "xen_version": "4.1.0-sim",
                "addr": c["addr"], "reloc_port": c["reloc_port"], "remus_port": c["remus_port"],
                "resync_port": c["resync_port"], "root": self.root, "xenstored": c["xenstored"],
                "boot_id": self.boot_id, "pid": os.getpid(), "netns": c.get("netns")}

    def op_list_domains(self):
        with self.lock:
            doms = sorted(self.domains.values(), key=lambda d: d.domid)
        out = [{"domid": 0, "name": "Domain-0", "state": "r-----", "memory": 1024}]
        return out + [d.info() for d in doms if d.state != DEAD]

    def op_domain_info(self, dom):
        d = self.find(dom)
        info = d.info()
        s = self.senders.get(d.name)
        info["remus"] = s.status() if s is not None else None
        info["checkpoints"] = getattr(d, "checkpoints", 0)
        info["backup"] = ({"state": getattr(d, "backup_state", None) or "receiving",
                           "checkpoints": info["checkpoints"]} if d.state == INCOMING else None)
        return info

    def op_set_on_stream_break(self, policy):
        """``resume`` (Remus' own behaviour) or ``wait`` (a backup whose
        stream breaks stays paused until :meth:`op_remus_takeover`)."""
        if policy not in ("resume", "wait"):
            raise ToolstackError("on_stream_break: expected resume or wait, got %r" % (policy,))
        self.on_stream_break = policy
        self.event("on-stream-break", policy)

    def op_remus_takeover(self, dom):
        """Resume the backup copy ``dom`` whose stream broke (a promote)."""
        from xen_remus_ext.sim.remus import take_over
        d = self.find(dom)
        if d.state != INCOMING:
            raise ToolstackError("domain %s on %s: expected a Remus backup copy to take over, got it %s"
                                 % (d.name, self.name, d.state))
        if getattr(d, "backup_state", None) != "broken":
            raise ToolstackError("domain %s on %s: expected its checkpoint stream broken (the primary "
                                 "fenced), got it still receiving" % (d.name, self.name))
        take_over(self, d)

    def op_domain_config(self, dom):
        return self.find(dom).config

    def op_create(self, config, paused=False):
        dom = self.new_domain(config, None, PAUSED if paused else RUNNING)
        self.event("create", dom.name, dom.domid)
        return dom.domid

    def op_pause(self, dom):
        d = self.find(dom)
        if d.state == INCOMING:
            raise ToolstackError("domain %s: expected a running domain, got a Remus backup copy"
                                 % d.name)
        d.set_state(PAUSED)
        self.event("pause", d.name)

    def op_unpause(self, dom):
        d = self.find(dom)
        if d.state == INCOMING:
            raise ToolstackError("domain %s: expected a paused domain, got a Remus backup copy"
                                 % d.name)
        d.set_state(RUNNING)
        self.event("unpause", d.name)

    def op_destroy(self, dom):
        d = self.find(dom)
        s = self.senders.pop(d.name, None)
        if s is not None:
            s.stop()
        self.destroy_domain(d)
        self.event("destroy", d.name)

    def op_save(self, dom, path, checkpoint=False):
        d = self.find(dom)
        with d.suspended():
            image = {"config": d.config, "memory": d.snapshot()}
        body = to_bytes(json.dumps(image, sort_keys=True))
        with open(self.host_path(path), "wb") as f:
            f.write(SIGNATURE + struct.pack("!i", len(body)) + body)
        if not checkpoint:
            self.op_destroy(dom)

    def op_restore(self, path, paused=False):
        with open(self.host_path(path), "rb") as f:
            data = f.read()
        if data[:16] != SIGNATURE:
            raise ToolstackError("save image %s: expected signature %r, got %r"
                                 % (path, SIGNATURE, data[:16]))
        (n,) = struct.unpack("!i", data[16:20])
        image = json.loads(data[20:20 + n].decode("utf-8"))
        dom = self.new_domain(image["config"], image["memory"], PAUSED if paused else RUNNING)
        return dom.domid

    def op_migrate(self, dom, dst, live=True, port=None, paused=False):
        d = self.find(dom)
        if d.name in self.senders and self.senders[d.name].state == "protecting":
            raise ToolstackError("domain %s: expected an unprotected domain to migrate, got one"
                                 " under Remus (stop it first)" % d.name)
        addr, rport = self.resolve(dst, "reloc_port")
        rport = port or rport
        t0 = time.time()
        prior = d.state
        d.set_state(PAUSED)
        self.event("migrate-pause", d.name, dst)
        with d.suspended():
            image = {"config": d.config, "memory": d.snapshot(), "paused": bool(paused)}
        try:
            sock = socket.create_connection((addr, rport), timeout=10)
            try:
                sock.sendall(b"receive\n")
                wire.send_json(sock, image)
                reply = wire.decode_json_line(wire.LineReader(sock).readline() or b"{}")
            finally:
                sock.close()
        except (socket.error, OSError, EOFError) as exc:
            d.set_state(prior)
            raise ToolstackError("migrate %s to %s:%d: %s" % (d.name, addr, rport, exc))
        if not reply.get("ok"):
            d.set_state(prior)
            raise ToolstackError("migrate %s to %s: %s" % (d.name, dst, reply.get("error")))
        self.destroy_domain(d)
        self.event("migrate-out", d.name, dst, round(time.time() - t0, 4))
        return reply.get("domid")

    def receive_migration(self, image):
        dom = self.new_domain(image["config"], image["memory"],
                              PAUSED if image.get("paused") else RUNNING)
        self.event("migrate-in", dom.name, dom.domid)
        return dom.domid

    def remus_peer(self, host, port):
        """The peer a remus uname's ``host:port`` names: ``(name, addr,
        remus_port)`` of its block-remus listener.

        A peer is named by its name, or by its address; when several hosts
        share an address (no namespaces: every host on 127.0.0.1, each on
        its own ports) the port decides, so a uname naming this host's own
        listener, or an address no single peer owns, is refused rather than
        sent to whichever host answers there.
        """
        c = self.cfg
        peers = c.get("peers", {})
        if host == self.name or (host == c["addr"] and port == c["remus_port"]):
            raise ToolstackError("remus target %s:%s: expected a peer, got this host %s itself"
                                 % (host, port, self.name))
        if host in peers:
            return host, peers[host]["addr"], peers[host]["remus_port"]
        by_addr = [n for n in sorted(peers) if peers[n]["addr"] == host]
        exact = [n for n in by_addr if peers[n]["remus_port"] == port]
        if exact:
            name = exact[0]
        elif len(by_addr) == 1 and host != c["addr"]:
            name = by_addr[0]
        else:
            raise ToolstackError("remus target %s:%s: expected it to name one peer (by name, by address, "
                                 "or by address and block-remus port), got %s"
                                 % (host, port, "several: " + ", ".join(by_addr) if by_addr else "none"))
        return name, peers[name]["addr"], peers[name]["remus_port"]

    def peer_name(self, dst):
        """The name of the peer ``dst`` (a name or an address) stands for."""
        peers = self.cfg.get("peers", {})
        if dst in peers:
            return dst
        for n in sorted(peers):
            if peers[n]["addr"] == dst:
                return n
        raise ToolstackError("host %s: expected a known peer name or address, got %r (peers: %s)"
                             % (self.name, dst, ", ".join(sorted(peers)) or "none"))

    def op_remus_start(self, dom, host=None, interval_ms=200, port=None, net=True, disk=True,
                       blackhole=False, unsafe=False, hold=False):
        """Protect ``dom`` toward ``host``.  As block-remus does, each remus
        disk replicates where its uname says (docs/xen-facts.md section 5): every
        one must name the backup asked for (re-point them first with
        ``retarget_disks``); the data goes to that peer's listener."""
        d = self.find(dom)
        old = self.senders.get(d.name)
        if old is not None and old.state == "protecting":
            raise ToolstackError("domain %s: expected no Remus sender, got one to %s"
                                 % (d.name, old.status()["backup"]))
        named = []
        for spec in d.config.get("disks", ()):
            remus, _ = parse_uname(spec["uname"])
            if remus is not None:
                named.append((spec["vdev"], remus, self.remus_peer(remus[0], remus[1])))
        target = None
        if host is not None:
            want = self.peer_name(host)
            addr, rport = self.resolve(want, "remus_port")
            for vdev, remus, peer in named if disk else ():
                if peer[0] != want:
                    raise ToolstackError("domain %s: remus disk %s replicates to %s:%d (host %s) but the "
                                         "backup asked for is %s: re-point the disk first"
                                         % (d.name, vdev, remus[0], remus[1], peer[0], want))
            target = (addr, rport if named and disk else (port or rport))
        elif named:
            target = named[0][2][1:]
            for vdev, _remus, peer in named[1:]:
                if peer[1:] != target:
                    raise ToolstackError("domain %s: remus disks %s and %s replicate to different hosts"
                                         % (d.name, named[0][0], vdev))
        if target is None:
            raise ToolstackError("domain %s: expected a remus disk or a backup host, got neither"
                                 % d.name)
        sender = RemusSender(d, tuple(target), interval_ms, on_event=self.event, hold=hold)
        sender.start()
        self.senders[d.name] = sender
        self.event("remus-start", d.name, "%s:%d" % tuple(target), interval_ms)

    def op_retarget_disks(self, dom, unames):
        """Re-point the remus disks of the PAUSED domain ``dom``: ``unames``
        maps a vdev to its new uname, which may differ from the old one only
        in the remus target (``remus:HOST:PORT``); the image stays.  What
        ``tap-ctl pause`` / ``unpause -a`` does to a tapdisk on xend.  The
        next ``remus_start`` replicates to the new target."""
        d = self.find(dom)
        if d.state != PAUSED:
            raise ToolstackError("domain %s: expected it paused to re-point its remus disks, got it %s"
                                 % (d.name, "a Remus backup copy" if d.state == INCOMING else d.state))
        s = self.senders.get(d.name)
        if s is not None and s.state == "protecting":
            raise ToolstackError("domain %s: expected no Remus sender while re-pointing its disks, got one"
                                 % d.name)
        specs = [dict(spec) for spec in d.config.get("disks", ())]
        by_vdev = dict((spec["vdev"], spec) for spec in specs)
        changes = []
        for vdev in sorted(unames):
            new = unames[vdev]
            if vdev not in by_vdev:
                raise ToolstackError("domain %s: expected disk %s, got %s"
                                     % (d.name, vdev, ", ".join(sorted(by_vdev)) or "no disks"))
            old_remus, old_path = parse_uname(by_vdev[vdev]["uname"])
            new_remus, new_path = parse_uname(new)
            if old_remus is None or new_remus is None:
                raise ToolstackError("disk %s of %s: expected remus unames, got %r -> %r"
                                     % (vdev, d.name, by_vdev[vdev]["uname"], new))
            if new_path != old_path:
                raise ToolstackError("disk %s of %s: expected the image %s to stay, got %s"
                                     % (vdev, d.name, old_path, new_path))
            self.remus_peer(new_remus[0], new_remus[1])   # must name one peer
            if by_vdev[vdev]["uname"] != new:
                changes.append((vdev, by_vdev[vdev]["uname"], new))
                by_vdev[vdev]["uname"] = new
        if not changes:
            return []
        config = dict(d.config)
        config["disks"] = specs
        d.config = config
        be = "/local/domain/0/backend/vbd/%d" % d.domid
        self.xs.apply([("%s/%d/tapdisk-params" % (be, vbd_devid(vdev)), new.split(":", 1)[1])
                       for vdev, _, new in changes if new.startswith("tap")])
        for vdev, old, new in changes:
            self.event("retarget", d.name, vdev, old, new)
        return [vdev for vdev, _, _ in changes]

    def op_remus_stop(self, dom, tell_backup=None):
        d = self.find(dom)
        s = self.senders.pop(d.name, None)
        if s is None:
            raise ToolstackError("domain %s: expected a Remus sender, got none" % d.name)
        if tell_backup is None:
            tell_backup = self.cfg.get("remus_stop", "tell") != "end"
        s.stop(tell_backup=bool(tell_backup))
        self.event("remus-stop", d.name)

    def op_remus_running(self, dom):
        try:
            d = self.find(dom)
        except ToolstackError:
            return False    # as xend's and xl's: no sender runs for a domain that is not here
        s = self.senders.get(d.name)
        return s is not None and s.state == "protecting" and d.remus is s

    def op_events(self, since=0):
        return self.events[since:]

    # disks and trackers
    def op_disk_create(self, path, size):
        real = self.host_path(path)
        if os.path.exists(real):
            raise ToolstackError("disk %s on %s: expected no file, got one" % (path, self.name))
        create_image(real, size)
        self.export(real)
        return real

    def op_disk_path(self, path):
        return self.host_path(path)

    def op_disk_digest(self, path):
        return file_digest(self.host_path(path))

    def op_disk_check(self, path, seed, acked):
        return check_disk_file(self.host_path(path), seed, acked)

    def op_tracker_mark(self, dom, vdev):
        d = self.find(dom)
        if vdev not in d.disks:
            raise ToolstackError("domain %s: expected disk %s, got %s"
                                 % (d.name, vdev, ", ".join(sorted(d.disks))))
        self.marks += 1
        tid = "%s-%s-%s-%d" % (self.boot_id, d.name, vdev, self.marks)
        old = self.current_trackers.get((d.name, vdev))
        if old is not None and old in self.trackers:
            self.trackers.pop(old).tracker_drop(old)
        d.disks[vdev].tracker_mark(tid)
        self.trackers[tid] = d.disks[vdev]
        self.current_trackers[(d.name, vdev)] = tid
        return tid

    def _tracker(self, tid):
        try:
            return self.trackers[tid]
        except KeyError:
            raise ToolstackError("tracker %s on %s: expected a marked tracker, got none"
                                 % (tid, self.name))

    def failover_tracker(self, dom, dropped_sectors):
        """At failover: start tracking each disk, seeded with the sectors the
        backup dropped (writes the dead primary made that this copy lacks)."""
        for vdev, disk in dom.disks.items():
            tid = "%s-%s-%s-failover" % (self.boot_id, dom.name, vdev)
            disk.tracker_mark(tid)
            with disk.lock:
                dmap = disk.trackers[tid]
                for sector in dropped_sectors.get(vdev, ()):
                    dmap.note(sector * wire.SECTOR, wire.SECTOR, 0)
            self.trackers[tid] = disk
            self.current_trackers[(dom.name, vdev)] = tid

    def op_tracker_current(self, dom, vdev):
        """The tracker running on ``dom``'s ``vdev`` (failover's or the last
        marked), or None."""
        return self.current_trackers.get((self.find(dom).name, vdev))

    def op_tracker_extents(self, tid):
        return self._tracker(tid).tracker_extents(tid)

    def op_tracker_clear(self, tid):
        self._tracker(tid).tracker_clear(tid)

    def op_tracker_trustworthy(self, tid):
        return tid in self.trackers

    def op_resync(self, path, peer, mode="auto", tid=None, verify=False, discard_target=False):
        """Resync this host's copy of image ``path`` to ``peer``'s copy,
        through the peer's resync receiver (a TCP socket between hosts).

        :param tid: a tracker of this host for ``mode`` tracked/auto.
        :returns: the result as a dict plus the ``dest`` used.
        """
        from xen_remus_ext.resync import api
        addr, port = self.resolve(peer, "resync_port")
        dest = "tcp://%s:%d/%s" % (addr, port, os.path.basename(path))
        tracker = _LocalTracker(self, tid) if tid else None
        res = api.resync(self.host_path(path), dest, mode=mode, tracker=tracker, verify=verify,
                         discard_target=discard_target, key_file=self.cfg.get("key_file"))
        out = dict(res._asdict())
        if not isinstance(out.get("extents"), (int, float)) and out.get("extents") is not None:
            out["extents"] = len(out["extents"])
        out["dest"] = dest
        self.event("resync", path, peer, out["mode"], out["bytes_sent"], out["seconds"])
        return out

    def export(self, real):
        if self.resync_server is not None:
            self.resync_server.exports[os.path.basename(real)] = real

    def op_shutdown(self):
        self.stopping.set()


# ------------------------------------------------------------------ servers

def _listen(family, where):
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family != socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    elif os.path.exists(where):
        os.unlink(where)
    sock.bind(where)
    sock.listen(64)
    return sock


def _spawn(target, *args):
    t = threading.Thread(target=target, args=args)
    t.daemon = True
    t.start()
    return t


def _accept_loop(lsock, handler):
    while True:
        try:
            conn, peer = lsock.accept()
        except (socket.error, OSError):
            return
        _spawn(handler, conn, peer)


def serve_agent_conn(host, conn, _peer):
    reader = wire.LineReader(conn)
    try:
        while True:
            line = reader.readline()
            if line is None:
                return
            req = wire.decode_json_line(line)
            fn = getattr(host, "op_" + "%s" % req.get("op"), None)
            try:
                if fn is None:
                    raise ToolstackError("agent: expected a known op, got %r" % (req.get("op"),))
                reply = {"ok": True, "result": fn(**(req.get("args") or {}))}
            except XenRemusError as exc:
                reply = {"ok": False, "error": "%s" % (exc,), "kind": exc.__class__.__name__}
            except (OSError, IOError, TypeError, ValueError, KeyError) as exc:
                LOG.exception("agent op %s", req.get("op"))
                reply = {"ok": False, "error": "%s: %s" % (exc.__class__.__name__, exc),
                         "kind": "ToolstackError"}
            wire.send_json(conn, reply)
    except (socket.error, OSError, EOFError, XenRemusError) as exc:
        LOG.debug("agent connection: %s", exc)
    finally:
        conn.close()


def serve_reloc_conn(host, conn, _peer):
    conn.settimeout(10)
    reader = wire.LineReader(conn)
    try:
        if reader.readline() != b"receive":
            wire.send_json(conn, {"ok": False, "error": "expected receive"})
            return
        image = wire.decode_json_line(reader.readline() or b"{}")
        try:
            wire.send_json(conn, {"ok": True, "domid": host.receive_migration(image)})
        except XenRemusError as exc:
            wire.send_json(conn, {"ok": False, "error": "%s" % (exc,)})
    except (socket.error, OSError, EOFError, XenRemusError) as exc:
        LOG.warning("relocation: %s", exc)
    finally:
        conn.close()


def serve_remus_conn(host, conn, peer):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    RemusReceiver(host, conn, peer).run()


class _LocalTracker(object):
    """A host tracker as the resync engine wants it (ports.Tracker)."""

    name = "sim"

    def __init__(self, host, tid):
        self.host = host
        self.tid = tid

    def trustworthy(self):
        return self.tid in self.host.trackers

    def mark(self):
        raise ToolstackError("sim tracker %s: mark it through the agent" % self.tid)

    def dirty_extents(self):
        from xen_remus_ext.model import Extent
        return [Extent(o, n) for o, n in self.host.op_tracker_extents(self.tid)]

    def clear(self):
        self.host.op_tracker_clear(self.tid)


def _start_resync_receiver(host):
    """The resync receiver, exporting every image by its file name."""
    cfg = host.cfg
    try:
        from xen_remus_ext.resync.transport import ResyncServer
    except ImportError:
        LOG.warning("resync engine missing: no resync receiver on %s", cfg["name"])
        return
    images = os.path.join(cfg["root"], "var/lib/xen/images")
    exports = dict((n, os.path.join(images, n)) for n in os.listdir(images))
    exports.setdefault(".none", os.devnull)
    listen = "%s:%d" % (cfg["addr"], cfg["resync_port"])
    host.resync_server = ResyncServer(listen, cfg.get("key_file"), exports).start()


def run(cfg):
    """Run a host until stdin closes or the agent is told to shut down."""
    from xen_remus_ext.sim.xenstored import XenstoredServer
    for sub in ("var/lib/xen/images", "var/run"):
        d = os.path.join(cfg["root"], sub)
        if not os.path.isdir(d):
            os.makedirs(d)
    xsd = XenstoredServer(cfg["xenstored"])
    xsd.start()
    host = Host(cfg)
    fam_agent, where_agent = wire.parse_address(cfg["agent"])
    listeners = [
        (_listen(fam_agent, where_agent), serve_agent_conn),
        (_listen(socket.AF_INET, (cfg["addr"], cfg["reloc_port"])), serve_reloc_conn),
        (_listen(socket.AF_INET, (cfg["addr"], cfg["remus_port"])), serve_remus_conn),
    ]
    _start_resync_receiver(host)
    for lsock, handler in listeners:
        _spawn(_accept_loop, lsock, lambda c, p, h=handler: h(host, c, p))
    _spawn(_watch_stdin, host)
    host.event("boot", os.getpid())
    sys.stdout.write("ready %s\n" % host.name)
    sys.stdout.flush()
    while not host.stopping.wait(0.5):
        pass
    for lsock, _ in listeners:
        lsock.close()
    for s in list(host.senders.values()):
        s.stop()
    for d in list(host.domains.values()):
        d.destroy()
    with host.xs.lock:
        host.xs.close_locked()
    xsd.stop()
    if host.resync_server is not None:
        host.resync_server.stop()
    if cfg.get("netns"):
        # the controller deletes it too; doing it here covers a controller
        # that died without cleaning up (our stdin closed all the same)
        import subprocess
        with open(os.devnull, "wb") as null:
            subprocess.call(["ip", "netns", "delete", cfg["netns"]], stdout=null, stderr=null)
    return 0


def _watch_stdin(host):
    """The controller holds our stdin: EOF means it is gone, so we go too."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    host.stopping.set()


#: what a host config (written by sim/cluster.py) must give
REQUIRED_KEYS = ("name", "root", "xenstored", "agent", "addr", "reloc_port", "remus_port", "resync_port")


def load_config(path):
    """:returns: the host config in the JSON file ``path``.

    :raises ConfigError: unreadable, not JSON, not an object, or a required
        key missing (naming it)
    """
    try:
        with open(path, "rb") as f:
            cfg = json.loads(f.read().decode("utf-8"))
    except (IOError, OSError) as exc:
        raise ConfigError(path, None, "cannot read the sim host config: %s" % (exc.strerror or exc,))
    except ValueError as exc:   # bad UTF-8 or JSON (json.JSONDecodeError is a ValueError)
        raise ConfigError(path, None, "expected the JSON sim host config the sim cluster writes, got: %s"
                          % (exc,))
    if not isinstance(cfg, dict):
        raise ConfigError(path, None, "expected a JSON object, got %s" % type(cfg).__name__)
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ConfigError(path, None, "expected the keys %s, missing %s"
                          % (", ".join(REQUIRED_KEYS), ", ".join(missing)))
    return cfg


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(argv[0])
    except ConfigError as exc:
        sys.stderr.write("sim host: %s\n" % (exc,))
        return 1
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s " + cfg["name"] + "] %(levelname)s %(message)s")
    try:
        return run(cfg)
    except XenRemusError as exc:
        sys.stderr.write("sim host %s: %s\n" % (cfg["name"], exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
