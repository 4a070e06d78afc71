"""What a new user hits with resync, receive and verify: each input gives a
clear message and the documented exit code (2 for an option value that
cannot be used, 1 for a failed run; verify 0/1/2 as cmp), never a traceback.
"""
from __future__ import absolute_import, division, print_function

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same
from tests.cli_util import usage
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ResyncError, ValidationError
from xen_remus_ext.resync import api, journal, meta, transport

MiB = 1 << 20


@pytest.fixture
def pair(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    return src, dst


def test_listen_port_out_of_range_is_a_usage_error(tmp_path, capsys):
    err = usage(["receive", "--listen", "0.0.0.0:99999", "--key", "k", "--export", "d=/x"], capsys)
    assert "65535" in err and "99999" in err
    with pytest.raises(ResyncError) as ei:
        transport.parse_listen("127.0.0.1:70000")
    assert "70000" in str(ei.value)


@pytest.mark.parametrize("ssh,word", [("'x", "No closing quotation"), ("", "empty"), ("  ", "empty")])
def test_bad_ssh_command_is_refused(pair, capsys, ssh, word):
    src, dst = pair
    err = usage(["resync", "-s", ssh, src, "host:" + dst], capsys)
    assert word in err
    with pytest.raises(ResyncError) as ei:       # the API refuses it too, before running anything
        api.resync(src, "host:" + dst, ssh=ssh)
    assert word in str(ei.value)


def test_verify_exit_codes_are_cmps(pair, capsys):
    src, dst = pair
    assert cli.main(["verify", src, dst]) == 0
    mutate(dst, 1, seed=2)
    assert cli.main(["verify", src, dst]) == 1
    assert cli.main(["verify", src, dst + ".missing"]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,word", [
    (["--rate", "1"], "at least 256K"),
    (["--rate", "100K"], "at least 256K"),
    (["--rate", "fast"], "expected a number"),
    (["--rate", "1.3"], "whole number"),
    (["--block-size", "5000"], "power of two"),
    (["--block-size", "2M"], "power of two"),
])
def test_bad_option_values_exit_2(pair, capsys, argv, word):
    src, dst = pair
    t0 = time.time()
    err = usage(["resync", src, dst] + argv, capsys)
    assert word in err and time.time() - t0 < 5
    err = usage(["verify", src, dst] + argv, capsys)
    assert word in err


def test_rate_fraction_and_zero(pair, capsys):
    src, dst = pair
    mutate(dst, 2, seed=5)
    assert cli.main(["resync", src, dst, "--rate", "1.5M", "--mode", "full"]) == 0
    assert same(src, dst)
    assert cli.main(["resync", src, dst, "--rate", "0"]) == 0          # 0: no cap
    with pytest.raises(ValidationError) as ei:
        api.resync(src, dst, rate=1)
    assert "at least" in str(ei.value)


@pytest.mark.parametrize("mode", ["full", "checksum"])
def test_dirty_with_a_mode_that_ignores_it_is_refused(pair, tmp_path, capsys, mode):
    src, dst = pair
    mutate(dst, 2, seed=6)
    before = open(dst, "rb").read()
    dirty = str(tmp_path / "d.txt")
    with open(dirty, "w") as f:
        f.write("0 1M\n")
    assert cli.main(["resync", src, dst, "--mode", mode, "--dirty", dirty]) == 2
    err = capsys.readouterr().err
    assert "--dirty" in err and mode in err
    assert open(dst, "rb").read() == before and meta.load(dst) is None
    assert cli.main(["resync", src, dst, "--mode", "tracked"]) == 2


@pytest.mark.parametrize("dest,want", [
    ("[::1]:/d/x.img", ("ssh", "::1", "/d/x.img")),
    ("[fe80::1%eth0]:/x", ("ssh", "fe80::1%eth0", "/x")),
    ("host:/x", ("ssh", "host", "/x")),
    ("/a:b", ("local", "/a:b")),
])
def test_dest_forms(dest, want):
    assert transport.parse_dest(dest) == want


def test_bracket_without_path_is_refused():
    with pytest.raises(ResyncError) as ei:
        transport.parse_dest("[::1]")
    assert "[ADDRESS]:PATH" in str(ei.value)


def test_ipv6_dest_reaches_ssh_as_the_address():
    argv = transport.ssh_argv("ssh -p 22", "::1", "/x")
    assert argv[:5] == ["ssh", "-p", "22", "--", "::1"]


def _run_on_tty(argv, cols):
    """Run ``argv`` with stderr on a pty ``cols`` columns wide: :returns: (rc, bytes written)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    devnull = open(os.devnull, "wb")
    p = subprocess.Popen(argv, stderr=slave, stdout=devnull, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.time() + 60
    while time.time() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        elif p.poll() is not None:
            break
    p.wait()
    os.close(master)
    devnull.close()
    return p.returncode, out


def test_progress_bar_is_drawn_on_a_zero_column_tty(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 16 * MiB)
    dst = str(tmp_path / "dst.img")
    with open(dst, "wb") as f:
        f.truncate(16 * MiB)
    rc, out = _run_on_tty([sys.executable, "-m", "xen_remus_ext", "resync", "--mode", "full", "--rate", "8M",
                           src, dst], cols=0)
    assert rc == 0, out
    text = out.decode("utf-8", "replace")
    assert re.search(r"\d+%\|[^|\r]{20,}\|", text), text[-400:]     # a bar, not a bare percentage
    assert same(src, dst)


def test_resumed_run_says_so(pair, capsys):
    src, dst = pair
    m = meta.ensure(src, 4 * MiB)
    with open(dst, "r+b") as f:                   # the second half not yet written
        f.seek(2 * MiB)
        f.write(b"\0" * (2 * MiB))
    meta.mark_inconsistent(dst, 4 * MiB)
    journal.Journal(dst, 4 * MiB, m.current, "full", 65536, done=[(0, 2 * MiB)]).save()
    assert cli.main(["resync", src, dst, "--mode", "full"]) == 0
    err = capsys.readouterr().err
    assert "resuming an interrupted run: comparing the %d bytes it finished by digests, %d to go" \
        % (2 * MiB, 2 * MiB) in err
    assert "resumed (%d finished bytes compared again, 0 of them sent again)" % (2 * MiB) in err
    assert same(src, dst) and meta.load(dst).consistent


@pytest.mark.parametrize("flag", ["--discard-target", "--discard-peer"])
def test_discard_peer_is_discard_targets_alias(pair, capsys, flag):
    src, dst = pair
    meta.mark_synced(dst, meta.ensure(src, 4 * MiB))
    meta.rotate(src)
    meta.rotate(dst)
    mutate(dst, 2, seed=9)
    assert cli.main(["resync", src, dst]) == 1
    assert "--discard-target" in capsys.readouterr().err
    assert cli.main(["resync", src, dst, flag]) == 0
    assert same(src, dst)
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["resync"].format_help()
    assert "--discard-peer" in help_text and "--discard-target" in help_text


def test_receive_refuses_an_export_name_given_twice(tmp_path, capsys):
    """Which copy a sender overwrites must not depend on the order of --export."""
    a = make_image(str(tmp_path / "a.img"), MiB)
    b = copy(a, str(tmp_path / "b.img"))
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    os.chmod(str(key), 0o600)
    from xen_remus_ext.cli.resync_cmd import parse_exports
    with pytest.raises(ValidationError):   # (before the listener: a failure here cannot hang)
        parse_exports(["disk=%s" % a, "disk=%s" % b])
    rc = cli.main(["receive", "--listen", "127.0.0.1:0", "--key", str(key),
                   "--export", "disk=%s" % a, "--export", "disk=%s" % b])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "--export disk: expected each NAME once, got it for %s and for %s" % (a, b) in err
    assert "receiving on" not in err and same(a, b)


@pytest.mark.parametrize("command,dest", [("failback", "discard_peer"), ("protect", "discard_peer"),
                                          ("resync-domain", "discard_target")])
@pytest.mark.parametrize("flag", ["--discard-target", "--discard-peer"])
def test_every_command_that_overwrites_a_copy_takes_both_names(command, dest, flag):
    args = cli.build_parser().parse_args([command, "vm1", "hostb", flag])
    assert getattr(args, dest) is True


@pytest.mark.parametrize("argv", [["resync", "--mode", "full"], ["resync", "--mode", "checksum"],
                                  ["resync"], ["verify"]])
def test_a_missing_local_target_is_named_as_such(tmp_path, capsys, argv):
    """Not "peer" nor "remote receiver": the target is a local path that does not exist."""
    src = make_image(str(tmp_path / "src.img"), MiB)
    dst = str(tmp_path / "missing.img")
    assert cli.main(argv + [src, dst]) in (1, 2)
    err = capsys.readouterr().err
    assert "%s: local target does not exist" % dst in err, err
    assert "peer" not in err and "remote" not in err, err
    assert not os.path.exists(dst)
