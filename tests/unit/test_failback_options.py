"""The failback options and the journal's delta record are checked values."""
from __future__ import absolute_import, division, print_function

import json

import pytest

from xen_remus_ext.errors import JournalError, ValidationError
from xen_remus_ext.failback import journal
from xen_remus_ext.failback.options import DEFAULTS, FailbackOptions


def test_defaults_and_none_keeps_the_default():
    o = FailbackOptions.from_dict({"rate": None, "interval_ms": 50, "shared_disks": ["xvdb"]})
    assert o.rate is None and o.interval_ms == 50 and o.shared_disks == ("xvdb",)
    assert o.dest_template == DEFAULTS["dest_template"] and o.settle_timeout == 120.0
    assert FailbackOptions.from_dict(o) is o
    assert o.journaled() == {"rate": None, "verify": False, "discard_peer": False, "interval_ms": 50,
                             "port": None, "local_host": None, "dest_template": "%(host)s:%(path)s",
                             "ssh": "ssh", "key_file": None, "replicate": None}


@pytest.mark.parametrize("bad, needle", [
    ({"rate": -1}, "option rate: expected a number >= 0 or none, got -1"),
    ({"rate": 1}, "option rate: expected 0 (no cap) or at least"),
    ({"interval_ms": -5}, "option interval_ms: expected an integer > 0, got -5"),
    ({"interval_ms": True}, "option interval_ms"),
    ({"port": 70000}, "option port: expected 1-65535, got 70000"),
    ({"precopy_passes": 0}, "option precopy_passes"),
    ({"settle_poll": 0}, "option settle_poll"),
    ({"ssh": ""}, "option ssh: expected a non-empty string"),
    ({"dest_template": "%(hots)s:%(path)s"}, "option dest_template: expected %(host)s"),
    ({"shared_disks": "xvda"}, "option shared_disks: expected a list of vdevs"),
    ({"supervise": "yes"}, "option supervise"),
    ({"rat": 5}, "options: expected only rate"),
])
def test_bad_options_are_refused_by_name(bad, needle):
    with pytest.raises(ValidationError) as exc:
        FailbackOptions.from_dict(bad)
    assert needle in str(exc.value)


def test_delta_record():
    assert journal.Delta().to_dict() == {"sent": False}
    d = journal.Delta(True, "xend-hook", 10.5, 0.25)
    assert journal.Delta.from_dict(d.to_dict()) == d
    for bad, needle in (({"sent": "yes"}, "delta.sent"), ({"sent": True}, "who sent it"),
                        ({"sent": True, "by": "cron"}, "delta.by"), ({"sent": False, "at": "noon"}, "delta.at"),
                        ({"sent": False, "extra": 1}, "unexpected fields extra"), ([], "expected an object")):
        with pytest.raises(JournalError) as exc:
            journal.Delta.from_dict(bad)
        assert needle in str(exc.value)


def test_a_journal_with_a_bad_delta_is_refused_by_name(tmp_path):
    rec = journal.new_record("vm1", "hostA", "failback", now=1.0)
    journal.save(rec, str(tmp_path))
    assert journal.delta_of(journal.load("vm1", str(tmp_path))) == journal.Delta()
    rec["delta"] = {"sent": 1}
    path = journal.save(rec, str(tmp_path))        # a consistent checksum: only the field is wrong
    with pytest.raises(JournalError) as exc:
        journal.load("vm1", str(tmp_path))
    assert path in str(exc.value) and "delta.sent: expected true or false, got 1" in str(exc.value)
    with open(path) as f:
        assert json.load(f)["delta"] == {"sent": 1}
