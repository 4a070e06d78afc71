"""Client of a lab host's hypervisor daemon (tests/xend/hostd.py).

One JSON request per connection on the Unix socket ``$XEND_LAB_HV``
(default ``/run/xend-lab/hv.sock``: each lab host has its own /run).
Used by the stand-ins xend loads (Python 2.7) and by the lab (Python 3).
"""
from __future__ import absolute_import, division, print_function

import json
import os
import socket

SOCKET = os.environ.get("XEND_LAB_HV", "/run/xend-lab/hv.sock")


class HvError(Exception):
    pass


def call(op, *args, **kwargs):
    """Run ``op`` in the host daemon (at ``_socket=PATH``, default
    :data:`SOCKET`); :returns: its result.

    :raises HvError: the daemon refused (its message), or cannot be reached.
    """
    path = kwargs.pop("_socket", None) or SOCKET
    req = json.dumps({"op": op, "args": list(args), "kwargs": kwargs}).encode("utf-8") + b"\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.sendall(req)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    except socket.error as exc:
        raise HvError("hypervisor daemon at %s: %s" % (path, exc))
    finally:
        sock.close()
    if not buf:
        raise HvError("hypervisor daemon at %s: no answer to %s" % (path, op))
    rep = json.loads(buf.decode("utf-8"))
    if "error" in rep:
        raise HvError(rep["error"])
    return rep.get("result")
