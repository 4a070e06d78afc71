"""``xen-remus replicate attach|detach``: an image put behind a real
``replicate serve`` process and an NBD device, found afterwards by what
protect and failback ask (:func:`registry.lookup_device`), taken away again.

Real: the ``replicate serve`` processes attach starts (detached), their unix
sockets and control queries, SIGTERM at detach, the NBD handshake (libnbd's
``nbdinfo`` as the client inside the stand-in ``nbd-client``), and Debian's
own ``nbd-client`` negotiating with the server.  Simulated: the kernel side.
This host's kernel has no nbd module, so ``/sys`` is a temp tree
(``module/nbd``, ``block/nbdN``, ``block/nbdN/pid`` while connected) and the
stand-in ``nbd-client`` writes and removes that pid file where the kernel would.
"""
from __future__ import absolute_import, division, print_function

import os
import signal
import subprocess
import sys
import time

import pytest

from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication import attach, registry

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))

FAKE_CLIENT = u"""#!/bin/sh
# stand-in for nbd-client: the handshake is real (nbdinfo), the kernel's device is a file in $FAKE_SYS
set -e
if [ "$1" = -d ]; then rm -f "$FAKE_SYS/block/$(basename "$2")/pid"; exit 0; fi
[ "$1" = -unix ] || { echo "unexpected: $*" >&2; exit 2; }
sock=$2; dev=$3; name=$5
[ "$4" = -N ] && [ "$6" = -b ] && [ "$7" = 512 ] || { echo "unexpected: $*" >&2; exit 2; }
nbdinfo --size "nbd+unix:///$name?socket=$sock" > "$FAKE_SYS/block/$(basename "$dev")/size"
echo $$ > "$FAKE_SYS/block/$(basename "$dev")/pid"
"""

needs_nbdinfo = pytest.mark.skipif(attach.which("nbdinfo") is None, reason="libnbd-bin's nbdinfo not installed")


@pytest.fixture
def site(tmp_path, monkeypatch):
    sysfs = tmp_path / "sys"
    (sysfs / "module" / "nbd").mkdir(parents=True)
    for n in range(3):
        (sysfs / "block" / ("nbd%d" % n)).mkdir(parents=True)
    (sysfs / "block" / "loop0").mkdir()
    client = tmp_path / "nbd-client"
    client.write_text(FAKE_CLIENT)
    os.chmod(str(client), 0o755)
    monkeypatch.setenv("FAKE_SYS", str(sysfs))
    monkeypatch.setenv("PYTHONPATH", TOP + os.pathsep + os.environ.get("PYTHONPATH", ""))
    host = attach.Host(sys_root=str(sysfs), nbd_client=str(client))
    started = []
    yield host, tmp_path, started
    for rec in registry.entries():
        if registry.alive(rec["pid"]):
            os.kill(rec["pid"], signal.SIGKILL)


def image(tmp_path, name="g.img", size=1 << 20):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@needs_nbdinfo
def test_attach_serves_connects_and_is_found_then_detach_undoes_it(site):
    host, tmp, _ = site
    img = image(tmp)
    rec, changed = attach.attach(img, host=host)
    assert changed and rec["device"] == "/dev/nbd0" and rec["image"] == img
    assert (rec["nbd"], rec["control"]) == ("unix:" + registry.sockets_for(img)[0], registry.sockets_for(img)[1])
    with open(os.path.join(host.sys_root, "block", "nbd0", "size")) as f:
        assert f.read().strip() == str(1 << 20)                 # the handshake read the image's size
    assert registry.lookup_device("/dev/nbd0", sys_root=host.sys_root) == rec["control"]
    # idempotent: the same server and device
    again, changed = attach.attach(img, host=host)
    assert not changed and again == rec
    with pytest.raises(ReplicationError, match="already attached on /dev/nbd0; detach it first"):
        attach.attach(img, device="/dev/nbd2", host=host)
    # a second image takes the next free device; asking for a busy one names its holder
    img2 = image(tmp, "h.img")
    with pytest.raises(ReplicationError) as ei:
        attach.attach(img2, device="/dev/nbd0", host=host)
    assert "attach --device /dev/nbd0: device busy: it serves %s (server pid %d)" % (img, rec["pid"]) \
        in str(ei.value)
    with open(os.path.join(host.sys_root, "block", "nbd2", "pid"), "w") as f:
        f.write("55\n")                                       # someone else's client
    with pytest.raises(ReplicationError, match="device busy: an NBD client holds it \\(pid 55\\)"):
        attach.attach(img2, device="/dev/nbd2", host=host)
    rec2, _ = attach.attach(img2, host=host)
    assert rec2["device"] == "/dev/nbd1" and rec2["pid"] != rec["pid"]
    # a domain on it: refused, nothing changed
    with pytest.raises(ReplicationError, match="/dev/nbd0 is the disk of domain guest: shut it down"):
        attach.detach("/dev/nbd0", host=host, users=lambda dev: ["guest"])
    assert registry.alive(rec["pid"]) and host.connected("/dev/nbd0")
    done = attach.detach("/dev/nbd0", host=host, users=lambda dev: [])
    assert done["pid"] == rec["pid"] and not host.connected("/dev/nbd0")
    assert not registry.alive(rec["pid"]) or _reaped(rec["pid"])
    assert registry.load(img) is None and not os.path.exists(rec["control"])
    assert attach.detach(img, host=host) is None                 # nothing left to do
    assert attach.detach(img2, host=host, users=lambda dev: [])["device"] == "/dev/nbd1"
    assert registry.entries() == []


def _reaped(pid):
    end = time.time() + 5
    while time.time() < end and registry.alive(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except OSError:
            pass
        time.sleep(0.05)
    return not registry.alive(pid)


@needs_nbdinfo
def test_a_running_server_without_a_device_is_reused_and_a_dead_ones_record_dropped(site):
    host, tmp, _ = site
    img = image(tmp)
    nbd, ctl = registry.sockets_for(img)
    os.makedirs(registry.directory())
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "replicate", "serve", img, "--nbd",
                             "unix:" + nbd, "--control", ctl, "--ready-file", str(tmp / "ready")], env=env)
    try:
        end = time.time() + 30
        while not os.path.exists(str(tmp / "ready")) and time.time() < end:
            time.sleep(0.05)
        rec, changed = attach.attach(img, host=host)
        assert changed and rec["pid"] == proc.pid and rec["device"] == "/dev/nbd0"
    finally:
        proc.send_signal(signal.SIGKILL)          # no clean exit: the record stays behind
        proc.wait()
    os.unlink(os.path.join(host.sys_root, "block", "nbd0", "pid"))
    assert registry.load(img)["pid"] == proc.pid
    os.unlink(nbd)
    os.unlink(ctl)
    rec, changed = attach.attach(img, host=host)
    assert changed and rec["pid"] != proc.pid and registry.alive(rec["pid"])


def test_missing_pieces_are_named(site, monkeypatch):
    host, tmp, _ = site
    img = image(tmp)
    with pytest.raises(ReplicationError, match="attach %s: No such file or directory" % (tmp / "none.img")):
        attach.attach(str(tmp / "none.img"), host=host)
    with pytest.raises(ReplicationError, match="expected a disk image file or a block device"):
        attach.attach(str(tmp), host=host)
    monkeypatch.setenv("PATH", str(tmp / "empty"))
    bare = attach.Host(sys_root=host.sys_root)
    bare_which = attach.which
    monkeypatch.setattr(attach, "which", lambda name, path=None: bare_which(name, str(tmp / "empty")))
    with pytest.raises(ReplicationError, match="nbd-client not found on PATH: install Debian's nbd-client"):
        attach.attach(img, host=bare)
    # no module, and modprobe cannot load it
    os.rmdir(os.path.join(host.sys_root, "module", "nbd"))
    modprobe = tmp / "modprobe"
    modprobe.write_text(u"#!/bin/sh\necho 'modprobe: FATAL: Module nbd not found in directory /lib/modules/x' >&2\n"
                        u"exit 1\n")
    os.chmod(str(modprobe), 0o755)
    no_mod = attach.Host(sys_root=host.sys_root, nbd_client=host.nbd_client, modprobe=str(modprobe))
    with pytest.raises(ReplicationError) as ei:
        attach.attach(img, host=no_mod)
    assert "the nbd kernel module is not loaded and cannot be (modprobe nbd: exit 1: modprobe: FATAL: Module " \
           "nbd not found" in str(ei.value) and "CONFIG_BLK_DEV_NBD" in str(ei.value)
    os.mkdir(os.path.join(host.sys_root, "module", "nbd"))
    with pytest.raises(ReplicationError, match="the kernel has no such device"):
        attach.attach(img, device="/dev/nbd7", host=host)
    with pytest.raises(ReplicationError, match="expected an NBD device"):
        attach.attach(img, device="/dev/loop0", host=host)
    for n in range(3):
        with open(os.path.join(host.sys_root, "block", "nbd%d" % n, "pid"), "w") as f:
            f.write("9%d\n" % n)
    with pytest.raises(ReplicationError, match="no free NBD device \\(3, all connected\\)"):
        attach.attach(img, host=host)
    assert registry.entries() == []          # nothing started on the way


@pytest.mark.skipif(attach.which("nbd-client") is None and attach.which("nbd-client", "/usr/sbin") is None,
                    reason="Debian's nbd-client not installed")
@pytest.mark.skipif(os.path.isdir("/sys/module/nbd"), reason="this kernel has nbd: the device would be real")
def test_debian_nbd_client_negotiates_then_the_missing_kernel_driver_is_reported(site):
    """The real nbd-client against the real server: it reads the export
    (handshake), then fails where this kernel lacks nbd; attach says so and
    stops the server it started."""
    host, tmp, _ = site
    img = image(tmp)
    real = attach.Host(sys_root=host.sys_root)       # module/nbd and block/nbd0 exist only in the temp tree
    with pytest.raises(ReplicationError) as ei:
        attach.attach(img, host=real)
    msg = str(ei.value)
    assert msg.startswith("attach %s: nbd-client could not connect /dev/nbd0 to %s (exit 1: "
                          % (img, registry.sockets_for(img)[0]))
    assert "nbd module" in msg and "the server started for it is stopped again" in msg
    assert registry.entries() == [] and not os.path.exists(registry.sockets_for(img)[1])


@pytest.mark.skipif(os.path.isdir("/sys/module/nbd"), reason="this kernel has nbd")
def test_cli_attach_without_the_kernel_module_is_a_clear_error(tmp_path, site):
    host, tmp, _ = site
    img = image(tmp_path)
    env = dict(os.environ, PATH=os.path.dirname(host.nbd_client) + os.pathsep + "/nonexistent")
    p = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "replicate", "attach", img], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    err = err.decode()
    assert p.returncode == 1 and "Traceback" not in err
    assert "the nbd kernel module is not loaded and cannot be (modprobe not found)" in err
    p = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "replicate", "detach", img], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    assert p.returncode == 0 and "not attached; nothing to do" in out.decode()
