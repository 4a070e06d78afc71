"""The agent's actions against two simulated hosts (no Pacemaker needed).

A protected pair A -> B; the backup holds its copy paused when the stream
breaks; promote resumes it from the last committed checkpoint and rotates
its generation; monitor's codes on each side; a probe never takes the
backup's paused copy for a primary.
"""
from __future__ import absolute_import, division, print_function

import os
import time

import pytest

from tests.pacemaker.simpair import DOMAIN, IMAGE, SimPair
from xen_remus_ext.pacemaker import decide
from xen_remus_ext.pacemaker.agent import Agent
from xen_remus_ext.resync import meta


@pytest.fixture
def pair(tmp_path):
    p = SimPair(str(tmp_path))
    try:
        yield p
    finally:
        p.close()


def wait(pred, timeout, what):
    """Poll ``pred`` until true; the bounds are generous (a loaded machine),
    a wait ends as soon as the state is reached."""
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


class Recorder(Agent):
    """The agent, with the promotion scores it sets kept for the test."""

    scores = None
    attributes = None

    def set_score(self, score, node=None):
        Recorder.scores.append((node or self.node(), score))
        return True

    def set_attribute(self, name, value):
        Recorder.attributes.append((self.node(), name, value))
        return True


def agent(pair, node, **meta):
    return Recorder(pair.env(node, **meta))


def protect(pair):
    A, B = pair.A, pair.B
    B.toolstack.disk_create(IMAGE, 1 << 20)
    m = meta.ensure(A.disk_path(IMAGE), 1 << 20, role="primary")
    meta.mark_synced(B.disk_path(IMAGE), m, role="backup")
    A.toolstack.create(pair.config, paused=True)
    A.toolstack.remus_start(DOMAIN, "B", interval_ms=50)
    A.toolstack.unpause(DOMAIN)
    wait(lambda: (B.toolstack.remus_backup(DOMAIN) or {}).get("checkpoints", 0) >= 3, 30, "checkpoints on B")


@pytest.fixture(autouse=True)
def _scores():
    Recorder.scores = []
    Recorder.attributes = []


def test_monitor_codes_and_scores_of_a_protected_pair(pair):
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS     # holds B's copy on a broken stream
    protect(pair)
    Recorder.scores = []
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_RUNNING_PROMOTED
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert Recorder.scores == [("A", decide.SCORE_PRIMARY), ("B", decide.SCORE_BACKUP)]
    # a probe (no local state on A) of the backup's paused copy: not a primary
    os.unlink(agent(pair, "B")._state_path("state"))
    assert agent(pair, "B", interval="0").a_monitor() == decide.OCF_SUCCESS
    pair.A.toolstack.remus_stop(DOMAIN)
    assert agent(pair, "A").a_monitor() == decide.OCF_DEGRADED_PROMOTED


def test_held_backup_waits_for_promote_then_resumes_with_no_acknowledged_write_lost(pair):
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    protect(pair)
    B = pair.B
    gen_before = meta.load(B.disk_path(IMAGE)).current
    time.sleep(0.3)
    acked = pair.cluster.observer.acked(DOMAIN)
    pair.A.kill(power_off=True)
    wait(lambda: (B.toolstack.remus_backup(DOMAIN) or {}).get("state") == "broken", 30, "stream break on B")
    digest = B.toolstack.disk_digest(IMAGE)
    time.sleep(1.5)
    # still paused, still a backup copy, not one byte written: no second primary
    assert B.toolstack.remus_backup(DOMAIN)["state"] == "broken"
    assert B.toolstack.sim_info(DOMAIN)["sim_state"] == "incoming"
    assert B.toolstack.disk_digest(IMAGE) == digest
    assert meta.load(B.disk_path(IMAGE)).current == gen_before
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert Recorder.scores[-1] == ("B", decide.SCORE_BACKUP)

    assert agent(pair, "B").a_promote() == decide.OCF_SUCCESS
    info = B.toolstack.sim_info(DOMAIN)
    assert info["sim_state"] == "running" and info["backup"] is None
    m = meta.load(B.disk_path(IMAGE))
    assert m.current != gen_before and m.bitmap == gen_before
    wait(lambda: pair.cluster.observer.acked(DOMAIN) > acked, 30, "output from B")
    B.toolstack.pause(DOMAIN)
    res = B.toolstack.disk_check(IMAGE, pair.config["workload"]["seed"], pair.cluster.observer.acked(DOMAIN))
    assert res["missing"] == 0 and res["checked"] > 0
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_DEGRADED_PROMOTED
    # promoting again is a verified no-op
    assert agent(pair, "B").a_promote() == decide.OCF_SUCCESS


def test_backup_without_the_hold_resumes_by_itself(pair):
    protect(pair)
    pair.A.kill(power_off=True)
    wait(lambda: pair.B.toolstack.sim_info(DOMAIN)["sim_state"] == "running", 30, "B resuming on its own")


def test_a_stream_started_with_hold_is_held_without_the_backups_start(pair):
    """The primary asks per stream (``remus_start(hold=True)``, what the
    agent's re-protect and ``protect --hold-backup`` do): B holds its copy
    although no agent start set B's own policy."""
    A, B = pair.A, pair.B
    B.toolstack.disk_create(IMAGE, 1 << 20)
    m = meta.ensure(A.disk_path(IMAGE), 1 << 20, role="primary")
    meta.mark_synced(B.disk_path(IMAGE), m, role="backup")
    A.toolstack.create(pair.config, paused=True)
    A.toolstack.remus_start(DOMAIN, "B", interval_ms=50, hold=True)
    A.toolstack.unpause(DOMAIN)
    wait(lambda: (B.toolstack.remus_backup(DOMAIN) or {}).get("checkpoints", 0) >= 3, 30, "checkpoints on B")
    A.kill(power_off=True)
    wait(lambda: (B.toolstack.remus_backup(DOMAIN) or {}).get("state") == "broken", 30, "stream break on B")
    digest = B.toolstack.disk_digest(IMAGE)
    time.sleep(1.5)
    assert B.toolstack.sim_info(DOMAIN)["sim_state"] == "incoming"
    assert B.toolstack.disk_digest(IMAGE) == digest
    B.toolstack.remus_takeover(DOMAIN)
    assert B.toolstack.sim_info(DOMAIN)["sim_state"] == "running"


def test_the_agents_protection_asks_the_backup_to_hold(pair):
    assert agent(pair, "A").options()["hold_backup"] is True


def test_promote_refuses_while_the_primary_still_streams(pair):
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    protect(pair)
    t0 = time.time()
    assert agent(pair, "B", timeout="6000").a_promote() == decide.OCF_ERR_GENERIC
    assert time.time() - t0 >= 3.0
    assert pair.B.toolstack.remus_backup(DOMAIN)["state"] == "receiving"


def test_stop_keeps_a_broken_copy_and_a_later_promote_resumes_it(pair):
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    protect(pair)
    pair.A.kill(power_off=True)
    wait(lambda: (pair.B.toolstack.remus_backup(DOMAIN) or {}).get("state") == "broken", 30, "stream break")
    assert agent(pair, "B").a_demote() == decide.OCF_SUCCESS
    assert agent(pair, "B").a_stop() == decide.OCF_SUCCESS
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_NOT_RUNNING
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    assert agent(pair, "B").a_promote() == decide.OCF_SUCCESS
    assert pair.B.toolstack.sim_info(DOMAIN)["sim_state"] == "running"


def test_stop_tears_down_a_receiving_backup(pair):
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    protect(pair)
    assert agent(pair, "B").a_stop() == decide.OCF_SUCCESS
    assert [d.name for d in pair.B.toolstack.list_domains() if d.domid] == []
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_NOT_RUNNING


def test_stop_never_fails_for_configuration_reasons(pair):
    env = pair.env("A")
    del env["OCF_RESKEY_domain"]
    assert Recorder(env).a_stop() == decide.OCF_SUCCESS
    assert Recorder(env).a_monitor() == decide.OCF_ERR_CONFIGURED


def test_validate_all_checks_params_clone_and_config(pair):
    assert agent(pair, "A").a_validate_all() == decide.OCF_SUCCESS
    assert agent(pair, "A", clone_max="2", promoted_max="1", notify="true").a_validate_all() == 0
    assert agent(pair, "A", clone_max="2", promoted_max="1", notify="false").a_validate_all() \
        == decide.OCF_ERR_CONFIGURED
    env = pair.env("A")
    env["OCF_RESKEY_config"] = env["OCF_RESKEY_config"] + ".missing.json"
    assert Recorder(env).a_validate_all() == decide.OCF_ERR_INSTALLED


def test_demote_toward_the_promoted_node_is_a_failback(pair):
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    assert agent(pair, "A").a_start() == decide.OCF_SUCCESS
    protect(pair)
    time.sleep(0.3)
    a = agent(pair, "A", notify_type="pre", notify_operation="demote", notify_demote_uname="A",
              notify_promote_uname="B")
    assert a.a_notify() == decide.OCF_SUCCESS
    assert agent(pair, "A").a_demote() == decide.OCF_SUCCESS
    # the guest runs on B now, protected toward A, whose copy is the backup
    wait(lambda: pair.B.toolstack.remus_running(DOMAIN), 30, "Remus B -> A")
    assert agent(pair, "B").a_promote() == decide.OCF_SUCCESS
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_RUNNING_PROMOTED
    wait(lambda: agent(pair, "A", interval="10000").a_monitor() == decide.OCF_SUCCESS and
         Recorder.scores[-1] == ("A", decide.SCORE_BACKUP), 30, "A as the scored backup")
    acked = pair.cluster.observer.acked(DOMAIN)
    pair.B.toolstack.pause(DOMAIN)
    res = pair.B.toolstack.disk_check(IMAGE, pair.config["workload"]["seed"], acked)
    assert res["missing"] == 0 and res["checked"] > 0


def test_demote_toward_a_node_holding_a_stale_copy_discards_it_and_fails_back(pair):
    """xl's Remus has no stop record: stopped on the primary, its stream just
    ends, and a backup that holds keeps its copy paused.  A demote toward
    that node must discard that stale copy (not resume it) and fail back."""
    from xen_remus_ext.failback import journal
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    assert agent(pair, "A").a_start() == decide.OCF_SUCCESS
    protect(pair)
    pair.A.toolstack.remus_stop(DOMAIN, tell_backup=False)
    wait(lambda: (pair.B.toolstack.remus_backup(DOMAIN) or {}).get("state") == "broken", 30, "B holding its copy")
    held_domid = [d.domid for d in pair.B.toolstack.list_domains() if d.name == DOMAIN][0]
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_DEGRADED_PROMOTED
    assert agent(pair, "A", notify_type="pre", notify_operation="demote", notify_demote_uname="A",
                 notify_promote_uname="B").a_notify() == decide.OCF_SUCCESS
    assert agent(pair, "A").a_demote() == decide.OCF_SUCCESS
    rec = journal.load(DOMAIN)
    assert any(h[1] == "discarded" and h[3] == "B" for h in rec["history"]), rec["history"]
    assert [c["ok"] for c in rec["checks"] if c["name"] == "stale-backup"] == [True]
    # the guest runs on B as a new domain (the held copy was destroyed, not resumed), protected toward A
    info = pair.B.toolstack.sim_info(DOMAIN)
    assert info["sim_state"] == "running" and info["backup"] is None and info["domid"] != held_domid
    wait(lambda: pair.B.toolstack.remus_running(DOMAIN), 30, "Remus B -> A")
    acked = pair.cluster.observer.acked(DOMAIN)
    pair.B.toolstack.pause(DOMAIN)
    res = pair.B.toolstack.disk_check(IMAGE, pair.config["workload"]["seed"], acked)
    assert res["missing"] == 0 and res["checked"] > 0


def test_demote_toward_a_node_holding_a_diverged_copy_is_refused_and_keeps_it(pair):
    from xen_remus_ext.errors import FailbackError
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    protect(pair)
    pair.A.toolstack.remus_stop(DOMAIN, tell_backup=False)
    wait(lambda: (pair.B.toolstack.remus_backup(DOMAIN) or {}).get("state") == "broken", 30, "B holding its copy")
    meta.rotate(pair.A.disk_path(IMAGE))
    meta.rotate(pair.B.disk_path(IMAGE))        # both took writes of their own: split brain
    a = agent(pair, "A", notify_promote_uname="B")
    with pytest.raises(FailbackError) as exc:
        a.a_demote()
    msg = str(exc.value)
    assert "held Remus backup copy %s" % DOMAIN in msg and "on B" in msg and "not discarding it" in msg, msg
    b = pair.B.toolstack.remus_backup(DOMAIN)
    assert b is not None and b["state"] == "broken"
    assert pair.A.toolstack.sim_info(DOMAIN)["sim_state"] == "running"


def test_peer_started_notify_resyncs_and_reprotects_detached(pair):
    # the guest runs on A unprotected (an operator's forced promote boots it)
    assert agent(pair, "A").a_start() == decide.OCF_SUCCESS
    assert agent(pair, "A").a_promote() == decide.OCF_SUCCESS
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_DEGRADED_PROMOTED
    assert agent(pair, "B").a_start() == decide.OCF_SUCCESS
    n = agent(pair, "A", notify_type="post", notify_operation="start", notify_start_uname="B")
    t0 = time.time()
    assert n.a_notify() == decide.OCF_SUCCESS
    assert time.time() - t0 < 2.0          # detached: notify does not wait for the resync
    wait(lambda: pair.A.toolstack.remus_running(DOMAIN), 30, "Remus A -> B")
    wait(lambda: agent(pair, "A").worker_pid() is None, 30, "the re-protect worker to end")
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_RUNNING_PROMOTED
    wait(lambda: (pair.B.toolstack.remus_backup(DOMAIN) or {}).get("checkpoints", 0) >= 2, 30, "checkpoints")
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert Recorder.scores[-1] == ("B", decide.SCORE_BACKUP)
    log = open(agent(pair, "A")._state_path("worker.log")).read()
    assert "re-protect toward B" in log, log


def test_start_where_the_guest_already_runs_succeeds_and_keeps_it(pair):
    pair.A.toolstack.create(pair.config)
    assert agent(pair, "A").a_start() == decide.OCF_SUCCESS
    assert pair.A.toolstack.sim_info(DOMAIN)["sim_state"] == "running"
    assert Recorder.scores[-1] == ("A", decide.SCORE_PRIMARY)
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_DEGRADED_PROMOTED


def test_post_stop_notify_deletes_the_fenced_peers_score_and_forgets_it(pair):
    a = agent(pair, "A")
    a.save_state(state=decide.STARTED, reprotect_peer="B")
    n = agent(pair, "A", notify_type="post", notify_operation="stop", notify_stop_uname="B")
    assert n.a_notify() == decide.OCF_SUCCESS
    assert Recorder.scores == [("B", None)]
    assert "reprotect_peer" not in agent(pair, "A").load_state()


def test_demote_without_a_target_shuts_the_guest_down_and_drops_the_score(pair):
    pair.A.toolstack.create(pair.config)
    assert agent(pair, "A").a_start() == decide.OCF_SUCCESS
    assert agent(pair, "A", timeout="3000").a_demote() == decide.OCF_SUCCESS
    assert [d.name for d in pair.A.toolstack.list_domains() if d.domid] == []
    assert Recorder.scores[-1] == ("A", None)
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_SUCCESS   # started, nothing here


def cold_pair(pair):
    """Both hosts hold a copy, the guest runs nowhere: A's copy took writes
    after B's stopped following (A's generation rotated), as after a
    failover to A and a power loss of both."""
    pair.B.toolstack.disk_create(IMAGE, 1 << 20)
    m = meta.ensure(pair.A.disk_path(IMAGE), 1 << 20, role="primary")
    meta.mark_synced(pair.B.disk_path(IMAGE), m, role="backup")
    meta.rotate(pair.A.disk_path(IMAGE))
    for node in ("A", "B"):
        assert agent(pair, node).a_start() == decide.OCF_SUCCESS


def test_cold_start_scores_only_the_newest_copy_and_promote_boots_it(pair):
    cold_pair(pair)
    Recorder.scores = []
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert Recorder.scores == [("A", decide.SCORE_COLD), ("B", None)]
    # an operator forcing B is refused: its copy is older than A's
    assert agent(pair, "B").a_promote() == decide.OCF_ERR_GENERIC
    assert [d.name for d in pair.B.toolstack.list_domains() if d.domid] == []
    assert agent(pair, "A").a_promote() == decide.OCF_SUCCESS
    wait(lambda: pair.A.toolstack.sim_info(DOMAIN)["next"] > 5, 30, "the guest writing on A")
    # now B sees the guest on its peer: still no score, whatever the copies say
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert Recorder.scores[-1] == ("B", None)
    # post-promote beside the unpromoted B: protect toward it, detached
    n = agent(pair, "A", notify_type="post", notify_operation="promote", notify_promote_uname="A",
              notify_unpromoted_uname="B", notify_active_uname="A B")
    assert n.a_notify() == decide.OCF_SUCCESS
    wait(lambda: pair.A.toolstack.remus_running(DOMAIN), 30, "Remus A -> B")


def test_cold_start_with_diverged_copies_promotes_nobody(pair):
    cold_pair(pair)
    meta.rotate(pair.B.disk_path(IMAGE))         # B took writes of its own too: split brain
    Recorder.scores = []
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert Recorder.scores == [("A", None), ("B", None)]
    # both nodes show the verdict as a node attribute, once
    attr = decide.cold_attribute(DOMAIN)
    assert [(n, a) for n, a, _v in Recorder.attributes] == [("A", attr), ("B", attr)]
    assert all(v.startswith("SPLIT BRAIN: disk xvda") for _n, _a, v in Recorder.attributes)
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert len(Recorder.attributes) == 2            # unchanged: not set again
    assert agent(pair, "A").a_promote() == decide.OCF_ERR_GENERIC
    assert "SPLIT BRAIN" in agent(pair, "A").load_state()["cold_reason"]
    # the operator names B the loser: A gets the score, B is resynced from it later
    meta.invalidate(pair.B.disk_path(IMAGE))
    assert agent(pair, "A", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert Recorder.scores[-1] == ("A", decide.SCORE_COLD)
    assert agent(pair, "B", interval="10000").a_monitor() == decide.OCF_SUCCESS
    assert Recorder.scores[-1] == ("B", None)       # inconsistent now: A's copy is the one
    assert Recorder.attributes[2:] == [("A", attr, None), ("B", attr, None)]   # cleared on both


def test_cold_start_monitor_gives_up_early_on_an_unreachable_peer(tmp_path, monkeypatch):
    """On real hosts the peer is asked over ssh; a powered-off peer must
    not hang the monitor, nor must ssh ask for a password."""
    from xen_remus_ext import wiring
    image = tmp_path / "vm1.img"
    image.write_bytes(b"\0" * 65536)
    cfg = tmp_path / "vm1.cfg"
    cfg.write_text(u"name = 'vm1'\nmemory = 256\ndisk = ['tap2:remus:xen2:9000|aio:%s,xvda,w']\n" % image)
    seen = []

    class Runner(object):
        def run(self, argv, input=None, timeout=None, env=None):
            seen.append(list(argv))
            return 255, b"", b"ssh: connect to host xen2 port 22: Connection timed out\n"
    monkeypatch.setattr(wiring, "SubprocessRunner", Runner)
    env = {"OCF_RESKEY_domain": "vm1", "OCF_RESKEY_toolstack": "xl", "OCF_RESKEY_config": str(cfg),
           "OCF_RESKEY_hosts": "xen1=xen1 xen2=xen2", "OCF_RESKEY_CRM_meta_on_node": "xen1",
           "HA_RSCTMP": str(tmp_path / "rsctmp"), "XEN_REMUS_STATE_DIR": str(tmp_path / "state")}
    v = Agent(env).cold_verdict()
    assert v.score is decide.DELETE and not v.blocking
    assert "could not be asked" in v.reason and "Connection timed out" in v.reason
    assert seen and all("ConnectTimeout=5" in a and "BatchMode=yes" in a for a in seen), seen
