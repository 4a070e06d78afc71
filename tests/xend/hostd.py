"""One xend lab host's simulated parts, in one process (Python 3).

What a real Xen 4.1/4.4 dom0 has below xend, and the lab cannot have:

* the hypervisor: domains, their pause/shutdown state, memory (served to
  the ``xen.lowlevel.xc`` and ``checkpoint`` stand-ins and the
  ``xc_save``/``xc_restore`` stand-ins over ``hv.sock``);
* xenstored: the project's double (``sim.xenstored``), told of every domain
  state change as the real one is by the hypervisor's VIRQ_DOM_EXC;
* the kernel side of blkback/blktap2 and the udev hotplug scripts: a
  hotplug agent answering the vbd backends xend writes, and tapdisks (the
  ``aio``, ``remus`` and ``log`` drivers) driven by the strict ``tap-ctl``
  stand-in.  The ``log`` driver's server side (block-log.c: its control
  socket and shared-memory export) is the project's double
  ``tests/fakes/blktap2_log_driver.py``; what reads it is the product's
  client, ``trackers/blktap2_log.py``;
* the guest: numbered, checksummed records (``sim.workload``) written to its
  first disk while it runs; its position travels in its memory image.  A
  write is acknowledged once durable: at once on a plain disk, after the
  checkpoint covering it committed on a Remus disk (output commit).

Everything runs inside the host's own network and mount namespaces (the
lab starts it with nsenter), so ``/run``, ``/var/lib`` and ``/var/log`` are
the host's.
"""
from __future__ import absolute_import, division, print_function

import argparse
import errno
import json
import logging
import os
import random
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from xen_remus_ext.sim import workload  # noqa: E402
from xen_remus_ext.sim.xenstored import XenstoredServer  # noqa: E402
from xen_remus_ext.errors import XenStoreError  # noqa: E402
from xen_remus_ext.toolstack.xenstore import PyxsXenStore  # noqa: E402
from tests.fakes.blktap2_log_driver import LogDriverDouble  # noqa: E402

LOG = logging.getLogger("hostd")

TAP_DEV = "/dev/xen/blktap-2/tapdev"
TAP_MAJOR = 254
TAP_FIFODIR = "/var/run/tap"
SHM_DIR = "/dev/shm"
SECTOR = 512
TD_VBD_CLOSED = 0x0002
TD_VBD_PAUSED = 0x0020
BLKTAP1_TYPES = ("aio", "sync", "vmdk", "ram", "qcow", "qcow2", "ioemu")
TAPDISK2_DRIVERS = ("aio", "sync", "vhd", "ram", "qcow", "remus", "log")
SHUTDOWN_REASONS = {"poweroff": 0, "halt": 0, "reboot": 1, "suspend": 2, "crash": 3}
CONNECT_RETRY_S = 1.0
_W = struct.Struct("!cQI")


def rd(xs, path):
    """A xenstore value, or None when the node does not exist."""
    try:
        return xs.read(path)
    except XenStoreError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


class HvError(Exception):
    """A refusal sent back to the stand-in (becomes xc.Error there)."""


# ---- tapdisks -----------------------------------------------------------------------

def parse_stack(stack):
    """``remus:H:P|aio:/p`` -> [('remus', 'H:P'), ('aio', '/p')]; unknown drivers refused."""
    out = []
    for tok in stack.split("|"):
        typ, sep, arg = tok.partition(":")
        if not sep or typ not in TAPDISK2_DRIVERS:
            raise HvError("tapdisk: unknown driver in %r" % tok)
        out.append((typ, arg))
    if out[-1][0] not in ("aio", "sync"):
        raise HvError("tapdisk: expected an aio: image at the bottom of %r" % stack)
    return out


def is_local_address(host):
    try:
        addr = socket.gethostbyname(host)
        s = socket.socket()
        try:
            s.bind((addr, 0))
        finally:
            s.close()
        return True
    except (socket.error, OSError):
        return False


class Tapdisk(object):
    """One tapdisk2 process serving one minor: an ``aio`` image, optionally
    under the ``remus`` driver (primary or backup, chosen as block-remus
    does: a local address means backup)."""

    def __init__(self, host, minor, stack):
        self.host = host
        self.minor = minor
        self.pid = 20000 + minor
        self.state = 0
        self.lock = threading.Condition()
        self.closed = False
        self.set_stack(stack)

    # -- stack --------------------------------------------------------------
    def set_stack(self, stack):
        layers = parse_stack(stack)
        self.stack = stack
        self.path = layers[-1][1]
        if not os.path.exists(self.path):
            raise HvError("tapdisk: %s: no such image" % self.path)
        self.remus = None
        self.log = None
        self.seq = 0
        self.committed = None      # None: every write is durable when done
        for typ, arg in layers:
            if typ == "log":
                # a new driver, bitmap empty, as when tapdisk (re)opens the stack
                if not os.path.isdir(TAP_FIFODIR):
                    os.makedirs(TAP_FIFODIR)
                size = os.path.getsize(self.path)
                self.log = LogDriverDouble(arg, size // SECTOR, TAP_FIFODIR, SHM_DIR).start()
                LOG.info("tapdisk %d: log driver for %s (%s)", self.minor, arg, self.log.ctl_path)
            if typ == "remus":
                h, _, p = arg.rpartition(":")
                if not p.isdigit():
                    raise HvError("tapdisk: expected remus:HOST:PORT, got %r" % arg)
                self.remus = RemusDriver(self, h, int(p))
        if self.remus is not None:
            self.remus.start()

    def top(self):
        typ, _, arg = self.stack.split("|", 1)[0].partition(":")
        return typ, arg

    def close(self):
        self.closed = True
        if self.remus is not None:
            self.remus.stop()
            self.remus = None
        if self.log is not None:
            self.log.stop()
            self.log = None

    # -- I/O ------------------------------------------------------------------
    def ready(self):
        if self.state & TD_VBD_PAUSED:
            return False
        return self.remus is None or self.remus.ready()

    def write(self, off, data):
        """One guest write; :returns: its sequence number."""
        with self.lock:
            self.seq += 1
            seq = self.seq
        if self.remus is not None:
            self.remus.forward(off, data)
        if self.log is not None:     # block-log sits under remus, above the image
            self.log.write(off // SECTOR, (off + len(data) + SECTOR - 1) // SECTOR - off // SECTOR)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, off)
            os.fsync(fd)
        finally:
            os.close(fd)
        return seq

    def durable_seq(self):
        if self.remus is None:
            return self.seq
        return self.remus.durable_seq()


class RemusDriver(object):
    """block-remus: the primary forwards every write to the backup and, on
    the remus script's ``flush``, asks the backup to commit the epoch; the
    backup buffers an epoch's writes and writes them at commit.  A lost
    peer makes either side unprotected (passthrough)."""

    def __init__(self, td, host, port):
        self.td = td
        self.host = host
        self.port = port
        self.role = "backup" if is_local_address(host) else "primary"
        self.sock = None
        self.listener = None
        self.mode = "connecting" if self.role == "primary" else "listening"
        self.committed = 0
        self.buffer = []
        self.stopping = False
        self.send_lock = threading.Lock()
        self.reply = threading.Condition()
        self.done_count = 0
        self.fifo = os.path.join(TAP_FIFODIR, ("remus_%s_%d" % (host, port)).replace(":", "_"))

    def start(self):
        if self.role == "primary":
            if not os.path.isdir(TAP_FIFODIR):
                os.makedirs(TAP_FIFODIR)
            for path in (self.fifo, self.fifo + ".msg"):
                if os.path.exists(path):
                    os.unlink(path)
                os.mkfifo(path)
            threading.Thread(target=self._connect_loop, daemon=True).start()
            threading.Thread(target=self._ctl_loop, daemon=True).start()
        else:
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((socket.gethostbyname(self.host), self.port))
            ls.listen(1)
            self.listener = ls
            threading.Thread(target=self._backup_loop, daemon=True).start()
        LOG.info("tapdisk %d: remus %s for %s:%d", self.td.minor, self.role, self.host, self.port)

    def stop(self):
        self.stopping = True
        for s in (self.sock, self.listener):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        if self.role == "primary":
            for path in (self.fifo, self.fifo + ".msg"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def ready(self):
        # primary_blocking_connect: no write before the backup is there;
        # a backup takes guest writes only after failover
        return self.mode in ("protected", "unprotected")

    def durable_seq(self):
        return self.td.seq if self.mode == "unprotected" else self.committed

    # -- primary -------------------------------------------------------------
    def _connect_loop(self):
        while not self.stopping and self.mode == "connecting":
            try:
                s = socket.create_connection((self.host, self.port), timeout=2)
                s.settimeout(None)
                self.sock = s
                self.mode = "protected"
                LOG.info("tapdisk %d: connected to backup %s:%d", self.td.minor, self.host, self.port)
                threading.Thread(target=self._ack_loop, daemon=True).start()
                return
            except (socket.error, OSError):
                time.sleep(CONNECT_RETRY_S)

    def _lost(self, why):
        if self.mode != "unprotected" and not self.stopping:
            LOG.warning("tapdisk %d: backup lost (%s): unprotected", self.td.minor, why)
        self.mode = "unprotected"
        with self.reply:
            self.reply.notify_all()

    def forward(self, off, data):
        if self.mode != "protected":
            return
        try:
            with self.send_lock:
                self.sock.sendall(_W.pack(b"W", off, len(data)) + data)
        except (socket.error, OSError) as exc:
            self._lost(exc)

    def _ack_loop(self):
        try:
            while True:
                b = self.sock.recv(1)
                if not b:
                    break
                with self.reply:
                    self.done_count += 1
                    self.reply.notify_all()
        except (socket.error, OSError):
            pass
        self._lost("connection closed")

    def _ctl_loop(self):
        ctl = os.open(self.fifo, os.O_RDWR)
        msg = os.open(self.fifo + ".msg", os.O_RDWR)
        try:
            while not self.stopping:
                data = os.read(ctl, 5)
                if not data:
                    return
                if data != b"flush":
                    LOG.warning("tapdisk %d: unknown control message %r", self.td.minor, data)
                    continue
                self._checkpoint()
                os.write(msg, b"done")
        except OSError:
            return
        finally:
            os.close(ctl)
            os.close(msg)

    def _checkpoint(self):
        deadline = time.time() + 30
        while self.mode == "connecting" and time.time() < deadline and not self.stopping:
            time.sleep(0.02)
        if self.mode != "protected":
            return
        with self.td.lock:
            upto = self.td.seq
        with self.reply:
            want = self.done_count + 1
            try:
                with self.send_lock:
                    self.sock.sendall(_W.pack(b"C", 0, 0))
            except (socket.error, OSError) as exc:
                self._lost(exc)
                return
            while self.done_count < want and self.mode == "protected":
                self.reply.wait(1.0)
            if self.done_count >= want:
                self.committed = upto

    # -- backup ----------------------------------------------------------------
    def _backup_loop(self):
        try:
            conn, _ = self.listener.accept()
        except (socket.error, OSError):
            return
        self.sock = conn
        self.mode = "receiving"
        LOG.info("tapdisk %d: primary connected", self.td.minor)
        why = "EOF"
        try:
            while True:
                head = _read_exact(conn, _W.size)
                if head is None:
                    break
                kind, off, length = _W.unpack(head)
                if kind == b"W":
                    data = _read_exact(conn, length)
                    if data is None:
                        break
                    self.buffer.append((off, data))
                elif kind == b"C":
                    self._commit()
                    conn.sendall(b"D")
                else:
                    why = "bad message %r" % kind
                    break
        except (socket.error, OSError) as exc:
            why = str(exc)
        if self.stopping:
            return
        LOG.warning("tapdisk %d: primary gone (%s): failover, %d uncommitted writes dropped",
                    self.td.minor, why, len(self.buffer))
        self.buffer = []
        try:
            self.listener.close()
        except OSError:
            pass
        self.mode = "unprotected"

    def _commit(self):
        fd = os.open(self.td.path, os.O_WRONLY)
        try:
            for off, data in self.buffer:
                os.pwrite(fd, data, off)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.buffer = []


def _read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# ---- the hypervisor --------------------------------------------------------------------

class Domain(object):
    def __init__(self, domid, handle=None, hvm=False):
        self.domid = domid
        self.handle = list(handle or [0] * 16)
        self.hvm = hvm
        self.paused = True
        self.shutdown = False
        self.shutdown_reason = 0
        self.dying = False
        self.crashed = False
        self.maxmem_kb = 262144
        self.mem_kb = 0
        self.vcpus = 1
        self.memory = None          # the guest's state: seed, next record
        self.ckpt_suspended = False
        self.lock = threading.RLock()
        self.started = time.time()

    def info(self):
        return {"domid": self.domid, "online_vcpus": self.vcpus, "max_vcpu_id": self.vcpus - 1,
                "hvm": int(self.hvm), "dying": int(self.dying), "crashed": int(self.crashed),
                "shutdown": int(self.shutdown), "paused": int(self.paused),
                "blocked": int(not self.paused and not self.shutdown), "running": 0,
                "mem_kb": self.mem_kb or self.maxmem_kb, "cpu_time": int((time.time() - self.started) * 1e9),
                "maxmem_kb": self.maxmem_kb, "ssidref": 0, "shutdown_reason": self.shutdown_reason,
                "cpupool": 0, "handle": self.handle}


class Host(object):
    def __init__(self, name, xenstored_socket, xen_version):
        self.name = name
        self.xs_socket = xenstored_socket
        self.xen_version = xen_version
        self.lock = threading.RLock()
        self.domains = {0: Domain(0)}
        self.domains[0].paused = False
        self.next_domid = 1
        self.tapdisks = {}
        self.events = []
        self.acked = {}       # domain name -> records acknowledged (count)
        self.written = {}
        self.netbufs = {}     # ifindex -> counts of plug add/buffer/release/del
        self.xenstored = None
        self.stopping = False

    def event(self, what, **kw):
        kw.update(what=what, t=time.time(), host=self.name)
        self.events.append(kw)
        LOG.info("event %s", json.dumps(kw, sort_keys=True))

    def dom(self, domid):
        d = self.domains.get(int(domid))
        if d is None:
            raise HvError("(3, 'No such process'): no domain %s" % domid)
        return d

    def exception(self):
        """VIRQ_DOM_EXC: the real xenstored then fires @releaseDomain."""
        if self.xenstored is not None:
            self.xenstored.domain_exception()

    # -- xc -------------------------------------------------------------------
    def xc(self, method, args, kwargs):
        fn = getattr(self, "xc_" + method, None)
        if fn is not None:
            return fn(*args, **kwargs)
        if method in NOOPS:
            return NOOPS[method]
        raise HvError("xen.lowlevel.xc stand-in: %s is not simulated" % method)

    def xc_xeninfo(self):
        major, minor, extra = self.xen_version
        return {"xen_major": major, "xen_minor": minor, "xen_extra": extra,
                "xen_caps": "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64",
                "xen_pagesize": 4096, "platform_params": "virt_start=0xffff800000000000",
                "xen_changeset": "xend-lab", "xen_commandline": "", "cc_compiler": "gcc",
                "cc_compile_by": "xend-lab", "cc_compile_domain": "", "cc_compile_date": "",
                "xen_scheduler": "credit"}

    def xc_physinfo(self):
        return {"nr_nodes": 1, "threads_per_core": 1, "cores_per_socket": 2, "nr_cpus": 2,
                "total_memory": 4 * 1024 * 1024, "free_memory": 3 * 1024 * 1024, "scrub_memory": 0,
                "cpu_khz": 2000000, "hw_caps": "0" * 64, "virt_caps": "hvm",
                "max_cpu_id": 1, "max_node_id": 0, "sockets_per_node": 1}

    def xc_topologyinfo(self):
        return {"max_cpu_index": 1, "cpu_to_core": [0, 1], "cpu_to_socket": [0, 0], "cpu_to_node": [0, 0]}

    def xc_numainfo(self):
        return {"max_node_index": 0, "node_memsize": [4 * 1024 * 1024], "node_memfree": [3 * 1024 * 1024],
                "node_to_node_dist": [[10]]}

    def xc_sched_id_get(self):
        return 5

    def xc_cpupool_getinfo(self, *a, **k):
        return [{"cpupool": 0, "sched": 5, "n_dom": len(self.domains), "cpulist": [0, 1]}]

    def xc_cpupool_freeinfo(self):
        return []

    def xc_getBitSize(self, **k):
        return {"type": 64}

    def xc_domain_getinfo(self, first_dom=0, max_doms=1024):
        with self.lock:
            ids = sorted(d for d in self.domains if d >= int(first_dom))[:int(max_doms)]
            return [self.domains[d].info() for d in ids]

    def xc_vcpu_getinfo(self, domid, vcpu=0):
        d = self.dom(domid)
        return {"online": 1, "blocked": 0, "running": int(not d.paused), "cpu_time": 0, "cpu": 0,
                "cpumap": [0, 1]}

    def xc_sched_credit_domain_get(self, domid):
        self.dom(domid)
        return {"weight": 256, "cap": 0}

    def xc_domain_create(self, domid=0, ssidref=0, handle=None, flags=0, target=0):
        with self.lock:
            new = self.next_domid
            self.next_domid += 1
            self.domains[new] = Domain(new, handle, hvm=bool(flags & 1))
        self.event("create", domid=new)
        return new

    def xc_domain_max_vcpus(self, domid, n):
        self.dom(domid).vcpus = int(n)
        return 0

    def xc_domain_setmaxmem(self, domid, kb):
        self.dom(domid).maxmem_kb = int(kb)
        return 0

    def xc_shadow_mem_control(self, domid, mb=None):
        self.dom(domid)
        return int(mb or 0)

    def xc_evtchn_alloc_unbound(self, domid=0, remote_dom=0):
        self.dom(domid)
        return random.randint(1, 1000)

    def xc_linux_build(self, domid=0, **kw):
        d = self.dom(domid)
        image = kw.get("image")
        if not image or not os.path.exists(image):
            raise HvError("linux_build: kernel %r not found" % image)
        d.mem_kb = int(kw.get("memsize", 256)) * 1024
        d.memory = {"seed": random.randint(1, 0x7fffffff), "next": 0, "boot": time.time()}
        self.event("build", domid=d.domid, seed=d.memory["seed"])
        return {"store_mfn": 1000 + d.domid, "console_mfn": 2000 + d.domid}

    def xc_hvm_build(self, domid=0, image=None, memsize=256, target=None, vcpus=1, vcpu_avail=1, acpi=0,
                     apic=0, **kw):
        """hvmloader into an HVM domain: the guest's state starts here, as linux_build's does."""
        d = self.dom(domid)
        if not image or not os.path.exists(image):
            raise HvError("hvm_build: loader %r not found" % image)
        if not d.hvm:
            raise HvError("hvm_build: domain %d was not created as HVM" % d.domid)
        d.mem_kb = int(memsize) * 1024
        d.vcpus = int(vcpus)
        d.memory = {"seed": random.randint(1, 0x7fffffff), "next": 0, "boot": time.time()}
        self.event("build", domid=d.domid, seed=d.memory["seed"], hvm=True)
        return {}

    def xc_hvm_get_param(self, domid, param):
        """The HVM parameters xend and the checkpointer read: the store and
        console pages, no PV drivers (CALLBACK_IRQ 0: xend suspends the domain
        itself), ACPI S0."""
        d = self.dom(domid)
        return {1: 1000 + d.domid, 17: 2000 + d.domid}.get(int(param), 0)

    def xc_domain_unpause(self, domid):
        d = self.dom(domid)
        d.paused = False
        self.event("unpause", domid=d.domid)
        self._guest(d)
        self.exception()
        return 0

    def xc_domain_pause(self, domid):
        d = self.dom(domid)
        with d.lock:
            d.paused = True
        self.event("pause", domid=d.domid)
        self.exception()
        return 0

    def xc_domain_shutdown(self, domid, reason):
        d = self.dom(domid)
        with d.lock:
            d.shutdown = True
            d.shutdown_reason = int(reason)
        self.event("shutdown", domid=d.domid, reason=int(reason))
        self.exception()
        return 0

    def xc_domain_resume(self, domid, fast=0):
        d = self.dom(domid)
        with d.lock:
            d.shutdown = False
            d.shutdown_reason = 0
        self.event("resume", domid=d.domid)
        self.exception()
        return 0

    def xc_domain_destroy(self, domid):
        with self.lock:
            d = self.domains.pop(int(domid), None)
        if d is None:
            raise HvError("(3, 'No such process'): no domain %s" % domid)
        with d.lock:
            d.dying = True
        self.event("destroy", domid=d.domid)
        self.exception()
        return 0

    # -- save / restore / checkpoint -----------------------------------------------
    def precopy_rounds(self, domid):
        """:returns: the bytes of the domain's memory (xc_save sends them)."""
        return self.dom(domid).mem_kb * 1024

    def save_memory(self, domid):
        d = self.dom(domid)
        with d.lock:
            if not (d.shutdown and d.shutdown_reason == 2):
                raise HvError("xc_save: domain %d is not suspended (shutdown=%d reason=%d)"
                              % (d.domid, d.shutdown, d.shutdown_reason))
            self.event("saved", domid=d.domid, next=d.memory and d.memory["next"])
            return d.memory

    def restore_memory(self, domid, memory, count):
        d = self.dom(domid)
        with d.lock:
            d.memory = dict(memory)
        self.event("restored", domid=d.domid, next=memory.get("next"), records=count)
        return {"store_mfn": 1000 + d.domid, "console_mfn": 2000 + d.domid}

    def checkpoint_received(self, domid, count):
        return 0

    def checkpoint_suspend(self, domid):
        d = self.dom(domid)
        with d.lock:
            d.ckpt_suspended = True
            return d.memory

    def checkpoint_resume(self, domid):
        d = self.dom(domid)
        with d.lock:
            d.ckpt_suspended = False
        return 0

    # -- tap-ctl ------------------------------------------------------------------------
    def tap_check(self):
        return ""

    def tap_list(self):
        lines = []
        with self.lock:
            for minor in sorted(self.tapdisks):
                td = self.tapdisks[minor]
                parts = ["pid=%d" % td.pid, "minor=%d" % minor, "state=%d" % td.state]
                if not td.state & TD_VBD_CLOSED:
                    parts.append("args=%s:%s" % td.top())
                lines.append(" ".join(parts))
        return "".join(ln + "\n" for ln in lines)

    def _find_td(self, opts):
        td = self.tapdisks.get(int(opts["m"]))
        if td is None or ("p" in opts and int(opts["p"]) != td.pid):
            return None
        return td

    def tap_create(self, opts):
        with self.lock:
            minor = 0
            while minor in self.tapdisks:
                minor += 1
            try:
                td = Tapdisk(self, minor, opts["a"])
            except HvError as exc:
                LOG.warning("tap-ctl create -a %s: %s", opts["a"], exc)
                return errno.EINVAL, ""
            self.tapdisks[minor] = td
        dev = "%s%d" % (TAP_DEV, minor)
        if not os.path.isdir(os.path.dirname(dev)):
            os.makedirs(os.path.dirname(dev))
        if os.path.exists(dev):
            os.unlink(dev)
        os.mknod(dev, 0o600 | stat.S_IFBLK, os.makedev(TAP_MAJOR, minor))
        self.event("tap-create", minor=minor, stack=opts["a"])
        return 0, dev + "\n"

    def tap_destroy(self, opts):
        with self.lock:
            td = self._find_td(opts)
            if td is None:
                return errno.EINVAL, ""
            del self.tapdisks[td.minor]
        td.close()
        try:
            os.unlink("%s%d" % (TAP_DEV, td.minor))
        except OSError:
            pass
        self.event("tap-destroy", minor=td.minor)
        return 0, ""

    def tap_free(self, opts):
        return self.tap_destroy(opts)

    def tap_pause(self, opts):
        td = self._find_td(opts)
        if td is None:
            return errno.EINVAL, ""
        td.state |= TD_VBD_CLOSED | TD_VBD_PAUSED
        return 0, ""

    def tap_unpause(self, opts):
        td = self._find_td(opts)
        if td is None or not td.state & TD_VBD_PAUSED:
            return errno.EINVAL, ""
        if "a" in opts:
            old = td.remus
            if old is not None:
                old.stop()
            if td.log is not None:
                td.log.stop()
                td.log = None
            try:
                td.set_stack(opts["a"])
            except HvError:
                return errno.EINVAL, ""
        td.state &= ~(TD_VBD_CLOSED | TD_VBD_PAUSED)
        return 0, ""

    # -- Remus's network buffer (the plug qdisc the lab's kernel lacks) ------------
    def netbuf(self, ifindex, op):
        with self.lock:
            counts = self.netbufs.setdefault(str(int(ifindex)), {})
            counts[op] = counts.get(op, 0) + 1
        return 0

    # -- the lab's view -------------------------------------------------------------------
    def status(self):
        with self.lock:
            doms = dict((str(k), {"paused": d.paused, "shutdown": d.shutdown,
                                  "memory": d.memory}) for k, d in self.domains.items())
            tds = dict((str(m), {"stack": td.stack, "state": td.state,
                                 "remus": td.remus.mode if td.remus else None})
                       for m, td in self.tapdisks.items())
        return {"domains": doms, "tapdisks": tds, "acked": self.acked, "written": self.written,
                "events": self.events, "netbufs": self.netbufs}

    # -- the guest -----------------------------------------------------------------------
    def _guest(self, d):
        if getattr(d, "guest", None) is not None and d.guest.is_alive():
            return
        d.guest = threading.Thread(target=self._guest_loop, args=(d,), daemon=True)
        d.guest.start()

    def _guest_loop(self, d):
        xs = PyxsXenStore(self.xs_socket)
        base = "/local/domain/%d" % d.domid
        pending = []
        try:
            while not self.stopping and d.domid in self.domains and not d.dying:
                # an HVM guest without PV drivers never reads control/shutdown (xend
                # shuts it down through the hypervisor instead)
                req = None if d.hvm else rd(xs, base + "/control/shutdown")
                if req:
                    xs.write(base + "/control/shutdown", "")
                    if not d.shutdown:
                        self.event("guest-shutdown", domid=d.domid, request=req)
                        self.xc_domain_shutdown(d.domid, SHUTDOWN_REASONS.get(req, 0))
                name = rd(xs, base + "/name")
                td = self._disk_of(xs, d.domid)
                wrote = False
                with d.lock:
                    if (td is not None and d.memory is not None and not d.paused and not d.shutdown
                            and not d.ckpt_suspended and td.ready()):
                        n = d.memory["next"]
                        rec = workload.make_record(d.memory["seed"], n)
                        size = os.path.getsize(td.path)
                        seq = td.write(workload.offset_of(n, workload.slots_for(size)), rec)
                        d.memory["next"] = n + 1
                        pending.append((seq, n, td))
                        wrote = True
                        if name:
                            self.written[name] = n + 1
                while pending and pending[0][0] <= pending[0][2].durable_seq():
                    _, n, _ = pending.pop(0)
                    if name and not name.startswith("migrating-"):
                        self.acked[name] = max(self.acked.get(name, 0), n + 1)
                time.sleep(0.004 if wrote else 0.02)
        except Exception:  # the guest thread's boundary: log it, the lab sees the domain stall
            LOG.exception("guest of domain %d", d.domid)
        finally:
            xs.close()

    def _disk_of(self, xs, domid):
        """The tapdisk behind the domain's first vbd, once its backend is connected."""
        back = "/local/domain/0/backend/vbd/%d" % domid
        try:
            devs = sorted(xs.list(back), key=int)
        except Exception:  # no backend yet (an XenStoreError): no disk
            return None
        for dev in devs:
            if rd(xs, "%s/%s/hotplug-status" % (back, dev)) != "connected":
                continue
            params = rd(xs, "%s/%s/params" % (back, dev)) or ""
            if params.startswith(TAP_DEV) and params[len(TAP_DEV):].isdigit():
                return self.tapdisks.get(int(params[len(TAP_DEV):]))
        return None

    # -- hotplug -----------------------------------------------------------------------------
    def hotplug_loop(self):
        xs = PyxsXenStore(self.xs_socket)
        try:
            while not self.stopping:
                for cls in ("vbd", "tap", "vif"):
                    root = "/local/domain/0/backend/%s" % cls
                    try:
                        doms = xs.list(root)
                    except Exception:  # no such backend class yet
                        continue
                    for dom in doms:
                        try:
                            devs = xs.list("%s/%s" % (root, dom))
                        except Exception:  # removed meanwhile
                            continue
                        for dev in devs:
                            try:
                                self._hotplug(xs, cls, "%s/%s/%s" % (root, dom, dev))
                            except XenStoreError as exc:   # the device went away meanwhile
                                LOG.info("hotplug %s/%s/%s: %s", cls, dom, dev, exc)
                time.sleep(0.05)
        except Exception:  # the agent's boundary
            LOG.exception("hotplug agent")
        finally:
            xs.close()

    def _hotplug(self, xs, cls, path):
        online = rd(xs, path + "/online")
        status = rd(xs, path + "/hotplug-status")
        state = rd(xs, path + "/state")
        front = rd(xs, path + "/frontend")
        if online == "0" and state in ("5", "6"):
            # xend closed it: blkback/netback go to Closed (netback removes its
            # interface), xen-hotplug-cleanup removes the backend
            if cls == "vif":
                self._vif_remove(xs, path)
            xs.write(path + "/state", "6")
            if front and xs.exists(front):
                xs.write(front + "/state", "6")
            xs.delete(path)
            parent = path.rsplit("/", 1)[0]
            try:
                if not xs.list(parent):
                    xs.delete(parent)
            except Exception:  # gone already
                pass
            self.event("hotplug-remove", path=path)
            return
        if status is not None or online != "1" or state is None:
            return
        if cls == "vif":
            self._vif_online(xs, path, front)
            return
        params = rd(xs, path + "/params") or ""
        err = None
        if cls == "vbd":
            if params.startswith(TAP_DEV):
                minor = params[len(TAP_DEV):]
                if not minor.isdigit() or int(minor) not in self.tapdisks:
                    err = "no tapdisk serves %s" % params
            elif not os.path.exists(params):
                err = "%s does not exist" % params
        else:   # blktap1: its tapdisk takes TYPE:PATH, and knows no remus
            typ, _, rest = params.partition(":")
            if typ not in BLKTAP1_TYPES:
                err = "blktap1 has no %r driver (params %s)" % (typ, params)
            elif not os.path.exists(rest):
                err = "%s does not exist" % rest
        if err:
            xs.write(path + "/hotplug-error", err)
            xs.write(path + "/hotplug-status", "error")
            self.event("hotplug-error", path=path, error=err)
            return
        xs.write(path + "/hotplug-status", "connected")
        xs.write(path + "/state", "4")
        if front and xs.exists(front):
            xs.write(front + "/state", "4")
        self.event("hotplug-connected", path=path, params=params)


    # -- netback and vif-bridge ---------------------------------------------------------
    @staticmethod
    def _vif_name(xs, path):
        dom, dev = path.split("/")[-2:]
        return rd(xs, path + "/vifname") or "vif%s.%s" % (dom, dev)

    def _vif_online(self, xs, path, front):
        """netback creates the interface ``vifD.N`` (here one end of a veth
        pair; the other end, ``gD.N``, is the guest's); vif-bridge puts it
        on the bridge and brings it up, then reports ``connected``."""
        name = self._vif_name(xs, path)
        bridge = rd(xs, path + "/bridge") or "xenbr0"
        guest = "g" + name[len("vif"):]
        _ip("link", "del", "dev", name, check=False)
        err = (_ip("link", "add", "dev", name, "type", "veth", "peer", "name", guest)
               or _ip("link", "set", "dev", name, "master", bridge)
               or _ip("link", "set", "dev", name, "up") or _ip("link", "set", "dev", guest, "up"))
        if err:
            xs.write(path + "/hotplug-error", err)
            xs.write(path + "/hotplug-status", "error")
            self.event("hotplug-error", path=path, error=err)
            return
        xs.write(path + "/hotplug-status", "connected")
        xs.write(path + "/state", "4")
        if front and xs.exists(front):
            xs.write(front + "/state", "4")
        self.event("hotplug-connected", path=path, vif=name, bridge=bridge)

    def _vif_remove(self, xs, path):
        name = self._vif_name(xs, path)
        if _ip("link", "del", "dev", name, check=False) is None:
            self.event("vif-removed", path=path, vif=name)


def _ip(*args, **kw):
    """``ip ARGS`` in this host's network namespace: :returns: None, or the error text."""
    proc = subprocess.run(("ip",) + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode == 0:
        return None
    err = "ip %s: %s" % (" ".join(args), proc.stderr.decode(errors="replace").strip())
    if kw.get("check", True):
        LOG.warning("%s", err)
    return err


NOOPS = dict((m, 0) for m in (
    "cpupool_movedomain", "domain_set_memmap_limit", "sched_credit_domain_set", "domain_destroy_hook",
    "vcpu_setaffinity", "domain_set_target_mem", "domain_set_time_offset", "domain_set_tsc_info",
    "domain_disable_migrate", "domain_suppress_spurious_page_faults", "domain_set_machine_address_size",
    "domain_ioport_permission", "domain_irq_permission", "domain_iomem_permission", "hvm_set_param",
    "evtchn_reset", "dom_set_memshr", "domain_set_cpuid", "domain_set_policy_cpuid",
    "domain_check_cpuid", "set_os_type", "gnttab_hvm_seed"))
NOOPS["tmem_control"] = -1


# ---- the RPC server --------------------------------------------------------------------------

def serve(host, path):
    if os.path.exists(path):
        os.unlink(path)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(64)

    def one(conn):
        try:
            f = conn.makefile("rb")
            line = f.readline()
            req = json.loads(line.decode("utf-8"))
            op, args, kwargs = req["op"], req.get("args", []), req.get("kwargs", {})
            fn = getattr(host, op, None)
            if op.startswith("_") or fn is None or not callable(fn) or op in ("event", "exception", "dom"):
                rep = {"error": "hostd: unknown operation %r" % op}
            else:
                try:
                    rep = {"result": fn(*args, **kwargs)}
                except HvError as exc:
                    rep = {"error": str(exc)}
                except (TypeError, ValueError, KeyError) as exc:
                    LOG.exception("request %s", line[:200])
                    rep = {"error": "hostd: %s: %s" % (op, exc)}
            conn.sendall(json.dumps(rep).encode("utf-8") + b"\n")
        except (socket.error, OSError, ValueError):
            LOG.exception("rpc")
        finally:
            conn.close()

    while True:
        conn, _ = ls.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def main(argv=None):
    p = argparse.ArgumentParser(description="xend lab host: hypervisor, xenstored, blkback/blktap2, guest")
    p.add_argument("--name", required=True)
    p.add_argument("--xenstored", default="/run/xenstored/socket")
    p.add_argument("--hv", default="/run/xend-lab/hv.sock")
    p.add_argument("--xen-version", default="4.1.6.1")
    p.add_argument("--log", default="/var/log/xen/hostd.log")
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.dirname(args.log)):
        os.makedirs(os.path.dirname(args.log))
    logging.basicConfig(filename=args.log, level=logging.INFO,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    parts = args.xen_version.split(".")
    version = (int(parts[0]), int(parts[1]), "." + ".".join(parts[2:]) if len(parts) > 2 else "")
    host = Host(args.name, args.xenstored, version)
    host.xenstored = XenstoredServer(args.xenstored).start()
    threading.Thread(target=host.hotplug_loop, daemon=True).start()
    LOG.info("host %s up (Xen %s)", args.name, args.xen_version)
    serve(host, args.hv)


if __name__ == "__main__":
    sys.exit(main())
