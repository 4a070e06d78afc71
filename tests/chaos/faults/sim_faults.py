"""Faults on the two-host Remus simulator, and the whole-cycle check.

- ``kill-host``: a domain protected A -> B writes checksummed records; A is
  SIGKILLed (or powered off: its link cut first) at a random moment; B must
  take over with every acknowledged record; A comes back stale and the
  failback brings the domain home and protects it again.
- ``kill-orchestrator``: the same failover, then ``xen-remus failback`` runs
  as a process and is SIGKILLed at a random moment; the same command
  (``--resume`` when it left an unfinished journal) must converge.
- ``failback-journal-torn``: as ``kill-orchestrator``, then the failback
  journal is torn (truncated) or has a byte flipped; the rerun must refuse
  with an error naming the journal file (never act on a damaged record);
  the operator moves the file aside and the same command, observing the
  world afresh, must converge.

Check: every record the guest's observer was told about is on both copies,
and the copies are byte-identical (digests), Remus running A -> B again.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import signal
import subprocess
import sys
import time

from tests.chaos.faults.registry import kill_proc
from tests.chaos.faults.resync_faults import REPO, _env
from xen_remus_ext.sim.cluster import wait_for as _wait

KINDS = ("kill-host", "kill-orchestrator", "failback-journal-torn")
NEEDS_NETNS = ()
SIZES = (8 << 20, 16 << 20)


class SimBench(object):
    """One cluster (hosts A and B) kept for the whole campaign."""

    def __init__(self, reg, root):
        from xen_remus_ext.sim.cluster import Cluster
        self.state = os.path.join(root, "state")
        os.makedirs(self.state)
        os.environ["XEN_REMUS_STATE_DIR"] = self.state
        self.cluster = Cluster(root=os.path.join(root, "hosts")).start()
        self._tok = reg.add("sim cluster", self.cluster.close)

    def close(self):
        self.cluster.close()


class SimRun(object):

    def __init__(self, ctx, kind, rng, index):
        self.ctx = ctx
        self.kind = kind
        self.rng = rng
        self.bench = ctx.cluster()
        self.cl = self.bench.cluster
        self.name = "c%03d" % index
        self.image = "/var/lib/xen/images/%s.img" % self.name
        self.notes = []
        self.wseed = rng.randint(1, 1 << 30)

    def protect_and_fail_over(self):
        from xen_remus_ext.resync import meta
        A, B = self.cl["A"], self.cl["B"]
        if not A.alive() or A.frozen:
            A.start()
        size = self.rng.choice(SIZES)
        for h in (A, B):
            h.toolstack.disk_create(self.image, size)
        m = meta.ensure(A.disk_path(self.image), size, role="primary")
        meta.mark_synced(B.disk_path(self.image), m, role="backup")
        uname = "tap2:remus:%s:%d|aio:%s" % (B.addr, B.cfg["remus_port"], self.image)
        A.toolstack.create({"name": self.name, "memory": 32,
                            "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                            "workload": {"rate": self.rng.randint(100, 400), "seed": self.wseed,
                                         "observer": self.cl.observer.path}}, paused=True)
        A.toolstack.remus_start(self.name, "B", interval_ms=self.rng.randint(20, 100))
        A.toolstack.unpause(self.name)
        time.sleep(self.rng.uniform(0.05, 0.6))
        power_off = self.rng.random() < 0.5
        fault_at = time.time()
        A.kill(power_off=power_off)
        self.notes.append("A %s" % ("powered off" if power_off else "SIGKILLed"))
        acked_at_kill = self.cl.observer.acked(self.name)
        _wait(lambda: B.toolstack.sim_info(self.name)["sim_state"] == "running", 10.0, "failover on B")
        res = B.toolstack.disk_check(self.image, self.wseed, acked_at_kill)
        lost = res["missing"]
        A.start()
        return fault_at, lost

    def execute(self):
        os.environ["XEN_REMUS_STATE_DIR"] = self.bench.state
        out = {"kind": self.kind, "recovered": False, "bytes_differing": None, "writes_lost": 0,
               "false_consistent": 0, "notes": self.notes}
        A, B = self.cl["A"], self.cl["B"]
        try:
            fault_at, lost_at_failover = self.protect_and_fail_over()
            out["writes_lost"] += lost_at_failover
            if self.kind == "kill-host":
                out["landed"] = True            # A always dies while protecting
                ok = self.failback_in_process()
            else:
                fault_at, ok = self.failback_killed(tear=self.kind == "failback-journal-torn")
                out["landed"] = self.landed
                out["runbook"] = getattr(self, "by_runbook", False)
            out["recovery_s"] = round(time.time() - fault_at, 3)
            acked, res_a, res_b, differing = self.judge()
            out["writes_lost"] += max(res_a["missing"], res_b["missing"])
            out["bytes_differing"] = differing
            out["acked"] = acked
            out["recovered"] = bool(ok and differing == 0 and res_a["missing"] == 0 and res_b["missing"] == 0
                                    and lost_at_failover == 0)
        finally:
            for h in (A, B):
                try:
                    if h.alive() and not h.frozen:
                        h.toolstack.destroy(self.name)
                except Exception as exc:  # the domain ran on one host only: expected
                    if h.name == "A":
                        self.notes.append("destroy on %s: %s" % (h.name, str(exc)[:80]))
                path = h.disk_path(self.image)
                if os.path.exists(path):
                    os.unlink(path)
        return out

    def failback_in_process(self):
        from xen_remus_ext.failback import api, machine
        from xen_remus_ext.sim.disksync import SimDiskSync
        A, B = self.cl["A"], self.cl["B"]
        res = api.run_failback(B.toolstack, self.name, "A", peer_toolstack=A.toolstack,
                               options={"local_host": "B", "interval_ms": 50},
                               disk_sync=SimDiskSync([A.toolstack, B.toolstack]))
        return res["state"] == machine.DONE

    def _cli(self, *extra):
        A, B = self.cl["A"], self.cl["B"]
        argv = [sys.executable, "-m", "xen_remus_ext", "failback", self.name, "A", "--json",
                "--toolstack", "sim", "--agent", B.cfg["agent"], "--peer-agent", A.cfg["agent"],
                "--local-host", "B", "-i", "50"] + list(extra)
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_env(self.bench.state), cwd=REPO, close_fds=True)

    def tear_journal(self):
        """Damage the failback journal; the rerun must refuse it by name,
        then (moved aside by the operator) the rerun must converge."""
        from xen_remus_ext.failback import journal
        path = journal.journal_path(self.name)
        if not os.path.exists(path):
            self.notes.append("no failback journal to tear")
            return
        with open(path, "rb") as f:
            data = bytearray(f.read())
        if self.rng.random() < 0.5:
            data = data[:self.rng.randrange(1, len(data))]
            how = "torn"
        else:
            i = self.rng.randrange(0, len(data))
            data[i] = ord("{") if data[i] != ord("{") else ord("[")
            how = "byte changed"
        with open(path, "wb") as f:
            f.write(bytes(data))
        proc = self._cli()
        tok = self.ctx.reg.process(proc)
        try:
            out, err = proc.communicate()
        finally:
            self.ctx.reg.forget(tok)
            kill_proc(proc)
        text = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
        try:
            still = journal.load(self.name)
        except Exception:   # still damaged: the refusal is what matters
            still = None
        if proc.returncode == 0:
            if still is not None:
                self.notes.append("journal %s still parsed (%s), rerun ran" % (how, still.get("state")))
                return
            raise AssertionError("a damaged failback journal (%s) was not refused: %s" % (how, text[-300:]))
        if path not in text:
            raise AssertionError("the refusal of the damaged journal does not name %s: %s" % (path, text[-300:]))
        os.rename(path, path + ".damaged")
        self.notes.append("journal %s: refused by name, moved aside" % how)

    def failback_killed(self, tear=False):
        from xen_remus_ext.failback import journal, machine
        proc = self._cli()
        tok = self.ctx.reg.process(proc)
        # a random moment after the journal first appears (interpreter start-up excluded)
        path = journal.journal_path(self.name)
        t0 = time.time()
        while proc.poll() is None and not os.path.exists(path) and time.time() < t0 + 30:
            time.sleep(0.005)
        delay = self.rng.uniform(0.0, 0.2)
        deadline = time.time() + delay
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        fault_at = time.time()
        self.landed = proc.poll() is None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            self.ctx.reg.undo(tok)
            rec = journal.load(self.name)
            self.notes.append("orchestrator killed %.2f s after its journal appeared, in state %s"
                              % (delay, rec["state"] if rec else None))
        else:
            self.ctx.reg.undo(tok)
            self.notes.append("orchestrator finished before the kill (%.2f s)" % delay)
        if tear:
            self.tear_journal()
        for attempt in range(1, 6):
            rec = journal.load(self.name)
            resume = rec is not None and rec["state"] not in machine.TERMINAL
            proc = self._cli(*(["--resume"] if resume else []))
            tok = self.ctx.reg.process(proc)
            try:
                out, err = proc.communicate()
            finally:
                self.ctx.reg.forget(tok)
                kill_proc(proc)
            lines = out.decode("utf-8", "replace").strip().splitlines()
            res = json.loads(lines[-1]) if lines else {}
            if proc.returncode == 0 and res.get("state") == machine.DONE:
                return fault_at, True
            if rec is None and "only on the peer (paused)" in (res.get("error") or ""):
                self.runbook()
                return fault_at, True
            if rec is None and self.home_and_protected():
                # no journal (moved aside) and the domain already home: nothing left to do
                self.notes.append("rerun without a journal: %s; the domain is home and protected"
                                  % (res.get("error") or "")[:80])
                return fault_at, True
            self.notes.append("rerun %d: rc %s %s" % (attempt, proc.returncode,
                                                      (res.get("error") or err.decode("utf-8", "replace"))[-200:]))
            time.sleep(0.5)
        return fault_at, False

    def runbook(self):
        """docs/chaos.md, "A damaged failback journal": the journal is gone
        and the domain sits paused on the peer, where it never ran; this
        host's disk is the last one written.  Resync each remus disk to the
        peer (generations checked as always), protect back, then unpause.
        If Remus already protects it from the peer, the failback had reached
        its protect step (after the final delta): unpause only."""
        from xen_remus_ext.sim.disksync import SimDiskSync
        A, B = self.cl["A"], self.cl["B"]
        if A.toolstack.remus_running(self.name):
            # the failback had reached its protect step, which follows the final delta
            A.toolstack.unpause(self.name)
            self.by_runbook = True
            self.notes.append("stranded paused on A, already protected: runbook (unpause)")
            return
        res = SimDiskSync([A.toolstack, B.toolstack]).sync(B.disk_path(self.image), A.disk_path(self.image))
        # protect before unpausing, as the failback does: a write made before
        # Remus starts would never reach the backup
        A.toolstack.remus_start(self.name, "B", interval_ms=50)
        A.toolstack.unpause(self.name)
        self.by_runbook = True
        self.notes.append("stranded paused on A without a journal: runbook (resync %s, %s bytes; protect; "
                          "unpause)" % (res.get("mode"), res.get("bytes_sent")))

    def home_and_protected(self):
        A = self.cl["A"]
        try:
            info = A.toolstack.sim_info(self.name)
            return info["sim_state"] == "running" and bool(A.toolstack.remus_running(self.name))
        except Exception:   # not on A
            return False

    def judge(self):
        A, B = self.cl["A"], self.cl["B"]
        name = self.name
        first = A.toolstack.sim_info(name)["remus"]["commits"]
        _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= first + 3, 10.0, "checkpoints")
        A.toolstack.pause(name)
        c = A.toolstack.sim_info(name)["remus"]["commits"]
        _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= c + 1, 10.0, "a last checkpoint")
        acked = self.cl.observer.acked(name)
        res_a = A.toolstack.disk_check(self.image, self.wseed, acked)
        res_b = B.toolstack.disk_check(self.image, self.wseed, acked)
        from tests.chaos.faults.resync_faults import bytes_differing
        differing = bytes_differing(A.disk_path(self.image), B.disk_path(self.image))
        return acked, res_a, res_b, differing
