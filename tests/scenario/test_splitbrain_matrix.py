"""Split brain: every case of who wrote after the divergence.

Two real image files start in sync (same generation, consistent).  Then
nobody, only the source, only the target, or both take writes of their own
(real bytes written, and the generation rotated as a failover or a broken
replication does: docs/protocol.md, "Generations").  Then a resync from
source to target, through the real CLI (``xen-remus resync ... --json``,
local target) and the real API over TCP (``tcp://127.0.0.1``), without and
with ``--discard-target``.

As documented: neither -> identical, nothing to write; only the source ->
target-behind, synced; only the target -> target-ahead, refused; both ->
split-brain, refused (SplitBrainError).  A refusal leaves the target's bytes
and metadata untouched.  ``--discard-target`` overwrites exactly the
target: afterwards it is byte-identical to the source and carries the
source's generation, and the source is not changed by a single byte.
"""
from __future__ import absolute_import, division, print_function

import hashlib
import json
import os
import random

import pytest

from tests.adapter.resync_util import copy, make_image, write_key
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ResyncError, SplitBrainError
from xen_remus_ext.resync import api, meta

SIZE = 2 << 20
CASES = ("neither", "source", "target", "both")
EXPECTED = {"neither": meta.IDENTICAL, "source": meta.TARGET_BEHIND, "target": meta.TARGET_AHEAD,
            "both": meta.SPLIT_BRAIN}


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write(path, seed, n=6):
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for _ in range(n):
            off = rng.randrange(0, SIZE - 8192)
            f.seek(off)
            f.write(os.urandom(rng.choice((512, 4096, 8192))))


@pytest.fixture
def diverged(tmp_path, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))

    def make(who):
        src = make_image(str(tmp_path / "src.img"), SIZE)
        dst = copy(src, str(tmp_path / "dst.img"))
        m = meta.ensure(src, SIZE, role="primary")
        meta.mark_synced(dst, m, role="backup")          # in sync at generation G
        assert meta.compare(meta.load(src), meta.load(dst)) == meta.IDENTICAL
        if who in ("source", "both"):
            meta.rotate(src, role="primary")
            _write(src, 1)
        if who in ("target", "both"):
            meta.rotate(dst, role="primary")              # the backup took over and wrote
            _write(dst, 2)
        return src, dst
    return make


def _cli(capsys, *argv):
    rc = cli.main(["resync"] + list(argv) + ["--json", "--no-progress"])
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.strip().splitlines() if x.startswith("{")]
    return rc, lines[-1] if lines else {}, err


def _snapshot(src, dst):
    return _digest(src), _digest(dst), meta.load(src), meta.load(dst)


def _assert_synced(src, dst, src_digest_before):
    assert _digest(src) == src_digest_before, "the source changed"
    assert _digest(dst) == _digest(src), "the target is not byte-identical"
    ms, md = meta.load(src), meta.load(dst)
    assert md.consistent and md.current == ms.current


@pytest.mark.parametrize("who", CASES)
def test_relation_is_classified_as_documented(diverged, who):
    src, dst = diverged(who)
    assert meta.compare(meta.load(src), meta.load(dst)) == EXPECTED[who]
    # and seen from the other side, the mirror image
    back = {"neither": meta.IDENTICAL, "source": meta.TARGET_AHEAD, "target": meta.TARGET_BEHIND,
            "both": meta.SPLIT_BRAIN}
    assert meta.compare(meta.load(dst), meta.load(src)) == back[who]


@pytest.mark.parametrize("who", CASES)
def test_cli_without_discard(diverged, capsys, who):
    src, dst = diverged(who)
    before = _snapshot(src, dst)
    rc, last, err = _cli(capsys, src, dst, "--mode", "checksum")
    if who in ("neither", "source"):
        assert rc == 0 and last["result"] == "ok", (last, err)
        _assert_synced(src, dst, before[0])
        if who == "neither":
            assert before[1] == _digest(dst)
    else:
        assert rc != 0 and last["result"] == "error"
        assert last["kind"] == ("SplitBrainError" if who == "both" else "ResyncError")
        assert EXPECTED[who] in last["error"] and "--discard-target" in last["error"]
        assert _snapshot(src, dst) == before, "a refused resync changed something"


@pytest.mark.parametrize("who", CASES)
def test_cli_with_discard_target_overwrites_exactly_the_target(diverged, capsys, who):
    src, dst = diverged(who)
    before = _snapshot(src, dst)
    rc, last, err = _cli(capsys, src, dst, "--discard-target", "--mode", "checksum")
    assert rc == 0 and last["result"] == "ok", (last, err)
    _assert_synced(src, dst, before[0])
    # the source's record changed only in its file stamp (what it was read at)
    assert meta.load(src)._replace(stamp=None) == before[2]._replace(stamp=None), "the source's generation changed"
    # the pair is now in sync: a plain rerun needs no discard and writes nothing
    rc, last, _ = _cli(capsys, src, dst, "--mode", "checksum")
    assert rc == 0 and last["result"] == "ok"


@pytest.mark.parametrize("who", ("target", "both"))
def test_discarding_the_other_side_keeps_the_target_writes(diverged, capsys, who):
    """Naming the other loser: resync target -> source with --discard-target;
    the original target's writes survive, the original source's go."""
    src, dst = diverged(who)
    dst_digest = _digest(dst)
    rc, last, err = _cli(capsys, dst, src, "--discard-target")
    assert rc == 0, (last, err)
    assert _digest(src) == dst_digest and _digest(dst) == dst_digest


@pytest.fixture
def server(tmp_path):
    key = write_key(str(tmp_path / "key"))
    exports = {"dst": str(tmp_path / "dst.img")}
    srv = api.ResyncServer(("127.0.0.1", 0), key, exports).start()
    yield key, "tcp://127.0.0.1:%d/dst" % srv.address[1]
    srv.stop()


@pytest.mark.parametrize("who", CASES)
@pytest.mark.parametrize("discard", (False, True))
def test_api_over_tcp(diverged, server, who, discard):
    src, dst = diverged(who)
    key, url = server
    before = _snapshot(src, dst)
    if who in ("target", "both") and not discard:
        cls = SplitBrainError if who == "both" else ResyncError
        with pytest.raises(cls) as exc:
            api.resync(src, url, key_file=key, mode="checksum")
        assert EXPECTED[who] in str(exc.value)
        assert _snapshot(src, dst) == before
        return
    res = api.resync(src, url, key_file=key, mode="checksum", discard_target=discard, verify=True)
    assert res.verified
    _assert_synced(src, dst, before[0])


def test_receiver_refuses_even_if_the_sender_does_not_check(diverged, server):
    """The receiver compares generations itself (docs/protocol.md, safety 5):
    a sender that skips the check and claims no discard is still refused."""
    from xen_remus_ext.resync import protocol as P
    from xen_remus_ext.resync.sender import SenderSession
    from xen_remus_ext.resync.transport import connect
    src, dst = diverged("both")
    key, url = server
    before = _snapshot(src, dst)
    conn = connect(url, key_file=key)
    try:
        sess = SenderSession(conn)
        sess.handshake()
        conn.chan.send_json(P.START, {"mode": "full", "block_size": 65536, "source": meta.load(src).to_dict(),
                                      "salt": "00" * 16, "rate": 0, "discard_target": False, "resume": False})
        with pytest.raises(Exception) as exc:
            conn.chan.recv_json(P.START)
        assert "split-brain" in str(exc.value)
    finally:
        conn.close()
    assert _snapshot(src, dst) == before
