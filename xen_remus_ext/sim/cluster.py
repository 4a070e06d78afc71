"""Two (or more) simulated hosts as separate processes, and their clean-up.

As root, each host runs in a network namespace created here
(``xre<PID>-<host>``), the namespaces joined by one veth pair whose
addresses (192.0.2.0/24, TEST-NET-1) exist only inside them; otherwise every
host listens on its own 127.0.0.1 ports.  The controller reaches each agent
through a Unix socket under the host's root directory (a path-named Unix
socket crosses network namespaces), and the hosts reach each other only over
the veth (or loopback).

Clean-up: :class:`Cluster` is a context manager and registers itself with
``atexit``; host processes hold a pipe to us as stdin and exit when it
closes; every namespace name carries our PID, so :func:`cleanup_stale`
removes those whose creator is gone (``xen-remus sim cleanup``).
"""
from __future__ import absolute_import, division, print_function

import atexit
import binascii
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from xen_remus_ext.compat import pid_exists
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.sim.toolstack import SimToolstack

LOG = logging.getLogger(__name__)

NS_PREFIX = "xre"
SUBNET = "192.0.2"
PORTS = {"reloc_port": 8002, "remus_port": 9000, "resync_port": 7790}


def _ip(*args):
    proc = subprocess.Popen(("ip",) + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    if proc.returncode:
        raise ToolstackError("ip %s: exit %d: %s" % (" ".join(args), proc.returncode,
                                                    err.decode("utf-8", "replace").strip()))
    return out.decode("utf-8", "replace")


def netns_available():
    if os.geteuid() != 0:
        return False
    try:
        _ip("netns", "list")
    except (ToolstackError, OSError):
        return False
    return True


def cleanup_stale():
    """Delete sim namespaces whose creating process is gone.  :returns: names."""
    removed = []
    try:
        listing = _ip("netns", "list")
    except (ToolstackError, OSError):
        return removed
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(NS_PREFIX) or "-" not in name:
            continue
        pid = name[len(NS_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_exists(int(pid)):
            try:
                _ip("netns", "delete", name)
                removed.append(name)
            except ToolstackError as exc:
                LOG.warning("%s", exc)
    return removed


def wait_for(pred, timeout, what):
    """Poll ``pred`` until it returns something true (returned).

    :raises ToolstackError: ``timeout`` seconds passed first, naming ``what``
    """
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.time() > deadline:
            raise ToolstackError("sim: timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.02)


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class AckObserver(object):
    """The outside world: collects ``ack NAME UPTO`` lines on a Unix socket.

    ``acked(name)`` is how many of NAME's records were acknowledged (records
    ``0 .. acked-1``).  Lives in the controller, so it survives host deaths.
    """

    def __init__(self, path):
        self.path = path
        self.acks = {}
        self.history = []          # (time, name, upto) at every increase
        self.lock = threading.Lock()
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.inode = os.stat(path).st_ino     # to tell, later, whether the path is still ours
        self.sock.listen(16)
        self.closed = False
        self.accepted = 0           # connections taken (for failure messages)
        self.accept_error = None    # why the accept loop stopped, if it did
        self.thread = threading.Thread(target=self._accept, name="observer")
        self.thread.daemon = True
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except (socket.error, OSError) as exc:
                self.accept_error = "%s" % (exc,)
                return
            self.accepted += 1
            t = threading.Thread(target=self._read, args=(conn,))
            t.daemon = True
            t.start()

    def _read(self, conn):
        buf = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    parts = line.decode("ascii", "replace").split()
                    if len(parts) == 3 and parts[0] == "ack" and parts[2].isdigit():
                        name, upto = parts[1], int(parts[2])
                        with self.lock:
                            if upto > self.acks.get(name, 0):
                                self.acks[name] = upto
                                self.history.append((time.time(), name, upto))
        except (socket.error, OSError):
            return
        finally:
            conn.close()

    def describe(self):
        """The observer's health, for failure messages: connections taken,
        the accept loop's state and where its thread stands."""
        import traceback
        frame = sys._current_frames().get(self.thread.ident)
        where = "".join(traceback.format_stack(frame)[-3:]) if frame is not None else "(no frame)"
        try:
            ino = os.stat(self.path).st_ino
            path = "ours" if ino == self.inode else "ANOTHER socket (inode %d, ours %d)" % (ino, self.inode)
        except OSError as exc:
            path = "gone (%s)" % (exc.strerror or exc)
        return "observer %s (the path: %s): %d connections accepted, accept loop %s; its thread at:\n%s" % (
            self.path, path, self.accepted, "running" if self.thread.is_alive() else
            "stopped (%s)" % (self.accept_error or "no error"), where)

    def acked(self, name):
        with self.lock:
            return self.acks.get(name, 0)

    def silence(self, name, start, end):
        """Longest time without a new ack of ``name`` around ``[start, end]``:
        from the last ack before ``start`` (or ``start``) to the next ack,
        through every gap up to ``end``.  What the outside world sees of a
        phase's downtime.  :returns: seconds."""
        with self.lock:
            times = [t for t, n, _ in self.history if n == name]
        before = [t for t in times if t <= start]
        prev = before[-1] if before else start
        worst = 0.0
        for t in times:
            if t <= start:
                continue
            worst = max(worst, t - prev)
            prev = t
            if t > end:
                break
        else:
            worst = max(worst, end - prev)
        return worst

    def close(self):
        """Stop listening, and the accept thread with it.  A close alone
        leaves accept() blocked in the kernel on the listener (and, on 2.7,
        the socket open): the listener then lives on, and on 3 its descriptor
        number is reused by the next socket while the thread still waits.
        shutdown() wakes the accept (EINVAL on Linux) first."""
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (socket.error, OSError):
            pass            # not connected: some systems refuse a listener's shutdown
        try:
            self.sock.close()
        except (socket.error, OSError):
            pass
        if self.thread is not threading.current_thread():
            self.thread.join(2.0)


class SimHost(object):
    """Handle on one host process (controller side)."""

    def __init__(self, cluster, name, cfg):
        self.cluster = cluster
        self.name = name
        self.cfg = cfg
        self.proc = None
        self.frozen = False
        self.toolstack = SimToolstack(cfg["agent"], name=name)

    @property
    def addr(self):
        return self.cfg["addr"]

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout=20.0):
        """Start (or restart, after :meth:`kill`) the host process."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc is not None:
            self.stop()
        if self.cfg.get("netns"):
            _ip("-n", self.cfg["netns"], "link", "set", self.cfg["veth"], "up")
        path = os.path.join(self.cfg["root"], "host.json")
        with open(path, "w") as f:
            json.dump(self.cfg, f, indent=1, sort_keys=True)
        argv = [sys.executable, "-m", "xen_remus_ext.sim.host", path]
        if self.cfg.get("netns"):
            argv = ["ip", "netns", "exec", self.cfg["netns"]] + argv
        log = open(os.path.join(self.cluster.root, "host-%s.log" % self.name), "ab")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, env=env, close_fds=True)
        log.close()
        line = self._read_ready(timeout)
        if not line.startswith(b"ready"):
            self.kill()
            raise ToolstackError("sim host %s: expected 'ready', got %r (see %s)"
                                 % (self.name, line, os.path.join(self.cluster.root,
                                                                  "host-%s.log" % self.name)))
        self.toolstack.reset()
        return self

    def _read_ready(self, timeout):
        out = []

        def reader():
            out.append(self.proc.stdout.readline())
        t = threading.Thread(target=reader)
        t.daemon = True
        t.start()
        t.join(timeout)
        return out[0] if out else b""

    def kill(self, sig=signal.SIGKILL, power_off=False):
        """Kill the host process (SIGKILL: nothing cleans up after it).

        ``power_off``: first cut the host's network (its veth goes down), so
        that, as when a machine loses power, no FIN or RST reaches the peer
        and a Remus backup learns of the death only by 1000 ms of silence.
        Without namespaces the process is stopped (SIGSTOP) instead, which
        silences it just as well, and killed when the host restarts.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        if power_off and self.cfg.get("netns"):
            _ip("-n", self.cfg["netns"], "link", "set", self.cfg["veth"], "down")
        elif power_off:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.frozen = True
            self.toolstack.reset()
            return
        os.kill(self.proc.pid, sig)
        self.proc.wait()
        self.toolstack.reset()

    def stop(self, timeout=5.0):
        if self.proc is None:
            return
        if self.frozen and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.frozen = False
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except (IOError, OSError):
                pass
            deadline = time.time() + timeout
            while self.proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (IOError, OSError):
                pass
        self.toolstack.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def disk_path(self, path):
        return os.path.join(self.cfg["root"], path.lstrip("/"))


class Cluster(object):
    """Hosts ``names`` (default A and B), started on :meth:`start`.

    :param netns: True/False, or None for "when root and ``ip`` works".
    """

    def __init__(self, names=("A", "B"), root=None, netns=None, keep=False):
        self.names = tuple(names)
        self.own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="xre-sim-")
        if not os.path.isdir(self.root):
            os.makedirs(self.root)
        self.netns = netns_available() if netns is None else netns
        self.keep = keep
        self.hosts = {}
        self.namespaces = []
        self.observer = None
        self._closed = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _plan(self):
        cfgs = {}
        key_file = os.path.join(self.root, "resync.key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, binascii.hexlify(os.urandom(24)))
        finally:
            os.close(fd)
        for i, name in enumerate(self.names):
            hroot = os.path.join(self.root, name)
            os.makedirs(hroot)
            cfg = {"name": name, "root": hroot, "agent": "unix:" + os.path.join(hroot, "agent.sock"),
                   "xenstored": os.path.join(hroot, "var/run/xenstored/socket"),
                   "key_file": key_file}
            if self.netns:
                cfg["netns"] = "%s%d-%s" % (NS_PREFIX, os.getpid(), name)
                cfg["addr"] = "%s.%d" % (SUBNET, i + 1)
                cfg.update(PORTS)
            else:
                cfg["addr"] = "127.0.0.1"
                for key in sorted(PORTS):
                    cfg[key] = _free_port()
            cfgs[name] = cfg
        for name, cfg in cfgs.items():
            cfg["peers"] = dict((n, dict((k, c[k]) for k in ["addr"] + sorted(PORTS)))
                                for n, c in cfgs.items() if n != name)
        return cfgs

    def _make_namespaces(self, cfgs):
        if len(self.names) != 2:
            raise ToolstackError("sim cluster: network namespaces need exactly 2 hosts, got %d"
                                 % len(self.names))
        a, b = [cfgs[n] for n in self.names]
        for cfg in (a, b):
            _ip("netns", "add", cfg["netns"])
            self.namespaces.append(cfg["netns"])
            _ip("-n", cfg["netns"], "link", "set", "lo", "up")
        va, vb = ["v%d%s" % (os.getpid(), n) for n in self.names]
        _ip("link", "add", va[:15], "netns", a["netns"], "type", "veth",
            "peer", "name", vb[:15], "netns", b["netns"])
        for cfg, dev in ((a, va[:15]), (b, vb[:15])):
            cfg["veth"] = dev
            _ip("-n", cfg["netns"], "addr", "add", cfg["addr"] + "/24", "dev", dev)
            _ip("-n", cfg["netns"], "link", "set", dev, "up")

    def start(self):
        atexit.register(self.close)
        try:
            cfgs = self._plan()
            if self.netns:
                cleanup_stale()
                self._make_namespaces(cfgs)
            self.observer = AckObserver(os.path.join(self.root, "observer.sock"))
            for name in self.names:
                self.hosts[name] = SimHost(self, name, cfgs[name])
            for name in self.names:
                self.hosts[name].start()
        except BaseException:
            self.close()
            raise
        return self

    def __getitem__(self, name):
        return self.hosts[name]

    def failed_over(self, name, size, workload, run_s=0.4, after_s=0.3, fill=None, timeout=5.0):
        """Domain ``name`` protected A -> B (a checkpoint every 50 ms) on an
        image of ``size`` bytes on both hosts (zeros, or the first ``size``
        bytes of the file ``fill``), running ``run_s`` seconds; then A powered
        off, B resuming it from its last committed checkpoint, and A back
        with its stale copy ``after_s`` seconds later.

        :param workload: the domain's ``rate``, ``batch`` and ``seed`` (its
            acknowledgements go to this cluster's observer)
        :returns: the image's path as the domain sees it
        """
        from xen_remus_ext.resync import meta
        A, B = self.hosts["A"], self.hosts["B"]
        if not A.alive() or A.frozen:
            A.start()
        image = "/var/lib/xen/images/%s.img" % name
        for h in (A, B):
            h.toolstack.disk_create(image, size)
            if fill is not None:
                with open(fill, "rb") as src, open(h.disk_path(image), "r+b") as dst:
                    left = size
                    while left:
                        block = src.read(min(left, 4 << 20))
                        if not block:
                            break
                        dst.write(block)
                        left -= len(block)
        m = meta.ensure(A.disk_path(image), size, role="primary")
        meta.mark_synced(B.disk_path(image), m, role="backup")
        uname = "tap2:remus:%s:%d|aio:%s" % (B.addr, B.cfg["remus_port"], image)
        wl = dict(workload, observer=self.observer.path)
        A.toolstack.create({"name": name, "memory": 32,
                            "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                            "workload": wl}, paused=True)
        A.toolstack.remus_start(name, "B", interval_ms=50)
        A.toolstack.unpause(name)
        time.sleep(run_s)
        A.kill(power_off=True)
        wait_for(lambda: B.toolstack.sim_info(name)["sim_state"] == "running", timeout, "the failover on B")
        A.start()
        time.sleep(after_s)
        return image

    def close(self):
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            try:
                host.stop()
            except (OSError, IOError) as exc:
                LOG.warning("stopping host %s: %s", host.name, exc)
        for ns in self.namespaces:
            if os.path.exists(os.path.join("/var/run/netns", ns)):
                try:
                    _ip("netns", "delete", ns)
                except ToolstackError as exc:
                    LOG.warning("%s", exc)
        self.namespaces = []
        if self.observer is not None:
            self.observer.close()
        if self.own_root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        try:
            atexit.unregister(self.close)  # novm
        except AttributeError:
            pass
