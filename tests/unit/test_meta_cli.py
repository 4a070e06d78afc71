"""``xen-remus meta show|invalidate|forget|create`` on real files, and what
each means for the next resync."""
from __future__ import absolute_import, division, print_function

import json
import os
import re

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.resync import api, meta

MiB = 1 << 20


def run_json(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr().out
    return rc, json.loads(out.strip().splitlines()[-1])


def test_show_without_and_with_record(tmp_path, capsys):
    a = make_image(str(tmp_path / "a.img"), MiB)
    rc, d = run_json(capsys, "meta", "show", "--json", a)
    assert rc == 0 and d["meta"] is None and d["exists"] and d["size"] == MiB
    m = meta.ensure(a, MiB, role="primary")
    rc, d = run_json(capsys, "meta", "show", "--json", a)
    assert d["meta"]["current"] == m.current and d["meta"]["role"] == "primary"
    assert cli.main(["meta", "show", a]) == 0
    out = capsys.readouterr().out
    assert m.current in out and "consistent: yes" in out


def test_invalidate_makes_the_next_resync_compare_every_block(tmp_path, capsys):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    ms = meta.ensure(src, 2 * MiB, role="primary")
    meta.mark_synced(dst, ms, role="backup")
    # the copy took writes of its own, then the admin declares it the loser
    mutate(dst, 5, seed=9)
    meta.rotate(dst)
    with pytest.raises(ResyncError):
        api.resync(src, dst, extents=[])
    rc, d = run_json(capsys, "meta", "invalidate", "--json", dst)
    assert rc == 0 and d["meta"]["consistent"] is False and d["meta"]["role"] == "invalidated"
    # refused as a source while invalidated
    with pytest.raises(ResyncError) as ei:
        api.resync(dst, src)
    assert "inconsistent" in str(ei.value)
    # into it: no --discard-target needed, and never a tracked delta (extents given, yet checksum)
    tr = _EmptyTracker()
    res = api.resync(src, dst, tracker=tr)
    assert res.mode == "checksum" and same(src, dst)
    assert meta.load(dst).current == ms.current and meta.load(dst).consistent


class _EmptyTracker(object):
    name = "test"

    def trustworthy(self):
        return True

    def dirty_extents(self):
        return []


def test_forget_makes_the_copy_new(tmp_path, capsys):
    src = make_image(str(tmp_path / "src.img"), MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    ms = meta.ensure(src, MiB)
    meta.mark_synced(dst, ms)
    rc, d = run_json(capsys, "meta", "forget", "--json", src)
    assert rc == 0 and d["forgotten"]["current"] == ms.current
    assert meta.load(src) is None and not os.path.exists(meta.meta_path(src))
    # from it: a fresh generation the peer does not share
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst)
    assert "unrelated" in str(ei.value)
    assert api.resync(src, dst, discard_target=True).mode == "checksum"
    # forgetting a copy with no record is fine
    rc, d = run_json(capsys, "meta", "forget", "--json", str(tmp_path / "none.img"))
    assert rc == 0 and d["forgotten"] is None


def test_create_is_sparse_and_refuses_an_existing_file(tmp_path, capsys):
    p = str(tmp_path / "new.img")
    rc, d = run_json(capsys, "meta", "create", "--json", "--size", "64M", p)
    assert rc == 0 and os.path.getsize(p) == 64 * MiB
    assert os.stat(p).st_blocks * 512 < MiB      # holes, not zeros
    with open(p, "r+b") as f:
        f.write(b"x")
    assert cli.main(["meta", "create", "--size", "1M", p]) == 1
    assert "existing" in capsys.readouterr().err
    assert os.path.getsize(p) == 64 * MiB and open(p, "rb").read(1) == b"x"


def _records(disk):
    d = os.path.dirname(meta.meta_path(disk))
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


@pytest.mark.parametrize("action", ["show", "invalidate", "forget"])
def test_a_directory_is_no_disk(action, tmp_path, capsys):
    d = tmp_path / "notadisk"
    d.mkdir()
    before = _records(str(d))
    assert cli.main(["meta", action, str(d)]) == 1
    out, err = capsys.readouterr()
    assert "%s: expected an image file or a block device, got a directory" % d in err
    assert "bytes" not in out and meta.load(str(d)) is None and _records(str(d)) == before


def test_invalidate_refuses_an_absent_disk_and_leaves_no_record(tmp_path, capsys):
    gone = str(tmp_path / "gone.img")
    assert cli.main(["meta", "invalidate", gone]) == 1
    assert "%s: expected an existing image file or block device" % gone in capsys.readouterr().err
    assert meta.load(gone) is None and not os.path.exists(meta.meta_path(gone))
    # an absent copy can still be shown and its record forgotten
    assert cli.main(["meta", "show", gone]) == 0
    assert cli.main(["meta", "forget", gone]) == 0


@pytest.mark.parametrize("action", ["show", "invalidate", "forget", "create"])
def test_every_action_takes_disk_and_json(action, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["meta", action, "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert re.search(r"usage: xen-remus meta %s .*\[--json\].* DISK" % action, " ".join(out.split())), out
    assert ("--size SIZE" in out) == (action == "create")


def test_create_size_takes_the_resync_size_syntax(tmp_path, capsys):
    disk = str(tmp_path / "d.img")
    assert cli.main(["meta", "create", "--size", "1.5M", disk]) == 0
    assert os.path.getsize(disk) == 3 << 19
    with pytest.raises(SystemExit) as ei:
        cli.main(["meta", "create", "--size", "1x", str(tmp_path / "e.img")])
    assert ei.value.code == 2 and "expected a number with optional K/M/G/T suffix" in capsys.readouterr().err
