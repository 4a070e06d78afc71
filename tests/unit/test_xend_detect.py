"""Which toolstack a host runs: xend is detected as xl itself detects it
(its lock files), or by its pid file or its socket; ``xl`` on PATH alone
does not decide (Xen 4.1-4.4 install it next to xend)."""
from __future__ import absolute_import, division, print_function

import os
import socket

from xen_remus_ext.wiring import default_toolstack_kind, xend_running


def _paths(tmp):
    return {"lock_files": (str(tmp.join("subsys-xend")), str(tmp.join("xend.lock"))),
            "pid_file": str(tmp.join("xend.pid")), "socket_path": str(tmp.join("xmlrpc.sock"))}


def test_nothing_running(tmpdir):
    assert xend_running(**_paths(tmpdir)) is None


def test_lock_file_as_xl_checks_it(tmpdir):
    p = _paths(tmpdir)
    tmpdir.join("xend.lock").write("")
    assert "lock file" in xend_running(**p) and p["lock_files"][1] in xend_running(**p)


def test_pid_file_counts_only_for_a_live_process(tmpdir):
    p = _paths(tmpdir)
    tmpdir.join("xend.pid").write("%d\n" % os.getpid())
    assert "pid file" in xend_running(**p)
    tmpdir.join("xend.pid").write("999999999\n")
    assert xend_running(**p) is None
    tmpdir.join("xend.pid").write("garbage\n")
    assert xend_running(**p) is None


def test_socket_answering(tmpdir):
    p = _paths(tmpdir)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(p["socket_path"])
        srv.listen(1)
        assert "answers on" in xend_running(**p)
    finally:
        srv.close()
    assert xend_running(**p) is None      # a stale socket file is not a running xend


def test_default_kind():
    def xl_on_path(name):
        return name == "xl"

    def none_on_path(name):
        return False

    assert default_toolstack_kind(xl_on_path, running=lambda: "xend answers") == "xend"
    assert default_toolstack_kind(xl_on_path, running=lambda: None) == "xl"
    assert default_toolstack_kind(none_on_path, running=lambda: None) == "xend"

