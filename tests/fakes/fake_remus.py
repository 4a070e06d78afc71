#!/usr/bin/env python
"""A strict fake of xend's ``remus`` script (tools/remus/remus, Xen 4.1-4.4).

Accepts ``remus [-i MS] [-p PORT] [--no-net] [--blackhole] DOMAIN HOST``
(the options our xend adapter sends), asks xend for the domain the way
remus' vm.py does (``server.xend.domain(dom, 'all')`` over ``XM_SERVER``),
then "checkpoints" until SIGINT, when it exits 0 as the real script does on
KeyboardInterrupt.  Anything else: exit 1 with a message.  ``FAKE_REMUS_LOG``
receives each argv as a JSON line.
"""
from __future__ import absolute_import, division, print_function

import getopt
import json
import os
import signal
import sys
import time

if __name__ == "__main__" and os.environ.get("FAKE_REMUS_LOG"):
    # first of all: a loaded machine may stop us before the imports below finish
    with open(os.environ["FAKE_REMUS_LOG"], "a") as _f:
        _f.write(json.dumps(sys.argv[1:]) + "\n")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from six.moves import xmlrpc_client as xmlrpclib  # noqa: E402
from xen_remus_ext.toolstack.xend import server_proxy  # noqa: E402


def main(argv):
    try:
        opts, rest = getopt.gnu_getopt(argv, "i:p:", ["no-net", "blackhole"])
    except getopt.GetoptError as exc:
        sys.stderr.write("fake remus: unexpected argv %s: %s\n" % (json.dumps(argv), exc))
        return 1
    opts = dict(opts)
    if len(rest) != 2 or not opts.get("-i", "1").isdigit() or not opts.get("-p", "1").isdigit():
        sys.stderr.write("fake remus: unexpected argv %s\n" % json.dumps(argv))
        return 1
    try:
        server_proxy().xend.domain(rest[0], "all")
    except xmlrpclib.Fault as exc:
        sys.stderr.write("Error: %s\n" % exc.faultString)
        return 1
    stop = []
    signal.signal(signal.SIGINT, lambda s, f: stop.append(s))
    sys.stdout.write("PROF: suspending at %.6f\n" % time.time())
    sys.stdout.flush()
    while not stop:
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
