"""A Remus backup copy destroyed while its checkpoint stream is still open
(what the harness does when the primary gave up on checkpoint 0): when the
stream then ends, the backup resumes nothing and records no failover."""
from __future__ import absolute_import, division, print_function

import socket
import threading

from xen_remus_ext.sim import wire
from xen_remus_ext.sim.disk import DiskFile, create_image
from xen_remus_ext.sim.domain import DEAD, INCOMING, SimDomain
from xen_remus_ext.sim.remus import RemusReceiver


class _Host(object):
    """The part of a sim host a receiver uses."""

    on_stream_break = "resume"

    def __init__(self, image):
        self.image = image
        self.domains = []
        self.events = []
        self.trackers = []

    def create_incoming(self, config, memory):
        dom = SimDomain(1, config, memory, {"xvda": DiskFile(self.image)}, INCOMING)
        dom.boot()
        self.domains.append(dom)
        return dom

    def destroy_domain(self, dom):
        dom.destroy()

    def failover_tracker(self, dom, dropped):
        self.trackers.append((dom.name, dropped))

    def event(self, kind, *details):
        self.events.append((kind,) + details)


def _stream(tmp_path, destroy_before_end):
    image = str(tmp_path / "b.img")
    create_image(image, 1 << 20)
    host = _Host(image)
    primary, backup = socket.socketpair()
    recv = RemusReceiver(host, backup, "A")
    raised = []

    def run():
        try:
            recv.run()
        except Exception as exc:    # noqa: BLE001 - the assertion below reports it
            raised.append(exc)
    t = threading.Thread(target=run)
    t.start()
    try:
        config = {"name": "d", "disks": [], "workload": {"rate": 0}}
        primary.sendall(wire.format_mchk({"config": config, "memory": {"next": 0, "seed": 1}, "epoch": 0})
                        + wire.OP_CREQ)
        assert wire.read_message(primary) == (wire.OP_DONE, None)
        dom = host.domains[0]
        if destroy_before_end:
            host.destroy_domain(dom)
    finally:
        primary.close()
    t.join(10)
    assert not t.is_alive()
    assert raised == []
    return host, dom


def test_a_destroyed_copy_is_not_resumed_when_its_stream_ends(tmp_path):
    host, dom = _stream(tmp_path, destroy_before_end=True)
    assert dom.state == DEAD
    assert [e for e in host.events if e[0] == "failover"] == []


def test_a_live_copy_fails_over_when_its_stream_ends(tmp_path):
    host, dom = _stream(tmp_path, destroy_before_end=False)
    try:
        assert dom.state == "running"
        assert [e[:2] for e in host.events if e[0] == "failover"] == [("failover", "d")]
    finally:
        dom.destroy()
