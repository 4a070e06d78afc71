"""The xend lab: the real xend and xm of Xen 4.1/4.4 on two hosts (Python 3 driver).

For each Xen version: unpack the tree's ``tools/`` (``tools/python``,
``tools/remus``) into ``build/test-xend/VERSION/src``, apply our quilt
series, compile the tree's own ``xen.lowlevel.xs`` against Debian's
libxenstore, and put the stand-ins (``standins/``) where the hypervisor
would be.  Then two hosts, A and B, each in its own network namespace
(``xend<V>a-<checkout>``/``xend<V>b-<checkout>``, a veth between them, 192.0.2.1 and 192.0.2.2)
and its own mount namespace (``/var/lib``, ``/run``, ``/var/log`` and
``/dev`` its own), each with ``hostd.py`` (hypervisor, xenstored double,
blkback/blktap2, guest), the real xend (XML-RPC on its Unix socket,
relocation server on 8002) and sshd (how the hosts reach each other's
xend and disks).  docs/xend-lab.md lists what is real and what is not.

``Lab`` is used by ``scenarios.py``.
"""
from __future__ import absolute_import, division, print_function

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STANDINS = os.path.join(HERE, "standins")
sys.path.insert(0, STANDINS)
sys.path.insert(0, REPO)

import hvclient  # noqa: E402

from xen_remus_ext.sim import workload  # noqa: E402

ADDRS = {"A": "192.0.2.1", "B": "192.0.2.2"}
RELOC_PORT = 8002
DISK_PORT = 9000
IMAGE_SIZE = 8 * 1024 * 1024
SERIES = {"4.1": "xen-4.1", "4.4": "xen-4.4"}
#: the checkout's directory name, in the lab's namespace and link names
OWNER = "".join(c for c in os.path.basename(REPO) if c.isalnum())[:10] or "lab"
# where remus-fu's cfg looks for qemu-dm ('/usr/' + arch_libdir + '/xen/bin/qemu-dm')
ARCH_LIBDIR = "lib64" if "64" in os.uname()[4] else "lib"


class LabError(Exception):
    pass


def sh(argv, check=True, **kw):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if check and proc.returncode != 0:
        raise LabError("%s: exit %d: %s%s" % (" ".join(argv), proc.returncode,
                                              proc.stdout.decode(errors="replace")[-2000:],
                                              proc.stderr.decode(errors="replace")[-2000:]))
    return proc


def py27():
    """The Python 2.7 xend runs under: pyenv's 2.7.18 through the project's venv (six, pyxs)."""
    venv = sh([os.path.join(REPO, "tools", "venv.sh"), "py27"]).stdout.decode().strip().splitlines()[-1]
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        raise LabError("no Python 2.7 venv (%s)" % venv)
    return py


def python27_include():
    """``Python.h`` of the 2.7 interpreter the venv was made from."""
    out = sh([py27(), "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"]).stdout.decode().strip()
    if not os.path.exists(os.path.join(out, "Python.h")):
        raise LabError("no Python.h for 2.7 under %s" % out)
    return out


# ---- sources -------------------------------------------------------------------------

def find_sources(xen_src=None):
    """``[(version, source)]``: a tree (``XEN_SRC=DIR``) or the archives in ../shared/xen-src."""
    if xen_src:
        tree = os.path.abspath(xen_src)
        if not os.path.isdir(os.path.join(tree, "tools", "python", "xen", "xend")):
            raise LabError("XEN_SRC=%s: expected a Xen tree with tools/python/xen/xend" % xen_src)
        return [(tree_version(tree), tree)]
    found = []
    for arc in sorted(glob.glob(os.path.join(REPO, "..", "shared", "xen-src", "xen-*-xend.tar.gz"))):
        version = os.path.basename(arc)[len("xen-"):-len("-xend.tar.gz")]
        found.append((version, os.path.abspath(arc)))
    return found


def tree_version(tree):
    mk = os.path.join(tree, "xen", "Makefile")
    if os.path.exists(mk):
        vals = {}
        for line in open(mk):
            for key in ("XEN_VERSION", "XEN_SUBVERSION", "XEN_EXTRAVERSION"):
                if line.startswith("export " + key) or line.startswith(key):
                    vals[key] = line.split("=", 1)[1].split("$")[0].strip()
        if "XEN_VERSION" in vals:
            return "%s.%s%s" % (vals["XEN_VERSION"], vals["XEN_SUBVERSION"], vals.get("XEN_EXTRAVERSION", ""))
    base = os.path.basename(tree.rstrip("/"))
    return base[len("xen-"):] if base.startswith("xen-") else base


def prepare_tree(version, source, build):
    """Unpack (or copy) the tree's tools, apply our series, build xs, add the stand-ins.

    :returns: the ``tools/python`` directory to put on PYTHONPATH.
    """
    src = os.path.join(build, "src")
    if os.path.exists(src):
        shutil.rmtree(src)
    os.makedirs(src)
    if os.path.isdir(source):
        for sub in ("tools/python", "tools/remus", "tools/examples"):
            if os.path.isdir(os.path.join(source, sub)):
                shutil.copytree(os.path.join(source, sub), os.path.join(src, sub), symlinks=True)
    else:
        with tarfile.open(source) as tf:
            top = tf.getnames()[0].split("/")[0]
            members = [m for m in tf.getmembers() if m.name.startswith(top + "/tools/")]
            for m in members:
                m.name = m.name[len(top) + 1:]
            tf.extractall(src, members=members)
    series = SERIES.get(".".join(version.split(".")[:2]))
    if series is None:
        raise LabError("Xen %s: no patch series for it in patches/ (4.1 and 4.4 only)" % version)
    pdir = os.path.join(REPO, "patches", series)
    for name in open(os.path.join(pdir, "series")).read().split():
        if name.startswith("#") or not name.endswith(".patch"):
            continue
        sh(["patch", "-p1", "-s", "-N", "-F0", "-d", src, "-i", os.path.join(pdir, name)])
    tp = os.path.join(src, "tools", "python")
    low = os.path.join(tp, "xen", "lowlevel")
    inc = python27_include()
    sh(["gcc", "-shared", "-fPIC", "-O1", "-w", "-I" + inc, "-o", os.path.join(low, "xs.so"),
        os.path.join(low, "xs", "xs.c"), "-lxenstore"])
    pts = os.path.join(tp, "ptsname", "ptsname.c")
    if os.path.exists(pts):
        sh(["gcc", "-shared", "-fPIC", "-O1", "-w", "-I" + inc, "-o", os.path.join(low, "ptsname.so"), pts])
    nl = os.path.join(low, "netlink")
    if os.path.exists(os.path.join(nl, "netlink.c")):
        # the tree's own rtnetlink module, under a name of its own: the stand-in
        # xen.lowlevel.netlink passes it every request but the plug qdisc's
        kdir = os.path.join(tp, "xenlab_kernel")
        os.makedirs(kdir, exist_ok=True)
        with open(os.path.join(kdir, "__init__.py"), "w") as f:
            f.write('"""The tree\'s own C modules, built by the xend lab under another name."""\n')
        with open(os.path.join(nl, "netlink.c")) as f:
            text = f.read()
        renamed = os.path.join(build, "netlink-kernel.c")
        with open(renamed, "w") as f:
            f.write(text.replace('#define PKG "xen.lowlevel.netlink"', '#define PKG "xenlab_kernel.netlink"'))
        sh(["gcc", "-shared", "-fPIC", "-O1", "-w", "-I" + inc, "-I" + nl, "-o", os.path.join(kdir, "netlink.so"),
            renamed, os.path.join(nl, "libnetlink.c")])
    for name in ("xc.py", "acm.py", "checkpoint.py", "netlink.py"):
        shutil.copy(os.path.join(STANDINS, "xen", "lowlevel", name), os.path.join(low, name))
    with open(os.path.join(tp, "xen", "util", "path.py"), "w") as f:
        bindir = os.path.join(STANDINS, "bin")
        vals = {"PREFIX": "/usr", "BINDIR": bindir, "SBINDIR": bindir, "LIBEXEC": bindir,
                "LIBEXEC_BIN": bindir, "LIBDIR": "/usr/lib", "SHAREDIR": os.path.join(build, "share"),
                "PRIVATE_BINDIR": bindir, "XENFIRMWAREDIR": bindir, "XEN_CONFIG_DIR": "/etc/xen",
                "XEN_SCRIPT_DIR": "/etc/xen/scripts", "XEN_LOCK_DIR": "/var/lock",
                "XEN_RUN_DIR": "/var/run/xen", "XEN_PAGING_DIR": "/var/lib/xen/xenpaging",
                "XEN_DUMP_DIR": "/var/lib/xen/dump", "XEN_LOG_DIR": "/var/log/xen",
                "XEN_LIB_DIR": "/var/lib/xen", "XEN_RUN_STORED": "/var/run/xenstored",
                "PRIVATE_PREFIX": "/usr/lib/xen", "PRIVATE_LIBEXEC": bindir,
                "XENSTORED_ROOTDIR": "/var/lib/xenstored", "CONFIG_DIR": "/etc"}
        f.write("# written by the xend lab (Xen generates this file at build time)\n")
        for k in sorted(vals):
            f.write("%s = %r\n" % (k, vals[k]))
    os.makedirs(os.path.join(build, "share", "xen"), exist_ok=True)
    sh([py27(), "-m", "compileall", "-q", os.path.join(tp, "xen", "xend"), os.path.join(tp, "xen", "xm"),
        os.path.join(tp, "xen", "remus")])
    return tp


# ---- hosts --------------------------------------------------------------------------------

XEND_CONFIG = """\
# xend-config.sxp of lab host %(name)s
(logfile /var/log/xen/xend.log)
(loglevel DEBUG)
(xend-http-server no)
(xend-unix-server no)
(xend-tcp-xmlrpc-server no)
(xend-unix-xmlrpc-server yes)
(xend-relocation-server yes)
(xend-relocation-ssl-server no)
(xend-relocation-port %(reloc)d)
(xend-relocation-address '%(addr)s')
(xend-relocation-hosts-allow '')
(xend-domains-path /var/lib/xend/domains)
(xend-state-path /var/lib/xend/state)
(xend-storage-path /var/lib/xend/storage)
(enable-dom0-ballooning no)
(dom0-min-mem 0)
(total_available_memory 0)
(device-create-timeout 15)
(device-destroy-timeout 15)
"""

HOLDER = r"""
set -e
R=%(root)s
mkdir -p $R/var/lib $R/run $R/var/log $R/dev
mount --bind $R/var/lib /var/lib
mount --bind $R/run /run
mount --bind $R/var/log /var/log
# what a Xen install puts in /usr (hvmloader, qemu-dm), over this host's /usr only
mkdir -p $R/usr-work
mount -t overlay -o lowerdir=/usr,upperdir=$R/usr-up,workdir=$R/usr-work xend-lab-usr /usr
# the images on XFS with reflink, where loop devices can be had (the FIEMAP tracker)
fs=plain
if [ ! -f $R/images-xfs.img ]; then
  truncate -s 400M $R/images-xfs.img && mkfs.xfs -q -m reflink=1 $R/images-xfs.img 2>/dev/null \
    || rm -f $R/images-xfs.img
fi
mkdir -p /var/lib/xen/images
if [ -f $R/images-xfs.img ] && mount -o loop $R/images-xfs.img /var/lib/xen/images 2>/dev/null; then fs=xfs; fi
mount -t tmpfs -o mode=755 xend-lab-dev $R/dev
for n in null zero full random urandom tty ptmx; do touch $R/dev/$n; mount --bind /dev/$n $R/dev/$n; done
mkdir -p $R/dev/pts $R/dev/shm $R/dev/xen/blktap-2 $R/dev/net
touch $R/dev/net/tun; mount --bind /dev/net/tun $R/dev/net/tun
mount --rbind /dev/pts $R/dev/pts
mount -t tmpfs xend-lab-shm $R/dev/shm
ln -s /proc/self/fd $R/dev/fd
mount --rbind $R/dev /dev
ip link set lo up
# the bridge the guests' vifs join (network-bridge's xenbr0; no uplink in the lab)
ip link add xenbr0 type bridge && ip link set xenbr0 up
echo ready $fs
exec sleep 100000
"""

HVM_CFG = """\
import os, re
arch = os.uname()[4]
if re.search('64', arch):
    arch_libdir = 'lib64'
else:
    arch_libdir = 'lib'

kernel = "/usr/lib/xen/boot/hvmloader"
builder='hvm'

memory = 256
name = "%(name)s"
vif = [ '' ]
disk = ['%(uname)s,hda,w']

device_model = '/usr/' + arch_libdir + '/xen/bin/qemu-dm'

boot="c"
sdl=0
vnc=1
vfb = [ 'type=vnc,vncpasswd=passw,vnclisten=0.0.0.0,vncdisplay=2' ]

serial='pty'
"""

BALLOON = """Current allocation:  1048576 kB
Requested target:    1048576 kB
Low-mem balloon:           0 kB
High-mem balloon:          0 kB
Driver pages:              0 kB
"""

XEND_RUN = """\
import os, sys
from xen.xend import osdep
osdep.PROC_XEN_BALLOON = os.environ["XEND_LAB_BALLOON"]
from xen.xend.server import SrvDaemon
sys.exit(SrvDaemon.instance().run(None))
"""

XM_RUN = """\
import sys
from xen.xm import main
main.main(sys.argv)
"""


class Host(object):
    """One lab host: namespaces, hostd, xend, sshd."""

    def __init__(self, lab, name):
        self.lab = lab
        self.name = name
        self.addr = ADDRS[name]
        self.dir = os.path.join(lab.build, name)
        self.root = os.path.join(self.dir, "root")
        self.netns = lab.netns(name)
        self.holder = None
        self.procs = {}
        self.images_fs = None

    # -- paths seen from outside ---------------------------------------------
    def outside(self, path):
        """A path of this host (``/var/lib/...``) as the lab sees it (the
        images through the host's own mounts: they may sit on its XFS)."""
        if path.startswith("/var/lib/xen/images/") and self.holder is not None:
            return "/proc/%d/root%s" % (self.holder.pid, path)
        for top in ("/var/lib", "/run", "/var/log"):
            if path == top or path.startswith(top + "/"):
                return self.root + path
        if path.startswith("/var/run/"):
            return self.root + "/run/" + path[len("/var/run/"):]
        return path

    @property
    def hv_socket(self):
        return self.outside("/run/xend-lab/hv.sock")

    def hv(self, op, *args):
        return hvclient.call(op, *args, _socket=self.hv_socket)

    def env(self):
        e = dict(self.lab.env)
        e["XEND_LAB_HOST"] = self.name
        return e

    # -- running things inside ---------------------------------------------------
    def argv(self, cmd):
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--"] + list(cmd)

    def run(self, cmd, check=True, timeout=300, input=None):
        proc = subprocess.run(self.argv(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(),
                              timeout=timeout, input=input, cwd="/")
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        self.lab.log("%s$ %s -> %d\n%s%s" % (self.name, " ".join(cmd), proc.returncode, out, err))
        if check and proc.returncode != 0:
            raise LabError("host %s: %s: exit %d: %s %s" % (self.name, " ".join(cmd), proc.returncode,
                                                            out.strip()[-1500:], err.strip()[-1500:]))
        return proc.returncode, out, err

    def spawn(self, key, cmd, log):
        logf = open(self.outside(log) if log.startswith("/var/log") else log, "ab")
        proc = subprocess.Popen(self.argv(cmd), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env=self.env(), start_new_session=True, cwd="/")
        logf.close()
        self.procs[key] = proc
        return proc

    def xm(self, *args, **kw):
        return self.run([self.lab.bin("xm")] + list(args), **kw)

    # -- life cycle ------------------------------------------------------------------
    def create_dirs(self):
        for sub in ("var/lib/xen/images", "var/lib/xen/boot", "var/lib/xend", "var/log/xen", "run/xend",
                    "run/xenstored", "run/xend-lab", "run/sshd", "etc"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        with open(os.path.join(self.root, "etc", "xend-config.sxp"), "w") as f:
            f.write(XEND_CONFIG % {"name": self.name, "addr": self.addr, "reloc": RELOC_PORT})
        with open(os.path.join(self.root, "etc", "balloon"), "w") as f:
            f.write(BALLOON)
        with open(self.outside("/var/lib/xen/boot/vmlinuz-lab"), "wb") as f:
            f.write(b"\x7fELF lab kernel stand-in\n")
        # /usr as a Xen install has it (an overlay in the host's mount namespace)
        up = os.path.join(self.root, "usr-up")
        os.makedirs(os.path.join(up, "lib", "xen", "boot"), exist_ok=True)
        with open(os.path.join(up, "lib", "xen", "boot", "hvmloader"), "wb") as f:
            f.write(b"\x7fELF lab hvmloader stand-in\n")
        dm = os.path.join(up, ARCH_LIBDIR, "xen", "bin", "qemu-dm")
        os.makedirs(os.path.dirname(dm), exist_ok=True)
        with open(dm, "w") as f:
            f.write("#!/bin/sh\n# xend lab: the qemu-dm stand-in (tests/xend/standins/qemu_dm.py)\n"
                    "exec %s %s \"$@\"\n" % (self.lab.py27, os.path.join(STANDINS, "qemu_dm.py")))
        os.chmod(dm, 0o755)

    def up_namespaces(self):
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "-m", "--propagation",
                                        "private", "sh", "-c", HOLDER % {"root": self.root}],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        line = self.holder.stdout.readline().decode().split()
        if not line or line[0] != "ready":
            raise LabError("host %s: namespace holder failed: %s" % (self.name, self.holder.stderr.read().decode()))
        self.images_fs = line[1]

    def start(self, hook=True):
        """hostd, sshd and xend; ``hook``: our external-migration-tool in xend-config.sxp."""
        self.up_namespaces()
        lab = self.lab
        self.spawn("hostd", [lab.py3, os.path.join(HERE, "hostd.py"), "--name", self.name, "--xen-version",
                             lab.version], "/var/log/xen/hostd.out")
        self.wait_for(lambda: os.path.exists(self.hv_socket) and os.path.exists(
            self.outside("/run/xenstored/socket")), "hostd")
        self.spawn("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", lab.sshd_config(self)], "/var/log/xen/sshd.log")
        cfg = os.path.join(self.root, "etc", "xend-config.sxp")
        if hook:
            self.run([lab.bin("xen-remus"), "hook-config", "install", "--config", cfg])
        else:
            self.run([lab.bin("xen-remus"), "hook-config", "uninstall", "--config", cfg], check=False)
        self.start_xend()
        self.wait_for(lambda: self._port_open(22), "sshd")

    def start_xend(self, bare=False):
        """xend under the 2.7 venv (our package importable: the patches load it);
        ``bare``: the plain interpreter without our package, so the patched
        xend behaves as stock (no remus methods, no blktap override)."""
        if bare:
            env = dict(self.env(), PYTHONPATH=":".join([self.lab.tp, STANDINS]))
            logf = open(self.outside("/var/log/xen/xend.out"), "ab")
            self.procs["xend"] = subprocess.Popen(self.argv([self.lab.py27_base, "-c", XEND_RUN]),
                                                  stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                                  env=env, start_new_session=True, cwd="/")
            logf.close()
        else:
            self.spawn("xend", [self.lab.py27, "-c", XEND_RUN], "/var/log/xen/xend.out")
        self.wait_for(lambda: self._port_open(RELOC_PORT) and os.path.exists(
            self.outside("/var/run/xend/xmlrpc.sock")), "xend", timeout=60)
        # the socket exists before the server thread serves it: wait for an answer
        self.wait_for(lambda: self.run([self.lab.bin("xm"), "list"], check=False)[0] == 0, "xend answering",
                      timeout=60)

    def stop_xend(self):
        """SIGKILL xend (it ignores SIGTERM and keeps its relocation port) and its children."""
        p = self.procs.pop("xend", None)
        if p is None:
            return
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait(10)
        self.wait_for(lambda: not self._port_open(RELOC_PORT), "xend's relocation port to close")

    def restart_xend(self, hook=True, bare=False):
        self.stop_xend()
        cfg = os.path.join(self.root, "etc", "xend-config.sxp")
        if hook:
            self.run([self.lab.bin("xen-remus"), "hook-config", "install", "--config", cfg])
        else:
            self.run([self.lab.bin("xen-remus"), "hook-config", "uninstall", "--config", cfg])
        self.start_xend(bare=bare)

    def _port_open(self, port):
        rc = subprocess.run(self.argv(["python3", "-c", "import socket; socket.create_connection(('%s', %d), 1)"
                                       % (self.addr, port)]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode
        return rc == 0

    def wait_for(self, pred, what, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            for key, p in self.procs.items():
                if p.poll() is not None and key in ("hostd", "xend"):
                    raise LabError("host %s: %s exited (%s) while waiting for %s; see %s"
                                   % (self.name, key, p.returncode, what, self.outside("/var/log/xen")))
            if pred():
                return
            time.sleep(0.1)
        raise LabError("host %s: %s not up after %d s (logs in %s)" % (self.name, what, timeout,
                                                                     self.outside("/var/log/xen")))

    def kill(self):
        """Power the host off: SIGKILL every process in it, by the PIDs we started
        and whatever runs in its network namespace (xend's children, remus)."""
        pids = set()
        out = sh(["ip", "netns", "pids", self.netns], check=False).stdout.decode().split()
        pids.update(int(p) for p in out if p.isdigit())
        for p in self.procs.values():
            pids.add(p.pid)
        if self.holder is not None:
            pids.add(self.holder.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for p in list(self.procs.values()) + ([self.holder] if self.holder else []):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = {}
        self.holder = None
        self.keep_logs()

    def keep_logs(self):
        src = self.outside("/var/log/xen/xend.log")
        if os.path.exists(src):
            shutil.copy(src, os.path.join(self.dir, "xend.log"))

    def image(self, name):
        return "/var/lib/xen/images/%s.img" % name


class Lab(object):
    """Two hosts of one Xen version."""

    def __init__(self, version, source, build_root, tag, disk_stack="log"):
        self.version = version
        self.disk_stack = disk_stack
        self.source = source
        self.build = os.path.join(build_root, version)
        self.tag = tag
        self.py3 = sys.executable
        self.py27 = py27()
        self.py27_base = os.path.join(sh([self.py27, "-c", "import sys; print(getattr(sys, 'real_prefix', None) "
                                          "or sys.prefix)"]).stdout.decode().strip(), "bin", "python")
        self.logf = None
        self.hosts = {}

    def netns(self, host):
        """``xend<V><host>-<checkout>``: the checkout's name keeps two
        checkouts running the lab at once apart."""
        return "xend%s%s-%s" % (self.tag, host.lower(), OWNER)

    def veth(self, host):
        return ("vx%s%s%s" % (self.tag, host.lower(), OWNER))[:15]   # IFNAMSIZ - 1

    def log(self, text):
        if self.logf is not None:
            self.logf.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), text))
            self.logf.flush()

    def bin(self, name):
        return os.path.join(self.build, "bin", name)

    def setup(self):
        if os.path.exists(self.build):
            self.cleanup_mounts()
            shutil.rmtree(self.build)
        os.makedirs(self.build)
        self.logf = open(os.path.join(self.build, "lab.log"), "w")
        self.tp = prepare_tree(self.version, self.source, self.build)
        self.env = self.make_env()
        self.make_bin()
        self.make_ssh()
        self.make_network()
        for name in ("A", "B"):
            h = Host(self, name)
            h.create_dirs()
            self.hosts[name] = h

    def make_env(self):
        path = [os.path.join(self.build, "bin"), os.path.join(STANDINS, "bin"), "/usr/local/sbin",
                "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return {"PATH": ":".join(path), "PYTHONPATH": ":".join([self.tp, STANDINS, REPO]),
                "HOME": "/root", "LANG": "C.UTF-8", "XEND_LAB_BALLOON": "/var/lib/xend-lab-balloon",
                "XEND_CONFIG": "/var/lib/xend-lab.sxp",
                "PYTHONDONTWRITEBYTECODE": "1"}

    def make_bin(self):
        b = os.path.join(self.build, "bin")
        os.makedirs(b)
        with open(os.path.join(b, "xm.py"), "w") as f:
            f.write(XM_RUN)
        scripts = {
            "xm": "exec %s %s \"$@\"" % (self.py27, os.path.join(b, "xm.py")),
            "remus": "exec %s %s \"$@\"" % (self.py27, os.path.join(self.build, "src", "tools", "remus", "remus")),
            "xen-remus": "exec %s -m xen_remus_ext \"$@\"" % self.py27,
            # Xen 4.1-4.4 install xl next to xend; run while xend runs, it refuses
            "xl": "echo 'xend is running, which may cause unpredictable results when using' >&2\n"
                  "echo 'this xl command (xend lab: xl is not simulated).' >&2\nexit 1",
        }
        for name, body in scripts.items():
            path = os.path.join(b, name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\n# xend lab host tool\nexport PYTHONPATH=%s\nexport PATH=%s\n"
                        "export XEND_CONFIG=/var/lib/xend-lab.sxp\n%s\n"
                        % (self.env["PYTHONPATH"], self.env["PATH"], body))
            os.chmod(path, 0o755)

    def make_ssh(self):
        d = os.path.join(self.build, "ssh")
        os.makedirs(d)
        for name in ("host", "client"):
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, name)])
        pub = open(os.path.join(d, "client.pub")).read().strip()
        with open(os.path.join(d, "authorized_keys"), "w") as f:
            f.write('environment="PATH=%s",environment="PYTHONPATH=%s",environment="XEND_CONFIG=%s" %s\n'
                    % (self.env["PATH"], self.env["PYTHONPATH"], "/var/lib/xend-lab.sxp", pub))
        os.chmod(os.path.join(d, "authorized_keys"), 0o600)
        self.ssh = ("ssh -i %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes "
                    "-o LogLevel=ERROR -o ConnectTimeout=5" % os.path.join(d, "client"))

    def sshd_config(self, host):
        d = os.path.join(self.build, "ssh")
        path = os.path.join(self.build, "ssh", "sshd_config.%s" % host.name)
        with open(path, "w") as f:
            f.write("Port 22\nListenAddress %s\nHostKey %s/host\nAuthorizedKeysFile %s/authorized_keys\n"
                    "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitUserEnvironment yes\n"
                    "PidFile none\nPrintMotd no\n" % (host.addr, d, d))
        return path

    def make_network(self):
        a, b = self.netns("A"), self.netns("B")
        for ns in (a, b):
            sh(["ip", "netns", "del", ns], check=False)
            sh(["ip", "netns", "add", ns])
        va, vb = self.veth("A"), self.veth("B")
        sh(["ip", "link", "del", va], check=False)
        sh(["ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b])
        for ns, dev, addr in ((a, va, ADDRS["A"]), (b, vb, ADDRS["B"])):
            sh(["ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev])
            sh(["ip", "-n", ns, "link", "set", dev, "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def start(self, hook=True):
        for h in self.hosts.values():
            # xend reads $XEND_CONFIG: each host sees its own file at one path
            cfg = h.outside("/var/lib/xend-lab.sxp")
            if not os.path.islink(cfg):
                os.symlink(os.path.join(h.root, "etc", "xend-config.sxp"), cfg)
            bal = h.outside("/var/lib/xend-lab-balloon")
            if not os.path.exists(bal):
                os.symlink(os.path.join(h.root, "etc", "balloon"), bal)
            h.start(hook=hook)

    def make_image(self, name, hosts=("A", "B")):
        """The same zeroed image on each host (as remus-fu copies it before starting)."""
        for hn in hosts:
            path = self.hosts[hn].outside(self.hosts[hn].image(name))
            with open(path, "wb") as f:
                f.truncate(IMAGE_SIZE)

    def remus_uname(self, name, cls="tap2", backup="B"):
        """``tap2:remus:B:9000|log:IMAGE|aio:IMAGE``: blktap2's log driver
        under remus (the failback's dirty tracker; the ``remus`` script must
        find the remus layer's FIFO in that stack, patch 0005), or without
        the log layer when the lab runs with ``--disk-stack plain``."""
        img = "/var/lib/xen/images/%s.img" % name
        log = "log:%s|" % img if self.disk_stack == "log" else ""
        return "%s:remus:%s:%d|%saio:%s" % (cls, ADDRS[backup], DISK_PORT, log, img)

    def write_cfg(self, name, uname=None):
        """A PV guest cfg at /var/lib/xen/NAME.cfg on each host (default disk:
        :meth:`remus_uname`, replicated toward B)."""
        uname = uname or self.remus_uname(name)
        text = ("name = %r\nkernel = '/var/lib/xen/boot/vmlinuz-lab'\nmemory = 64\nvcpus = 1\n"
                "disk = ['%s,xvda,w']\non_crash = 'destroy'\n" % (name, uname))
        for h in self.hosts.values():
            with open(h.outside("/var/lib/xen/%s.cfg" % name), "w") as f:
                f.write(text)
        return "/var/lib/xen/%s.cfg" % name

    def write_hvm_cfg(self, name, backup="B"):
        """remus-fu.txt's HVM guest cfg at /var/lib/xen/NAME.cfg on each host:
        its curly quotes made straight, its disk ``tap2:remus:`` (``tap:`` is
        blktap1 on Xen 4.1 and later), the backup's address, and the lab's
        domain name and image path."""
        text = HVM_CFG % {"name": name, "uname": self.remus_uname(name, backup=backup)}
        for h in self.hosts.values():
            with open(h.outside("/var/lib/xen/%s.cfg" % name), "w") as f:
                f.write(text)
        return "/var/lib/xen/%s.cfg" % name

    # -- observing the guest -----------------------------------------------------------
    def acked(self, name):
        best = 0
        for h in self.hosts.values():
            if h.holder is None:
                continue
            try:
                best = max(best, h.hv("status")["acked"].get(name, 0))
            except hvclient.HvError:
                continue
        return best

    def check_disk(self, host, name, acked):
        st = self.hosts[host].hv("status")
        seed = None
        for d in st["domains"].values():
            if d["memory"]:
                seed = d["memory"]["seed"]
        return seed, st

    def cleanup_mounts(self):
        pass

    def stop(self):
        for h in self.hosts.values():
            if h.holder is not None:
                h.kill()
            h.keep_logs()
        for ns in (self.netns("A"), self.netns("B")):
            sh(["ip", "netns", "del", ns], check=False)
        if self.logf is not None:
            self.logf.close()
            self.logf = None


def records_missing(path, seed, acked):
    """Acknowledged records ``0..acked-1`` a disk image lacks."""
    return workload.check_disk_file(path, seed, acked)


def wait(pred, what, timeout=30, step=0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise LabError("timed out after %d s waiting for %s" % (timeout, what))


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def dump(obj):
    return json.dumps(obj, indent=1, sort_keys=True)
