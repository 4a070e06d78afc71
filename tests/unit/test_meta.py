"""Generation identifiers (xen_remus_ext.resync.meta): storage and compare rules.

The scenario tests walk the Remus cycle: protect (in sync), failover (the
backup rotates), failback resync (target-behind), and the split brain
where both copies took writes after replication broke.
"""
from __future__ import absolute_import, division, print_function

import json
import os

import pytest

from xen_remus_ext.errors import JournalError, ValidationError
from xen_remus_ext.resync import meta


def disk(tmp_path, name, size=4096):
    p = tmp_path / name
    p.write_bytes(b"\0" * size)
    return str(p)


def test_state_dir_from_env(tmp_path):
    assert meta.state_dir() == str(tmp_path / "state")


def test_load_absent_then_save_atomic_roundtrip(tmp_path):
    a = disk(tmp_path, "a.img")
    assert meta.load(a) is None
    m = meta.ensure(a, 4096, role="primary")
    assert m.consistent and m.bitmap is None and len(m.current) == 16
    assert meta.load(a) == m
    # keyed by realpath: a symlink finds the same record
    link = str(tmp_path / "link.img")
    os.symlink(a, link)
    assert meta.load(link) == m
    path = meta.meta_path(a)
    assert json.loads(open(path).read())["current"] == m.current
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp." in f]


def test_corrupt_record_is_a_clear_error(tmp_path):
    a = disk(tmp_path, "a.img")
    meta.ensure(a, 4096)
    with open(meta.meta_path(a), "w") as f:
        f.write("{not json")
    with pytest.raises(JournalError) as ei:
        meta.load(a)
    assert "a.img" in str(ei.value)


def test_validation():
    with pytest.raises(ValidationError):
        meta.DiskMeta("/x", 1, current="nothex")
    with pytest.raises(ValidationError):
        meta.DiskMeta("/x", -1)
    with pytest.raises(ValidationError):
        meta.DiskMeta.from_dict({"disk": "/x"})


def test_remus_cycle(tmp_path):
    a, b = disk(tmp_path, "a.img"), disk(tmp_path, "b.img")
    ma = meta.ensure(a, 4096)
    mb = meta.mark_synced(b, ma)                         # initial copy: in sync
    assert meta.compare(ma, mb) == meta.IDENTICAL
    mb = meta.rotate(b, role="primary")                  # failover to b
    assert mb.bitmap == ma.current and mb.current != ma.current
    assert meta.compare(mb, ma) == meta.TARGET_BEHIND    # failback: a is only stale
    assert meta.compare(ma, mb) == meta.TARGET_AHEAD     # the wrong direction is refused
    meta.mark_inconsistent(a)
    assert meta.load(a).consistent is False
    assert meta.compare(mb, meta.load(a)) == meta.TARGET_BEHIND   # an interrupted resync resumes
    ma = meta.mark_synced(a, mb)
    assert ma.consistent and ma.current == mb.current
    assert meta.compare(mb, ma) == meta.IDENTICAL
    mb = meta.clear_bitmap(b)                            # re-protected
    assert mb.bitmap is None and mb.history[0] == meta.load(a).history[0]
    # a second failover from a (now primary again) works the same way
    ma = meta.rotate(a)
    assert meta.compare(ma, mb) == meta.TARGET_BEHIND


def test_split_brain_and_unrelated(tmp_path):
    a, b, c = disk(tmp_path, "a.img"), disk(tmp_path, "b.img"), disk(tmp_path, "c.img")
    ma = meta.ensure(a, 4096)
    meta.mark_synced(b, ma)
    ma2 = meta.rotate(a)          # replication broke, a kept writing
    mb2 = meta.rotate(b)          # and b was failed over to: both diverged
    assert meta.compare(mb2, ma2) == meta.SPLIT_BRAIN
    assert meta.compare(ma2, mb2) == meta.SPLIT_BRAIN
    mc = meta.ensure(c, 4096)
    assert meta.compare(mc, ma2) == meta.UNRELATED
    assert meta.compare(mc, None) == meta.TARGET_NEW
    for rel in (meta.SPLIT_BRAIN, meta.UNRELATED, meta.TARGET_AHEAD):
        assert rel not in meta.SAFE


def test_rotate_twice_keeps_bitmap_ancestor(tmp_path):
    a = disk(tmp_path, "a.img")
    m0 = meta.ensure(a, 4096)
    m1 = meta.rotate(a)
    m2 = meta.rotate(a)
    assert m2.bitmap == m0.current and m2.history[0] == m1.current
    assert len(set([m0.current, m1.current, m2.current])) == 3


def test_clear_bitmap_without_metadata_creates_it(tmp_path):
    a = disk(tmp_path, "a.img", 8192)
    m = meta.clear_bitmap(a)
    assert m.consistent and m.bitmap is None and m.size == 8192 and meta.load(a) == m


def _fake_lvm(tmp_path, monkeypatch, dm="dm-3", name="vg0-lv--a"):
    """tmp/dev/{dm-N, vg0/lv-a -> ../dm-N, mapper/NAME -> ../dm-N} and a
    sysfs naming dm-N (what udev and the kernel give an LVM volume)."""
    dev = tmp_path / "dev"
    (dev / "vg0").mkdir(parents=True, exist_ok=True)
    (dev / "mapper").mkdir(exist_ok=True)
    (dev / dm).write_bytes(b"\0" * 8192)
    for link in (dev / "vg0" / "lv-a", dev / "mapper" / name):
        if os.path.lexists(str(link)):
            os.unlink(str(link))
        os.symlink(os.path.join("..", dm), str(link))
    sysb = tmp_path / "sys"
    (sysb / dm / "dm").mkdir(parents=True, exist_ok=True)
    with open(str(sysb / dm / "dm" / "name"), "w") as f:
        f.write(name + "\n")
    monkeypatch.setattr(meta, "SYS_BLOCK", str(sysb))
    return dev


def test_identity_of_a_dm_device_is_its_mapper_name(tmp_path, monkeypatch):
    dev = _fake_lvm(tmp_path, monkeypatch)
    want = str(dev / "mapper" / "vg0-lv--a")
    for p in (dev / "vg0" / "lv-a", dev / "mapper" / "vg0-lv--a", dev / "dm-3"):
        assert meta.identity(str(p)) == want
    # without sysfs, /dev/VG/LV still maps to its device-mapper name
    monkeypatch.setattr(meta, "SYS_BLOCK", str(tmp_path / "nosys"))
    assert meta.identity(str(dev / "vg0" / "lv-a")) == want
    assert meta.identity(str(dev / "mapper" / "vg0-lv--a")) == want


def test_record_survives_dm_renumbering(tmp_path, monkeypatch):
    dev = _fake_lvm(tmp_path, monkeypatch, dm="dm-3")
    lv = str(dev / "vg0" / "lv-a")
    m = meta.ensure(lv, 8192, role="primary")
    assert m.disk == str(dev / "mapper" / "vg0-lv--a")
    # next boot: the same volume is dm-7
    os.unlink(str(dev / "dm-3"))
    _fake_lvm(tmp_path, monkeypatch, dm="dm-7")
    assert meta.load(lv) == m
    assert meta.load(str(dev / "dm-7")) == m


def test_realpath_keyed_record_is_migrated(tmp_path, monkeypatch):
    dev = _fake_lvm(tmp_path, monkeypatch)
    lv = str(dev / "vg0" / "lv-a")
    old = meta._key_path(os.path.realpath(lv))
    os.makedirs(os.path.dirname(old))
    rec = meta.DiskMeta(os.path.realpath(lv), 8192, True, role="backup").to_dict()
    with open(old, "w") as f:
        json.dump(rec, f)
    m = meta.load(lv)
    assert m.current == rec["current"] and m.disk == str(dev / "mapper" / "vg0-lv--a")
    assert not os.path.exists(old) and os.path.exists(meta.meta_path(lv))


def test_realpath_keyed_record_of_another_size_is_not_migrated(tmp_path, monkeypatch):
    dev = _fake_lvm(tmp_path, monkeypatch)
    lv = str(dev / "vg0" / "lv-a")
    old = meta._key_path(os.path.realpath(lv))
    os.makedirs(os.path.dirname(old))
    with open(old, "w") as f:
        json.dump(meta.DiskMeta(os.path.realpath(lv), 4096, True).to_dict(), f)
    assert meta.load(lv) is None        # dm-3 was another volume at the last boot
    assert os.path.exists(old)
