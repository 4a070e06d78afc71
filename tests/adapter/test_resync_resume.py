"""Kill either end at a random point, run the same command again: it resumes.

Real processes: the sender is ``python -m xen_remus_ext resync`` (for a
local target its receiver is a thread of the same process, so SIGKILL takes
both ends down at once); the TCP receiver is ``xen-remus receive --listen``
in its own process, killed while a sender streams into it.  The rerun must
report a resume (finished ranges compared again by digests), send less
than a fresh full run, and end byte-identical.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same, write_key
from xen_remus_ext.resync import journal, meta

MiB = 1 << 20
SIZE = 8 * MiB


def cli(*args):
    return [sys.executable, "-m", "xen_remus_ext"] + list(args)


def run_json(argv):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    lines = [json.loads(x) for x in out.decode("utf-8").splitlines() if x.strip()]
    return p.returncode, lines, err.decode("utf-8", "replace")


def wait_for_journal(path, deadline=10.0):
    t0 = time.time()
    while time.time() - t0 < deadline:
        j = journal.Journal.load(path)
        if j is not None and j.done:
            return j
        time.sleep(0.05)
    raise AssertionError("no journal progress for %s" % path)


@pytest.mark.parametrize("mode", ["full", "checksum"])
def test_sender_killed_then_rerun_resumes(tmp_path, mode):
    src = make_image(str(tmp_path / "src.img"), SIZE)
    dst = str(tmp_path / "dst.img")
    if mode == "full":
        make_image(dst, SIZE)
    else:
        copy(src, dst)
        mutate(dst, 40, seed=1)
    argv = cli("resync", src, dst, "--mode", mode, "--rate", "4M", "--json")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_journal(dst)
    time.sleep(random.uniform(0.0, 0.6))
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert meta.load(dst).consistent is False
    done = journal.Journal.load(dst).done
    assert 0 < sum(e - s for s, e in done) < SIZE
    rc, lines, err = run_json(cli("resync", src, dst, "--mode", mode, "--json"))
    assert rc == 0, err
    resumed = [x for x in lines if x.get("event") == "resume"]
    assert resumed and resumed[0]["reverify"] > 0
    assert lines[-1]["result"] == "ok" and lines[-1]["resumed"] == resumed[0]["reverify"]
    resumed_sent = lines[-1]["bytes_sent"]
    assert same(src, dst)
    assert meta.load(dst).consistent and journal.Journal.load(dst) is None
    if mode == "full":
        # the same run from scratch sends the finished ranges again; the resumed one sent their digests
        make_image(dst, SIZE)
        rc, lines, err = run_json(cli("resync", src, dst, "--mode", mode, "--no-resume", "--json"))
        assert rc == 0, err
        assert resumed_sent < lines[-1]["bytes_sent"] and same(src, dst)


def start_receiver(key, dst):
    p = subprocess.Popen(cli("receive", "--listen", "127.0.0.1:0", "--key", key, "--export", "d=" + dst),
                         stderr=subprocess.PIPE)
    line = p.stderr.readline().decode("utf-8")
    assert "receiving on" in line, line
    port = int(line.split("receiving on ")[1].split()[0].rsplit(":", 1)[1])
    return p, port


def test_receiver_killed_then_rerun_resumes(tmp_path):
    src = make_image(str(tmp_path / "src.img"), SIZE)
    dst = make_image(str(tmp_path / "dst.img"), SIZE)
    key = write_key(str(tmp_path / "key"))
    recv, port = start_receiver(key, dst)
    url = "tcp://127.0.0.1:%d/d" % port
    try:
        sender = subprocess.Popen(cli("resync", src, url, "--key", key, "--mode", "full", "--rate", "4M",
                                      "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_journal(dst)
        time.sleep(random.uniform(0.0, 0.6))
        os.kill(recv.pid, signal.SIGKILL)
        recv.wait()
        out, err = sender.communicate()
        assert sender.returncode == 1
        assert json.loads(out.decode("utf-8").splitlines()[-1])["result"] == "error"
        assert b"Traceback" not in err
    finally:
        if recv.poll() is None:
            os.kill(recv.pid, signal.SIGKILL)
        recv.wait()
        recv.stderr.close()
    assert meta.load(dst).consistent is False
    recv, port = start_receiver(key, dst)
    try:
        rc, lines, err = run_json(cli("resync", src, "tcp://127.0.0.1:%d/d" % port, "--key", key,
                                      "--mode", "full", "--json"))
    finally:
        os.kill(recv.pid, signal.SIGTERM)
        recv.wait()
        recv.stderr.close()
    assert rc == 0, err
    assert [x for x in lines if x.get("event") == "resume"][0]["reverify"] > 0
    assert lines[-1]["bytes_sent"] < SIZE
    assert same(src, dst) and meta.load(dst).consistent


def test_no_resume_starts_from_zero(tmp_path):
    src = make_image(str(tmp_path / "src.img"), SIZE)
    dst = make_image(str(tmp_path / "dst.img"), SIZE)
    p = subprocess.Popen(cli("resync", src, dst, "--mode", "full", "--rate", "4M"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_journal(dst)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    rc, lines, err = run_json(cli("resync", src, dst, "--mode", "full", "--no-resume", "--json"))
    assert rc == 0, err
    assert not [x for x in lines if x.get("event") == "resume"]
    assert lines[-1]["bytes_read"] == SIZE and same(src, dst)
