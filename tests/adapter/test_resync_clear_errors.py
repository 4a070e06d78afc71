"""Inputs that used to end in a traceback or a lost cause, each now a clear
error naming the file or the peer (sent to the peer where there is one),
with no temporary file left behind:

- JSON nested 60,000 deep (a RecursionError in ``json.loads``) in a HELLO
  before authentication, in a START, in a failback journal, in disk metadata;
- ENOSPC in the receiver's state dir (metadata and journal cannot be
  written), and a local resync onto a full disk (the receiver's ENOSPC, not
  our "Broken pipe");
- a failback journal whose sum is valid but whose fields have the wrong
  types (``history`` text, ``delta`` a list).
"""
from __future__ import absolute_import, division, print_function

import glob
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.adapter.resync_util import copy, make_image, same, write_key
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import JournalError, ResyncError
from xen_remus_ext.failback import journal as fj
from xen_remus_ext.resync import api, meta
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.sender import SenderSession
from xen_remus_ext.resync.transport import ResyncServer, connect

MiB = 1 << 20
DEEP = b"[" * 60000
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")


@pytest.fixture
def rig(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    with open(dst, "r+b") as f:
        f.write(os.urandom(4096))
    key = write_key(str(tmp_path / "key"))
    srv = ResyncServer(("127.0.0.1", 0), key, {"d": dst}, plaintext=True).start()
    yield src, dst, key, srv
    srv.stop()


def read_record(s):
    s.settimeout(10)
    data = b""
    while len(data) < 8:
        got = s.recv(8 - len(data))
        if not got:
            return None, None
        data += got
    t, _, _, n = P.HEADER.unpack(data)
    body = b""
    while len(body) < n:
        got = s.recv(n - len(body))
        if not got:
            break
        body += got
    return t, body


def test_deep_json_in_a_hello_before_authentication(rig):
    src, dst, key, srv = rig
    s = socket.create_connection(("127.0.0.1", srv.address[1]))
    s.sendall(P.HEADER.pack(P.HELLO, 0, 0, len(DEEP)) + DEEP)
    t, body = read_record(s)
    s.close()
    assert t == P.ERROR and b"HELLO record" in body and b"nested too deep" in body
    api.resync(src, "tcp://127.0.0.1:%d/d" % srv.address[1], key_file=key, mode="checksum")   # still serving
    assert same(src, dst)


def test_deep_json_in_a_start(rig):
    src, dst, key, srv = rig
    conn = connect("tcp://127.0.0.1:%d/d" % srv.address[1], key_file=key)
    try:
        SenderSession(conn).handshake()
        conn.chan.send(P.START, DEEP)
        with pytest.raises(ResyncError) as ei:
            conn.chan.recv_json(P.START)
    finally:
        conn.close()
    assert "peer: START record" in str(ei.value) and "nested too deep" in str(ei.value)


def test_deep_json_in_local_files_names_the_file(tmp_path):
    img = make_image(str(tmp_path / "a.img"), MiB)
    meta.ensure(img, MiB)
    path = meta.meta_path(img)
    with open(path, "wb") as f:
        f.write(DEEP)
    with pytest.raises(JournalError) as ei:
        meta.load(img)
    assert path in str(ei.value) and "nested too deep" in str(ei.value)
    jpath = fj.journal_path("vm1")
    os.makedirs(os.path.dirname(jpath))
    with open(jpath, "wb") as f:
        f.write(DEEP)
    with pytest.raises(JournalError) as ei:
        fj.load("vm1")
    assert jpath in str(ei.value)


@pytest.mark.parametrize("field,value,word", [("history", "abc", "history: expected a list, got text"),
                                              ("delta", [], "delta: expected an object, got a list"),
                                              ("disks", [{"vdev": 5}], "disks[0].vdev: expected text")])
def test_failback_journal_with_wrong_types_is_refused_by_name(tmp_path, capsys, field, value, word):
    rec = fj.new_record("vm1", "hostA", "failback", "hostB", "xl", {}, now=1.0)
    rec[field] = value
    body = dict(rec)
    body["sum"] = fj._checksum(rec)                 # a valid sum: only the types are wrong
    path = fj.journal_path("vm1")
    os.makedirs(os.path.dirname(path))
    import json
    with open(path, "w") as f:
        json.dump(body, f)
    with pytest.raises(JournalError) as ei:
        fj.load("vm1")
    assert path in str(ei.value) and word in str(ei.value)
    for flag in ("--resume", "--abort"):
        assert cli.main(["failback", flag, "vm1", "hostA", "--toolstack", "xl"]) == 1
        err = capsys.readouterr().err
        assert path in err and word in err and "Traceback" not in err


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = str(tmp_path / "xre-resync-tmpfs")
    os.mkdir(mnt)
    subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=1m", "xre-resync", mnt])
    yield mnt
    subprocess.call(["umount", "-l", mnt])


def fill(mnt):
    """Fill the file system at ``mnt``; :returns: the filler's path (delete it to free the space)."""
    path = os.path.join(mnt, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\1" * 4096)
    except (IOError, OSError):
        pass
    finally:
        os.close(fd)
    return path


@needs_root
@pytest.mark.parametrize("mode", ["checksum", "full"])
def test_local_resync_onto_a_full_disk_reports_enospc(tmp_path, small_tmpfs, mode):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    dst = os.path.join(small_tmpfs, "dst.img")
    with open(dst, "wb") as f:
        f.truncate(4 * MiB)
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst, mode=mode)
    msg = str(ei.value)
    assert "No space left on device" in msg and dst in msg and "Broken pipe" not in msg
    assert meta.load(dst).consistent is False


@needs_root
def test_receiver_state_dir_full_is_reported_to_the_sender(tmp_path, small_tmpfs):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    with open(dst, "r+b") as f:
        f.write(os.urandom(4096))
    key = write_key(str(tmp_path / "key"))
    env = dict(os.environ, XEN_REMUS_STATE_DIR=small_tmpfs, XEN_REMUS_LOG="")
    p = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "receive", "--listen", "127.0.0.1:0", "--key", key,
                          "--export", "d=" + dst, "--plaintext"], env=env, stderr=subprocess.PIPE)
    try:
        line = p.stderr.readline().decode("utf-8")
        port = int(line.split("receiving on 127.0.0.1:")[1].split()[0])
        filler = fill(small_tmpfs)
        url = "tcp://127.0.0.1:%d/d" % port
        with pytest.raises(ResyncError) as ei:
            api.resync(src, url, key_file=key, mode="full", plaintext=True)
        msg = str(ei.value)
        assert "No space left on device" in msg and small_tmpfs in msg and "connection closed" not in msg
        assert glob.glob(os.path.join(small_tmpfs, "*", "*.tmp.*")) == []      # no temporary file left
        os.unlink(filler)
        time.sleep(0.2)
        api.resync(src, url, key_file=key, mode="checksum", plaintext=True)      # room again: it works
        assert same(src, dst)
    finally:
        p.terminate()
        err = p.communicate()[1].decode("utf-8", "replace")
    assert "Traceback" not in err, err
