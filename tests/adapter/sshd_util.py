"""A throwaway sshd on 127.0.0.1 (root, test keys) for the ssh transport tests."""
from __future__ import absolute_import, division, print_function

import os
import shutil
import socket
import subprocess
import tempfile
import time

SSHD = "/usr/sbin/sshd"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sshd(object):
    """``start()`` -> running sshd; ``ssh`` is the client command string; ``stop()`` kills it by PID."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="xre-sshd-")
        self.proc = None
        self.port = None
        self.ssh = None

    @staticmethod
    def usable():
        return os.geteuid() == 0 and os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None \
            if hasattr(shutil, "which") else (os.geteuid() == 0 and os.path.exists(SSHD))

    def start(self):
        d = self.dir
        for name in ("host", "client"):
            subprocess.check_call(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, name)])
        shutil.copy(os.path.join(d, "client.pub"), os.path.join(d, "authorized_keys"))
        os.chmod(os.path.join(d, "authorized_keys"), 0o600)
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", 0o755)   # sshd's privilege separation directory
        self.port = free_port()
        cfg = os.path.join(d, "sshd_config")
        with open(cfg, "w") as f:
            f.write("Port %d\nListenAddress 127.0.0.1\nHostKey %s/host\nAuthorizedKeysFile %s/authorized_keys\n"
                    "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "UsePAM no\nStrictModes no\nPidFile %s/sshd.pid\nPrintMotd no\nAcceptEnv none\n"
                    % (self.port, d, d, d))
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", cfg], stderr=open(os.path.join(d, "log"), "w"))
        t0 = time.time()
        while time.time() - t0 < 10:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except (IOError, OSError):
                time.sleep(0.05)
        self.ssh = ("ssh -p %d -i %s/client -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                    "-o BatchMode=yes -o LogLevel=ERROR" % (self.port, d))
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def remote_cmd(python, state_dir):
    """The ``XEN_REMUS_REMOTE_CMD`` running our package with ``python`` and its own state dir."""
    return "env XEN_REMUS_STATE_DIR=%s XEN_REMUS_LOG= %s -m xen_remus_ext" % (state_dir, python)
