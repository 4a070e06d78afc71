"""A resync onto its own source is refused before any metadata is touched,
and an interrupted resync leaves the SOURCE's metadata as it was."""
from __future__ import absolute_import, division, print_function

import os

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.resync import api, meta

MiB = 1 << 20


def _records(*paths):
    out = []
    for p in paths:
        rec = meta.meta_path(p)
        out.append(open(rec).read() if os.path.exists(rec) else None)
    return out


@pytest.mark.parametrize("how", ["same", "dot", "symlink", "hardlink"])
def test_resync_onto_itself_refused_metadata_unchanged(tmp_path, how, capsys):
    src = make_image(str(tmp_path / "src.img"), MiB)
    m = meta.ensure(src, MiB, role="primary")
    data = open(src, "rb").read()
    if how == "same":
        dest = src
    elif how == "dot":
        dest = os.path.join(str(tmp_path), ".", "src.img")
    elif how == "symlink":
        dest = str(tmp_path / "link.img")
        os.symlink(src, dest)
    else:
        dest = str(tmp_path / "hard.img")
        os.link(src, dest)
    before = _records(src, dest)
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dest, mode="full")
    assert "onto itself" in str(ei.value)
    assert _records(src, dest) == before
    assert meta.load(src) == m
    rc = cli.main(["resync", "--mode", "full", src, dest])
    err = capsys.readouterr().err
    assert rc == 1 and "onto itself" in err and "Traceback" not in err
    assert _records(src, dest) == before
    assert open(src, "rb").read() == data


def test_resync_onto_itself_refused_without_prior_metadata(tmp_path):
    src = make_image(str(tmp_path / "src.img"), MiB)
    with pytest.raises(ResyncError):
        api.resync(src, src)
    assert meta.load(src) is None    # not even created


class _Interrupt(object):
    """An events callback that raises KeyboardInterrupt (Ctrl-C) once some
    progress was made."""

    def __call__(self, ev):
        if ev.get("event") == "progress" and ev.get("done"):
            raise KeyboardInterrupt()


@pytest.mark.parametrize("mode", ["full", "checksum"])
def test_interrupted_resync_leaves_source_metadata_alone(tmp_path, mode):
    src = make_image(str(tmp_path / "src.img"), 16 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(dst, 40, seed=3)
    ms = meta.ensure(src, 16 * MiB, role="primary")
    meta.mark_synced(dst, ms, role="backup")
    meta.rotate(src, role="primary")
    src_before = _records(src)
    with pytest.raises(KeyboardInterrupt):
        api.resync(src, dst, mode=mode, events=_Interrupt(), block_size=65536)
    assert _records(src) == src_before
    assert meta.load(src).consistent
    assert not meta.load(dst).consistent      # it was interrupted mid-way, target marked
    # the source is still usable as a source, and the target catches up
    api.resync(src, dst, mode="checksum")
    assert same(src, dst)
    assert meta.load(dst).current == meta.load(src).current
