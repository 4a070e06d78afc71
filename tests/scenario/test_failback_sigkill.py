"""``xen-remus failback`` SIGKILLed inside each step, then run again (simulator).

The command runs as its own process against two simulated hosts; as soon as
its journal names a step as running it gets SIGKILL, and a new run must
converge: the domain home and protected, no acknowledged write lost, both
copies identical.  Killing the command does not stop what it asked the
hosts to do (a migration, a Remus start, a resync pass), exactly as with
xend or an ``xl`` child: the rerun has to wait for those to settle.

Stands in for: two Xen hosts with xl and Remus (docs/xen-facts.md sections 4, 5, 6).
"""
from __future__ import absolute_import, division, print_function

import os
import signal
import subprocess
import sys
import time

from tests.scenario.failback_world import _shared_state, _wait, cluster, failed_over, judge  # noqa: F401,F811
from xen_remus_ext.failback import api, journal, machine
from xen_remus_ext.sim.disksync import SimDiskSync


def test_sigkill_of_the_real_command_in_every_step_then_rerun_converges(cluster):  # noqa: F811
    """The command runs as its own process; it is SIGKILLed as soon as its
    journal names a given step as running, then run again to the end."""
    interrupted = []
    for i, step in enumerate([machine.PRECOPY, machine.MIGRATE, machine.FINAL_DELTA, machine.PROTECT,
                              machine.UNPAUSE]):
        name = "fk%d" % i
        A, B, image = failed_over(cluster, name, 16 << 20, rate=400, run_s=0.3, after_s=0.2)
        argv = [sys.executable, "-m", "xen_remus_ext", "-q", "failback", name, "A", "--toolstack", "sim",
                "--agent", B.cfg["agent"], "--peer-agent", A.cfg["agent"], "--local-host", "B", "-i", "50"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while proc.poll() is None and time.time() < deadline:
            rec = journal.load(name)   # never torn: the journal is replaced by rename
            if rec is not None and rec.get("step") == step:
                os.kill(proc.pid, signal.SIGKILL)
                interrupted.append(step)
                break
            time.sleep(0.001)
        proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL)
        res = api.run_failback(B.toolstack, name, "A", peer_toolstack=A.toolstack,
                               options={"local_host": "B", "interval_ms": 50},
                               disk_sync=SimDiskSync([A.toolstack, B.toolstack]))
        assert res["state"] == machine.DONE, (step, res)
        assert A.toolstack.remus_running(name)
        acked, res_a, res_b, identical = judge(cluster, A, B, name, image)
        assert res_a["missing"] == 0 and res_b["missing"] == 0, (step, res_a, res_b)
        assert identical, step
        A.toolstack.destroy(name)
    print("SIGKILLed inside: %s" % ", ".join(interrupted))
    assert len(set(interrupted)) >= 3, interrupted
