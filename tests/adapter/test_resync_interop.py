"""Python 2.7 and 3 on the two ends, mixed: a 2.7 sender with a 3 receiver and back.

The sender is ``python -m xen_remus_ext resync`` from one venv; the
receiver runs from the other venv, over TCP (``receive --listen``: TLS and
zstd-stream, the defaults) and over ssh (``receive --stdio`` through our
throwaway sshd: zstd-stream); and a receiver that knows only per-record zstd
frames, as older ones do.  The images hold real text, so that compressed
records cross.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import subprocess

import pytest

from tests.adapter.resync_util import VENV_PY, copy, make_image, mutate, same, write_key
from tests.adapter.test_resync_compress import text_image
from tests.adapter.sshd_util import Sshd, remote_cmd

MiB = 1 << 20
PAIRS = [("py27", "py3"), ("py3", "py27")]
pytestmark = pytest.mark.skipif(not all(os.path.exists(p) for p in VENV_PY.values()),
                                reason="needs both .venv/py27 and .venv/py3")


def run(py, args, env=None):
    p = subprocess.Popen([VENV_PY[py], "-m", "xen_remus_ext"] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    return p.returncode, [json.loads(x) for x in out.decode("utf-8").splitlines() if x.strip()], err


@pytest.mark.parametrize("sender,receiver", PAIRS)
def test_tcp_mixed_versions(tmp_path, sender, receiver):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(dst, 8, seed=4)
    key = write_key(str(tmp_path / "key"))
    env = dict(os.environ, XEN_REMUS_STATE_DIR=str(tmp_path / "rstate"))
    recv = subprocess.Popen([VENV_PY[receiver], "-m", "xen_remus_ext", "receive", "--listen", "127.0.0.1:0",
                             "--key", key, "--export", "d=" + dst], stderr=subprocess.PIPE, env=env)
    try:
        line = recv.stderr.readline().decode("utf-8")
        assert "TLS certificate SHA-256" in line and "plaintext refused" in line, line
        port = int(line.split("receiving on ")[1].split()[0].rsplit(":", 1)[1])
        url = "tcp://127.0.0.1:%d/d" % port
        rc, lines, err = run(sender, ["resync", src, url, "--key", key, "--verify", "--json"])
        assert rc == 0, err
        assert lines[-1]["result"] == "ok" and lines[-1]["verified"] is True
        assert same(src, dst)
        # compressible data, full mode: one zstd stream through TLS
        text = text_image(str(tmp_path / "text.img"), 4 * MiB)
        rc, lines, err = run(sender, ["resync", text, url, "--key", key, "--mode", "full", "--strong", "--json",
                                      "--discard-target"])
        assert rc == 0, err
        assert same(text, dst)
        assert lines[-1]["compress"] == "zstd-stream" and lines[-1]["bytes_sent"] < 2 * MiB
        # plaintext is refused by a receiver that did not allow it, before any data
        before = open(dst, "rb").read()
        rc, lines, err = run(sender, ["resync", src, url, "--key", key, "--plaintext", "--json"])
        assert rc != 0 and "accepts only TLS" in lines[-1]["error"]
        assert open(dst, "rb").read() == before
    finally:
        recv.terminate()
        recv.wait()
        recv.stderr.close()


#: a receiver that knows only per-record zstd frames (what older receivers speak)
OLD_KIND = ("import sys; from xen_remus_ext.resync import compress as c; c.available = lambda: [c.ZSTD]; "
            "from xen_remus_ext.cli.main import run; sys.argv[0] = 'xen-remus'; run()")


@pytest.mark.parametrize("sender,receiver", PAIRS)
def test_tcp_older_receiver_gets_per_record_zstd(tmp_path, sender, receiver):
    text = text_image(str(tmp_path / "text.img"), 4 * MiB)
    dst = make_image(str(tmp_path / "dst.img"), 4 * MiB)
    key = write_key(str(tmp_path / "key"))
    env = dict(os.environ, XEN_REMUS_STATE_DIR=str(tmp_path / "rstate"))
    recv = subprocess.Popen([VENV_PY[receiver], "-c", OLD_KIND, "receive", "--listen", "127.0.0.1:0",
                             "--key", key, "--export", "d=" + dst], stderr=subprocess.PIPE, env=env)
    try:
        line = recv.stderr.readline().decode("utf-8")
        port = int(line.split("receiving on ")[1].split()[0].rsplit(":", 1)[1])
        rc, lines, err = run(sender, ["resync", text, "tcp://127.0.0.1:%d/d" % port, "--key", key, "--mode", "full",
                                      "--json", "--discard-target"])
        assert rc == 0, err
        assert same(text, dst)
        assert lines[-1]["compress"] == "zstd" and lines[-1]["bytes_sent"] < 2 * MiB
    finally:
        recv.terminate()
        recv.wait()
        recv.stderr.close()


@pytest.mark.skipif(not Sshd.usable(), reason="needs root and /usr/sbin/sshd")
@pytest.mark.parametrize("sender,receiver", PAIRS)
def test_ssh_mixed_versions(tmp_path, sender, receiver):
    sshd = Sshd().start()
    try:
        src = make_image(str(tmp_path / "src.img"), 4 * MiB)
        dst = copy(src, str(tmp_path / "dst.img"))
        mutate(dst, 8, seed=6)
        env = dict(os.environ, XEN_REMUS_REMOTE_CMD=remote_cmd(VENV_PY[receiver], str(tmp_path / "rstate")))
        rc, lines, err = run(sender, ["resync", src, "127.0.0.1:" + dst, "-s", sshd.ssh, "--json"], env=env)
        assert rc == 0, err
        assert lines[-1]["mode"] == "checksum" and same(src, dst)
        text = text_image(str(tmp_path / "text.img"), 4 * MiB)
        rc, lines, err = run(sender, ["resync", text, "127.0.0.1:" + dst, "-s", sshd.ssh, "--json", "--mode", "full",
                                      "--discard-target"], env=env)
        assert rc == 0, err
        assert same(text, dst) and lines[-1]["compress"] == "zstd-stream" and lines[-1]["bytes_sent"] < 2 * MiB
        rc, lines, err = run(sender, ["resync", src, "127.0.0.1:" + dst, "-s", sshd.ssh, "--json",
                                      "--discard-target"], env=env)
        assert rc == 0 and same(src, dst), err
        rc, lines, err = run(sender, ["verify", src, "127.0.0.1:" + dst, "-s", sshd.ssh, "--json", "--strong"],
                             env=env)
        assert rc == 0 and lines[-1]["identical"] is True, err
    finally:
        sshd.stop()
