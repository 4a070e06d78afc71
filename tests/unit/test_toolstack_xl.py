"""XlToolstack: parsers on golden xl output and the exact argv sent.

The runner here is a strict in-memory double (Ganeti's "Unhandled command"
pattern): any argv not in its table fails the test.  The golden files under
tests/data/xl/ follow xl 4.5's printf formats and libxl's JSON for a PV guest.
"""
from __future__ import absolute_import, division, print_function

import io
import json
import os

import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.ports import Runner
from xen_remus_ext.toolstack.processes import RemusProcesses
from xen_remus_ext.toolstack.xl import XlToolstack, domain_config_from_xl_json, parse_xl_info, parse_xl_list

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "xl")


def golden(name):
    with io.open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read()


class StrictRunner(Runner):
    def __init__(self, table):
        self.table = dict((tuple(k), v) for k, v in table)
        self.calls = []

    def run(self, argv, input=None, timeout=None, env=None):
        self.calls.append(list(argv))
        if tuple(argv) not in self.table:
            pytest.fail("unhandled command %r" % (argv,))
        return self.table[tuple(argv)]


def test_parse_xl_list_golden():
    doms = parse_xl_list(golden("list.txt"))
    assert [(d.domid, d.name, d.memory, d.state) for d in doms] == [
        (0, "Domain-0", 1024, "r-----"), (3, "guest", 512, "-b----")]
    with pytest.raises(ToolstackError):
        parse_xl_list("garbage\n")


def test_parse_xl_info_golden():
    info = parse_xl_info(golden("info.txt"))
    assert info["free_memory"] == 6655 and info["total_memory"] == 8191
    assert info["xen_version"] == "4.5.0"
    with pytest.raises(ToolstackError):
        parse_xl_info("host : x\n")


def test_domain_config_from_golden_json():
    cfg = domain_config_from_xl_json({"domid": 3, "config": json.loads(golden("guest.json"))})
    assert (cfg.name, cfg.memory, cfg.vcpus, cfg.builder, cfg.format) == ("guest", 512, 1, "linux", "xl")
    assert cfg.kernel == "/boot/vmlinuz-3.16.0-4-amd64"
    assert [(d.uname, d.vdev, d.mode) for d in cfg.disks] == [("phy:/dev/drbd0", "xvda", "w")]
    assert cfg.vifs == ("mac=00:16:3e:5c:a1:01,bridge=xenbr0",)
    assert cfg.options["uuid"] == "6f1c3a52-9d0e-4c1b-8f7a-2b5d0e9c4a11" and cfg.options["domid"] == 3
    with pytest.raises(ToolstackError):
        domain_config_from_xl_json({"domid": 3})


@pytest.mark.parametrize("disk,uname", [
    ({"pdev_path": "/srv/g.qcow2", "format": "qcow2", "backend": "qdisk"}, "tap:qcow2:/srv/g.qcow2"),
    ({"pdev_path": "/srv/g.img", "format": "raw", "backend": "qdisk"}, "file:/srv/g.img"),
    ({"pdev_path": "r0", "script": "block-drbd"}, "drbd:r0"),
    ({"pdev_path": "/dev/vg/g", "format": "raw"}, "phy:/dev/vg/g"),
])
def test_disk_unames(disk, uname):
    cfg = domain_config_from_xl_json({"config": {"c_info": {"name": "g"}, "b_info": {}, "disks": [disk]}})
    assert cfg.disks[0].uname == uname


def test_exact_argv_and_errors_carry_stderr(tmp_path):
    runner = StrictRunner([
        (["xl", "pause", "guest"], (0, b"", b"")),
        (["xl", "save", "-c", "guest", "/s/img"], (0, b"", b"")),
        (["xl", "restore", "-p", "/s/img"], (0, b"", b"")),
        (["xl", "migrate", "-s", "ssh -p 2222", "-p", "-C", "/etc/xen/g.cfg", "guest", "hostb"], (0, b"", b"")),
        (["xl", "migrate", "guest", "hostb"], (0, b"", b"")),
        (["xl", "unpause", "ghost"], (2, b"", b"ghost is an invalid domain identifier (rc=-6)\n")),
    ])
    xl = XlToolstack(runner, processes=RemusProcesses(str(tmp_path)))
    xl.pause("guest")
    xl.save("guest", "/s/img", checkpoint=True)
    xl.restore("/s/img", paused=True)
    xl.migrate("guest", "hostb", paused=True, ssh="ssh -p 2222", config="/etc/xen/g.cfg")
    xl.migrate("guest", "hostb")
    with pytest.raises(ToolstackError) as err:
        xl.unpause("ghost")
    assert str(err.value) == "xl unpause ghost: exit 2: ghost is an invalid domain identifier (rc=-6)"
    assert len(runner.calls) == 6


def test_refused_options_are_errors_not_silence(tmp_path):
    xl = XlToolstack(StrictRunner([]), processes=RemusProcesses(str(tmp_path)))
    with pytest.raises(ToolstackError):
        xl.migrate("guest", "hostb", live=False)
    with pytest.raises(ToolstackError):
        xl.migrate("guest", "hostb", port=8002)
    with pytest.raises(ToolstackError):
        xl.remus_start("guest", "hostb", port=9000)


def test_remus_argv():
    xl = XlToolstack(StrictRunner([]), xl=["/usr/sbin/xl"], remus_ssh="ssh -i /root/.ssh/remus")
    assert xl.remus_argv("guest", "hostb", interval_ms=50, net=False, disk=False, blackhole=True, unsafe=True) == [
        "/usr/sbin/xl", "remus", "-i", "50", "-n", "-d", "-b", "-F", "-s", "ssh -i /root/.ssh/remus", "guest", "hostb"]
    assert xl.remus_argv("guest", "hostb", ssh="") == ["/usr/sbin/xl", "remus", "-i", "200", "-s", "", "guest", "hostb"]


def test_create_from_file_runs_xl_create_and_reports_its_refusal(tmp_path):
    runner = StrictRunner([
        (["xl", "create", "/etc/xen/g.cfg"], (0, b"", b"")),
        (["xl", "create", "/etc/xen/bad.cfg"], (1, b"", b"Failed to parse config: Invalid argument\n")),
    ])
    xl = XlToolstack(runner, processes=RemusProcesses(str(tmp_path)))
    xl.create_from_file("/etc/xen/g.cfg")
    with pytest.raises(ToolstackError) as err:
        xl.create_from_file("/etc/xen/bad.cfg")
    assert "xl create /etc/xen/bad.cfg: exit 1: Failed to parse config" in str(err.value)
