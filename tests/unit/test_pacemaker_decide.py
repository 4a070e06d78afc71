"""The OCF agent's decisions: status row -> exit code and promotion score."""
from __future__ import absolute_import, division, print_function

import pytest

from xen_remus_ext.pacemaker import decide as d


def primary(**kw):
    row = {"name": "vm1", "domid": 3, "state": "running", "here": True, "protected": True,
           "failback": None, "backup": None, "crashed": False,
           "disks": [{"vdev": "xvda", "generation": "00" * 8, "consistent": True, "bitmap": None}]}
    row.update(kw)
    return row


def backup(state="receiving", checkpoints=12, **kw):
    return primary(state="paused", protected=False, backup={"state": state, "checkpoints": checkpoints}, **kw)


def test_protected_primary_is_promoted_with_the_high_score():
    assert d.monitor(primary(), d.STARTED)[:2] == (d.OCF_RUNNING_PROMOTED, d.SCORE_PRIMARY)


@pytest.mark.parametrize("row", [
    primary(protected=False),
    primary(failback={"mode": "reverse", "host": "B", "state": "precopied"}),
])
def test_unprotected_or_resyncing_primary_is_degraded_promoted_not_failed(row):
    dec = d.monitor(row, d.STARTED)
    assert dec.code == d.OCF_DEGRADED_PROMOTED == 191
    assert dec.score == d.SCORE_PRIMARY


@pytest.mark.parametrize("state", ["done", "aborted", "refused"])
def test_a_finished_journal_does_not_degrade_the_primary(state):
    row = primary(failback={"mode": "reverse", "host": "B", "state": state})
    assert d.monitor(row, d.STARTED).code == d.OCF_RUNNING_PROMOTED


def test_the_agent_knows_every_terminal_journal_state():
    from xen_remus_ext.failback import machine
    assert set(d.TERMINAL_JOURNAL) == set(machine.TERMINAL)


def test_reprotect_in_progress_is_degraded():
    assert d.monitor(primary(protected=False), d.STARTED, reprotecting=True).code == 191


def test_crashed_guest_is_failed_promoted():
    assert d.monitor(primary(crashed=True), d.STARTED)[:2] == (d.OCF_FAILED_PROMOTED, d.DELETE)


def test_backup_with_checkpoints_and_consistent_copy_gets_the_lower_score():
    dec = d.monitor(backup(), d.STARTED)
    assert (dec.code, dec.score) == (d.OCF_SUCCESS, d.SCORE_BACKUP)
    assert d.SCORE_BACKUP < d.SCORE_PRIMARY


def test_a_probe_never_takes_the_paused_shadow_for_a_primary():
    # no local state: a probe after a restart of the cluster stack
    dec = d.monitor(backup(), None)
    assert dec.code == d.OCF_SUCCESS and dec.code not in (8, 191)


def test_backup_whose_stream_broke_stays_promotable():
    dec = d.monitor(backup(state="broken"), d.STARTED)
    assert (dec.code, dec.score) == (d.OCF_SUCCESS, d.SCORE_BACKUP)


def test_an_xend_backup_is_promotable_once_held_complete():
    """xend reports no checkpoint count: a copy receiving has no score, a held
    one (its restore completed from the last committed checkpoint) has."""
    row = backup(checkpoints=None)
    assert d.monitor(row, d.STARTED).score is d.DELETE
    row["backup"].update(state="broken", held=True, complete=True)
    dec = d.monitor(row, d.STARTED)
    assert (dec.code, dec.score) == (d.OCF_SUCCESS, d.SCORE_BACKUP)


@pytest.mark.parametrize("row", [
    backup(checkpoints=0),
    backup(disks=[{"vdev": "xvda", "generation": "11" * 8, "consistent": False, "bitmap": None}]),
    backup(disks=[{"vdev": "xvda", "generation": None, "consistent": None, "bitmap": None}]),
    backup(disks=[{"vdev": "xvda", "path": "/x", "error": "bad json"}]),
    backup(failback={"mode": "failback", "host": "A", "state": "migrated"}),
    backup(failback={"error": "checksum mismatch"}),
])
def test_backup_resyncing_or_inconsistent_has_its_score_deleted_not_zeroed(row):
    dec = d.monitor(row, d.STARTED)
    assert dec.code == d.OCF_SUCCESS
    assert dec.score is d.DELETE and dec.score != 0


def test_nothing_here_is_not_running_until_started():
    assert d.monitor(None, None)[:2] == (d.OCF_NOT_RUNNING, d.DELETE)
    assert d.monitor(None, d.STOPPED).code == d.OCF_NOT_RUNNING
    dec = d.monitor(None, d.STARTED)
    assert (dec.code, dec.score) == (d.OCF_SUCCESS, d.DELETE)


def test_a_journal_only_row_is_not_a_domain_here():
    row = {"name": "vm1", "domid": None, "state": None, "here": False, "protected": None,
           "failback": {"mode": "failback", "host": "A", "state": "done"}}
    assert d.monitor(row, None).code == d.OCF_NOT_RUNNING


def test_stopped_instance_keeping_a_broken_copy_reports_not_running():
    assert d.monitor(backup(state="broken"), d.STOPPED)[:2] == (d.OCF_NOT_RUNNING, d.DELETE)


@pytest.mark.parametrize("params, code, needle", [
    ({}, d.OCF_ERR_CONFIGURED, "domain: required"),
    ({"domain": "a/b"}, d.OCF_ERR_CONFIGURED, "letters"),
    ({"domain": "vm1", "toolstack": "kvm"}, d.OCF_ERR_CONFIGURED, "xl, xend or sim"),
    ({"domain": "vm1", "toolstack": "sim"}, d.OCF_ERR_CONFIGURED, "sim_agents"),
    ({"domain": "vm1", "hosts": "n1=A n2"}, d.OCF_ERR_CONFIGURED, "'n2'"),
    ({"domain": "vm1", "interval": "0"}, d.OCF_ERR_CONFIGURED, "interval"),
    ({"domain": "vm1", "interval": "abc"}, d.OCF_ERR_CONFIGURED, "interval"),
    ({"domain": "vm1", "hosts": "n1=A,n2=B", "interval": "100"}, d.OCF_SUCCESS, "ok"),
])
def test_check_params(params, code, needle):
    got, msg = d.check_params(params)
    assert got == code and needle in msg


@pytest.mark.parametrize("meta, code, needle", [
    ({}, d.OCF_SUCCESS, "not run as a clone"),
    ({"clone_max": "2", "promoted_max": "1", "notify": "true"}, d.OCF_SUCCESS, "ok"),
    ({"clone_max": "2", "master_max": "1", "notify": "true"}, d.OCF_SUCCESS, "ok"),
    ({"clone_max": "3", "promoted_max": "1", "notify": "true"}, d.OCF_ERR_CONFIGURED, "clone-max=2, got 3"),
    ({"clone_max": "2", "promoted_max": "2", "notify": "true"}, d.OCF_ERR_CONFIGURED, "promoted-max=1"),
    ({"clone_max": "2", "promoted_max": "1", "notify": "false"}, d.OCF_ERR_CONFIGURED, "notify=true"),
])
def test_check_clone(meta, code, needle):
    got, msg = d.check_clone(meta)
    assert got == code and needle in msg


def test_parse_map():
    assert d.parse_map("n1=A, n2=unix:/x/y.sock") == {"n1": "A", "n2": "unix:/x/y.sock"}
    assert d.parse_map("") == {}
    with pytest.raises(ValueError) as e:
        d.parse_map("n1", "parameter hosts")
    assert "parameter hosts" in str(e.value) and "'n1'" in str(e.value)


def test_notify_plan():
    post_start = {"notify_type": "post", "notify_operation": "start", "notify_start_uname": "n2"}
    assert d.notify_plan("n1", post_start, True) == ("reprotect", "n2")
    assert d.notify_plan("n1", post_start, False) == (None, None)
    assert d.notify_plan("n2", post_start, False) == (None, None)
    post_stop = {"notify_type": "post", "notify_operation": "stop", "notify_stop_uname": "n2"}
    assert d.notify_plan("n1", post_stop, True) == ("forget", "n2")
    pre_demote = {"notify_type": "pre", "notify_operation": "demote", "notify_demote_uname": "n1",
                  "notify_promote_uname": "n2"}
    assert d.notify_plan("n1", pre_demote, True) == ("target", "n2")
    assert d.notify_plan("n2", pre_demote, False) == (None, None)


def test_shutdown_budget_is_two_thirds_of_the_timeout():
    assert d.shutdown_budget("90000") == pytest.approx(60.0)
    assert d.shutdown_budget(None, default_s=30) == pytest.approx(20.0)


def test_meta_data_names_the_ocf_1_1_roles_and_every_action():
    xml = d.meta_data("9.9")
    for action in ("start", "stop", "promote", "demote", "notify", "monitor", "meta-data", "validate-all"):
        assert '<action name="%s"' % action in xml
    assert 'role="Promoted"' in xml and 'role="Unpromoted"' in xml
    assert "Master" not in xml and "Slave" not in xml
    assert 'version="9.9"' in xml


def test_a_primary_holding_writes_of_its_own_is_still_the_primary():
    row = primary(protected=False, disks=[{"vdev": "xvda", "generation": "22" * 8, "consistent": True,
                                           "bitmap": "11" * 8}])
    assert d.monitor(row, d.STARTED)[:2] == (d.OCF_DEGRADED_PROMOTED, d.SCORE_PRIMARY)


# ---------------------------------------------------------------- cold start

def rec(current, bitmap=None, history=(), consistent=True):
    return {"disk": "/img", "size": 1 << 20, "consistent": consistent, "current": current, "bitmap": bitmap,
            "history": list(history), "role": None}


def disk(local, peer, exists=True, peer_exists=True, **kw):
    out = {"vdev": "xvda", "exists": exists, "local": local, "peer": peer, "peer_exists": peer_exists}
    out.update(kw)
    return out


G0, G1, G2, G3 = "0a" * 8, "1b" * 8, "2c" * 8, "3d" * 8


def both_sides(mine, theirs):
    """The verdicts of this node and of the peer on the same two records."""
    return (d.cold_start([disk(mine, theirs)], peer="n2", peer_has_domain=False),
            d.cold_start([disk(theirs, mine)], peer="n1", peer_has_domain=False))


def test_cold_start_promotes_only_the_newest_consistent_copy():
    # this copy took over (G1, bitmap G0); the peer's stayed at G0
    here, there = both_sides(rec(G1, bitmap=G0), rec(G0))
    assert here.score == d.SCORE_COLD and "newer than n2's" in here.reason
    assert there.score is d.DELETE and there.blocking and "n1's copy is newer" in there.reason
    # one generation further on: the history still says who descends from whom
    here, there = both_sides(rec(G2, history=(G1, G0)), rec(G0))
    assert (here.score, there.score) == (d.SCORE_COLD, d.DELETE)


def test_cold_start_with_identical_copies_scores_both_and_pacemaker_picks_one():
    here, there = both_sides(rec(G0), rec(G0))
    assert here.score == there.score == d.SCORE_COLD
    assert "the same generation" in here.reason


@pytest.mark.parametrize("mine,theirs,word", [
    (rec(G1, bitmap=G0), rec(G2, bitmap=G0), "split brain"),
    (rec(G1), rec(G2), "share no history"),
])
def test_cold_start_with_diverged_generations_promotes_nobody_and_tells_the_operator(mine, theirs, word):
    here, there = both_sides(mine, theirs)
    for v in (here, there):
        assert v.score is d.DELETE and v.blocking
        assert "SPLIT BRAIN" in v.reason and word in v.reason
        assert "xen-remus meta invalidate" in v.reason
    assert G1[:8] in here.reason and G2[:8] in here.reason


def test_cold_start_after_the_loser_is_invalidated_promotes_the_other():
    # `meta invalidate` on the loser: inconsistent, a new generation
    loser = rec(G3, history=(G2, G0), consistent=False)
    here, there = both_sides(rec(G1, bitmap=G0), loser)
    assert here.score == d.SCORE_COLD
    assert there.score is d.DELETE and "this copy is inconsistent" in there.reason


def test_cold_start_with_both_copies_inconsistent_promotes_nobody():
    here, there = both_sides(rec(G1, consistent=False), rec(G1, consistent=False))
    for v in (here, there):
        assert v.score is d.DELETE and v.blocking and "NO TRUSTED COPY" in v.reason


@pytest.mark.parametrize("facts,peer_has,blocking,word", [
    ([disk(rec(G0), rec(G0))], True, True, "is on n2"),
    ([disk(rec(G0), None, peer_error="ssh: connect to host b: No route")], False, False, "could not be asked"),
    ([disk(rec(G0), None, peer_exists=None)], None, False, "unknown"),
    ([disk(None, rec(G0))], False, False, "no generation record"),
    ([disk(rec(G0), rec(G0), exists=False)], False, True, "no copy on this host"),
    ([disk(None, None, local_error="disk meta: bad json")], False, True, "unreadable"),
    ([disk(rec(G0), {"current": G0})], False, False, "unreadable"),
    ([], False, False, "no remus disk"),
])
def test_cold_start_without_a_safe_comparison_gives_no_score(facts, peer_has, blocking, word):
    v = d.cold_start(facts, peer="n2", peer_has_domain=peer_has)
    assert v.score is d.DELETE and v.blocking is blocking and word in v.reason


def test_cold_start_with_the_only_copy_and_no_peer_known():
    v = d.cold_start([disk(rec(G0), None, peer_exists=False)], peer="n2", peer_has_domain=False)
    assert v.score == d.SCORE_COLD and "the only copy" in v.reason
    v = d.cold_start([disk(rec(G0), None, peer_exists=False)], peer=None)
    assert v.score is d.DELETE and not v.blocking and "no peer node known" in v.reason


def test_every_disk_must_be_promotable():
    ok = disk(rec(G1, bitmap=G0), rec(G0))
    behind = dict(disk(rec(G0), rec(G1, bitmap=G0)), vdev="xvdb")
    v = d.cold_start([ok, behind], peer="n2", peer_has_domain=False)
    assert v.score is d.DELETE and "xvdb" in v.reason


def test_monitor_of_a_started_instance_takes_the_cold_verdict():
    v = d.cold_start([disk(rec(G1, bitmap=G0), rec(G0))], peer="n2", peer_has_domain=False)
    assert d.monitor(None, d.STARTED, cold=v) == (d.OCF_SUCCESS, d.SCORE_COLD, v.reason)
    assert d.monitor(None, d.STARTED)[:2] == (d.OCF_SUCCESS, d.DELETE)
    # a probe (not started here) never scores, whatever the copies say
    assert d.monitor(None, None, cold=v)[:2] == (d.OCF_NOT_RUNNING, d.DELETE)


def test_post_promote_protects_toward_the_unpromoted_peer_not_a_stopping_one():
    meta = {"notify_type": "post", "notify_operation": "promote", "notify_promote_uname": "n2",
            "notify_unpromoted_uname": "n1 n2", "notify_active_uname": "n1 n2"}
    assert d.notify_plan("n2", meta, promoted_here=True) == ("reprotect", "n1")
    assert d.notify_plan("n2", meta, promoted_here=False) == (None, None)
    assert d.notify_plan("n2", dict(meta, notify_stop_uname="n1"), promoted_here=True) == (None, None)
    assert d.notified_peer("n2", meta) == "n1"
    assert d.notified_peer("n2", {"notify_active_uname": "n2"}) is None


def test_the_cold_start_alert_names_split_brain_and_no_trusted_copy_only():
    assert d.cold_attribute("vm1") == "xen-remus-cold-start-vm1"
    here, there = both_sides(rec(G1, bitmap=G0), rec(G2, bitmap=G0))
    a = d.cold_alert(here)
    assert a.startswith("SPLIT BRAIN: disk xvda: both copies took writes the other never saw")
    assert G1[:8] in a and G2[:8] in a and "n2's" in a
    assert "neither is promoted" not in a and "cold start" not in a
    assert d.cold_alert(there).startswith("SPLIT BRAIN: disk xvda") and G2[:8] in d.cold_alert(there)
    both_bad = both_sides(rec(G1, consistent=False), rec(G1, consistent=False))[0]
    assert d.cold_alert(both_bad) == ("NO TRUSTED COPY: disk xvda: both copies are inconsistent "
                                      "(interrupted resyncs)")
    # resolved, or refusals that need no operator: no attribute
    newer, older = both_sides(rec(G1, bitmap=G0), rec(G0))
    assert d.cold_alert(newer) is None and d.cold_alert(older) is None
    invalidated = both_sides(rec(G1, bitmap=G0), rec(G3, history=(G2, G0), consistent=False))
    assert [d.cold_alert(v) for v in invalidated] == [None, None]
    unknown = d.cold_start([disk(rec(G0), None, peer_error="ssh: No route")], peer="n2", peer_has_domain=False)
    assert d.cold_alert(unknown) is None and d.cold_alert(None) is None
