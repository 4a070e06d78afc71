"""The campaign's own checks can fail: a differing byte is counted, a
copy falsely claiming consistency is caught, the table reports failures."""
from __future__ import absolute_import, division, print_function

import os

from tests.chaos.faults import campaign
from tests.chaos.faults.resync_faults import bytes_differing, false_consistent
from xen_remus_ext.resync import meta


def _img(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_bytes_differing_counts_exactly(tmp_path):
    base = os.urandom(3 << 20)
    a = _img(str(tmp_path / "a"), base)
    changed = bytearray(base)
    for i in (0, 5, (1 << 20) + 7, (3 << 20) - 1):
        changed[i] ^= 0xFF
    b = _img(str(tmp_path / "b"), bytes(changed))
    assert bytes_differing(a, b) == 4
    assert bytes_differing(a, a) == 0
    c = _img(str(tmp_path / "c"), base[:-10])
    assert bytes_differing(a, c) == 10


def test_false_consistent_is_caught(tmp_path, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    a = _img(str(tmp_path / "a"), b"x" * 8192)
    b = _img(str(tmp_path / "b"), b"x" * 8191 + b"y")
    m = meta.ensure(a, 8192)
    meta.mark_inconsistent(b, 8192)
    assert false_consistent(a, b) == 0          # honest: marked inconsistent
    meta.mark_synced(b, m)
    assert false_consistent(a, b) == 1          # claims the source's generation, differs
    _img(b, b"x" * 8192)
    assert false_consistent(a, b) == 0


def test_table_reports_failures_and_totals():
    results = [{"kind": "kill-sender", "recovered": True, "landed": True, "bytes_differing": 0, "writes_lost": 0,
                "false_consistent": 0, "recovery_s": 0.5},
               {"kind": "kill-sender", "recovered": False, "landed": True, "bytes_differing": 4096,
                "writes_lost": 0, "false_consistent": 1, "recovery_s": 2.0},
               {"kind": "kill-host", "recovered": True, "landed": True, "bytes_differing": 0, "writes_lost": 3,
                "false_consistent": 0, "recovery_s": 1.0}]
    table = campaign.format_table(results)
    lines = table.splitlines()
    assert lines[-1] == "recovered 2/3, bytes differing 4096, acknowledged writes lost 3"
    row = [ln for ln in lines if ln.startswith("kill-sender")][0].split()
    assert row[1:8] == ["2", "2", "1", "0", "4096", "0", "1"]
