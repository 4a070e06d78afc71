"""A throwaway sshd (root, test keys) for the ssh transport tests, and for
bench/wanlink.py, which runs one inside a network namespace."""
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


def listening(pid, port):
    """Whether process ``pid`` has a TCP socket listening on ``port`` (read
    from /proc/PID/net, which shows the process's own network namespace)."""
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                lines = f.read().splitlines()[1:]
        except (IOError, OSError):
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


class Sshd(object):
    """``start()`` -> running sshd; ``ssh`` is the client command string; ``stop()`` kills it by PID.

    :param addr: the address it listens on (127.0.0.1 by default).
    :param port: its port (default: a free one on this host).
    :param prefix: an argv prefix it runs under, e.g. ``ip netns exec NS``.
    :param tag: the prefix of its temporary directory.
    """

    def __init__(self, addr="127.0.0.1", port=None, prefix=(), tag="xre-sshd-"):
        self.dir = tempfile.mkdtemp(prefix=tag)
        self.addr = addr
        self.prefix = list(prefix)
        self.proc = None
        self.port = port
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
        if self.port is None:
            self.port = free_port()
        cfg = os.path.join(d, "sshd_config")
        with open(cfg, "w") as f:
            f.write("Port %d\nListenAddress %s\nHostKey %s/host\nAuthorizedKeysFile %s/authorized_keys\n"
                    "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "UsePAM no\nStrictModes no\nPidFile %s/sshd.pid\nPrintMotd no\nAcceptEnv none\n"
                    % (self.port, self.addr, d, d, d))
        with open(os.path.join(d, "log"), "w") as log:
            # (ip netns exec runs sshd in its own process: the PID is sshd's)
            self.proc = subprocess.Popen(self.prefix + [SSHD, "-D", "-e", "-f", cfg], stderr=log)
        t0 = time.time()
        while time.time() - t0 < 10 and self.proc.poll() is None and not listening(self.proc.pid, self.port):
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
