"""The final delta's hand-over from xend's migration hook to the failback
process (toolstack/delta_handoff.py) and the hook's fallback when nobody answers
(failback/delta.py).  Real Unix sockets in a temporary state directory."""
from __future__ import absolute_import, division, print_function

import os
import shutil
import socket
import tempfile
import threading

import pytest

from xen_remus_ext.errors import FailbackError, ResyncError
from xen_remus_ext.failback import delta, journal, machine
from xen_remus_ext.toolstack import delta_handoff


@pytest.fixture
def base():
    d = tempfile.mkdtemp(prefix="xrho")      # AF_UNIX paths are short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_hook_gets_the_delta_the_failback_process_sent(base):
    calls = []

    def send():
        calls.append(threading.current_thread().name)
        return {"sent": True, "by": "xend-hook", "seconds": 0.01}

    with delta_handoff.Server("web1", "192.0.2.1", send, base=base) as srv:
        assert oct(os.stat(srv.path).st_mode & 0o777) == oct(0o600)
        got = delta_handoff.request("web1", "192.0.2.1", base=base)
    assert got == {"sent": True, "by": "xend-hook", "seconds": 0.01}
    assert calls == ["xre-delta-handoff"] and srv.served == 1
    assert not os.path.exists(srv.path)          # gone with the migration
    assert delta_handoff.request("web1", "192.0.2.1", base=base) is None


def test_a_failed_send_fails_the_hook(base):
    def send():
        raise ResyncError("192.0.2.1:/img: connection lost")

    with delta_handoff.Server("web1", "192.0.2.1", send, base=base):
        with pytest.raises(FailbackError) as e:
            delta_handoff.request("web1", "192.0.2.1", base=base)
    assert "connection lost" in str(e.value)


def test_a_request_for_another_domain_is_refused(base):
    with delta_handoff.Server("web1", "192.0.2.1", lambda: {"sent": True}, base=base) as srv:
        # a hook for web2 would use another socket; a wrong line on this one is refused
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(srv.path)
        s.sendall(b"final-delta web2 192.0.2.1\n")
        reply = s.makefile("rb").readline()
        s.close()
    assert b'"ok": false' in reply and b"web1" in reply and srv.served == 0


def test_no_server_or_a_stale_socket_means_no_answer(base):
    assert delta_handoff.request("web1", "192.0.2.1", base=base) is None
    path = delta_handoff.socket_path("web1", "192.0.2.1", base)
    os.makedirs(os.path.dirname(path))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)                                  # a killed run's socket: nobody listens
    s.close()
    assert delta_handoff.request("web1", "192.0.2.1", base=base) is None


class Sync(object):
    def __init__(self):
        self.calls = []

    def sync(self, src, dest, **kw):
        self.calls.append((src, dest, kw.get("final")))
        return {"mode": "checksum", "bytes_sent": 1, "seconds": 0.0}


def migrating(base):
    rec = journal.new_record("web1", "192.0.2.1", machine.FAILBACK, "192.0.2.2", "xend", {}, 0.0)
    rec["state"], rec["step"] = machine.PRECOPIED, machine.MIGRATE
    rec["disks"] = [{"vdev": "xvda", "src": "/img", "dest": "192.0.2.1:/img"}]
    rec["delta"] = journal.Delta().to_dict()
    journal.save(rec, base)
    return rec


def test_the_hook_sends_itself_when_the_failback_process_is_gone(base):
    migrating(base)
    sync = Sync()

    def lost(dom, host):
        raise delta_handoff.HandoffLost("web1: the failback process closed without an answer")

    res = delta.final_delta_for("web1", "192.0.2.1", state_dir=base, disk_sync=sync, handoff=lost)
    assert res["sent"] and res["by"] == "xend-hook"
    assert sync.calls == [("/img", "192.0.2.1:/img", True)]       # never skipped
    assert journal.delta_of(journal.load("web1", base)).sent


def test_the_hook_does_not_send_twice_what_the_failback_process_sent(base):
    migrating(base)
    sync = Sync()
    res = delta.final_delta_for("web1", "192.0.2.1", state_dir=base, disk_sync=sync,
                                handoff=lambda d, h: {"sent": True, "by": "xend-hook", "seconds": 0.2})
    assert res["seconds"] == 0.2 and sync.calls == []


def test_a_failure_reported_by_the_failback_process_fails_the_migration(base):
    migrating(base)
    sync = Sync()

    def failed(dom, host):
        raise FailbackError("web1: final disk delta (sent by the failback process): no route")

    with pytest.raises(FailbackError):
        delta.final_delta_for("web1", "192.0.2.1", state_dir=base, disk_sync=sync, handoff=failed)
    assert sync.calls == []
