"""Online verify: ``xen-remus verify`` on a Remus-protected pair in the simulator.

A domain runs on host A, protected to host B (separate processes, in
network namespaces when root), its workload writing checksummed records.
One range of B's copy, far from anything the guest writes, is silently
corrupted (what a bad sector or a stray writer does).  Then, from host A,
the real command ``xen-remus verify SRC tcp://B:PORT/EXPORT --rate R --json``
runs against B's resync receiver while the guest keeps working:

- it reports the corrupted range (block granular) among the out-of-sync
  ranges, and every other range it reports lies where the guest was
  writing during the pass (writes in flight, buffered on B until their
  checkpoint commits);
- the rate limit holds (the pass takes at least size / rate);
- the guest is never stopped: it stays running and keeps acknowledging
  writes during the pass;
- with the guest paused and its last checkpoint committed, the same verify
  reports exactly the corrupted range and nothing else.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from xen_remus_ext.sim.cluster import Cluster
from xen_remus_ext.sim.workload import DATA_START, RECORD

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16 << 20
BS = 65536
CORRUPT = (12 << 20) + 4096, 8192
RATE = 6 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ovsim"))
    saved = os.environ.get("XEN_REMUS_STATE_DIR")
    os.environ["XEN_REMUS_STATE_DIR"] = os.path.join(root, "state")
    try:
        with Cluster(root=os.path.join(root, "hosts")) as cl:
            yield cl
    finally:
        if saved is None:
            os.environ.pop("XEN_REMUS_STATE_DIR", None)
        else:
            os.environ["XEN_REMUS_STATE_DIR"] = saved


def _wait(pred, timeout, what):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(0.01)


def _verify(cluster, image, rate=None):
    """Run ``xen-remus verify`` as host A would (inside A's namespace)."""
    A, B = cluster["A"], cluster["B"]
    argv = [sys.executable, "-m", "xen_remus_ext", "verify", A.disk_path(image),
            "tcp://%s:%d/%s" % (B.addr, B.cfg["resync_port"], os.path.basename(image)),
            "--key", A.cfg["key_file"], "--json", "--block-size", str(BS)]
    if rate:
        argv += ["--rate", str(rate)]
    if A.cfg.get("netns"):
        argv = ["ip", "netns", "exec", A.cfg["netns"]] + argv
    env = dict(os.environ, PYTHONPATH=REPO)
    t0 = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    out, err = proc.communicate()
    lines = [json.loads(x) for x in out.decode("utf-8").splitlines() if x.startswith("{")]
    return proc.returncode, lines, err.decode("utf-8", "replace"), time.time() - t0


def _covers(ranges, off, length):
    return any(s <= off and off + length <= s + n for s, n in ranges)


def test_online_verify_reports_out_of_sync_ranges_without_stopping_the_guest(cluster):
    A, B = cluster["A"], cluster["B"]
    name, image = "ov1", "/var/lib/xen/images/ov1.img"
    for h in (A, B):
        h.toolstack.disk_create(image, SIZE)
    uname = "tap2:remus:%s:%d|aio:%s" % (B.addr, B.cfg["remus_port"], image)
    A.toolstack.create({"name": name, "memory": 32,
                        "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                        "workload": {"rate": 300, "seed": 5, "observer": cluster.observer.path}}, paused=True)
    A.toolstack.remus_start(name, "B", interval_ms=50)
    A.toolstack.unpause(name)
    _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= 3, 10, "checkpoints")

    with open(B.disk_path(image), "r+b") as f:       # silent corruption of the backup's copy
        f.seek(CORRUPT[0])
        f.write(os.urandom(CORRUPT[1]))

    # watch the guest during the pass
    seen = {"states": set(), "acked": []}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen["states"].add(A.toolstack.sim_info(name)["sim_state"])
            seen["acked"].append(cluster.observer.acked(name))
            time.sleep(0.1)
    w = threading.Thread(target=watch)
    w.daemon = True
    w.start()
    try:
        rc, lines, err, took = _verify(cluster, image, rate=RATE)
    finally:
        stop.set()
        w.join()
    res = lines[-1]
    assert rc == 1 and res["result"] == "differ", (rc, res, err)
    ranges = [tuple(r) for r in res["differing"]]
    assert _covers(ranges, *CORRUPT), ranges
    written_end = DATA_START + (max(seen["acked"]) + 64) * RECORD
    for s, n in ranges:
        if not _covers([(s, n)], *CORRUPT):
            assert s + n <= written_end + BS, "out-of-sync range %d+%d outside the guest's writes" % (s, n)
    assert took >= 0.8 * SIZE / RATE, "the rate limit did not hold: %.2f s for %d bytes at %d B/s" % (
        took, SIZE, RATE)
    assert seen["states"] == {"running"}, seen["states"]
    assert seen["acked"][-1] > seen["acked"][0] + 50, "the guest stopped acknowledging during the verify"
    assert any(e.get("event") == "progress" for e in lines)

    # quiesced: exactly the corruption, nothing else
    A.toolstack.pause(name)
    c = A.toolstack.sim_info(name)["remus"]["commits"]
    _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= c + 1, 10, "a last checkpoint")
    rc, lines, err, _ = _verify(cluster, image)
    res = lines[-1]
    # differing 64 KiB blocks are refined: the report names the corrupted 4 KiB blocks
    assert rc == 1 and [tuple(r) for r in res["differing"]] == [CORRUPT], (res, err)
    A.toolstack.destroy(name)
