"""Small holes a hostile review found, each closed:

- a destination host starting with ``-`` was handed to ssh as an option
  (``-oProxyCommand=...`` ran a command here): refused, and ``--`` ends
  ssh's options before every host;
- the peer's ``-s`` was split with ``str.split``: it is split like a shell
  would, and remote words are shell-quoted;
- ``rate: true`` in a START passed the number check (a digester slept for days);
- a key given literally as ``--key`` was echoed on stderr and in the log;
  the log is created 0640;
- a FIFO as key file blocked forever.
"""
from __future__ import absolute_import, division, print_function

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from tests.adapter.resync_util import copy, make_image
from xen_remus_ext import wiring
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ProtocolError, ResyncError
from xen_remus_ext.resync import api, meta, transport
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.receiver import Receiver

MiB = 1 << 20
SECRET = "c2VjcmV0LWtleS1tYXRlcmlhbC0wMTIzNDU2Nzg5"


def run_cli(args, env=None, timeout=20):
    """``xen-remus ARGS`` as a process: :returns: (rc or None if it hung, stderr)."""
    p = subprocess.Popen([sys.executable, "-m", "xen_remus_ext"] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ, **(env or {})))
    deadline = time.time() + timeout
    while p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if p.poll() is None:
        p.kill()
        p.communicate()
        return None, ""
    return p.returncode, p.communicate()[1].decode("utf-8", "replace")


def test_a_host_that_is_an_ssh_option_is_refused(tmp_path, capsys):
    src = make_image(str(tmp_path / "src.img"), MiB)
    marker = str(tmp_path / "proxy-ran")
    assert cli.main(["resync", src, "--", "-oProxyCommand=touch %s:/x" % marker]) == 1
    err = capsys.readouterr().err
    assert "no leading '-'" in err
    assert not os.path.exists(marker)             # ssh never ran, so neither did its ProxyCommand
    with pytest.raises(ResyncError):
        wiring.peer_toolstack("xl", "-oProxyCommand=touch %s" % marker)
    with pytest.raises(ResyncError):
        wiring.peer_toolstack("xend", "-oProxyCommand=touch %s" % marker)


def test_ssh_argv_ends_options_before_the_host_and_quotes_remote_words():
    argv = transport.ssh_argv("ssh -p 2222", "hostb", "/srv/a disk.img")
    assert argv[:4] == ["ssh", "-p", "2222", "--"] and argv[4] == "hostb"
    assert argv[-1] == "'/srv/a disk.img'"


def test_the_peers_ssh_command_is_split_like_a_shell_would():
    ts = wiring.peer_toolstack("xl", "hostb", ssh="ssh -o 'ProxyJump=jump host' -p 22")
    assert ts.xl == ["ssh", "-o", "ProxyJump=jump host", "-p", "22", "--", "hostb", "xl"]
    seen = []

    class Runner(object):
        def run(self, argv, timeout=None):
            seen.append(argv)
            return 0, b"", b""
    wiring.supervisor_starter("xl", ssh="ssh -o 'A=b c'", runner=Runner())("hostb")
    assert seen[0][:5] == ["ssh", "-o", "A=b c", "--", "hostb"]
    assert all(" " not in w or w.startswith("'") for w in seen[0][5:])


@pytest.mark.parametrize("rate", [True, 1, 1e-300, float("inf")])
def test_a_start_with_an_unusable_rate_is_refused(tmp_path, rate):
    src = make_image(str(tmp_path / "src.img"), MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    s, r = P.local_pair()
    rec = Receiver(r, {"": dst})
    errors = []

    def serve():
        try:
            rec.run()
        except ResyncError as exc:
            errors.append(exc)
    t = threading.Thread(target=serve)
    t.daemon = True
    t.start()
    s.send_json(P.HELLO, {"magic": P.MAGIC, "versions": list(P.VERSIONS), "digests": ["hmac-sha256"],
                          "nonce": "ab" * 16, "export": ""})
    s.recv_json(P.HELLO)
    s.recv_json(P.INFO)
    start = {"mode": "verify", "block_size": 65536, "digest": "hmac-sha256", "salt": "00" * 16,
             "source": meta.ensure(src, MiB).to_dict(), "rate": rate}
    if rate == float("inf"):
        s.send(P.START, P.encode_json(start).replace(b"Infinity", b"1e999"))
    else:
        s.send_json(P.START, start)
    t0 = time.time()
    with pytest.raises(ResyncError) as ei:
        s.recv_json(P.START)
    t.join(10)
    assert "rate" in str(ei.value) and time.time() - t0 < 5
    assert errors and isinstance(errors[0], ProtocolError)


def test_a_literal_key_is_never_echoed_and_the_log_is_private(tmp_path):
    src = make_image(str(tmp_path / "src.img"), MiB)
    log = str(tmp_path / "remus-ext.log")
    env = {"XEN_REMUS_LOG": log, "XEN_REMUS_STATE_DIR": str(tmp_path / "state")}
    rc, err = run_cli(["-v", "resync", src, "tcp://127.0.0.1:9/d", "--key", SECRET], env=env)
    assert rc == 1 and "key file" in err and "not shown" in err
    assert SECRET not in err
    with open(log) as f:
        assert SECRET not in f.read()
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o640
    os.chmod(log, 0o666)                          # an older, looser file is tightened
    run_cli(["-v", "verify", src, src], env=env)
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o640


def test_a_fifo_as_key_file_is_refused_at_once(tmp_path):
    src = make_image(str(tmp_path / "src.img"), MiB)
    fifo = str(tmp_path / "key.fifo")
    os.mkfifo(fifo, 0o600)
    t0 = time.time()
    rc, err = run_cli(["resync", src, "tcp://127.0.0.1:9/d", "--key", fifo],
                      env={"XEN_REMUS_STATE_DIR": str(tmp_path / "state")})
    assert rc == 1 and "FIFO" in err and fifo in err, (rc, err)
    assert time.time() - t0 < 15
    with pytest.raises(ResyncError):
        P.read_key_file(fifo)
    with pytest.raises(ResyncError) as ei:
        P.read_key_file(str(tmp_path))          # a directory neither
    assert "regular file" in str(ei.value)
    with pytest.raises(ResyncError):
        api.resync(src, "tcp://127.0.0.1:9/d", key_file=fifo)
