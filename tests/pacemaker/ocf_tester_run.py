"""Run ocf-tester on an installed agent against a simulated pair.

    python3 ocf_tester_run.py AGENT [COMMAND]

Starts simulated hosts A and B, runs ``ocf-tester`` on AGENT with the
parameters of the pair (COMMAND, if given, is the ``XEN_REMUS_OCF_CMD`` the
agent runs; otherwise it finds ``xen-remus`` itself), prints its output and
exits with its status.  ``make test-deb`` runs it on the installed agent
(importing the installed package), the test suite on the work tree's.
"""
from __future__ import absolute_import, division, print_function

import os
import subprocess
import sys
import tempfile

try:
    from tests.pacemaker.simpair import SimPair
except ImportError:        # copied beside simpair.py, outside the work tree
    from simpair import SimPair


def run(agent, command=None, node="A"):
    """:returns: (exit status, output, the pair's events on A)."""
    root = tempfile.mkdtemp(prefix="pcmk-ocf-tester-")
    os.chmod(root, 0o755)
    pair = SimPair(root)
    try:
        env = pair.env(node)
        if command:
            env["XEN_REMUS_OCF_CMD"] = command
        else:
            env.pop("XEN_REMUS_OCF_CMD", None)
        argv = ["ocf-tester", "-n", "remus-vm1"]
        for k, v in sorted(pair.params().items()):
            argv += ["-o", "%s=%s" % (k, v)]
        argv += ["-o", "CRM_meta_on_node=%s" % node, agent]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        out = proc.communicate()[0].decode("utf-8", "replace")
        events = pair.A.toolstack.events()
        left = [d.name for d in pair.A.toolstack.list_domains() if d.domid]
        return proc.returncode, out, events, left
    finally:
        pair.close()
        subprocess.call(["rm", "-rf", root])


def main(argv):
    rc, out, events, left = run(argv[0], argv[1] if len(argv) > 1 else None)
    sys.stdout.write(out)
    kinds = [e["kind"] for e in events if e["details"][:1] == ["vm1"]]
    sys.stdout.write("ocf-tester: exit %d; on host A: %d boots, %d destroys, domains left: %s\n"
                     % (rc, kinds.count("create"), kinds.count("destroy"), left or "none"))
    return 0 if rc == 0 and "passed all tests" in out and not left else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
