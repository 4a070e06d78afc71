"""``xen-remus protect DOMAIN HOST`` in the simulator (CLI, sim toolstack).

A domain runs unprotected on A; B has no copy of its disk.  protect creates
B's copy (sparse), seeds it live, sends the last delta with the domain
paused, starts Remus and unpauses.  Then every acknowledged write is on
both copies, both carry one generation, a failover to B loses nothing; and
protect refuses a backup copy that holds writes of its own (or has no
generation record) unless --discard-peer names it the loser.

Stands in for: two Xen hosts with xend, blktap2 and Remus (docs/xen-facts.md
sections 4 and 5); the disk data crosses TCP through the resync engine.
"""
from __future__ import absolute_import, division, print_function

import json
import os

from tests.scenario.failback_world import _shared_state, _wait, cluster  # noqa: F401
from xen_remus_ext.cli import main as cli
from xen_remus_ext.failback import journal, machine
from xen_remus_ext.resync import meta

SIZE = 16 << 20


def xen_remus(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def running_unprotected(cluster, name, paused=False):  # noqa: F811
    A, B = cluster["A"], cluster["B"]
    if not A.alive() or A.frozen:
        A.start()
    if not B.alive() or B.frozen:
        B.start()
    image = "/var/lib/xen/images/%s.img" % name
    A.toolstack.disk_create(image, SIZE)
    uname = "tap2:remus:%s:%d|aio:%s" % (B.addr, B.cfg["remus_port"], image)
    A.toolstack.create({"name": name, "memory": 32,
                        "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                        "workload": {"rate": 300, "batch": 1, "seed": 77,
                                     "observer": cluster.observer.path}}, paused=paused)
    return A, B, image


def common(A, B):
    return ["--toolstack", "sim", "--agent", A.cfg["agent"], "--peer-agent", B.cfg["agent"], "-i", "50"]


def protect(capsys, name, A, B, *extra):
    rc, out, err = xen_remus(capsys, "protect", name, "B", "--json", *(common(A, B) + list(extra)))
    if rc != 0 and "--dry-run" not in extra:
        res = last_json(out)
        if res.get("result") == "error" and res.get("state") not in (None, machine.NEW) \
                and "refus" not in res.get("error", ""):
            # an oversubscribed machine can time a sim step out: the journal
            # keeps where it stopped and the same command continues
            rc, out, err = xen_remus(capsys, "protect", name, "B", "--json", *(common(A, B) + list(extra)))
    return rc, out, err


def test_protect_seeds_a_missing_copy_and_starts_remus(cluster, capsys):  # noqa: F811
    name = "prot1"
    A, B, image = running_unprotected(cluster, name)
    _wait(lambda: cluster.observer.acked(name) > 20, 5.0, "writes before protection")
    bpath = B.toolstack.disk_path(image)
    assert not os.path.exists(bpath)

    rc, out, err = xen_remus(capsys, "protect", name, "B", "--dry-run", "--json", *common(A, B))
    assert rc == 0, err
    plan = last_json(out)
    assert plan["mode"] == "protect" and plan["state"] == machine.NEW
    assert [d["relation"] for d in plan["disks"]] == ["absent"]
    assert any(line.split()[1] == "seed" for line in plan["plan"])
    assert not os.path.exists(bpath), "a dry run created the copy"

    rc, out, err = protect(capsys, name, A, B)
    assert rc == 0, err
    res = last_json(out)
    assert (res["result"], res["mode"], res["state"]) == ("ok", "protect", machine.DONE), res
    assert A.toolstack.remus_running(name)
    info = A.toolstack.sim_info(name)
    assert info["sim_state"] == "running"
    # B's copy exists, was created sparse (8 MiB of holes are never written)
    st = os.stat(bpath)
    assert st.st_size == SIZE and st.st_blocks * 512 < SIZE // 2
    # both sides carry one generation, consistent; B's is the backup
    ma, mb = meta.load(A.disk_path(image)), meta.load(bpath)
    assert ma.current == mb.current and ma.consistent and mb.consistent and mb.role == "backup"
    assert journal.load(name)["mode"] == "protect"

    # checkpoints flow, and after them every acknowledged write is on B
    first = info["remus"]["commits"]
    _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= first + 3, 5.0, "checkpoints")
    A.toolstack.pause(name)
    c = A.toolstack.sim_info(name)["remus"]["commits"]
    _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= c + 1, 5.0, "a last checkpoint")
    acked = cluster.observer.acked(name)
    assert acked > 20
    assert B.toolstack.disk_check(image, 77, acked)["missing"] == 0
    assert A.toolstack.disk_digest(image) == B.toolstack.disk_digest(image)
    A.toolstack.unpause(name)

    # a rerun changes nothing
    rc, out, err = xen_remus(capsys, "protect", name, "B", "--json", *common(A, B))
    assert rc == 0 and last_json(out)["state"] == machine.DONE
    rc, out, err = xen_remus(capsys, "status", name, "--json", "--toolstack", "sim", "--agent", A.cfg["agent"])
    row = last_json(out)["domains"][0]
    assert row["protected"] is True and row["failback"]["mode"] == "protect"
    A.toolstack.destroy(name)


def test_protect_refuses_a_copy_without_record_unless_discarded(cluster, capsys):  # noqa: F811
    name = "prot2"
    A, B, image = running_unprotected(cluster, name, paused=True)
    B.toolstack.disk_create(image, SIZE)
    bpath = B.toolstack.disk_path(image)
    with open(bpath, "r+b") as f:
        f.seek(4096)
        f.write(b"B's own data" * 100)
    before = open(bpath, "rb").read()
    rc, out, err = protect(capsys, name, A, B)
    assert rc == 1
    res = last_json(out)
    assert res["result"] == "error" and "--discard-peer" in res["error"] and "no generation record" in \
        res["error"].replace("with none", "no generation record")
    assert open(bpath, "rb").read() == before and meta.load(bpath) is None
    assert not A.toolstack.remus_running(name)
    # named the loser: overwritten, protected; the domain paused before stays paused
    rc, out, err = protect(capsys, name, A, B, "--discard-peer")
    assert rc == 0, err
    assert A.toolstack.remus_running(name)
    assert A.toolstack.sim_info(name)["sim_state"] == "paused"
    assert A.toolstack.disk_digest(image) == B.toolstack.disk_digest(image)
    A.toolstack.destroy(name)


def test_protect_refuses_a_copy_with_writes_of_its_own(cluster, capsys):  # noqa: F811
    name = "prot3"
    A, B, image = running_unprotected(cluster, name, paused=True)
    B.toolstack.disk_create(image, SIZE)
    apath, bpath = A.disk_path(image), B.toolstack.disk_path(image)
    m = meta.ensure(apath, SIZE, role="primary")
    meta.mark_synced(bpath, m, role="backup")
    meta.rotate(bpath, role="primary")      # B's copy ran on its own since
    meta.rotate(apath, role="primary")      # and so did A's: split brain
    gens = (meta.load(apath), meta.load(bpath))
    rc, out, err = protect(capsys, name, A, B)
    assert rc == 1
    assert "split-brain" in last_json(out)["error"]
    assert (meta.load(apath), meta.load(bpath)) == gens
    assert not A.toolstack.remus_running(name)
    A.toolstack.destroy(name)
