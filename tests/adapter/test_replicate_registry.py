"""How protect and failback find a disk served by ``xen-remus replicate
serve`` on an xl host: the server records itself (and, with ``--device``,
its NBD device) under the run dir while it runs; the xl adapter maps a
domain's ``phy:`` backend device to that record, and counts it only while
the server's process lives and answers on its control socket.

Real: the ``replicate serve`` process, its unix sockets, the query on the
control socket, SIGTERM.  Simulated: the kernel's NBD client (this host's
kernel has no nbd module): ``/sys/block/nbd0/pid`` is a file in a temp
tree, and ``/dev/nbd0`` a name the domain's JSON gives."""
from __future__ import absolute_import, division, print_function

import json
import os
import signal
import subprocess
import time

import pytest

from tests.adapter.replication_util import CLI, env
from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication import registry
from xen_remus_ext.toolstack.xl import XlToolstack

def xl_json(dev, vdev="xvda"):
    return {"domid": 4, "config": {
        "c_info": {"type": "pv", "name": "guest"},
        "b_info": {"max_vcpus": 1, "target_memkb": 65536},
        "disks": [{"pdev_path": dev, "vdev": vdev, "backend": "phy", "format": "raw", "readwrite": 1},
                  {"pdev_path": "/srv/data.img", "vdev": "xvdb", "backend": "qdisk", "format": "raw",
                   "readwrite": 1},
                  {"pdev_path": "/dev/nbd0", "vdev": "xvdc", "backend": "phy", "format": "raw",
                   "readwrite": 0}]}}


class ListRunner(object):
    def __init__(self, obj):
        self.obj = obj

    def run(self, argv, input=None, timeout=None, env=None):
        assert argv[1:3] == ["list", "-l"], argv
        return 0, json.dumps([self.obj]).encode(), b""


def wait_file(path, proc, limit=30):
    end = time.time() + limit
    while time.time() < end:
        if os.path.exists(path):
            return
        assert proc.poll() is None, "serve exited %s" % proc.returncode
        time.sleep(0.02)
    raise AssertionError("%s did not appear" % path)


@pytest.fixture
def served(tmp_path):
    """A real server of img.raw, recorded with --device /dev/nbd0."""
    img = tmp_path / "img.raw"
    with open(str(img), "wb") as f:
        f.truncate(1 << 20)
    nbd, ctl = registry.sockets_for(str(img))
    os.makedirs(registry.directory())
    proc = subprocess.Popen(CLI + ["replicate", "serve", str(img), "--nbd", "unix:" + nbd, "--control", ctl,
                                   "--device", "/dev/nbd0", "--ready-file", str(tmp_path / "ready")],
                            env=env(), stderr=subprocess.PIPE)
    try:
        wait_file(str(tmp_path / "ready"), proc)
        sysfs = tmp_path / "sys"
        (sysfs / "block" / "nbd0").mkdir(parents=True)
        (sysfs / "block" / "nbd0" / "pid").write_text(u"4242\n")
        yield str(img), ctl, proc, str(sysfs)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait()
        proc.stderr.close()


def test_serve_records_itself_and_the_xl_adapter_finds_the_disk(served):
    img, ctl, proc, sysfs = served
    rec = registry.load(img)
    assert rec == {"image": img, "nbd": "unix:" + registry.sockets_for(img)[0], "control": ctl, "name": "xvda",
                   "pid": proc.pid, "device": "/dev/nbd0"}
    assert registry.lookup_device("/dev/nbd0", sys_root=sysfs) == ctl          # asked on the real socket
    xl = XlToolstack(ListRunner(xl_json("/dev/nbd0")),
                     served=lambda dev: registry.lookup_device(dev, sys_root=sysfs))
    assert xl.served_disks("guest") == {"xvda": ctl}     # not the qdisk one, not the read-only one
    assert XlToolstack(ListRunner(xl_json("/dev/nbd1")), served=lambda dev: registry.lookup_device(
        dev, sys_root=sysfs)).served_disks("guest") == {}
    assert XlToolstack(ListRunner(xl_json("/dev/nbd0"))).served_disks("guest") == {}    # nothing injected
    # the kernel's client gone: not served
    os.unlink(os.path.join(sysfs, "block", "nbd0", "pid"))
    assert registry.lookup_device("/dev/nbd0", sys_root=sysfs) is None
    # the server gone: its record with it
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert registry.load(img) is None and registry.entries() == []


def test_a_record_whose_server_died_or_lies_does_not_count(served, tmp_path):
    img, ctl, proc, sysfs = served
    registry.register(str(tmp_path / "other.img"), "unix:/nowhere", "/run/nowhere.ctl", "xvda", 2 ** 22 + 7,
                      device="/dev/nbd0")
    # the dead record comes first (sorted by image) and is passed over
    assert [r["image"] for r in registry.entries()][0] == str(tmp_path / "img.raw")
    assert registry.lookup_device("/dev/nbd0", sys_root=sysfs) == ctl
    proc.send_signal(signal.SIGKILL)            # no clean exit: its record stays, its process does not
    proc.wait()
    assert registry.load(img)["pid"] == proc.pid
    assert registry.lookup_device("/dev/nbd0", sys_root=sysfs) is None
    # a live process whose control socket serves another image
    registry.register(img, "unix:x", ctl, "xvda", os.getpid(), device="/dev/nbd0")
    assert registry.lookup_device("/dev/nbd0", sys_root=sysfs, query=lambda c: {"path": "/elsewhere.img"}) is None

    def refuse(c):
        raise ReplicationError("disk server control socket %s: Connection refused" % c)
    assert registry.lookup_device("/dev/nbd0", sys_root=sysfs, query=refuse) is None
    assert registry.lookup_device("/dev/nbd0", sys_root=sysfs, query=lambda c: {"path": img}) == ctl


def test_records_the_registry_cannot_read_are_skipped(tmp_path):
    d = registry.directory()
    os.makedirs(d)
    for name, text in (("a.json", "{"), ("b.json", '{"image": "/x"}'), ("c.json", "[]")):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    assert registry.entries() == [] and registry.lookup_device("/dev/nbd0") is None
    with pytest.raises(ReplicationError, match="expected a served-disk record of server pid 1"):
        registry.set_device("/img/none.img", "/dev/nbd3", 1)


def test_socket_paths_depend_on_the_image_path_only(tmp_path, monkeypatch):
    a = registry.sockets_for("/var/lib/xen/images/guest.img", base="/run/xen-remus")
    assert a == registry.sockets_for("/var/lib/xen/images/guest.img", base="/run/xen-remus")
    assert a[1].startswith("/run/xen-remus/replicate/guest.img-") and a[1].endswith(".ctl")
    assert a != registry.sockets_for("/srv/guest.img", base="/run/xen-remus")
    long = registry.sockets_for("/srv/" + "x" * 200 + ".img", base="/run/xen-remus")[1]
    assert len(long) < 108


def test_serve_with_a_device_outside_dev_is_a_clear_error(tmp_path):
    img = tmp_path / "i.img"
    img.write_bytes(b"\0" * 4096)
    p = subprocess.Popen(CLI + ["replicate", "serve", str(img), "--nbd", "unix:%s" % (tmp_path / "n"),
                                "--control", str(tmp_path / "c"), "--device", "nbd0"],
                         env=env(), stderr=subprocess.PIPE)
    err = p.communicate()[1].decode()
    assert p.returncode == 1 and "serve --device nbd0: expected a device path under /dev" in err


class Answers(object):
    def __init__(self, rc, out, err=b""):
        self.answer = (rc, out, err)
        self.argv = None

    def run(self, argv, input=None, timeout=None, env=None):
        self.argv = argv
        return self.answer


def test_the_peers_list_is_read_from_replicate_list_json(tmp_path):
    row = {"image": "/srv/g.img", "device": "/dev/nbd0", "control": "/run/x.ctl", "pid": 9, "running": True}
    gone = dict(row, image="/srv/h.img", running=False)
    runner = Answers(0, json.dumps({"served": [row, gone]}).encode())
    lister = registry.remote_lister(["ssh", "--", "hostb", "xen-remus", "replicate", "list", "--json"], runner)
    assert lister() == [row]
    xl = XlToolstack(runner, xl=["ssh", "--", "hostb", "xl"], host="hostb", served_list=lister)
    assert xl.served_devices() == [{"device": "/dev/nbd0", "image": "/srv/g.img", "control": "/run/x.ctl"}]
    for answer, says in (((2, b"", b"usage: ...\nxen-remus: error: invalid choice: 'list'\n"),
                          "exit 2: xen-remus: error: invalid choice: 'list'"),
                         ((0, b"not json"), "expected {\"served\": [...]}"),
                         ((0, b'{"served": 3}'), "expected a list of served disks, got 3")):
        with pytest.raises(ReplicationError) as ei:
            registry.remote_lister(["ssh", "hostb", "xen-remus"], Answers(*answer))()
        assert says in str(ei.value) and str(ei.value).startswith("ssh hostb xen-remus: ")


def test_wiring_gives_xl_toolstacks_their_served_disks(monkeypatch):
    from xen_remus_ext import wiring
    local = wiring.local_toolstack("xl")
    assert local.served is registry.lookup_device and local.served_devices() == []
    runner = Answers(0, b'{"served": []}')
    monkeypatch.setattr(wiring, "SubprocessRunner", lambda: runner)
    monkeypatch.delenv("XEN_REMUS_REMOTE_CMD", raising=False)
    peer = wiring.peer_toolstack("xl", "hostb", ssh="ssh -p 2222")
    assert peer.served is None       # a peer's domains are never searched for served disks
    assert peer.served_devices() == []
    assert runner.argv == ["ssh", "-p", "2222", "--", "hostb", "xen-remus", "replicate", "list", "--json"]


def test_replicate_list_prints_the_records(served, capsys):
    from xen_remus_ext.cli import main as cli
    img, ctl, proc, sysfs = served
    assert cli.main(["replicate", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["served"]
    assert rows == [dict(registry.load(img), running=True)]
    assert cli.main(["replicate", "list"]) == 0
    out = capsys.readouterr().out
    assert img in out and "/dev/nbd0" in out and "serving" in out and ctl in out
