"""``xen-remus failback DOMAIN HOST --reverse-only`` in the simulator.

Protect A -> B, power A off, B takes over and keeps working, A comes back
with a stale copy; then ``--reverse-only`` run on B (the CLI, sim toolstack)
resyncs A's copy, re-points the domain's remus disks from B to A while it is
paused (``retarget_disks``) and protects B -> A; the domain never leaves B.
Every acknowledged write must be on both copies, the copies identical once
quiesced, and a second failover (B powered off) must resume the domain on A
with every acknowledged write present.

Runs twice when namespaces are available: each host in its own namespace
(192.0.2.x, the same ports), and without them (every host on 127.0.0.1, each
on its own ports: a uname naming 127.0.0.1 names a host only by its port).

Stands in for: two Xen hosts with xend, blktap2 and Remus (docs/xen-facts.md
sections 4, 5 and 7); the disk data crosses TCP through the resync engine.
"""
from __future__ import absolute_import, division, print_function

import json

import pytest

from tests.scenario.failback_world import _shared_state, _wait, failed_over, shared_state_cluster  # noqa: F401
from xen_remus_ext.cli import main as cli
from xen_remus_ext.failback import machine
from xen_remus_ext.sim.cluster import netns_available

NETNS = [False] + ([True] if netns_available() else [])


@pytest.fixture(scope="module", params=NETNS, ids=lambda n: "netns" if n else "loopback")
def cluster(request, tmp_path_factory):
    with shared_state_cluster(str(tmp_path_factory.mktemp("revsim")), netns=request.param) as cl:
        yield cl


def xen_remus(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def commits(host, name):
    return (host.toolstack.sim_info(name)["remus"] or {}).get("commits", 0)


def test_reverse_only_protects_toward_the_old_primary(cluster, capsys):  # noqa: F811
    name = "rev1"
    A, B, image = failed_over(cluster, name, 16 << 20, rate=300)
    uname_before = B.toolstack.domain_config(name).disks[0].uname
    assert uname_before.startswith("tap2:remus:%s:%d|" % (B.addr, B.cfg["remus_port"]))
    common = ["--reverse-only", "--json", "--toolstack", "sim", "--agent", B.cfg["agent"],
              "--peer-agent", A.cfg["agent"], "-i", "50"]

    before = cluster.observer.acked(name)
    rc, out, err = xen_remus(capsys, "failback", name, "A", *common)
    if rc != 0:
        # an oversubscribed machine can time a sim step out; the journal keeps
        # where it stopped and the same command continues from there
        res = json.loads(out.strip().splitlines()[-1])
        assert res["result"] == "error" and res["state"] != machine.DONE, res
        rc, out, err = xen_remus(capsys, "failback", name, "A", *common)
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert (res["result"], res["mode"], res["state"]) == ("ok", machine.REVERSE, machine.DONE), res
    assert res["reverse"] == ["xvda"]

    # the domain never left B; B protects it toward A; A holds the backup copy
    assert B.toolstack.sim_info(name)["sim_state"] == "running"
    assert B.toolstack.remus_running(name)
    assert A.toolstack.sim_info(name)["sim_state"] == "incoming"
    migrations = [e for h in (A, B) for e in h.toolstack.events() if e["kind"].startswith("migrate")]
    assert migrations == []
    retargets = [e["details"] for e in B.toolstack.events() if e["kind"] == "retarget"]
    uname_after = B.toolstack.domain_config(name).disks[0].uname
    assert retargets == [[name, "xvda", uname_before, uname_after]]
    assert uname_after == "tap2:remus:A:%d|aio:%s" % (B.cfg["remus_port"], image)
    # what xend would report as the uname (docs/xen-facts.md section 7), in B's xenstored
    from xen_remus_ext.toolstack.xenstore import PyxsXenStore
    xs = PyxsXenStore(B.cfg["xenstored"])
    try:
        key = "/local/domain/0/backend/vbd/%d/51712/tapdisk-params" % B.toolstack.sim_info(name)["domid"]
        assert xs.read(key) == uname_after.split(":", 1)[1]
    finally:
        xs.close()
    starts = [e["details"] for e in B.toolstack.events() if e["kind"] == "remus-start"]
    # the data goes to A's block-remus listener, not to whatever else listens on A's address
    assert starts[-1][1] == "%s:%d" % (A.addr, A.cfg["remus_port"])

    # a rerun after success is a no-op: no second pause, no second re-point
    def effects():
        return [e for e in B.toolstack.events() if e["kind"] in ("retarget", "remus-start", "remus-stop")]
    seen = effects()
    rc, out, err = xen_remus(capsys, "failback", name, "A", *common)
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["state"] == machine.DONE, err
    assert effects() == seen

    # B keeps working under protection; quiesced, both copies hold every
    # acknowledged write and are identical
    _wait(lambda: cluster.observer.acked(name) > before, 5.0, "output from B")
    first = commits(B, name)
    _wait(lambda: commits(B, name) >= first + 3, 5.0, "checkpoints")
    B.toolstack.pause(name)
    c = commits(B, name)
    _wait(lambda: commits(B, name) >= c + 1, 5.0, "a last checkpoint")
    acked = cluster.observer.acked(name)
    assert acked > before
    res_a = A.toolstack.disk_check(image, 77, acked)
    res_b = B.toolstack.disk_check(image, 77, acked)
    assert res_a["missing"] == 0 and res_b["missing"] == 0, (res_a, res_b)
    assert A.toolstack.disk_digest(image) == B.toolstack.disk_digest(image)

    # a second failover: B dies under load, A resumes with every acknowledged write
    B.toolstack.unpause(name)
    _wait(lambda: cluster.observer.acked(name) > acked + 20, 5.0, "more output from B")
    B.kill(power_off=True)
    at_death = cluster.observer.acked(name)
    _wait(lambda: A.toolstack.sim_info(name)["sim_state"] == "running", 5.0, "failover on A")
    _wait(lambda: cluster.observer.acked(name) > at_death, 5.0, "output from A")
    A.toolstack.pause(name)
    final = cluster.observer.acked(name)
    res = A.toolstack.disk_check(image, 77, final)
    assert res["missing"] == 0, res
    assert final > at_death >= acked
    A.toolstack.destroy(name)


def test_retarget_refuses_a_running_domain_and_a_foreign_target(cluster):  # noqa: F811
    from xen_remus_ext.errors import ToolstackError
    from xen_remus_ext.failback import preflight
    name = "rev2"
    B = cluster["B"]
    if not B.alive() or B.frozen:
        B.start()
    A = cluster["A"]
    if not A.alive() or A.frozen:
        A.start()
    image = "/var/lib/xen/images/%s.img" % name
    B.toolstack.disk_create(image, 1 << 20)
    uname = "tap2:remus:%s:%d|aio:%s" % (B.addr, B.cfg["remus_port"], image)   # names B itself
    B.toolstack.create({"name": name, "memory": 16, "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                        "workload": {"rate": 0, "seed": 5}})
    config = B.toolstack.domain_config(name)
    to_a, changed = preflight.plan_direction(config, "A")
    assert changed == ["xvda"]
    with pytest.raises(ToolstackError) as err:
        B.toolstack.retarget_disks(name, to_a)
    assert "expected it paused to re-point its remus disks, got it running" in str(err.value)
    B.toolstack.pause(name)
    # a uname naming this host's own block-remus listener is refused by remus_start
    with pytest.raises(ToolstackError) as err:
        B.toolstack.remus_start(name, "A", interval_ms=50)
    assert "itself" in str(err.value)
    other = to_a._replace(disks=(to_a.disks[0]._replace(uname=uname.replace(image, "/other.img")),))
    with pytest.raises(ToolstackError) as err:
        B.toolstack.retarget_disks(name, other)
    assert "expected the image %s to stay" % image in str(err.value)
    assert B.toolstack.retarget_disks(name, to_a) == ["xvda"]
    assert B.toolstack.retarget_disks(name, to_a) == []          # idempotent
    assert B.toolstack.domain_config(name).disks[0].uname == to_a.disks[0].uname
    B.toolstack.destroy(name)
