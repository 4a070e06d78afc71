"""A simulated Remus pair for the agent's tests: hosts A and B (sim
processes on 127.0.0.1 ports), the domain's disk image on A, the agent's
environment (parameters, state dirs, the command it runs)."""
from __future__ import absolute_import, division, print_function

import json
import os
import stat
import sys

from xen_remus_ext.sim.cluster import Cluster

DOMAIN = "vm1"
IMAGE = "/var/lib/xen/images/vm1.img"
SIZE = 1 << 20


def write_command(path):
    """An executable running this interpreter's ``xen-remus`` (the shim's
    ``XEN_REMUS_OCF_CMD``)."""
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # ocf-tester runs meta-data as nobody, who may not reach this interpreter
    # (a pyenv under /root): then the system's python3 reads the same tree
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexport PYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH}\npy=%s\n"
                "[ \"$(id -u)\" = 0 ] || \"$py\" -c pass 2>/dev/null || py=python3\n"
                "exec \"$py\" -m xen_remus_ext \"$@\"\n" % (top, sys.executable))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class SimPair(object):
    def __init__(self, root, rate=100):
        self.root = root
        self.state = os.path.join(root, "state")
        os.environ["XEN_REMUS_STATE_DIR"] = self.state   # the hosts inherit it
        self.cluster = Cluster(root=os.path.join(root, "hosts"), netns=False).start()
        self.A, self.B = self.cluster["A"], self.cluster["B"]
        # B's copy is seeded by protect, or made by the test that needs it
        self.A.toolstack.disk_create(IMAGE, SIZE)
        uname = "tap2:remus:B:%d|aio:%s" % (self.B.cfg["remus_port"], IMAGE)
        self.config = {"name": DOMAIN, "memory": 32,
                       "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                       "workload": {"rate": rate, "seed": 7, "observer": self.cluster.observer.path}}
        self.config_file = os.path.join(root, "vm1.json")
        with open(self.config_file, "w") as f:
            json.dump(self.config, f)
        self.command = write_command(os.path.join(root, "xen-remus"))

    def params(self):
        return {"domain": DOMAIN, "toolstack": "sim", "config": self.config_file,
                "sim_agents": "A=%s,B=%s" % (self.A.cfg["agent"], self.B.cfg["agent"])}

    def env(self, node, **meta):
        env = dict(os.environ)
        env.update({"XEN_REMUS_STATE_DIR": self.state, "XEN_REMUS_OCF_CMD": self.command,
                    "HA_RSCTMP": os.path.join(self.root, "rsctmp-" + node), "OCF_ROOT": "/usr/lib/ocf",
                    "OCF_RESOURCE_INSTANCE": "remus-vm1", "OCF_RESKEY_CRM_meta_on_node": node})
        for k, v in self.params().items():
            env["OCF_RESKEY_" + k] = v
        for k, v in meta.items():
            env["OCF_RESKEY_CRM_meta_" + k] = v
        return env

    def close(self):
        self.cluster.close()
