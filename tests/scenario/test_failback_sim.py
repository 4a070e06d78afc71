"""``xen-remus failback`` in the simulator: home, protected again, nothing lost.

Two simulated hosts (separate processes, in network namespaces when root):
protect A -> B, power A off, B fails over, A comes back with a stale copy,
then the failback command, run "on B" through the sim toolstacks, brings the
domain home and restarts Remus A -> B.  Every acknowledged write must be on
both copies, both copies must end identical, and the failback's downtime
(the longest silence of the guest's acknowledgements, what the outside world
sees) is measured for a 1 GiB disk under a 10 MB/s write load.

Stands in for: two Xen hosts with xl (``migrate -p``, ``unpause``) and Remus;
the simulator follows docs/xen-facts.md sections 4 and 5.  The disk data crosses
TCP between the hosts through the resync engine.
"""
from __future__ import absolute_import, division, print_function

import json

from tests.scenario.failback_world import _shared_state, _wait, cluster, failed_over, judge  # noqa: F401,F811
from xen_remus_ext.cli import main as cli
from xen_remus_ext.failback import machine

def xen_remus(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_failback_brings_it_home_and_protects_again(cluster, capsys):  # noqa: F811
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
    if rc != 0:
        # an oversubscribed machine can time a sim step out (Remus' checkpoint
        # 0 has block-remus' 1 s heartbeat); the journal keeps where it
        # stopped and the same command continues from there
        res = json.loads(out.strip().splitlines()[-1])
        assert res["result"] == "error" and res["state"] != machine.DONE, res
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


def test_split_brain_is_refused(cluster, capsys):  # noqa: F811
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
