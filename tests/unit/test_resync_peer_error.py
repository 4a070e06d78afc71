"""A send that fails because the receiver gave up reports the receiver's
reason (e.g. ENOSPC on the target), not our own EPIPE.

The chaos campaign's ENOSPC kind found the sender saying only "connection
lost ... (Broken pipe)" while the receiver had logged "No space left on
device". Real sockets: a TCP pair on 127.0.0.1 and a Unix socketpair.
"""
from __future__ import absolute_import, division, print_function

import socket

import pytest

from xen_remus_ext.errors import ResyncError
from xen_remus_ext.resync import protocol as P


def _tcp_pair():
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    a = socket.create_connection(lst.getsockname())
    b, _ = lst.accept()
    lst.close()
    return a, b


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_failed_send_reports_the_peers_error_record(kind):
    ours, theirs = _tcp_pair() if kind == "tcp" else socket.socketpair()
    try:
        P.StreamChannel(sock=theirs, peer="sender").send_error("target /img: No space left on device")
        theirs.close()
        chan = P.StreamChannel(sock=ours, peer="receiver")
        big = b"\0" * (8 << 20)
        with pytest.raises(ResyncError) as exc:
            for _ in range(8):      # the first sends may still fit in socket buffers
                chan.send(P.DATA, big)
        assert "No space left on device" in str(exc.value)
    finally:
        ours.close()


def test_failed_send_without_a_record_still_says_connection_lost():
    ours, theirs = socket.socketpair()
    theirs.close()
    chan = P.StreamChannel(sock=ours, peer="receiver")
    with pytest.raises(ResyncError) as exc:
        for _ in range(8):
            chan.send(P.DATA, b"\0" * (8 << 20))
    assert "connection lost while sending" in str(exc.value)
    ours.close()
