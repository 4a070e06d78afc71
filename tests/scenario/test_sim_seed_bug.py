"""The seed's bug, reproduced, and the cycle that fixes it.

Remus-fu's recipe brings a failed-over domain home with ``xm migrate
--live``: memory only, so the original host runs on its stale disk.  The
demo's ``migrate`` method does exactly that; its records written on B are
then missing from A's disk and the copies differ.  The ``resync`` method
(pre-copy, pause, final delta, memory migration, re-protect) loses nothing.

Stands in for: two Xen hosts running xend and Remus; the simulator follows
docs/xen-facts.md sections 4 and 5 (see xen_remus_ext/sim).
"""
from __future__ import absolute_import, division, print_function

from xen_remus_ext import demo


def test_plain_migrate_back_leaves_a_stale_disk():
    v = demo.run(seconds=2.4, seed=11, method="migrate", interval_ms=50, rate=300)
    assert v["lost_at_failover"] == 0          # Remus itself kept its promise
    assert v["lost"] > 0                       # records written on B are not on A
    assert v["first_lost"], v
    assert not v["disks_identical"]


def test_resync_then_migrate_loses_nothing_and_disks_match():
    v = demo.run(seconds=2.4, seed=11, method="resync", interval_ms=50, rate=300)
    assert v["acknowledged"] > 100
    assert v["lost"] == 0 and v["lost_on_backup"] == 0
    assert v["disks_identical"], v["digest"]
    assert v["downtime"]["failover"] >= 0.9    # power-off: the 1000 ms heartbeat
