"""The three processes of disk replication for ``xl remus`` (adapter).

What ``xen-remus replicate serve|relay|backup`` runs: the sockets they
listen on and the children they start, around :mod:`nbd`, :mod:`relay` and
:mod:`replica`.  Each returns the process's exit status.
"""
from __future__ import absolute_import, division, print_function

import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication.nbd import CaptureDisk, NbdServer
from xen_remus_ext.replication.relay import BackupRelay, PrimaryRelay, kill_process
from xen_remus_ext.replication.replica import Replica


def listen(spec):
    """A listening socket for ``unix:PATH`` or ``tcp:HOST:PORT``."""
    if spec.startswith("unix:"):
        path = spec[5:]
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
    elif spec.startswith("tcp:") and spec.count(":") == 2:
        _, host, port = spec.split(":")
        if not port.isdigit():
            raise ReplicationError("%s: the port is not a number" % spec)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    else:
        raise ReplicationError("%s: expected unix:PATH or tcp:HOST:PORT" % spec)
    sock.listen(8)
    return sock


def write_report(path, obj):
    """``obj`` as JSON in ``path``, atomically (None: nothing)."""
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f, sort_keys=True)
            f.write("\n")
        os.rename(path + ".tmp", path)


def serve(disk_path, nbd, control, name="xvda", ready_file=None):
    """Serve ``disk_path`` over NBD on ``nbd`` until SIGTERM."""
    disk = CaptureDisk(disk_path)
    server = NbdServer(disk, listen(nbd), listen("unix:" + control), name=name).start()
    if ready_file:
        open(ready_file, "w").close()
    sys.stderr.write("xen-remus replicate: serving %s (%d bytes) on %s, control %s\n"
                     % (disk_path, disk.size, nbd, control))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


def summary(stats):
    cuts = stats.get("cuts") or []
    lat = stats.get("ack_latency") or []
    return {"checkpoints": stats.get("checkpoints"), "acks": stats.get("acks"),
            "writes": stats.get("writes"), "write_bytes": stats.get("write_bytes"),
            "stream_bytes": stats.get("stream_bytes"),
            "cut_hold_max": max([c["hold"] for c in cuts] or [0]),
            "ack_latency_max": max(lat or [0])}


def relay(backup_argv, control_path, baseline="full", timeout=3.0, attached_file=None, report=None):
    """The primary relay on fds 0 (xl's stream) and 1 (toward xl); starts
    ``backup_argv`` (ssh to the backup running ``replicate backup``)."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    child = subprocess.Popen(backup_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        control.connect(control_path)
    except (OSError, socket.error) as exc:
        child.kill()
        child.wait()
        raise ReplicationError("disk server control socket %s: %s" % (control_path, exc))

    def attached(info):
        if attached_file:
            open(attached_file, "w").close()

    primary = PrimaryRelay(0, 1, child.stdout.fileno(), child.stdin.fileno(), control,
                           baseline=baseline, beat=min(0.2, timeout / 5), on_attached=attached)
    try:
        stats = primary.run()
    finally:
        write_report(report, primary.stats)
        sys.stderr.write("xen-remus replicate relay: %s\n" % json.dumps(summary(primary.stats)))
        child.stdin.close()
    child.wait()
    return 0 if stats else 1


_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the receiver's child: SIGKILL when the backup relay dies.  A relay
    that crashed between applying epoch N and handing CHECKPOINT_END N over
    must not leave a receiver that reads end-of-stream and resumes the guest
    from N-1 on disk N."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)


def backup(receiver_argv, disk, spool=None, timeout=3.0, report=None, snapshot=None):
    """The backup relay on fds 0/1 (the link), running ``receiver_argv``
    (``xl migrate-receive -r``); exits as the receiver did, 1 on ABORT."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    replica = Replica(disk, spool or disk + ".spool")
    child = subprocess.Popen(receiver_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             preexec_fn=_die_with_parent)
    child_in = os.dup(child.stdin.fileno())       # the relay closes it at failover
    child.stdin.close()

    def keep_copy(rep):
        if snapshot:
            shutil.copyfile(disk, snapshot)

    relay_ = BackupRelay(0, 1, child_in, child.stdout.fileno(), replica, timeout=timeout,
                         kill_child=kill_process(child.pid), on_failover=keep_copy)
    try:
        rep = relay_.run()
    finally:
        replica.close()
    rc = child.wait()
    rep["receiver_exit"] = rc
    write_report(report, rep)
    sys.stderr.write("xen-remus replicate backup: %s\n" % json.dumps(rep, sort_keys=True))
    if rep.get("aborted"):
        return 1
    return rc
