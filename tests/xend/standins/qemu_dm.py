"""Stand-in for qemu-dm (qemu-xen-traditional), the device model of an HVM domain.

xend starts it (image.py ``createDeviceModel``) as
``qemu-dm -d DOMID -domain-name NAME ... -M xenfv [-loadvm FILE]`` with the
write end of its sentinel FIFO open, and drives it through xenstore alone,
as the real one:

* once up, it writes ``/local/domain/0/device-model/DOMID/state = running``
  (xend's ``signalDeviceModel`` and the Remus checkpointer wait for it);
* ``.../command = save``: it writes its device state to
  ``/var/lib/xen/qemu-save.DOMID`` and then ``state = paused`` (xend's save
  appends that file to the stream after ``QemuDeviceModelRecord``; the
  Remus checkpointer sends it after each checkpoint as
  ``RemusDeviceModelState``);
* ``.../command = continue``: ``state = running`` again;
* ``.../logdirty/cmd = enable|disable``: answered in ``.../logdirty/ret``
  (the checkpointer switches qemu's dirty logging on for Remus);
* ``-loadvm FILE`` (a restore): the state file the restore helper wrote is
  read and must be one this stand-in saved, for this domain's name; what it
  held is logged, so the lab can tell which checkpoint a failover resumed.

For each ``-net tap,...,ifname=IF,bridge=BR`` it opens the tap device IF
in the host's network namespace and puts it on BR, as qemu and its ifup
script do; the device goes away with the process.  It exits on
SIGHUP/SIGTERM (xend's destroy sends SIGHUP), and runs in a process group of its own, so that it
outlives a restart of xend (the lab kills xend's process group) as it does
on a real host.  The emulated devices themselves are not simulated:
the lab's guest writes its disk through the tapdisk directly.

Runs under xend's Python 2.7 with the tree's own ``xen.lowlevel.xs``.
"""
from __future__ import absolute_import, division, print_function

import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import time

MAGIC = b"QEVM-LAB1\n"


def log(msg):
    sys.stdout.write("%.6f qemu-dm[%d]: %s\n" % (time.time(), os.getpid(), msg))
    sys.stdout.flush()


def parse(argv):
    """The options xend passes that matter here; the rest is logged and ignored."""
    opts = {"domid": None, "name": None, "loadvm": None, "nics": [], "taps": []}
    i = 0
    while i < len(argv):
        a = argv[i]
        val = argv[i + 1] if i + 1 < len(argv) else None
        if a == "-d":
            opts["domid"] = int(val)
        elif a == "-domain-name":
            opts["name"] = val
        elif a == "-loadvm":
            opts["loadvm"] = val
        elif a == "-net" and val:
            kind, _, rest = val.partition(",")
            fields = dict(kv.partition("=")[::2] for kv in rest.split(",") if kv)
            if kind == "nic":
                opts["nics"].append(fields.get("macaddr"))
            elif kind == "tap":
                opts["taps"].append((fields.get("ifname"), fields.get("bridge")))
        if a.startswith("-") and val is not None and not val.startswith("-") and a not in (
                "-nographic", "-vncunused", "-sdl", "-disable-opengl", "-std-vga", "-acpi", "-usb", "-isa",
                "-localtime"):
            i += 2
        else:
            i += 1
    if opts["domid"] is None:
        raise SystemExit("qemu-dm stand-in: no -d DOMID in %r" % (argv,))
    return opts


def load_state(path, name):
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise SystemExit("qemu-dm stand-in: -loadvm %s: not a device state this stand-in saved (%d bytes)"
                         % (path, len(data)))
    state = json.loads(data[len(MAGIC):].decode("utf-8"))
    if state.get("name") != name:
        raise SystemExit("qemu-dm stand-in: -loadvm %s: state of domain %r, expected %r"
                         % (path, state.get("name"), name))
    return state


def ip(*args):
    proc = subprocess.Popen(("ip",) + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    if proc.returncode != 0:
        log("ip %s: exit %d: %s" % (" ".join(args), proc.returncode, err.decode("utf-8", "replace").strip()))
    return proc.returncode == 0


TUNSETIFF = 0x400454ca
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(ifname):
    """A tap device named ``ifname``, as qemu's ``-net tap`` opens it; :returns: its fd or None."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode("ascii"), IFF_TAP | IFF_NO_PI))
        return fd
    except (IOError, OSError) as exc:
        log("tap %s: %s" % (ifname, exc))
        return None


def main(argv):
    from xen.lowlevel import xs as xslib
    opts = parse(argv[1:])
    domid, name = opts["domid"], opts["name"]
    # out of xend's process group: the lab restarts xend by killing its group,
    # and a device model outlives an xend restart on a real host
    os.setpgid(0, 0)
    log("started: %s" % " ".join(argv[1:]))
    host = os.environ.get("XEND_LAB_HOST", "?")
    state = {"name": name, "saves": 0, "nics": opts["nics"], "history": []}
    if opts["loadvm"]:
        state = load_state(opts["loadvm"], name)
        log("loadvm %s: device state of %s saved on host %s, save %d" % (
            opts["loadvm"], name, state.get("host"), state.get("saves")))
        state["history"] = (state.get("history") or [])[-8:] + [
            {"host": state.get("host"), "saves": state.get("saves")}]
    taps = []       # open tap fds: the devices go away with this process, as qemu's do
    for ifname, bridge in opts["taps"]:
        if ifname:
            fd = open_tap(ifname)
            if fd is not None:
                taps.append(fd)
                if bridge:
                    ip("link", "set", "dev", ifname, "master", bridge)
                ip("link", "set", "dev", ifname, "up")
    # xend's destroy sends SIGHUP and waits for the exit: die at once (a Python
    # handler would wait for read_watch to return)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    xs = xslib.xs()
    base = "/local/domain/0/device-model/%d" % domid
    xs.write("", base + "/state", "running")
    log("state running")
    xs.watch(base + "/command", "command")
    xs.watch(base + "/logdirty/cmd", "logdirty")
    save_path = "/var/lib/xen/qemu-save.%d" % domid
    while True:
        path, token = xs.read_watch()
        if token == "command":
            cmd = xs.read("", base + "/command")
            if cmd == "save":
                state["saves"] += 1
                state["host"] = host
                state["time"] = time.time()
                tmp = save_path + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(MAGIC + json.dumps(state, sort_keys=True).encode("utf-8"))
                os.rename(tmp, save_path)
                xs.write("", base + "/state", "paused")
            elif cmd == "continue":
                xs.write("", base + "/state", "running")
            elif cmd:
                log("unknown command %r" % cmd)
        elif token == "logdirty":
            cmd = xs.read("", base + "/logdirty/cmd")
            if cmd in ("enable", "disable"):
                xs.write("", base + "/logdirty/ret", cmd)
                log("logdirty %s" % cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
