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


def test_a_finished_journal_does_not_degrade_the_primary():
    row = primary(failback={"mode": "reverse", "host": "B", "state": "done"})
    assert d.monitor(row, d.STARTED).code == d.OCF_RUNNING_PROMOTED


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
