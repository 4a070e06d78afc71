"""The small fixed-seed subset of the chaos campaign that runs in ``make test``.

One run of every fault kind but the rare ones (seeded), through the same code as
``make chaos``: real processes killed with SIGKILL, a real link cut between
two network namespaces (root), a real tmpfs filling up, real journal files
damaged.  Every run must recover with the disks byte-identical, no
acknowledged write lost and no copy falsely marked consistent; and the
faults must have struck mid-operation (else the test proves nothing).
"""
from __future__ import absolute_import, division, print_function

import os

import pytest

from tests.chaos.faults import campaign, resync_faults

SEED = 8


def subset_kinds():
    """Every kind but the rare ones (a sender's power loss waits 10-30 s for
    the receiver's dead-peer detection: ``make chaos`` only)."""
    return tuple(k for k in campaign.available_kinds(os.geteuid() == 0) if k not in resync_faults.RARE)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    netns = os.geteuid() == 0
    kinds = subset_kinds()
    return campaign.run_campaign(len(kinds), SEED, kinds=kinds, work=str(tmp_path_factory.mktemp("chaos")),
                                 netns=netns)


def test_every_kind_ran_once(results):
    assert sorted(r["kind"] for r in results) == sorted(subset_kinds())


def test_every_run_recovered_exactly(results):
    bad = [(r["kind"], r.get("notes"), r.get("trace")) for r in results if not r["recovered"]]
    assert not bad, bad
    assert all(r["bytes_differing"] == 0 for r in results)
    assert sum(r["writes_lost"] for r in results) == 0
    assert sum(r["false_consistent"] for r in results) == 0


def test_the_faults_struck_mid_operation(results):
    landed = [r["kind"] for r in results if r.get("landed")]
    assert len(landed) >= len(results) - 2, [(r["kind"], r.get("notes")) for r in results]
    assert "kill-host" in landed


def test_summary_table_last_line(results):
    table = campaign.format_table(results)
    assert table.splitlines()[-1] == "recovered %d/%d, bytes differing 0, acknowledged writes lost 0" % (
        len(results), len(results))
