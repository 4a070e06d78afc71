"""xl memory-only Remus (``xl remus -d``) and the fiemap tracker, as real Xen 4.17 needs them (issue 6).

libxl refuses ``-n``/``-d``/``-b`` without ``-F``; with ``memory_only`` the
xl adapter reports writable disks as replicated ones with no backup host in
their spec, which failback resyncs and never needs to re-point.
"""
from __future__ import absolute_import, division, print_function

import json

import pytest

from xen_remus_ext.errors import ToolstackError, ValidationError
from xen_remus_ext.failback.preflight import plan_direction
from xen_remus_ext.toolstack.xl import XlToolstack, domain_config_from_xl_json

XL_JSON = {"domid": 3, "config": {
    "c_info": {"type": "pv", "name": "guest"},
    "b_info": {"max_vcpus": 1, "target_memkb": 98304, "type.pv": {"kernel": "/opt/xrl/guest-vmlinuz"}},
    "disks": [{"pdev_path": "/var/lib/xrl/disks/guest.img", "vdev": "xvda", "backend": "phy",
               "format": "raw", "script": "block", "readwrite": 1},
              {"pdev_path": "/srv/iso/tools.iso", "vdev": "xvdc", "format": "raw", "readwrite": 0,
               "is_cdrom": 1}]}}


def test_memory_only_marks_writable_disks():
    plain = domain_config_from_xl_json(XL_JSON)
    assert plain.remus_disks == []
    cfg = domain_config_from_xl_json(XL_JSON, memory_only=True)
    assert [(d.vdev, d.path, d.remus.host) for d in cfg.remus_disks] == [
        ("xvda", "/var/lib/xrl/disks/guest.img", "")]


def test_hostless_spec_needs_no_retarget():
    cfg = domain_config_from_xl_json(XL_JSON, memory_only=True)
    same, changed = plan_direction(cfg, "hostb", ("192.0.2.2",))
    assert changed == [] and same is cfg


def test_unsafe_modes_add_F():
    xl = XlToolstack(runner=None, xl=["xl"])
    assert xl.remus_argv("guest", "hostb", net=False, disk=False) == [
        "xl", "remus", "-i", "200", "-n", "-d", "-F", "guest", "hostb"]
    assert xl.remus_argv("guest", "hostb", net=False) == ["xl", "remus", "-i", "200", "-n", "-F", "guest", "hostb"]
    assert xl.remus_argv("guest", "hostb") == ["xl", "remus", "-i", "200", "guest", "hostb"]


class _ListRunner(object):
    """Answers ``xl list -l DOM`` with XL_JSON; anything else is a test error."""

    def run(self, argv, input=None, timeout=None, env=None):
        assert argv[1:3] == ["list", "-l"], argv
        return 0, json.dumps([XL_JSON]).encode(), b""


def test_fiemap_tracker_offered_only_when_asked():
    plain = XlToolstack(runner=None)
    assert plain.tracker_for("guest", "xvda") is None and not plain.tracks_writes()
    with pytest.raises(ValidationError):
        XlToolstack(runner=None, tracker="dm-era")
    xl = XlToolstack(_ListRunner(), tracker="fiemap")
    assert xl.tracks_writes()
    tr = xl.tracker_for("guest", "xvda")
    assert (tr.name, tr.image) == ("fiemap", "/var/lib/xrl/disks/guest.img")
    with pytest.raises(ToolstackError):
        xl.tracker_for("guest", "xvdz")
