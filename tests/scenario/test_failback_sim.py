"""``xen-remus failback`` in the simulator: home, protected again, nothing lost.

Two simulated hosts (separate processes, in network namespaces when root):
protect A -> B, power A off, B fails over, A comes back with a stale copy,
then the failback command, run "on B" through the sim toolstacks, brings the
domain home and restarts Remus A -> B.  Every acknowledged write must be on
both copies, both copies must end identical, and the failback's downtime
(the longest silence of the guest's acknowledgements, what the outside world
sees) is measured for a 1 GiB disk under a 10 MB/s write load.

Stands in for: two Xen hosts with xl (``migrate -p``, ``unpause``) and Remus;
the simulator follows xen-facts.md sections 4 and 5.  The disk data crosses
TCP between the hosts through the resync engine.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import time

import pytest

from xen_remus_ext.cli import main as cli
from xen_remus_ext.failback import api, machine
from xen_remus_ext.sim.cluster import Cluster
from xen_remus_ext.sim.disksync import SimDiskSync

RESULTS = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The hosts and this process share one state dir (generations are kept
    beside each host's own file), as the demo does."""
    root = str(tmp_path_factory.mktemp("fbsim"))
    saved = os.environ.get("XEN_REMUS_STATE_DIR")
    os.environ["XEN_REMUS_STATE_DIR"] = os.path.join(root, "state")
    try:
        with Cluster(root=os.path.join(root, "hosts")) as cl:
            cl.state_dir = os.environ["XEN_REMUS_STATE_DIR"]
            yield cl
    finally:
        if saved is None:
            os.environ.pop("XEN_REMUS_STATE_DIR", None)
        else:
            os.environ["XEN_REMUS_STATE_DIR"] = saved


@pytest.fixture(autouse=True)
def _shared_state(cluster, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", cluster.state_dir)


def _wait(pred, timeout, what):
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(0.01)


def failed_over(cluster, name, size, rate, batch=1, run_s=0.4, after_s=0.3):
    """A domain protected A -> B, A powered off, B took over, A back (stale)."""
    from xen_remus_ext.resync import meta
    A, B = cluster["A"], cluster["B"]
    if not A.alive() or A.frozen:
        A.start()
    image = "/var/lib/xen/images/%s.img" % name
    for h in (A, B):
        h.toolstack.disk_create(image, size)
    m = meta.ensure(A.disk_path(image), size, role="primary")
    meta.mark_synced(B.disk_path(image), m, role="backup")
    uname = "tap2:remus:%s:%d|aio:%s" % (B.addr, B.cfg["remus_port"], image)
    A.toolstack.create({"name": name, "memory": 32,
                        "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                        "workload": {"rate": rate, "batch": batch, "seed": 77,
                                     "observer": cluster.observer.path}}, paused=True)
    A.toolstack.remus_start(name, "B", interval_ms=50)
    A.toolstack.unpause(name)
    time.sleep(run_s)
    A.kill(power_off=True)
    _wait(lambda: B.toolstack.sim_info(name)["sim_state"] == "running", 5.0, "failover on B")
    A.start()
    time.sleep(after_s)
    return A, B, image


def judge(cluster, A, B, name, image):
    """Pause the domain on A after a few committed checkpoints; every
    acknowledged record must be on both copies, and the copies identical."""
    first = A.toolstack.sim_info(name)["remus"]["commits"]
    _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= first + 3, 5.0, "checkpoints")
    A.toolstack.pause(name)
    c = A.toolstack.sim_info(name)["remus"]["commits"]
    _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= c + 1, 5.0, "a last checkpoint")
    acked = cluster.observer.acked(name)
    res_a = A.toolstack.disk_check(image, 77, acked)
    res_b = B.toolstack.disk_check(image, 77, acked)
    return acked, res_a, res_b, A.toolstack.disk_digest(image) == B.toolstack.disk_digest(image)


def xen_remus(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_failback_brings_it_home_and_protects_again(cluster, capsys):
    name = "fb1"
    A, B, image = failed_over(cluster, name, 16 << 20, rate=300)
    common = ["--toolstack", "sim", "--agent", B.cfg["agent"], "--peer-agent", A.cfg["agent"],
              "--local-host", "B", "-i", "50"]

    rc, out, _err = xen_remus(capsys, "failback", name, "A", "--dry-run", *common)
    assert rc == 0, out
    assert "1. preflight" in out and "6. unpause" in out and "FAIL" not in out
    assert "target-behind" in out
    assert B.toolstack.sim_info(name)["sim_state"] == "running"       # dry run moved nothing

    before = cluster.observer.acked(name)
    rc, out, err = xen_remus(capsys, "failback", name, "A", "--json", *common)
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["result"] == "ok" and res["state"] == machine.DONE
    assert A.toolstack.remus_running(name)
    _wait(lambda: cluster.observer.acked(name) > before, 5.0, "output from A")

    rc, out, _err = xen_remus(capsys, "status", "--json", "--toolstack", "sim", "--agent", A.cfg["agent"])
    rows = json.loads(out)["domains"]
    assert [(r["name"], r["protected"], r["state"]) for r in rows if r["name"] == name] == \
        [(name, True, "running")]
    # the remus-ext keys in A's xenstored (the sim host's xenstored double, over pyxs)
    assert [r["xenstore"] for r in rows if r["name"] == name][0]["state"] == "protected"

    # a rerun after success is a no-op, not a second failback
    rc, out, err = xen_remus(capsys, "failback", name, "A", "--json", *common)
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["state"] == machine.DONE

    acked, res_a, res_b, identical = judge(cluster, A, B, name, image)
    assert acked > before
    assert res_a["missing"] == 0 and res_b["missing"] == 0, (res_a, res_b)
    assert identical
    A.toolstack.destroy(name)


def test_split_brain_is_refused(cluster, capsys):
    from xen_remus_ext.resync import meta
    name = "fb2"
    A, B, image = failed_over(cluster, name, 8 << 20, rate=200)
    meta.rotate(A.disk_path(image), role="primary")   # A took writes of its own meanwhile
    rc, out, err = xen_remus(capsys, "failback", name, "A", "--json", "--toolstack", "sim",
                             "--agent", B.cfg["agent"], "--peer-agent", A.cfg["agent"], "--local-host", "B")
    assert rc == 1
    res = json.loads(out.strip().splitlines()[-1])
    assert res["result"] == "error" and "split brain" in res["error"] and res["step"] == "preflight"
    assert B.toolstack.sim_info(name)["sim_state"] == "running"
    assert "split brain" in err
    B.toolstack.destroy(name)


@pytest.mark.slow
def test_downtime_1gib_disk_under_10mbps_write_load(cluster):
    """1 GiB disk, the guest writing 4 KiB of records 2500 times a second (10.24 MB/s)."""
    name = "fb3"
    A, B, image = failed_over(cluster, name, 1 << 30, rate=2500, batch=8, run_s=0.5, after_s=1.0)
    t_home, n_home = time.time(), cluster.observer.acked(name)
    res = api.run_failback(B.toolstack, name, "A", peer_toolstack=A.toolstack,
                           options={"local_host": "B", "interval_ms": 50},
                           disk_sync=SimDiskSync([A.toolstack, B.toolstack]))
    assert res["state"] == machine.DONE
    _wait(lambda: cluster.observer.acked(name) > 0, 5.0, "output from A")
    time.sleep(0.3)
    silence = cluster.observer.silence(name, t_home, time.time())
    # the guest's write rate over the whole failback (records are 512 bytes)
    load = (cluster.observer.acked(name) - n_home) * 512 / (time.time() - t_home)
    acked, res_a, res_b, identical = judge(cluster, A, B, name, image)
    RESULTS.update(load_bytes_per_s=round(load), guest_silence_s=round(silence, 3),
                   downtime_s=round(res["downtime"], 3), downtime_max_s=round(res["downtime_max"], 3),
                   final_delta_bytes=res["disks"][0]["final"]["bytes_sent"],
                   final_delta_mode=res["disks"][0]["final"]["mode"],
                   precopy=[(p["mode"], p["bytes_sent"], p["seconds"]) for p in res["disks"][0]["precopy"]],
                   failback_s=round(time.time() - t_home, 2), acked=acked)
    print("failback 1 GiB under load: %s" % json.dumps(RESULTS, sort_keys=True))
    assert load > 9.5e6, RESULTS                    # the load really ran at about 10 MB/s
    assert res_a["missing"] == 0 and res_b["missing"] == 0, (res_a, res_b)
    assert identical
    assert res["disks"][0]["final"]["mode"] == "tracked"
    assert silence < 1.0, RESULTS
    assert res["downtime_max"] < 1.0, RESULTS
    A.toolstack.destroy(name)


def test_sigkill_of_the_real_command_in_every_step_then_rerun_converges(cluster):
    """The command runs as its own process; it is SIGKILLed as soon as its
    journal names a given step as running, then run again to the end."""
    import signal
    import subprocess
    import sys
    from xen_remus_ext.failback import journal
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
