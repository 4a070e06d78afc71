"""Epoch rules and the backup's replica on real files: writes of epoch N
reach the disk only when checkpoint N commits, and failover drops the rest."""
from __future__ import absolute_import, division, print_function

import os

import pytest

from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication.epochs import EpochLedger
from xen_remus_ext.replication.replica import Replica

SIZE = 1 << 20


def image(tmp_path, name, fill=b"\0"):
    p = str(tmp_path / name)
    with open(p, "wb") as f:
        f.write(fill * SIZE)
    return p


def content(path):
    with open(path, "rb") as f:
        return f.read()


def test_writes_are_held_until_their_checkpoint_commits(tmp_path):
    disk = image(tmp_path, "b.img")
    r = Replica(disk, str(tmp_path / "spool"))
    r.write(0, 0, b"A" * 512)
    r.write(0, 4096, b"B" * 4096)
    assert content(disk) == b"\0" * SIZE            # held
    r.cut(0, 2, 4608)
    r.write(1, 0, b"C" * 512)                        # epoch 1 opens at once
    assert content(disk) == b"\0" * SIZE            # cut is not commit
    assert r.commit(0) == (2, 4608)
    got = content(disk)
    assert got[:512] == b"A" * 512 and got[4096:8192] == b"B" * 4096 and got[512:4096] == b"\0" * 3584
    r.close()


def test_overlapping_writes_apply_in_arrival_order(tmp_path):
    disk = image(tmp_path, "b.img")
    r = Replica(disk, str(tmp_path / "spool"))
    r.write(0, 1000, b"x" * 100)
    r.write(0, 1050, b"y" * 100)
    r.write(0, 1000, b"z" * 10)
    r.cut(0, 3, 210)
    r.commit(0)
    got = content(disk)
    assert got[1000:1150] == b"z" * 10 + b"x" * 40 + b"y" * 100
    r.close()


def test_failover_drops_uncommitted_epochs_and_keeps_committed_ones(tmp_path):
    disk = image(tmp_path, "b.img")
    r = Replica(disk, str(tmp_path / "spool"))
    r.write(0, 0, b"1" * 512)
    r.cut(0, 1, 512)
    r.commit(0)
    r.write(1, 512, b"2" * 512)
    r.cut(1, 1, 512)                 # cut, but CHECKPOINT_END 1 never arrived
    r.write(2, 1024, b"3" * 512)     # open epoch
    assert r.failover() == (2, 2, 1024)
    got = content(disk)
    assert got[:512] == b"1" * 512 and got[512:] == b"\0" * (SIZE - 512)
    assert os.path.getsize(str(tmp_path / "spool")) == 0
    r.close()
    assert not os.path.exists(str(tmp_path / "spool"))


def test_spool_is_emptied_after_everything_commits(tmp_path):
    disk = image(tmp_path, "b.img")
    r = Replica(disk, str(tmp_path / "spool"))
    for e in range(5):
        r.write(e, e * 4096, bytes(bytearray([65 + e])) * 4096)
        r.cut(e, 1, 4096)
        r.commit(e)
        assert os.path.getsize(str(tmp_path / "spool")) == 0
    assert content(disk)[:5 * 4096] == b"".join(bytes(bytearray([65 + e])) * 4096 for e in range(5))
    r.close()


def test_ledger_refuses_out_of_order_and_miscounted_epochs():
    led = EpochLedger(size=SIZE)
    with pytest.raises(ReplicationError, match="write for epoch 1 while epoch 0 is open"):
        led.add_write(1, 0, 512, 0)
    led.add_write(0, 0, 512, 0)
    with pytest.raises(ReplicationError, match="primary cut 2 writes / 1024 bytes, 1 / 512 arrived"):
        led.cut(0, 2, 1024)
    with pytest.raises(ReplicationError, match="committed before the primary cut"):
        led.commit(0)
    led.cut(0, 1, 512)
    with pytest.raises(ReplicationError, match="commit of epoch 1 after epoch -1"):
        led.commit(1)
    with pytest.raises(ReplicationError, match="outside the 1048576-byte disk"):
        led.add_write(1, SIZE - 100, 512, 0)
    assert [w.offset for w in led.commit(0)] == [0]
    led.cut(1, 0, 0)
    assert led.commit(1) == []          # an epoch without writes commits too


def test_missing_replica_target_is_a_clear_error(tmp_path):
    with pytest.raises(ReplicationError, match="replica .*nope.img"):
        Replica(str(tmp_path / "nope.img"), str(tmp_path / "spool"))
