"""Faults on a real resync between two processes, and the recovery check.

One run: a random source image (8-32 MiB) and a stale target, a receiver
process (``xen-remus receive --listen``) and a sender process (``xen-remus
resync ... --json``), rate-limited so that the run lasts about a second; at
a random moment one fault:

- ``kill-sender`` / ``kill-receiver``: SIGKILL of that process (by PID);
- ``link-cut``: the sender's veth goes down for a random time (the two
  processes run in network namespaces created here; without root the
  run is skipped);
- ``sender-poweroff``: the sender's host loses power mid-run (a blackhole
  route: no FIN, no RST reaches the receiver; the sender dies), then boots
  (its old sockets forgotten); the receiver must find the dead peer by
  itself (keepalive, TCP_USER_TIMEOUT) and release the target;
- ``enospc``: the target lives on a tmpfs too small for the data;
- ``journal-corrupt``: the sender is killed, then the receiver's resume
  journal is torn (truncated), bit-flipped or rewritten to claim work not done;
- ``verify-race``: while a ``--verify`` run is in its verify phase, a second
  sender (its own host: another state dir) syncs a source differing only in
  blocks already verified; it must find the target held (else the first
  run would commit its generation over the second's bytes);
- ``tracked-after-kill``: the sender of a full run is killed, then the
  operator runs a tracked resync with a 1 MiB dirty list into the
  half-written target; both ends must refuse it (else the target would be
  marked consistent with most of its bytes stale).

Recovery: the same command again (restarting a killed receiver, growing
the tmpfs), until it succeeds.  Then: the target must be byte-identical to
the source, consistent and of the source's generation; and at no moment
after the fault may the target be marked consistent with the source's
generation while its bytes differ.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import signal
import subprocess
import sys
import time

from tests.adapter.resync_util import copy
from tests.chaos.faults.registry import kill_proc, run
from xen_remus_ext.resync import journal as jn
from xen_remus_ext.resync import meta

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KINDS = ("kill-sender", "kill-receiver", "link-cut", "enospc", "journal-corrupt", "sender-poweroff",
         "verify-race", "tracked-after-kill")
NEEDS_NETNS = ("link-cut", "sender-poweroff")
#: kinds whose recovery waits for the receiver's dead-peer detection (about
#: 10-30 s): a smaller share of the campaign (one run in RARE_EVERY)
RARE = ("sender-poweroff",)
RARE_EVERY = 40
SIZES = (8 << 20, 16 << 20, 24 << 20, 32 << 20)
PORT = 7791
ATTEMPT_TIMEOUT = 60.0
RECOVERY_BUDGET = 120.0


def _env(state):
    env = dict(os.environ)
    env["XEN_REMUS_STATE_DIR"] = state
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Net(object):
    """Where the receiver listens and how the sender reaches it: two network
    namespaces joined by a veth pair (root), else 127.0.0.1."""

    def __init__(self, reg, use_netns, tag=None):
        self.reg = reg
        self.netns = use_netns
        tag = tag or "xrc%d" % os.getpid()
        self.ns_s, self.ns_r = tag + "s", tag + "r"
        self.veth_s, self.veth_r = (tag + "vs")[:15], (tag + "vr")[:15]
        self.addr = "198.51.100.2" if use_netns else "127.0.0.1"
        self._tok_s = self._tok_r = None
        if use_netns:
            self._tok_r = reg.netns(self.ns_r)
            run(["ip", "-n", self.ns_r, "link", "set", "lo", "up"])
            self._make_sender()

    def _make_sender(self):
        self._tok_s = self.reg.netns(self.ns_s)
        run(["ip", "-n", self.ns_s, "link", "set", "lo", "up"])
        run(["ip", "link", "add", self.veth_s, "netns", self.ns_s, "type", "veth",
             "peer", "name", self.veth_r, "netns", self.ns_r])
        run(["ip", "-n", self.ns_s, "addr", "add", "198.51.100.1/24", "dev", self.veth_s])
        run(["ip", "-n", self.ns_r, "addr", "add", "198.51.100.2/24", "dev", self.veth_r])
        run(["ip", "-n", self.ns_s, "link", "set", self.veth_s, "up"])
        run(["ip", "-n", self.ns_r, "link", "set", self.veth_r, "up"])

    def prefix(self, side):
        if not self.netns:
            return []
        return ["ip", "netns", "exec", self.ns_s if side == "sender" else self.ns_r]

    def link(self, up):
        run(["ip", "-n", self.ns_s, "link", "set", self.veth_s, "up" if up else "down"])

    def power_off_sender(self, procs):
        """The sender's host loses power: nothing it sends reaches the peer
        any more (a blackhole route, so not even a FIN or RST leaves), and
        its processes die."""
        run(["ip", "-n", self.ns_s, "route", "add", "blackhole", self.addr + "/32"])
        for proc in procs:
            kill_proc(proc)

    def power_on_sender(self):
        """It boots again: a fresh kernel knows none of the old connections
        (their orphaned sockets are destroyed, their RST lost in the
        blackhole), then the network comes back."""
        run(["ip", "netns", "exec", self.ns_s, "ss", "-K", "-t", "dst", self.addr])
        run(["ip", "-n", self.ns_s, "route", "del", "blackhole", self.addr + "/32"])


def fill_random(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n


def scribble(path, rng, changes):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for _ in range(changes):
            n = rng.choice((512, 4096, 65536, 300000))
            off = rng.randrange(0, size - n)
            f.seek(off)
            f.write(os.urandom(n))


def bytes_differing(a, b, chunk=1 << 20):
    """Number of differing bytes (a size difference counts whole)."""
    diff = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if not x and not y:
                return diff
            if x != y:
                n = min(len(x), len(y))
                diff += abs(len(x) - len(y))
                diff += sum(1 for i in range(n) if x[i:i + 1] != y[i:i + 1]) if n else 0


def false_consistent(src, dst):
    """1 when ``dst`` claims the source's generation, consistent, yet differs."""
    ms, md = meta.load(src), meta.load(dst)
    if md is None or ms is None or not md.consistent or md.current != ms.current:
        return 0
    return 1 if bytes_differing(src, dst) else 0


class ResyncRun(object):
    """One run of one fault kind; :meth:`execute` returns a result dict."""

    def __init__(self, ctx, kind, rng, index):
        self.ctx = ctx
        self.kind = kind
        self.rng = rng
        self.dir = os.path.join(ctx.work, "r%03d" % index)
        os.makedirs(self.dir)
        self.state = os.path.join(self.dir, "state")
        self.key = ctx.key
        self.receiver = None
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.notes = []

    # -- processes --------------------------------------------------------
    def start_receiver(self):
        argv = self.ctx.net.prefix("receiver") + [
            sys.executable, "-m", "xen_remus_ext", "receive", "--listen",
            "%s:%d" % (self.ctx.net.addr, self.ctx.port), "--key", self.key, "--export", "d=" + self.dst]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.PIPE,
                                env=_env(self.state), cwd=REPO, close_fds=True)
        tok = self.ctx.reg.process(proc)
        line = proc.stderr.readline()
        if b"receiving on" not in line:
            self.ctx.reg.undo(tok)
            raise OSError("receiver did not start: %r" % line)
        # the rest of its stderr goes to the run's log
        self.receiver = (proc, tok)
        self._drain(proc)

    def _drain(self, proc):
        import threading

        def pump():
            for line in iter(proc.stderr.readline, b""):
                self.log.write(line)
                self.log.flush()
        t = threading.Thread(target=pump)
        t.daemon = True
        t.start()

    def stop_receiver(self):
        if self.receiver is not None:
            self.ctx.reg.undo(self.receiver[1])
            self.receiver = None

    def start_sender(self, rate=None, src=None, mode=None, extra=None, state=None):
        argv = self.ctx.net.prefix("sender") + [
            sys.executable, "-m", "xen_remus_ext", "resync", src or self.src,
            "tcp://%s:%d/d" % (self.ctx.net.addr, self.ctx.port), "--key", self.key, "--json",
            "--no-progress", "--mode", mode or self.mode] + list(self.extra if extra is None else extra)
        if rate:
            argv += ["--rate", str(int(rate))]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                env=_env(state or self.state), cwd=REPO, close_fds=True)
        return proc, self.ctx.reg.process(proc)

    def wait_sender(self, proc, tok, timeout):
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        timed_out = proc.poll() is None
        out = b""
        if timed_out:
            self.notes.append("sender timed out after %.0f s; killed" % timeout)
        else:
            out = proc.stdout.read()
        self.ctx.reg.undo(tok)
        last = out.decode("utf-8", "replace").strip().splitlines()[-1:] if out else []
        res = None
        if last:
            try:
                res = json.loads(last[0])
            except ValueError:
                res = None
        return (proc.returncode == 0 and not timed_out), res

    # -- the run ----------------------------------------------------------
    def prepare(self):
        self.size = self.rng.choice(SIZES)
        self.src = os.path.join(self.dir, "src.img")
        fill_random(self.src, self.size)
        os.environ["XEN_REMUS_STATE_DIR"] = self.state
        if self.kind == "enospc":
            mnt = os.path.join(self.dir, "small")
            self.tmpfs_size = int(self.size * self.rng.uniform(0.25, 0.75)) // 4096 * 4096
            self.mount_tok = self.ctx.reg.tmpfs(mnt, self.tmpfs_size)
            self.dst = os.path.join(mnt, "dst.img")
            with open(self.dst, "wb") as f:
                f.truncate(self.size)
            meta.ensure(self.src, self.size, role="primary")     # target-new
            self.mode = "full"
        else:
            self.dst = os.path.join(self.dir, "dst.img")
            copy(self.src, self.dst)
            m = meta.ensure(self.src, self.size, role="primary")
            meta.mark_synced(self.dst, m, role="backup")
            meta.rotate(self.src, role="primary")                 # the source moved on
            scribble(self.src, self.rng, self.rng.randint(4, 40))
            self.mode = self.rng.choice(("checksum", "full"))
        self.extra = ()
        if self.kind == "verify-race":
            self.extra = ("--verify",)
            self.src2 = os.path.join(self.dir, "src2.img")     # the second sender's disk
            copy(self.src, self.src2)
            with open(self.src2, "r+b") as f:
                f.write(os.urandom(1 << 20))
        elif self.kind == "tracked-after-kill":
            self.mode = "full"
            self.dirty = os.path.join(self.dir, "dirty.txt")
            with open(self.dirty, "w") as f:
                f.write("0 1M\n")

    def execute(self):
        t_start = time.time()
        self.prepare()
        res = {"kind": self.kind, "size": self.size, "mode": self.mode, "recovered": False,
               "bytes_differing": None, "writes_lost": 0, "false_consistent": 0, "notes": self.notes}
        try:
            self.start_receiver()
            secs = self.rng.uniform(0.8, 2.0)
            proc, tok = self.start_sender(rate=self.size / secs)
            lo = 0.5 if self.kind == "journal-corrupt" else 0.1    # late enough for MARKs to exist
            t_fault = self.rng.uniform(lo, 0.9) * secs
            if self.kind == "verify-race":                       # in the verify phase
                t_fault = self.rng.uniform(1.1, 1.7) * secs
            while proc.poll() is None and time.time() - t_start < t_fault + 1.0 and \
                    time.time() < t_start + t_fault:
                time.sleep(0.01)
            fault_at = time.time()
            res["landed"] = proc.poll() is None or self.kind == "enospc"   # the sender was mid-run
            self.inject(proc, tok)
            res["false_consistent"] += false_consistent(self.src, self.dst)
            ok = self.recover(fault_at)
            res["recovery_s"] = round(time.time() - fault_at, 3)
            res["bytes_differing"] = bytes_differing(self.src, self.dst)
            res["false_consistent"] += false_consistent(self.src, self.dst)
            ms, md = meta.load(self.src), meta.load(self.dst)
            res["consistent"] = bool(md and md.consistent and md.current == ms.current)
            res["recovered"] = bool(ok and res["bytes_differing"] == 0 and res["consistent"]
                                    and not res["false_consistent"])
        finally:
            self.stop_receiver()
            self.log.close()
            self.discard_images()
        return res

    def discard_images(self):
        """The work tmpfs holds 200 runs' logs, not their images."""
        for path in (getattr(self, "src", None), getattr(self, "dst", None), getattr(self, "src2", None)):
            if path and os.path.exists(path):
                os.unlink(path)
        if getattr(self, "mount_tok", None) is not None:
            self.ctx.reg.undo(self.mount_tok)

    def inject(self, proc, tok):
        kind, net = self.kind, self.ctx.net
        if kind == "kill-sender":
            self._sigkill(proc, tok)
        elif kind == "kill-receiver":
            os.kill(self.receiver[0].pid, signal.SIGKILL)
            self.stop_receiver()
            self.wait_sender(proc, tok, ATTEMPT_TIMEOUT)   # the receiver restarts in recover()
        elif kind == "link-cut":
            net.link(False)
            time.sleep(self.rng.uniform(0.2, 3.0))
            net.link(True)
            ok, _ = self.wait_sender(proc, tok, ATTEMPT_TIMEOUT)
            self.notes.append("first attempt %s across the cut" % ("finished" if ok else "failed"))
            self.first_ok = ok
        elif kind == "sender-poweroff":
            net.power_off_sender([proc])
            self.ctx.reg.forget(tok)
            time.sleep(self.rng.uniform(0.1, 1.0))
            net.power_on_sender()
            # the receiver still holds the session (and the target's lock)
            # until it finds the peer dead; the reruns below wait for that
        elif kind == "enospc":
            ok, out = self.wait_sender(proc, tok, ATTEMPT_TIMEOUT)
            err = (out or {}).get("error", "")
            if ok:
                raise AssertionError("enospc: expected the resync to fail on a %d-byte tmpfs, it succeeded"
                                     % self.tmpfs_size)
            self.notes.append("failed as expected: %s" % err[:120])
            md = meta.load(self.dst)
            if md is None or md.consistent:
                raise AssertionError("enospc: target must be marked inconsistent after the failure, got %r" % (md,))
            run(["mount", "-o", "remount,size=%d" % (self.size * 2), os.path.dirname(self.dst)])
        elif kind == "journal-corrupt":
            self._sigkill(proc, tok)
            self._wait_unlocked()
            self.corrupt_journal()
        elif kind == "verify-race":
            running = proc.poll() is None
            b, btok = self.start_sender(src=self.src2, mode="checksum", extra=(),
                                        state=os.path.join(self.dir, "state-b"))
            ok_b, out_b = self.wait_sender(b, btok, ATTEMPT_TIMEOUT)
            self.notes.append("second sender %s%s: %s" % ("succeeded" if ok_b else "refused",
                                                         "" if running else " (after the first ended)",
                                                         (out_b or {}).get("error", "")[:120]))
            if ok_b and running:
                raise AssertionError("verify-race: a second sender wrote the target during a --verify run")
            ok, _ = self.wait_sender(proc, tok, ATTEMPT_TIMEOUT)
            self.first_ok = ok and not ok_b
        elif kind == "tracked-after-kill":
            deadline = time.time() + 10      # kill it once it has begun writing (the target marked inconsistent)
            while proc.poll() is None and time.time() < deadline:
                md = meta.load(self.dst)
                if md is not None and not md.consistent:
                    break
                time.sleep(0.01)
            self._sigkill(proc, tok)
            self._wait_unlocked()
            t, ttok = self.start_sender(mode="tracked", extra=("--dirty", self.dirty))
            ok_t, out_t = self.wait_sender(t, ttok, ATTEMPT_TIMEOUT)
            self.notes.append("tracked run %s: %s" % ("succeeded" if ok_t else "refused",
                                                      (out_t or {}).get("error", "")[:120]))
        else:
            raise ValueError("unknown fault kind %r" % kind)

    def _sigkill(self, proc, tok):
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        else:
            self.notes.append("sender finished before the fault (rc %s)" % proc.returncode)
        self.ctx.reg.undo(tok)

    def _wait_unlocked(self, timeout=10.0):
        """The receiver notices the dead sender (EOF) and closes the target."""
        import fcntl
        deadline = time.time() + timeout
        while time.time() < deadline:
            fd = os.open(self.dst, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except (IOError, OSError):
                time.sleep(0.02)
            finally:
                os.close(fd)
        return False

    def corrupt_journal(self):
        path = jn.journal_path(self.dst)
        if not os.path.exists(path):
            self.notes.append("no journal yet (killed before the first mark)")
            return
        with open(path, "rb") as f:
            data = bytearray(f.read())
        how = self.rng.choice(("torn", "bitflip", "claims-all"))
        if how == "torn":
            data = data[:self.rng.randrange(0, len(data))]
        elif how == "bitflip":
            i = self.rng.randrange(0, len(data))
            data[i] ^= 1 << self.rng.randrange(0, 8)
        else:
            d = json.loads(bytes(data).decode("utf-8"))
            d["done"] = [[0, self.size]]
            data = bytearray(json.dumps(d, sort_keys=True).encode("utf-8"))
        with open(path, "wb") as f:
            f.write(bytes(data))
        self.notes.append("journal %s" % how)

    def recover(self, fault_at):
        if self.kind in ("link-cut", "verify-race") and getattr(self, "first_ok", False):
            return True
        deadline = fault_at + RECOVERY_BUDGET
        attempt = 0
        last = None
        while time.time() < deadline:
            attempt += 1
            if self.receiver is None or self.receiver[0].poll() is not None:
                self.stop_receiver()
                self.start_receiver()
            proc, tok = self.start_sender()
            ok, out = self.wait_sender(proc, tok, ATTEMPT_TIMEOUT)
            if ok:
                if attempt > 1:
                    self.notes.append("rerun succeeded at attempt %d" % attempt)
                return True
            err = (out or {}).get("error", "")
            if attempt == 1 or err != last:
                self.notes.append("rerun %d failed: %s" % (attempt, err[:160]))
            last = err
            time.sleep(0.5)
        return False
