"""``make test-cluster``: a real two-node Corosync + Pacemaker cluster driving
a simulated Remus pair through the OCF agent.

Each cluster node is a network namespace (``pcmk<PID>-n1``, ``-n2``, joined
by one veth pair, 198.51.100.1 and .2) and a private mount namespace with
its own copies of Pacemaker's and Corosync's state directories.  Node n1
runs simulated Xen host A, node n2 host B (``xen-remus sim host``), whose
backups hold their copy paused when the checkpoint stream breaks.  The
fence device is a script that powers a node off: it SIGKILLs every process
of the node's namespace (Corosync, Pacemaker, the simulated host and its
guest) and forgets what lived in its tmpfs.  The outside world (the
workload's acknowledgements) is observed here, outside both nodes.

Scenarios, one line each: protect, failover (crash of the primary),
rejoin, switchover (``crm_resource --move --promoted``), partition (link
cut; the promoted node wins the fence race), promote-retry (the agent
killed in the middle of a promote), coldstart (both nodes lose power; when
they boot, the guest starts from the newest consistent copy and is
protected toward the other).  Run as root: ``python -m
tests.pacemaker.cluster [SCENARIO...]``; exit 0 when every line is ``ok``.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from tests.pacemaker import cib
from tests.pacemaker.simpair import write_command
from xen_remus_ext.resync import meta
from xen_remus_ext.sim.cluster import AckObserver
from xen_remus_ext.sim.toolstack import SimToolstack

DOMAIN = "vm1"
IMAGE = "/var/lib/xen/images/vm1.img"
SIZE = 4 << 20
NODES = ("n1", "n2")
HOST = {"n1": "A", "n2": "B"}
ADDR = {"n1": "198.51.100.1", "n2": "198.51.100.2"}
PORTS = {"reloc_port": 8002, "remus_port": 9000, "resync_port": 7790}
COLD_ATTR = "xen-remus-cold-start-%s" % DOMAIN
SCENARIOS = ("protect", "failover", "rejoin", "switchover", "partition", "promote-retry", "coldstart")

COROSYNC_CONF = """totem {
	version: 2
	cluster_name: %(name)s
	transport: knet
	crypto_cipher: none
	crypto_hash: none
	token: 1000
}
logging {
	to_stderr: no
	to_syslog: no
	to_logfile: yes
	logfile: %(dir)s/corosync.log
	timestamp: on
}
quorum {
	provider: corosync_votequorum
	two_node: 1
}
nodelist {
	node {
		name: n1
		nodeid: 1
		ring0_addr: 198.51.100.1
	}
	node {
		name: n2
		nodeid: 2
		ring0_addr: 198.51.100.2
	}
}
"""

# runs as "ip netns exec NS unshare --mount --uts sh node.sh": the node's
# hostname, private bind mounts of what two daemons of a kind would share,
# then the simulated Xen host, Corosync and Pacemaker of this node
NODE_SH = """set -u
N=%(node)s; D=%(dir)s
hostname $N
mount --make-rprivate /
mount --bind $D/lib-pacemaker /var/lib/pacemaker
mount --bind $D/lib-corosync /var/lib/corosync
mount --bind $D/log-pacemaker /var/log/pacemaker
mount --bind $D/rsctmp /run/resource-agents
mount --bind $D/corosync.lock /run/corosync.pid
export XEN_REMUS_STATE_DIR=$D/state XEN_REMUS_OCF_CMD=%(cmd)s XEN_REMUS_LOG=
export PYTHONUNBUFFERED=1
[ -p $D/host.stdin ] || mkfifo $D/host.stdin
%(python)s -m xen_remus_ext sim host $D/host.json 0<>$D/host.stdin >>$D/host.out 2>>$D/host.log &
corosync -f -c $D/corosync.conf >$D/corosync.out 2>&1 &
i=0; until corosync-cfgtool -s >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
PCMK_logfile=$D/pacemaker.log pacemakerd >$D/pacemakerd.out 2>&1 &
wait
"""

# the fence device: "powers off" a node (SIGKILL to everything in its
# namespace, its tmpfs forgotten); the node stays off until the test boots it
FENCE_SH = """#!/bin/sh
action=reboot; port=""
while read -r line; do
	case "$line" in
	action=*|option=*) action=${line#*=};;
	port=*|plug=*|nodename=*) [ -z "$port" ] && port=${line#*=};;
	esac
done
case "$action" in
metadata) cat <<END
<?xml version="1.0" ?>
<resource-agent name="%(name)s" shortdesc="powers a simulated cluster node off">
<longdesc>Kills every process of a test node's network namespace.</longdesc>
<parameters>
<parameter name="port" unique="0" required="0"><content type="string"/><shortdesc lang="en">node</shortdesc></parameter>
<parameter name="action" unique="0" required="0"><content type="string" default="reboot"/>
<shortdesc lang="en">action</shortdesc></parameter>
</parameters>
<actions><action name="on"/><action name="off"/><action name="reboot"/><action name="status"/>
<action name="list"/><action name="monitor"/><action name="metadata"/></actions>
</resource-agent>
END
	exit 0;;
monitor|status|on) exit 0;;
list) echo n1; echo n2; exit 0;;
off|reboot)
	case "$port" in n1|n2) ;; *) exit 1;; esac
	echo "$(date +%%s.%%N) $action $port by $(hostname)" >> %(base)s/fence.log
	for p in $(ip netns pids %(prefix)s-$port 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
	rm -rf %(base)s/$port/rsctmp/* 2>/dev/null
	exit 0;;
esac
exit 1
"""


class Failed(Exception):
    pass


def sh(*argv, **kw):
    check = kw.pop("check", True)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    out = proc.communicate()[0].decode("utf-8", "replace")
    if check and proc.returncode != 0:
        raise Failed("%s: exit %d: %s" % (" ".join(argv), proc.returncode, out.strip()))
    return out


def wait(pred, timeout, what, step=0.1):
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.time() > deadline:
            raise Failed("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(step)


class Cluster(object):
    def __init__(self, base=None, out=sys.stdout):
        self.pid = os.getpid()
        self.prefix = "pcmk%d" % self.pid
        self.base = base or tempfile.mkdtemp(prefix="pcmk-cluster-")
        os.chmod(self.base, 0o755)        # pacemaker's daemons run as hacluster
        self.out = out
        self.provider = "xen-remus-%s" % self.prefix
        self.fence_agent = "fence_%s" % self.prefix
        self.agent_dir = os.path.join("/usr/lib/ocf/resource.d", self.provider)
        self.fence_path = os.path.join("/usr/sbin", self.fence_agent)
        self.launchers = {}
        self.namespaces = []
        self.ts = {}
        self.observer = None
        self.seed = 4242
        self.veth = {"n1": "%sa" % self.prefix, "n2": "%sb" % self.prefix}

    # ------------------------------------------------------------- set-up
    def ns(self, node):
        return "%s-%s" % (self.prefix, node)

    def dir(self, node):
        return os.path.join(self.base, node)

    def setup(self):
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.cmd = write_command(os.path.join(self.base, "xen-remus"))
        os.makedirs(self.agent_dir)
        shutil.copy(os.path.join(here, "ocf", "remus"), os.path.join(self.agent_dir, "remus"))
        os.chmod(os.path.join(self.agent_dir, "remus"), 0o755)
        with open(self.fence_path, "w") as f:
            f.write(FENCE_SH % {"name": self.fence_agent, "base": self.base, "prefix": self.prefix})
        os.chmod(self.fence_path, 0o755)
        for d in ("/run/resource-agents", "/var/lib/pacemaker", "/var/lib/corosync", "/var/log/pacemaker"):
            if not os.path.isdir(d):
                os.makedirs(d)
        if not os.path.exists("/run/corosync.pid"):
            open("/run/corosync.pid", "a").close()
        # the generation records: one directory for both simulated hosts and
        # this controller (the sim keys them by each host's own file), each
        # node's failback journals and lock in its own state directory
        shared_meta = os.path.join(self.base, "meta")
        os.makedirs(shared_meta)
        os.makedirs(os.path.join(self.base, "state"))
        os.symlink(shared_meta, os.path.join(self.base, "state", "meta"))
        os.environ["XEN_REMUS_STATE_DIR"] = os.path.join(self.base, "state")
        key = os.path.join(self.base, "resync.key")
        with open(key, "w") as f:
            f.write("%s\n" % os.urandom(24).hex())
        os.chmod(key, 0o600)
        self.observer = AckObserver(os.path.join(self.base, "observer.sock"))
        for node in NODES:
            d = self.dir(node)
            for sub in ("lib-pacemaker/cib", "lib-pacemaker/pengine", "lib-pacemaker/blackbox",
                        "lib-pacemaker/cores", "lib-corosync", "log-pacemaker", "rsctmp", "state", "host"):
                os.makedirs(os.path.join(d, sub))
            os.symlink(shared_meta, os.path.join(d, "state", "meta"))
            open(os.path.join(d, "corosync.lock"), "w").close()
            with open(os.path.join(d, "corosync.conf"), "w") as f:
                f.write(COROSYNC_CONF % {"name": self.prefix, "dir": d})
            with open(os.path.join(d, "host.json"), "w") as f:
                json.dump(self.host_config(node, key), f, indent=1, sort_keys=True)
            with open(os.path.join(d, "node.sh"), "w") as f:
                f.write(NODE_SH % {"node": node, "dir": d, "cmd": self.cmd, "python": sys.executable})
            self.ts[node] = SimToolstack("unix:" + os.path.join(d, "agent.sock"), name=HOST[node], timeout=10)
        for node in NODES:
            sh("ip", "netns", "add", self.ns(node))
            self.namespaces.append(self.ns(node))
            sh("ip", "-n", self.ns(node), "link", "set", "lo", "up")
        sh("ip", "link", "add", self.veth["n1"], "netns", self.ns("n1"), "type", "veth",
           "peer", "name", self.veth["n2"], "netns", self.ns("n2"))
        for node in NODES:
            sh("ip", "-n", self.ns(node), "addr", "add", ADDR[node] + "/24", "dev", self.veth[node])
            sh("ip", "-n", self.ns(node), "link", "set", self.veth[node], "up")
            sh("ip", "netns", "exec", self.ns(node), "corosync", "-t", "-c",
               os.path.join(self.dir(node), "corosync.conf"))
        with open(self.config_file(), "w") as f:
            json.dump(self.domain_config(), f, indent=1, sort_keys=True)
        self.cib = cib.build(os.path.join(self.base, "cib.xml"), self.params(), nodes=NODES,
                             provider=self.provider, fence_agent=self.fence_agent)
        for node in NODES:
            shutil.copy(self.cib, os.path.join(self.dir(node), "lib-pacemaker", "cib", "cib.xml"))
            sh("chown", "-R", "hacluster:haclient", os.path.join(self.dir(node), "lib-pacemaker"),
               os.path.join(self.dir(node), "log-pacemaker"))

    def host_config(self, node, key):
        d = self.dir(node)
        peers = dict((HOST[n], dict([("addr", ADDR[n])] + list(PORTS.items()))) for n in NODES if n != node)
        cfg = {"name": HOST[node], "root": os.path.join(d, "host"),
               "agent": "unix:" + os.path.join(d, "agent.sock"),
               "xenstored": os.path.join(d, "host", "var/run/xenstored/socket"),
               "addr": ADDR[node], "peers": peers, "key_file": key, "on_stream_break": "wait",
               # as xl: a stopped Remus just ends its stream, the holding backup keeps its copy
               "remus_stop": "end"}
        cfg.update(PORTS)
        return cfg

    def domain_config(self):
        uname = "tap2:remus:%s:%d|aio:%s" % (ADDR["n2"], PORTS["remus_port"], IMAGE)
        return {"name": DOMAIN, "memory": 32, "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                "workload": {"rate": 100, "seed": self.seed, "observer": self.observer.path}}

    def config_file(self):
        return os.path.join(self.base, "vm1.json")

    def params(self):
        return {"domain": DOMAIN, "toolstack": "sim", "interval": "100", "config": self.config_file(),
                "hosts": ",".join("%s=%s" % (n, HOST[n]) for n in NODES),
                "sim_agents": ",".join("%s=unix:%s" % (n, os.path.join(self.dir(n), "agent.sock"))
                                       for n in NODES)}

    # ---------------------------------------------------------- node power
    def power_on(self, node):
        d = self.dir(node)
        for other in NODES:
            sh("ip", "-n", self.ns(other), "link", "set", self.veth[other], "up", check=False)
        log = open(os.path.join(d, "launcher.out"), "ab")
        self.launchers[node] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), "unshare", "--mount", "--uts", "sh",
             os.path.join(d, "node.sh")], stdin=open(os.devnull, "rb"), stdout=log, stderr=log,
            preexec_fn=os.setsid, close_fds=True)
        log.close()
        self.ts[node].reset()
        wait(lambda: self._ping(node), 20, "simulated host %s on %s" % (HOST[node], node))

    def _ping(self, node):
        try:
            return self.ts[node].call("ping")
        except Exception:  # noqa: BLE001 - not up yet
            self.ts[node].reset()
            return None

    def power_off(self, node, cut_first=True):
        """Power loss: the network goes first (no FIN or RST reaches the
        peer), then every process of the node dies; its tmpfs is forgotten."""
        if cut_first:
            sh("ip", "-n", self.ns(node), "link", "set", self.veth[node], "down", check=False)
        for pid in sh("ip", "netns", "pids", self.ns(node), check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        p = self.launchers.pop(node, None)
        if p is not None:
            p.wait()
        shutil.rmtree(os.path.join(self.dir(node), "rsctmp"), ignore_errors=True)
        os.makedirs(os.path.join(self.dir(node), "rsctmp"))
        self.ts[node].reset()

    def alive(self, node):
        return bool(sh("ip", "netns", "pids", self.ns(node), check=False).split())

    # --------------------------------------------------------------- views
    def crm(self, node, *argv):
        return sh("ip", "netns", "exec", self.ns(node), *argv, check=False)

    def crm_mon(self, node):
        return self.crm(node, "crm_mon", "-1", "-r")

    def promoted(self, node):
        """The node crm_mon (asked on ``node``) shows promoted, or None."""
        out = self.crm_mon(node)
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("* Promoted: [") or line.startswith("Promoted: ["):
                return line.split("[", 1)[1].split("]")[0].strip()
        return None

    def info(self, node):
        try:
            return self.ts[node].sim_info(DOMAIN)
        except Exception:  # noqa: BLE001 - no such domain, or host down
            self.ts[node].reset()
            return None

    def fences(self):
        try:
            with open(os.path.join(self.base, "fence.log")) as f:
                return [ln.split() for ln in f if ln.strip()]
        except IOError:
            return []

    def lost(self, node):
        """Acknowledged records missing from ``node``'s copy."""
        acked = self.observer.acked(DOMAIN)
        res = self.ts[node].disk_check(IMAGE, self.seed, acked)
        return acked, res["missing"], res["checked"]

    def copy(self, node):
        return os.path.join(self.dir(node), "host", IMAGE.lstrip("/"))

    def generation(self, node):
        m = meta.load(self.copy(node))
        return m

    # --------------------------------------------------------------- start
    def start(self):
        t0 = time.time()
        self.setup()
        for node in NODES:
            self.power_on(node)
        A = self.ts["n1"]
        A.disk_create(IMAGE, SIZE)
        A.create(self.domain_config())
        wait(lambda: "Online: [ n1 n2 ]" in self.crm_mon("n1"), 60, "both nodes online")
        self.t_online = time.time() - t0
        return self

    def close(self):
        for node in NODES:
            p = self.launchers.get(node)
            if p is not None and p.poll() is None:
                self.crm(node, "sh", "-c", "kill -TERM $(pidof pacemakerd) 2>/dev/null")
        deadline = time.time() + 15
        while time.time() < deadline and any(p.poll() is None for p in self.launchers.values()):
            time.sleep(0.2)
        for node in NODES:
            self.power_off(node, cut_first=False)
        for ns in self.namespaces:
            sh("ip", "netns", "delete", ns, check=False)
        for path in (self.fence_path,):
            if os.path.exists(path):
                os.unlink(path)
        shutil.rmtree(self.agent_dir, ignore_errors=True)
        if self.observer is not None:
            self.observer.close()
        for name in os.listdir("/dev/shm"):
            if not name.startswith("qb-"):
                continue
            pids = [p for p in name[3:].split("-")[:2] if p.isdigit()]
            if pids and not any(os.path.exists("/proc/%s" % p) for p in pids):
                shutil.rmtree(os.path.join("/dev/shm", name), ignore_errors=True)
        if os.environ.get("PCMK_CLUSTER_KEEP"):
            self.out.write("kept %s\n" % self.base)
        else:
            shutil.rmtree(self.base, ignore_errors=True)


# ------------------------------------------------------------------ scenarios

def s_protect(cl):
    t0 = time.time()
    wait(lambda: cl.promoted("n1") == "n1", 60, "n1 promoted (the guest runs on A)")
    t_prom = time.time() - t0
    wait(lambda: cl.ts["n1"].remus_running(DOMAIN), 60, "Remus A -> B")
    wait(lambda: ((cl.info("n2") or {}).get("backup") or {}).get("checkpoints", 0) >= 5, 20,
         "checkpoints on B")
    wait(lambda: "remus-vm1-clone" in cl.crm_mon("n1") and cl.promoted("n1") == "n1"
         and "Unpromoted: [ n2 ]" in cl.crm_mon("n1"), 30, "n2 unpromoted")
    cp = cl.info("n2")["backup"]["checkpoints"]
    # 191 while unprotected is degraded, not failed: nothing counted against n1
    fc = cl.crm("n1", "crm_failcount", "--query", "-r", cib.RSC, "-N", "n1")
    if "value=0" not in fc and "value=" in fc:
        raise Failed("the degraded monitor counted as a failure on n1: %s" % fc.strip())
    return ("promoted on A after %.1f s, protected toward B after %.1f s (%d checkpoints), both online after %.1f s;"
            " fail-count on n1 %s (191 is degraded, not failed)"
            % (t_prom, time.time() - t0, cp, cl.t_online, fc.strip().rsplit("value=", 1)[-1]))


def s_failover(cl):
    time.sleep(1.5)
    acked_at_kill = cl.observer.acked(DOMAIN)
    t0 = time.time()
    cl.power_off("n1")
    wait(lambda: (cl.info("n2") or {}).get("sim_state") == "running", 60, "the guest running on B")
    s = time.time() - t0
    wait(lambda: cl.promoted("n2") == "n2", 30, "n2 promoted")
    fenced = [f for f in cl.fences() if f[2] == "n1"]
    if not fenced:
        raise Failed("B was promoted but n1 was never fenced")
    wait(lambda: cl.observer.acked(DOMAIN) > acked_at_kill, 10, "output from B")
    acked, lost, checked = cl.lost("n2")
    if lost:
        raise Failed("acknowledged %d, lost %d" % (acked, lost))
    return "promoted on B after %.1f s, acknowledged %d, lost %d" % (s, acked_at_kill, lost)


def s_rejoin(cl):
    t0 = time.time()
    cl.power_on("n1")
    wait(lambda: "Online: [ n1 n2 ]" in cl.crm_mon("n2"), 60, "n1 back online")
    wait(lambda: cl.ts["n2"].remus_running(DOMAIN), 90, "Remus B -> A again")
    wait(lambda: ((cl.info("n1") or {}).get("backup") or {}).get("checkpoints", 0) >= 3, 20, "checkpoints on A")
    wait(lambda: "Unpromoted: [ n1 ]" in cl.crm_mon("n2") and cl.promoted("n2") == "n2", 30,
         "n1 unpromoted, n2 promoted")
    time.sleep(0.5)
    acked, lost, checked = cl.lost("n1")
    if lost:
        raise Failed("A's copy misses %d of %d acknowledged records" % (lost, acked))
    return ("A back as unpromoted, resynced and protected after %.1f s; acknowledged %d, lost %d on A's copy"
            % (time.time() - t0, acked, lost))


def s_switchover(cl):
    before = cl.observer.acked(DOMAIN)
    t0 = time.time()
    out = cl.crm("n2", "crm_resource", "--move", "--promoted", "-r", cib.CLONE, "-N", "n1")
    wait(lambda: cl.promoted("n2") == "n1", 120, "n1 promoted again (%s)" % out.strip())
    s = time.time() - t0
    wait(lambda: cl.ts["n1"].remus_running(DOMAIN), 60, "Remus A -> B")
    wait(lambda: cl.observer.acked(DOMAIN) > before, 10, "output from A")
    cl.crm("n2", "crm_resource", "--clear", "-r", cib.CLONE)
    wait(lambda: "Unpromoted: [ n2 ]" in cl.crm_mon("n1"), 30, "n2 unpromoted")
    acked, lost, checked = cl.lost("n1")
    if lost:
        raise Failed("acknowledged %d, lost %d" % (acked, lost))
    # the demote stopped Remus B -> A the way xl does (the stream just ends):
    # A held its copy, and the failback discarded it before the migration
    from xen_remus_ext.failback import journal
    rec = journal.load(DOMAIN, base=os.path.join(cl.dir("n2"), "state")) or {}
    gone = [h for h in rec.get("history") or () if h[1] == "discarded"]
    if [c.get("ok") for c in rec.get("checks") or () if c.get("name") == "stale-backup"] != [True] or not gone:
        raise Failed("expected the demote's failback to discard A's held copy, journal: checks %s, history %s"
                     % (rec.get("checks"), rec.get("history")))
    return ("promoted on A after %.1f s (a failback; A's held copy of the stopped protection discarded first), "
            "acknowledged %d, lost %d" % (s, acked, lost))


def s_partition(cl):
    wait(lambda: ((cl.info("n2") or {}).get("backup") or {}).get("checkpoints", 0) >= 3, 20, "checkpoints on B")
    g0 = cl.generation("n1").current
    fences_before = len(cl.fences())
    t0 = time.time()
    for node in NODES:
        sh("ip", "-n", cl.ns(node), "link", "set", cl.veth[node], "down")
    wait(lambda: len(cl.fences()) > fences_before, 60, "a fencing")
    s = time.time() - t0
    time.sleep(7)          # past priority-fencing-delay: a second fencing would show by now
    fenced = [f[2] for f in cl.fences()[fences_before:]]
    if fenced != ["n2"]:
        raise Failed("expected only n2 fenced, got %s" % fenced)
    if not cl.alive("n1") or cl.alive("n2"):
        raise Failed("expected n1 alive and n2 off")
    if (cl.info("n1") or {}).get("sim_state") != "running":
        raise Failed("the guest does not run on A")
    ga, gb = cl.generation("n1"), cl.generation("n2")
    rel = meta.compare(ga, gb)
    if rel == meta.SPLIT_BRAIN or gb.current != g0 or ga.current == g0:
        raise Failed("generations A %s (bitmap %s), B %s, before %s: %s"
                     % (ga.current, ga.bitmap, gb.current, g0, rel))
    cl.power_on("n2")
    wait(lambda: "Online: [ n1 n2 ]" in cl.crm_mon("n1"), 60, "n2 back online")
    wait(lambda: cl.ts["n1"].remus_running(DOMAIN), 90, "Remus A -> B again")
    wait(lambda: "Unpromoted: [ n2 ]" in cl.crm_mon("n1"), 30, "n2 unpromoted")
    acked, lost, checked = cl.lost("n1")
    if lost:
        raise Failed("acknowledged %d, lost %d" % (acked, lost))
    return ("n1 kept the promotion, n2 fenced after %.1f s; generations A %s..(from %s..) B %s..: %s, no split brain;"
            " B resynced, lost %d" % (s, ga.current[:8], g0[:8], gb.current[:8], rel, lost))


def s_promote_retry(cl):
    from xen_remus_ext.failback.journal import JournalLock
    wait(lambda: ((cl.info("n2") or {}).get("backup") or {}).get("checkpoints", 0) >= 3, 30, "checkpoints on B")
    saved = os.environ["XEN_REMUS_STATE_DIR"]
    os.environ["XEN_REMUS_STATE_DIR"] = os.path.join(cl.dir("n2"), "state")
    lock = JournalLock(DOMAIN, timeout=5).acquire()       # what a stuck action would hold
    os.environ["XEN_REMUS_STATE_DIR"] = saved
    try:
        time.sleep(1.0)
        acked_at_kill = cl.observer.acked(DOMAIN)
        t0 = time.time()
        cl.power_off("n1")
        pid = wait(lambda: _agent_pid(cl, "n2", "promote"), 60, "a promote running on n2")
        os.kill(pid, signal.SIGKILL)
    finally:
        lock.release()
    wait(lambda: (cl.info("n2") or {}).get("sim_state") == "running", 90, "the guest running on B")
    wait(lambda: cl.promoted("n2") == "n2", 60, "n2 promoted after the retry")
    s = time.time() - t0
    wait(lambda: cl.observer.acked(DOMAIN) > acked_at_kill, 10, "output from B")
    acked, lost, checked = cl.lost("n2")
    if lost:
        raise Failed("acknowledged %d, lost %d" % (acked, lost))
    return ("promote killed on n2 (pid %d) and retried: promoted on B after %.1f s, acknowledged %d, lost %d"
            % (pid, s, acked_at_kill, lost))


def _cold_attr(cl, node):
    """This node's cold-start attribute as Pacemaker holds it, or None."""
    out = cl.crm(node, "crm_attribute", "-N", node, "-n", COLD_ATTR, "-l", "reboot", "-G", "-q").strip()
    return out if out and "No such device" not in out and "Error" not in out else None


def s_coldstart(cl):
    """Both nodes lose power; they boot together with the guest running
    nowhere, and the copy that lost power second took writes of its own
    too (split brain): neither node is promoted, each shows the verdict as
    its node attribute (crm_mon -A) until the operator names the loser
    (`xen-remus meta invalidate`); then only the other node, whose copy is
    consistent, is promoted (the agent boots the guest there from its
    config), both attributes clear, and the loser is resynced and
    protected toward."""
    running = [n for n in NODES if cl.alive(n) and (cl.info(n) or {}).get("sim_state") == "running"]
    if len(running) != 1:
        raise Failed("expected the guest running on one node, got %s" % (running or "none"))
    hot = running[0]
    cold = [n for n in NODES if n != hot][0]
    if cl.alive(cold):
        raise Failed("expected %s off (the scenario follows promote-retry)" % cold)
    time.sleep(1.0)
    acked = cl.observer.acked(DOMAIN)
    cl.power_off(hot)
    gp, go = cl.generation(hot), cl.generation(cold)
    rel = meta.compare(gp, go)
    if rel != meta.TARGET_BEHIND or not gp.consistent:
        raise Failed("expected %s's copy consistent and newer than %s's, got %s (%s.. / %s..)"
                     % (HOST[hot], HOST[cold], rel, gp.current[:8], go.current[:8]))
    meta.rotate(cl.copy(cold))                  # the cold copy took writes of its own too
    if meta.compare(cl.generation(hot), cl.generation(cold)) != meta.SPLIT_BRAIN:
        raise Failed("expected split brain between %s's and %s's copies" % (HOST[hot], HOST[cold]))
    fences_before = len(cl.fences())
    t0 = time.time()
    for node in NODES:
        cl.power_on(node)
    # neither is promoted; both say why, as a node attribute
    wait(lambda: all((_cold_attr(cl, n) or "").startswith("SPLIT BRAIN:") for n in NODES), 60,
         "the SPLIT BRAIN attribute on both nodes")
    t_attr = time.time() - t0
    mon = cl.crm(hot, "crm_mon", "-1", "-A")
    if mon.count(COLD_ATTR) != 2 or "SPLIT BRAIN" not in mon:
        raise Failed("expected %s on both nodes in crm_mon -A, got:\n%s" % (COLD_ATTR, mon))
    with open(os.path.join(cl.base, "coldstart-crm_mon-A.txt"), "w") as f:
        f.write(mon)
    time.sleep(3.0)
    if cl.promoted(hot) or cl.promoted(cold):
        raise Failed("a node was promoted in a split brain: %s" % (cl.promoted(hot) or cl.promoted(cold)))
    # the operator names the loser on its host
    cl.crm(cold, cl.cmd, "meta", "invalidate", cl.copy(cold))
    if cl.generation(cold).consistent:
        raise Failed("xen-remus meta invalidate left %s's copy consistent" % HOST[cold])
    t_inv = time.time()
    seen = set()

    def promoted():
        got = cl.promoted(hot if cl.alive(hot) else cold)
        if got:
            seen.add(got)
        return got == hot
    wait(promoted, 90, "%s promoted after the cold start" % hot)
    s = time.time() - t_inv
    wait(lambda: not any(_cold_attr(cl, n) for n in NODES), 30, "both cold-start attributes cleared")
    if seen != {hot}:
        raise Failed("expected only %s promoted, saw %s" % (hot, sorted(seen)))
    fenced = [f[2] for f in cl.fences()[fences_before:]]
    if fenced:
        raise Failed("a cold start of both nodes fenced %s" % fenced)
    if (cl.info(hot) or {}).get("sim_state") != "running" or (cl.info(cold) or {}).get("sim_state") == "running":
        raise Failed("expected the guest running on %s only" % HOST[hot])
    why = {}
    for node in NODES:
        with open(os.path.join(cl.dir(node), "rsctmp", "xen-remus-%s.state" % cib.RSC)) as f:
            why[node] = json.load(f).get("cold_reason") or ""
    if "promotable here" not in why[hot] or "this copy is inconsistent" not in why[cold]:
        raise Failed("cold-start verdicts: %s" % why)
    lost_p = cl.lost(hot)[1]
    if lost_p:
        raise Failed("%s's copy misses %d of %d acknowledged records" % (HOST[hot], lost_p, acked))
    wait(lambda: cl.ts[hot].remus_running(DOMAIN), 90, "Remus %s -> %s" % (HOST[hot], HOST[cold]))
    wait(lambda: ((cl.info(cold) or {}).get("backup") or {}).get("checkpoints", 0) >= 3, 30,
         "checkpoints on %s" % HOST[cold])
    wait(lambda: "Unpromoted: [ %s ]" % cold in cl.crm_mon(hot), 30, "%s unpromoted" % cold)
    t_prot = time.time() - t0
    lost_o = cl.lost(cold)[1]
    if lost_o:
        raise Failed("%s's copy misses %d of %d acknowledged records after the resync" % (HOST[cold], lost_o, acked))
    return ("both nodes off, then on with diverged copies: SPLIT BRAIN shown as %s on both after %.1f s, "
            "nobody promoted; %s's copy invalidated: %s's (%s..) promoted on %s after %.1f s, attributes cleared, "
            "acknowledged %d, lost %d; protected toward %s after %.1f s, lost %d on its copy"
            % (COLD_ATTR, t_attr, HOST[cold], HOST[hot], gp.current[:8], HOST[hot], s, acked, lost_p, HOST[cold],
               t_prot, lost_o))


def _agent_pid(cl, node, action):
    for pid in sh("ip", "netns", "pids", cl.ns(node), check=False).split():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except IOError:
            continue
        if b"ocf" in argv and action.encode() in argv and b"xen_remus_ext" in argv:
            return int(pid)
    return None


class MonLog(object):
    """``PCMK_CLUSTER_MONLOG=FILE``: every distinct ``crm_mon -1`` picture of
    the run (resource part), stamped with the scenario, for the docs."""

    def __init__(self, cl, path):
        import threading
        self.cl, self.path, self.scenario, self.last, self.stop = cl, path, "start", None, False
        self.f = open(path, "w")
        self.t = threading.Thread(target=self.loop)
        self.t.daemon = True
        self.t.start()

    def loop(self):
        t0 = time.time()
        while not self.stop:
            node = "n1" if self.cl.alive("n1") else "n2"
            out = self.cl.crm_mon(node)
            body = out.split("Node List:", 1)[-1]
            if "Clone Set" in body and body != self.last:
                self.last = body
                self.f.write("=== %s, t=%.1f s, asked on %s\nNode List:%s\n"
                             % (self.scenario, time.time() - t0, node, body))
                self.f.flush()
            time.sleep(0.3)


RUN = {"protect": s_protect, "failover": s_failover, "rejoin": s_rejoin, "switchover": s_switchover,
       "partition": s_partition, "promote-retry": s_promote_retry, "coldstart": s_coldstart}


def main(argv=None):
    names = list(argv or sys.argv[1:]) or list(SCENARIOS)
    for n in names:
        if n not in RUN:
            sys.stderr.write("unknown scenario %r (%s)\n" % (n, ", ".join(SCENARIOS)))
            return 2
    t0 = time.time()
    cl = Cluster()
    failed = passed = 0
    try:
        cl.start()
        mon = MonLog(cl, os.environ["PCMK_CLUSTER_MONLOG"]) if os.environ.get("PCMK_CLUSTER_MONLOG") else None
        for n in names:
            if mon is not None:
                mon.scenario = n
            try:
                line = RUN[n](cl)
                print("cluster-%s: %s" % (n, line))
                passed += 1
            except Failed as exc:
                failed += 1
                print("cluster-%s: FAILED: %s" % (n, exc))
                print(cl.crm_mon("n1" if cl.alive("n1") else "n2"))
                break
            sys.stdout.flush()
    except Failed as exc:
        failed += 1
        print("cluster: FAILED to start: %s" % exc)
    finally:
        if failed:
            os.environ["PCMK_CLUSTER_KEEP"] = os.environ.get("PCMK_CLUSTER_KEEP") or "1"
        cl.close()
    print("test-cluster: %d passed, %d failed (%.0f s)" % (passed, failed, time.time() - t0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
