"""Two image files outside Remus keep their generation when written: once
synced they look identical whichever is written next.  Their files'
modification times, recorded by each resync, still tell which one was
written: a resync whose target changed since while its source did not
warns that it may run the wrong way (on stderr, in the log and as a
``warning`` event of --json) before it overwrites the target."""
from __future__ import absolute_import, division, print_function

import json
import os
import time

import pytest

from tests.adapter.resync_util import make_image, same
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ValidationError
from xen_remus_ext.resync import api, meta

MiB = 1 << 20
#: longer than the kernel's timestamp granularity (a clock tick)
TICK = 0.05


def write_at(path, off, data):
    time.sleep(TICK)
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


@pytest.fixture
def synced(tmp_path):
    r1 = make_image(str(tmp_path / "r1.img"), 2 * MiB)
    r2 = make_image(str(tmp_path / "r2.img"), 2 * MiB)
    api.resync(r1, r2)
    assert same(r1, r2) and meta.load(r1).current == meta.load(r2).current
    return r1, r2


@pytest.mark.parametrize("written,src,dst", [("r1", "r2", "r1"), ("r2", "r1", "r2")])
def test_the_wrong_direction_is_warned_about(synced, capsys, written, src, dst):
    paths = dict(zip(("r1", "r2"), synced))
    write_at(paths[written], 8192, os.urandom(4096))
    assert cli.main(["resync", "--json", paths[src], paths[dst]]) == 0
    out, err = capsys.readouterr()
    warned = [json.loads(x) for x in out.splitlines() if '"warning"' in x]
    assert len(warned) == 1 and warned[0]["event"] == "warning", out
    text = warned[0]["warning"]
    assert text.startswith("%s: the target's file was modified since its last resync" % paths[dst]), text
    assert "overwriting it from %s: check the direction" % paths[src] in text
    assert text in err and "Traceback" not in err
    assert same(paths[src], paths[dst])


def test_discard_target_silences_it(synced, capsys):
    r1, r2 = synced
    write_at(r2, 0, b"x" * 512)
    events = []
    api.resync(r1, r2, discard_target=True, events=events.append)
    assert same(r1, r2) and not [e for e in events if e.get("event") == "warning"]


def quiet(src, dst):
    """Resync; :returns: whether it warned."""
    events = []
    api.resync(src, dst, events=events.append)
    assert same(src, dst)
    return bool([e for e in events if e.get("event") == "warning"])


def test_the_source_written_is_the_normal_case(synced):
    r1, r2 = synced
    write_at(r1, MiB, os.urandom(10000))
    assert not quiet(r1, r2)
    # nothing written since: again, either way
    assert not quiet(r1, r2) and not quiet(r2, r1)


def test_stamps_survive_a_meta_round_trip_and_devices_have_none(tmp_path):
    path = make_image(str(tmp_path / "a.img"), MiB)
    stamp = meta.file_stamp(path)
    assert isinstance(stamp, int) and meta.file_stamp("/dev/null") is None
    m = meta.DiskMeta(path, MiB, True, stamp=stamp)
    assert meta.DiskMeta.from_dict(m.to_dict()) == m
    with pytest.raises(ValidationError):
        meta.DiskMeta(path, MiB, True, stamp="yesterday")


def test_a_copy_written_on_both_sides_cannot_be_told(synced):
    """Both files changed: the stamps cannot say which is newer; generations
    (supervise, protect, failback) are what catch that on Remus disks."""
    r1, r2 = synced
    write_at(r1, 0, b"a" * 512)
    write_at(r2, 4096, b"b" * 512)
    assert not quiet(r1, r2)


def test_without_stamps_nothing_is_told(synced, monkeypatch):
    """A block device (or an older receiver) has no stamp: nothing can be told."""
    r1, r2 = synced
    write_at(r2, 0, b"x" * 512)
    monkeypatch.setattr(meta, "file_stamp", lambda path: None)
    assert not quiet(r1, r2)
