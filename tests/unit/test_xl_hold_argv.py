"""``xl remus`` with the backup held (``remus_start(hold=True)``): the exact
argv, and what the shell xl starts (``sh -c``, as ``create_migration_child``
in xl_migrate.c does) runs locally and, through ssh, on the backup."""
from __future__ import absolute_import, division, print_function

import os
import shlex
import subprocess
import sys

import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.ports import Runner
from xen_remus_ext.toolstack.xl import XlToolstack

RECEIVER = ["xen-remus", "hold", "receive", "--domain", "guest", "--", "xl", "migrate-receive", "-r"]


class NoRunner(Runner):
    def run(self, argv, input=None, timeout=None, env=None):
        pytest.fail("unexpected command %r" % (argv,))


@pytest.fixture(autouse=True)
def _no_remote_override(monkeypatch):
    monkeypatch.delenv("XEN_REMUS_REMOTE_CMD", raising=False)


def test_hold_argv_runs_the_holder_through_ssh_as_the_whole_receiver_command():
    xl = XlToolstack(NoRunner(), xl=["/usr/sbin/xl"], remus_ssh="ssh -i /root/.ssh/remus")
    argv = xl.remus_argv("guest", "hostb", net=False, disk=False, hold=True)
    assert argv == ["/usr/sbin/xl", "remus", "-i", "200", "-n", "-d", "-F", "-s", "", "guest",
                    "exec ssh -i /root/.ssh/remus -- hostb xen-remus hold receive --domain guest -- "
                    "xl migrate-receive -r"]
    # without hold: unchanged
    assert xl.remus_argv("guest", "hostb") == ["/usr/sbin/xl", "remus", "-i", "200", "-s",
                                               "ssh -i /root/.ssh/remus", "guest", "hostb"]


def test_the_rune_reaches_the_backup_as_these_words(tmp_path):
    """xl runs HOST through ``sh -c`` when ``-s ""``; ssh joins the words
    after the host into one line that the backup's shell splits again."""
    fake_ssh = tmp_path / "fake ssh"      # a space in the path: quoting must hold
    fake_ssh.write_text(u"#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    os.chmod(str(fake_ssh), 0o755)
    xl = XlToolstack(NoRunner(), remus_ssh="'%s' -o BatchMode=yes" % fake_ssh)
    rune = xl.remus_argv("gu est'x", "hostb", hold=True)[-1]
    out = subprocess.check_output(["sh", "-c", rune]).decode().splitlines()
    assert out[:3] == ["-o", "BatchMode=yes", "--"] and out[3] == "hostb"
    remote_line = " ".join(out[4:])
    assert shlex.split(remote_line) == [w if w != "guest" else "gu est'x" for w in RECEIVER]


def test_a_peer_xl_quotes_the_hold_words_for_its_ssh():
    peer = XlToolstack(NoRunner(), xl=["ssh", "--", "hosta", "xl"], host="hosta")
    argv = peer.remus_argv("guest", "hostb", hold=True)
    assert argv[:5] == ["ssh", "--", "hosta", "xl", "remus"]
    # the peer's shell reads the joined line: -s '' and the rune stay one word each
    words = shlex.split(" ".join(argv[4:]))
    assert words[-4:-2] == ["-s", ""] and words[-2] == "guest" and words[-1].startswith("exec ssh -- hostb ")


def test_hold_and_blackhole_are_refused_together():
    with pytest.raises(ToolstackError, match="blackhole backup has no copy to hold"):
        XlToolstack(NoRunner()).remus_argv("guest", "hostb", blackhole=True, hold=True)


def test_xl_can_hold_xend_and_the_port_default_cannot():
    from xen_remus_ext.ports import Toolstack
    from xen_remus_ext.toolstack.xend import XendToolstack
    assert XlToolstack(NoRunner()).check_hold() is None
    xend = XendToolstack(runner=NoRunner())
    assert "resumes a Remus backup by itself" in xend.check_hold()
    with pytest.raises(ToolstackError, match="resumes a Remus backup by itself"):
        xend.remus_start("guest", "hostb", hold=True)
    with pytest.raises(ToolstackError, match="hold a Remus backup for promote"):
        Toolstack().hold_on_stream_break(True)
    with pytest.raises(ToolstackError, match="take over the Remus backup guest"):
        Toolstack().remus_takeover("guest")
    assert sys.version_info[0] in (2, 3)
