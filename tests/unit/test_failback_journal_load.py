"""A journal file is checked field by field when it loads: one damaged or
edited by hand (its ``sum`` made to match, as an editor would) is refused
with an error naming the file and the field, never a traceback further on;
and a journal written by the current code (tests/data/journal/vm1.json, a
failback stopped in its unpause step) still loads."""
from __future__ import absolute_import, division, print_function

import copy
import io
import json
import os

import pytest

from xen_remus_ext.errors import JournalError
from xen_remus_ext.failback import api, journal, machine

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "journal", "vm1.json")


def _fixture():
    with io.open(FIXTURE, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def _install(rec, resum=True):
    """Write ``rec`` where vm1's journal lives, its sum made to match."""
    rec = copy.deepcopy(rec)
    rec.pop("sum", None)
    if resum:
        rec["sum"] = journal._checksum(rec)
    path = journal.journal_path("vm1")
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(json.dumps(rec, indent=1, sort_keys=True).encode("utf-8"))
    return path


def test_a_journal_written_by_the_current_code_still_loads():
    path = journal.journal_path("vm1")
    os.makedirs(os.path.dirname(path))
    with open(FIXTURE, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    rec = journal.load("vm1")
    want = _fixture()
    want.pop("sum")
    assert rec == want
    assert (rec["mode"], rec["state"], rec["step"]) == (machine.FAILBACK, machine.PROTECTED, machine.UNPAUSE)
    assert journal.delta_of(rec).sent and rec["disks"][0]["final"]["mode"] == "tracked"
    assert [s for s, _ in machine.plan(rec["mode"], rec["state"])] == [machine.UNPAUSE]
    assert api._journal_summary("vm1", None)["next"] == [machine.UNPAUSE]
    journal.save(rec)                    # and what it saves loads again, the same
    assert journal.load("vm1") == want


def _set(rec, where, value):
    obj = rec
    for key in where[:-1]:
        obj = obj[key]
    if value is _GONE:
        del obj[where[-1]]
    else:
        obj[where[-1]] = value


_GONE = object()


@pytest.mark.parametrize("where,value,words", [
    (("disks", 0, "src"), _GONE, "disks[0].src: missing"),
    (("disks", 0, "vdev"), 7, "disks[0].vdev: expected text, got a number 7"),
    (("disks", 0, "size"), "big", "disks[0].size: expected a number or null"),
    (("disks", 0, "precopy", 1), "fast", "disks[0].precopy[1]: expected an object, got text"),
    (("disks", 0, "final", "bytes_sent"), "1024", "disks[0].final.bytes_sent: expected a number or null"),
    (("disks", 1), ["xvdb"], "disks[1]: expected an object, got a list"),
    (("timing", "migrate"), 5, "timing.migrate: expected [start, end]"),
    (("timing", "migrate"), [1.0, "later"], "timing.migrate: expected [start, end]"),
    (("timing", "teleport"), [1.0, 2.0], "timing.teleport: expected a step"),
    (("step",), "teleport", "step: expected null or one of"),
    (("history", 3), ["x"], "history[3]: expected [time, event, ...]"),
    (("history", 3), "state", "history[3]: expected a list"),
    (("options", "rate"), "fast", "options: option rate"),
    (("options", "colour"), "red", "options: expected only"),
    (("migrated_at",), "yesterday", "migrated_at: expected a number or null, got text"),
    (("was_paused",), "no", "was_paused: expected a boolean"),
    (("attempt",), -1, "attempt: expected a count >= 0"),
    (("attempt",), 1.5, "attempt: expected a number, got a number 1.5"),
    (("delta", "sent"), "yes", "delta.sent: expected true or false"),
])
def test_a_hand_edited_journal_is_refused_naming_file_and_field(where, value, words):
    rec = _fixture()
    if where[:2] == ("disks", 1):
        rec["disks"].append(None)
    _set(rec, where, value)
    path = _install(rec)
    with pytest.raises(JournalError) as err:
        journal.load("vm1")
    assert str(err.value).startswith(path + ": ") and words in str(err.value), str(err.value)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k in sorted(obj):
            for p in _paths(obj[k], prefix + (k,)):
                yield p
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            for p in _paths(v, prefix + (i,)):
                yield p


def test_any_field_of_a_real_journal_replaced_by_any_json_value_loads_or_is_refused_by_name():
    """Every field (nested ones too) of the journal set to each JSON type in
    turn, or removed: load() either accepts it, and status can read what it
    accepted, or raises JournalError naming the file; nothing else."""
    base = _fixture()
    base.pop("sum")
    tried = refused = 0
    for where in _paths(base):
        if not where or where == ("version",):
            continue
        for value in (None, True, "x", 7, -1, 1.5, [], {}, [1], _GONE):
            rec = copy.deepcopy(base)
            _set(rec, where, value)
            path = _install(rec)
            tried += 1
            try:
                got = journal.load("vm1")
            except JournalError as exc:
                assert str(exc).startswith(path + ": "), (where, value, str(exc))
                refused += 1
                continue
            summary = api._journal_summary("vm1", None)
            assert summary.get("state") == got["state"], (where, value, summary)
    assert tried > 1000 and refused > 500, (tried, refused)      # the walk reached the fields
