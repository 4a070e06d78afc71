#!/usr/bin/env python3
"""A shaped link between two network namespaces, for the WAN rows of bench/resync.py.

``Link(rate_bit, rtt)`` creates the namespaces ``xre-wan-a`` (192.0.2.1)
and ``xre-wan-b`` (192.0.2.2) and joins them:

- with ``tc netem`` where the kernel has it: a veth pair, each end shaped by
  ``netem delay RTT/2 rate RATE limit 1000``;
- otherwise (a kernel built without CONFIG_NET_SCH_NETEM, as some VMs are):
  a TUN device in each namespace and a delay line in user space between
  them (``python3 bench/wanlink.py relay``, one process per direction): each
  IP packet is serialised at RATE behind the ones before it, held RTT/2,
  then delivered; more than 1000 packets waiting are dropped at the tail,
  like netem's queue.  TCP runs end to end between the namespaces, so its
  window, slow start and losses are the real ones.

``Link.ns_exec(ns)`` is the argv prefix that runs a command inside one
namespace; ``sshd()`` is an sshd inside the B namespace.  ``down()`` stops the
processes it started (by PID) and deletes both namespaces.
"""
from __future__ import absolute_import, division, print_function

import collections
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import time

NS_A, NS_B = "xre-wan-a", "xre-wan-b"
ADDR_A, ADDR_B = "192.0.2.1", "192.0.2.2"
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
QUEUE_LIMIT = 1000


def _sh(*argv):
    subprocess.check_call(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def have_netem():
    """Can this kernel shape with netem?  (Tried in a throwaway namespace.)"""
    ns = "xre-wan-probe%d" % os.getpid()
    try:
        _sh("ip", "netns", "add", ns)
    except (OSError, subprocess.CalledProcessError):
        return False
    try:
        _sh("ip", "-n", ns, "link", "add", "wanp0", "type", "veth", "peer", "name", "wanp1")
        _sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "wanp0", "root", "netem", "delay", "1ms")
        return True
    except (OSError, subprocess.CalledProcessError):
        return False
    finally:
        subprocess.call(["ip", "netns", "delete", ns], stderr=subprocess.DEVNULL)


def _tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


class Link(object):
    def __init__(self, rate_bit=100e6, rtt=0.020):
        self.rate_bit = rate_bit
        self.rtt = rtt
        self.relays = []
        self.kind = None

    @staticmethod
    def ns_exec(ns):
        return ["ip", "netns", "exec", ns]

    def up(self):
        self.down()
        for ns in (NS_A, NS_B):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        half = "%dus" % int(self.rtt / 2 * 1e6)
        if have_netem():
            self.kind = "tc netem (veth)"
            _sh("ip", "link", "add", "wan-a0", "type", "veth", "peer", "name", "wan-b0")
            for dev, ns, addr in (("wan-a0", NS_A, ADDR_A), ("wan-b0", NS_B, ADDR_B)):
                _sh("ip", "link", "set", dev, "netns", ns)
                _sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
                _sh("ip", "-n", ns, "link", "set", dev, "up")
                _sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", half,
                    "rate", "%dbit" % int(self.rate_bit), "limit", str(QUEUE_LIMIT))
            return self
        self.kind = "user-space delay line (TUN; this kernel has no netem)"
        fds = {}
        for dev, ns, addr, peer in (("wan-ta", NS_A, ADDR_A, ADDR_B), ("wan-tb", NS_B, ADDR_B, ADDR_A)):
            fds[ns] = _tun(dev)
            _sh("ip", "link", "set", dev, "netns", ns)
            _sh("ip", "-n", ns, "addr", "add", addr, "peer", peer, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "mtu", "1500", "up")
        for src, dst in ((NS_A, NS_B), (NS_B, NS_A)):
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "relay", str(fds[src]), str(fds[dst]),
                                  repr(self.rate_bit), repr(self.rtt / 2)], pass_fds=(fds[src], fds[dst]))
            self.relays.append(p)
        for fd in fds.values():
            os.close(fd)
        return self

    def down(self):
        for p in self.relays:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait()
        self.relays = []
        for ns in (NS_A, NS_B):
            subprocess.call(["ip", "netns", "delete", ns], stderr=subprocess.DEVNULL)


def sshd(ns=NS_B, addr=ADDR_B):
    """An sshd inside namespace ``ns``, on ``addr``:22, with throwaway keys
    (the tests' own; call ``start()``, then ``stop()``)."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if top not in sys.path:
        sys.path.insert(0, top)
    from tests.adapter.sshd_util import Sshd
    return Sshd(addr=addr, port=22, prefix=Link.ns_exec(ns), tag="xre-wan-sshd-")


def relay(fd_in, fd_out, rate_bit, delay):
    """Forward packets from ``fd_in`` to ``fd_out``: serialised at
    ``rate_bit``, then held ``delay`` seconds; tail drop past QUEUE_LIMIT."""
    fl = fcntl.fcntl(fd_in, fcntl.F_GETFL)
    fcntl.fcntl(fd_in, fcntl.F_SETFL, fl | os.O_NONBLOCK)
    bps = rate_bit / 8.0
    q = collections.deque()
    free_at = 0.0
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        now = time.time()
        while q and q[0][0] <= now:
            os.write(fd_out, q.popleft()[1])
        timeout = max(0.0, q[0][0] - now) if q else 1.0
        ready = select.select([fd_in], [], [], timeout)[0]
        if not ready:
            continue
        for _ in range(256):
            try:
                pkt = os.read(fd_in, 65536)
            except BlockingIOError:
                break
            now = time.time()
            if len(q) >= QUEUE_LIMIT:
                continue
            free_at = max(now, free_at) + len(pkt) / bps
            q.append((free_at + delay, pkt))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "relay":
        relay(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit("usage: wanlink.py relay FD_IN FD_OUT RATE_BIT DELAY_S (started by bench/resync.py)")
