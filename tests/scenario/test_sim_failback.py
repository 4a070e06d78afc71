"""The demo's whole cycle with the failback command bringing the domain home.

protect A -> B, power off A, failover on B, restart A, ``failback`` (the
orchestrator, driving the sim hosts through ``ports.Toolstack``; its resync
passes run on B and cross TCP into A's receiver), Remus restarted A -> B.
Nothing acknowledged may be lost and both copies must end identical.

Stands in for: two Xen hosts under xend with Remus (docs/xen-facts.md sections 4
and 5 are what the simulator follows).
"""
from __future__ import absolute_import, division, print_function

import pytest

from xen_remus_ext import demo


@pytest.mark.skipif(not demo._failback_available(), reason="failback orchestrator not present")
def test_failback_cycle_loses_nothing():
    v = demo.run(seconds=2.4, seed=5, method="failback", interval_ms=50, rate=300)
    assert v["method"] == "failback"
    assert v["acknowledged"] > 100
    assert v["lost"] == 0 and v["lost_on_backup"] == 0 and v["lost_at_failover"] == 0
    assert v["disks_identical"], v["digest"]
    texts = [t for _, t in v["timeline"]]
    assert any("failback" in t and "complete" in t for t in texts), texts
