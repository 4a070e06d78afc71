"""The OCF actions of ``ocf:xen-remus:remus`` (run as ``xen-remus ocf ACTION``).

Pacemaker passes the parameters as ``OCF_RESKEY_*`` and the clone's meta
attributes and notification lists as ``OCF_RESKEY_CRM_meta_*``.  The
decisions are :mod:`decide`'s; this module gathers the facts (this host's
``status`` row, the agent's own state file under ``HA_RSCTMP``), performs
the action and sets or deletes the promotion score with ``crm_attribute``.

Every action that changes anything takes the domain's journal lock
(:class:`failback.journal.JournalLock`) first: on a timeout Pacemaker kills
the agent's process group and runs demote, stop, start, promote again, and
the retry must wait for, never race, whatever still runs.  monitor only
reads.  The resync + re-protect started after the peer comes back runs
detached (its own session), holding the lock; monitor reports 191 while it
runs.
"""
from __future__ import absolute_import, division, print_function

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

from xen_remus_ext import __version__
from xen_remus_ext.errors import XenRemusError
from xen_remus_ext.pacemaker import decide

ACTIONS = ("meta-data", "validate-all", "start", "stop", "monitor", "promote", "demote", "notify",
           "reprotect")


#: how a cold start's monitor reaches the peer (xl, xend, the resync engine)
COLD_SSH = "ssh -o ConnectTimeout=5 -o BatchMode=yes"


class Agent(object):
    """One invocation.  :param env: the environment Pacemaker gave us."""

    def __init__(self, env, out=None, err=None):
        self.env = env
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.params = dict((k[len("OCF_RESKEY_"):], v) for k, v in env.items()
                           if k.startswith("OCF_RESKEY_") and not k.startswith("OCF_RESKEY_CRM_meta_"))
        self.meta = dict((k[len("OCF_RESKEY_CRM_meta_"):], v) for k, v in env.items()
                         if k.startswith("OCF_RESKEY_CRM_meta_"))
        self.domain = self.params.get("domain", "")
        self.instance = env.get("OCF_RESOURCE_INSTANCE") or "remus-%s" % (self.domain or "unnamed")
        self.rsctmp = env.get("HA_RSCTMP") or "/run/resource-agents"
        self._node = None
        self._ts = None

    # ---------------------------------------------------------------- facts
    def log(self, msg):
        self.err.write("%s %s[%s]: %s\n" % (time.strftime("%H:%M:%S"), self.instance, self.node(), msg))
        self.err.flush()

    def node(self):
        if self._node is None:
            self._node = self.meta.get("on_node") or self._crm_node() or socket.gethostname()
        return self._node

    def _crm_node(self):
        try:
            proc = subprocess.Popen(["crm_node", "-n"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, _ = proc.communicate()
        except OSError:
            return None
        name = out.decode("utf-8", "replace").strip()
        return name if proc.returncode == 0 and name else None

    def hosts(self):
        return decide.parse_map(self.params.get("hosts"), "parameter hosts")

    def host_of(self, node):
        return self.hosts().get(node, node)

    def timeout_s(self, default=60.0):
        try:
            return float(self.meta.get("timeout")) / 1000.0
        except (TypeError, ValueError):
            return default

    def _state_path(self, suffix):
        safe = self.instance.replace("/", "_")
        return os.path.join(self.rsctmp, "xen-remus-%s.%s" % (safe, suffix))

    def load_state(self):
        try:
            with open(self._state_path("state")) as f:
                return json.load(f)
        except (IOError, OSError, ValueError):
            return {}

    def save_state(self, **changes):
        st = self.load_state()
        st.update(changes)
        st = dict((k, v) for k, v in st.items() if v is not None)
        path = self._state_path("state")
        try:
            if not os.path.isdir(self.rsctmp):
                os.makedirs(self.rsctmp, 0o755)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(st, f, sort_keys=True)
            os.rename(tmp, path)
        except (IOError, OSError) as exc:
            self.log("cannot write %s: %s" % (path, exc))
        return st

    def _sim_agents(self):
        return decide.parse_map(self.params.get("sim_agents"), "parameter sim_agents")

    def site(self, peer_node=None, xenstores=False, ssh="ssh"):
        """What the composition root (:func:`wiring.open_site`) builds for
        this node and, given ``peer_node``, toward that node's host (over
        ``ssh``).  A ``with`` block releases it."""
        from xen_remus_ext import wiring
        kind = self.params.get("toolstack") or None
        agent = peer_agent = None
        if kind == "sim":
            agents = self._sim_agents()
            agent = agents.get(self.node())
            if not agent:
                raise XenRemusError("parameter sim_agents: expected an address for node %s" % self.node())
            if peer_node is not None:
                peer_agent = agents.get(peer_node)
                if not peer_agent:
                    raise XenRemusError("parameter sim_agents: expected an address for node %s" % peer_node)
        host = self.host_of(peer_node) if peer_node is not None else None
        return wiring.open_site(toolstack=kind, host=host, agent=agent, peer_agent=peer_agent,
                                xenstores=xenstores, ssh=ssh)

    def toolstack(self):
        """This host's toolstack, as the ``toolstack`` parameter says."""
        if self._ts is None:
            self._ts = self.site().toolstack
        return self._ts

    def options(self):
        """The failback/protect options of the agent's runs: every Remus it
        starts asks the backup to hold its copy when the stream breaks, where
        the toolstack can (``--hold-backup``)."""
        opts = {"interval_ms": int(self.params.get("interval") or "200"),
                "local_host": self.host_of(self.node()), "ssh": "ssh"}
        if self.toolstack().check_hold() is None:
            opts["hold_backup"] = True
        return opts

    def row(self):
        """This host's status row of the domain, or None."""
        from xen_remus_ext.failback import api
        from xen_remus_ext.errors import FailbackError
        try:
            rows = api.status(self.toolstack(), self.domain)
        except FailbackError:
            return None
        for r in rows:
            if r.get("here"):
                return r
        return rows[0] if rows else None

    def set_score(self, score, node=None):
        argv = ["crm_attribute", "--promotion", "-l", "reboot"]
        if node:
            argv += ["-N", node]
        argv += ["-D"] if score is None else ["-v", "%d" % score]
        return self._crm_attribute(argv)

    def set_attribute(self, name, value):
        """This node's transient attribute ``name`` (shown by ``crm_mon
        -A``): set to ``value``, or deleted when None."""
        argv = ["crm_attribute", "-N", self.node(), "-n", name, "-l", "reboot"]
        argv += ["-D"] if value is None else ["-v", value]
        return self._crm_attribute(argv)

    def publish_cold(self, alert, st):
        """Show (or clear) the cold-start verdict that needs an operator."""
        if alert == st.get("cold_alert"):
            return
        if self.set_attribute(decide.cold_attribute(self.domain), alert):
            self.save_state(cold_alert=alert)
            self.log("%s %s" % (decide.cold_attribute(self.domain),
                                "cleared" if alert is None else "set: %s" % alert))

    def _crm_attribute(self, argv):
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=dict(self.env, OCF_RESOURCE_INSTANCE=self.instance))
            _, err = proc.communicate()
        except OSError as exc:
            self.log("crm_attribute: %s" % exc)
            return False
        if proc.returncode != 0:
            self.log("%s: exit %d: %s" % (" ".join(argv), proc.returncode,
                                          err.decode("utf-8", "replace").strip()))
        return proc.returncode == 0

    def lock(self, timeout=None):
        from xen_remus_ext.failback.journal import JournalLock
        return JournalLock(self.domain, timeout=timeout if timeout is not None else self.timeout_s() * 0.8)

    # --------------------------------------------------------- the worker
    def worker_pid(self):
        try:
            with open(self._state_path("worker")) as f:
                pid = int(f.read().split()[0])
        except (IOError, OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                return None
        return pid

    def spawn_reprotect(self, peer):
        if self.worker_pid():
            self.log("re-protect already running (pid %d)" % self.worker_pid())
            return
        log = open(self._state_path("worker.log"), "ab")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "ocf", "reprotect", peer],
                                    stdin=open(os.devnull, "rb"), stdout=log, stderr=log,
                                    env=dict(self.env), close_fds=True, preexec_fn=os.setsid)
        finally:
            log.close()
        with open(self._state_path("worker"), "w") as f:
            f.write("%d %s\n" % (proc.pid, peer))
        self.save_state(reprotect_peer=peer, reprotect_at=time.time())
        self.log("resync + re-protect toward %s started detached (pid %d)" % (peer, proc.pid))

    def stop_worker(self):
        pid = self.worker_pid()
        if pid is None:
            return
        self.log("stopping the re-protect (pid %d); its journal resumes later" % pid)
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass
        deadline = time.time() + 10
        while self.worker_pid() and time.time() < deadline:
            time.sleep(0.1)

    def do_reprotect(self, peer):
        """The detached worker: protect toward ``peer`` unless done already."""
        with open(self._state_path("worker"), "w") as f:
            f.write("%d %s\n" % (os.getpid(), peer))
        try:
            with self.lock(timeout=None):
                row = self.row()
                if row is None or row.get("backup") is not None or row.get("state") is None:
                    self.log("re-protect: %s does not run here as primary; nothing to do" % self.domain)
                    return decide.OCF_SUCCESS
                if row.get("protected"):
                    self.log("re-protect: %s already protected" % self.domain)
                    return decide.OCF_SUCCESS
                from xen_remus_ext.failback import api
                t0 = time.time()
                with self.site(peer, xenstores=True) as site:
                    res = api.run_protect(site.toolstack, self.domain, self.host_of(peer), site.peer,
                                          options=dict(self.options(), supervise=site.supervise),
                                          disk_sync=site.disk_sync, progress=self.log, clock=site.clock,
                                          xenstore=site.xenstore, peer_xenstore=site.peer_xenstore)
                self.log("re-protect toward %s: %s after %.2f s" % (peer, res.get("state"), time.time() - t0))
                return decide.OCF_SUCCESS
        except XenRemusError as exc:
            self.log("re-protect toward %s failed: %s" % (peer, exc))
            return decide.OCF_ERR_GENERIC
        finally:
            try:
                os.unlink(self._state_path("worker"))
            except OSError:
                pass

    # -------------------------------------------------------------- actions
    def validate(self, deep=True):
        code, msg = decide.check_params(self.params)
        if code != decide.OCF_SUCCESS:
            return code, msg
        code, msg = decide.check_clone(self.meta)
        if code != decide.OCF_SUCCESS or not deep:
            return code, msg
        cfg = self.params.get("config")
        if cfg and not os.path.exists(cfg):
            return decide.OCF_ERR_INSTALLED, "parameter config: %s: no such file" % cfg
        if cfg and cfg.endswith(".json"):
            try:
                self.load_config(cfg)
            except XenRemusError as exc:
                return decide.OCF_ERR_CONFIGURED, "%s" % (exc,)
        elif cfg:
            from xen_remus_ext.config import check
            try:
                problems = check.check_file(cfg)
            except XenRemusError as exc:
                return decide.OCF_ERR_CONFIGURED, "%s" % (exc,)
            errors = [p for p in problems if p.severity == check.ERROR]
            if errors:
                return decide.OCF_ERR_CONFIGURED, "; ".join(check.format_diagnostic(p) for p in errors)
        return decide.OCF_SUCCESS, "ok"

    def a_validate_all(self):
        code, msg = self.validate()
        if code != decide.OCF_SUCCESS:
            self.log("validate-all: %s" % msg)
        return code

    def settle_journal(self):
        """An unfinished failback journal here is aborted to a safe state
        (start, stop): the agent's own runs leave none unless killed."""
        from xen_remus_ext.failback import api, journal
        try:
            rec = journal.load(self.domain)
        except XenRemusError as exc:
            self.log("journal unreadable, left alone: %s" % exc)
            return
        if rec is None or rec["state"] in decide.TERMINAL_JOURNAL:
            return
        self.log("settling the unfinished %s toward %s (state %s)" % (rec["mode"], rec["host"], rec["state"]))
        try:
            peer = None
            for node, host in self.hosts().items():
                if host == rec["host"]:
                    peer = node
            with self.site(peer or rec["host"], xenstores=True) as site:
                api.run_failback(site.toolstack, self.domain, rec["host"], site.peer,
                                 reverse_only=rec["mode"] == "reverse", abort=True,
                                 options=dict(self.options(), supervise=site.supervise),
                                 disk_sync=site.disk_sync, progress=self.log, clock=site.clock,
                                 xenstore=site.xenstore, peer_xenstore=site.peer_xenstore)
        except XenRemusError as exc:
            self.log("abort of the unfinished journal failed (left for the operator): %s" % exc)

    def hold(self, ts):
        """Make this host hold a backup paused for promote when its stream
        breaks.  :returns: None when it does, else why not."""
        why = ts.check_hold()
        if why is None:
            ts.hold_on_stream_break(True)
        return why

    def a_start(self):
        code, msg = self.validate(deep=False)
        if code != decide.OCF_SUCCESS:
            self.log("start: %s" % msg)
            return code
        with self.lock():
            ts = self.toolstack()
            why = self.hold(ts)
            if why is not None:
                self.log("start: %s: a cut link can resume the backup before fencing; see docs/pacemaker.md"
                         % why)
            self.settle_journal()
            self.save_state(state=decide.STARTED, target=None)
        code = self.a_monitor(apply_code=False)     # sets the score of what is here
        if code in (decide.OCF_SUCCESS, decide.OCF_RUNNING_PROMOTED, decide.OCF_DEGRADED_PROMOTED,
                    decide.OCF_DEGRADED):
            return decide.OCF_SUCCESS               # started; the guest may already run here
        return code

    def a_stop(self):
        code, msg = decide.check_params(self.params)
        if code != decide.OCF_SUCCESS:
            self.log("stop: %s; nothing this agent could have started" % msg)
            return decide.OCF_SUCCESS
        self.stop_worker()
        try:
            with self.lock(timeout=self.timeout_s() * 0.5):
                row = self.row()
                if row is not None and row.get("backup") is not None:
                    if (row["backup"].get("state") or "receiving") == "receiving":
                        self.log("stop: tearing down the backup copy of %s" % self.domain)
                        self.toolstack().remus_discard(self.domain)
                    else:
                        self.log("stop: keeping the paused copy of %s (its stream broke) for a promote"
                                 % self.domain)
                elif row is not None and row.get("state") is not None:
                    self.shutdown(self.toolstack())
                self.settle_journal()
        except XenRemusError as exc:
            self.log("stop: %s" % exc)
            row = self.row_quiet()
            if row is not None and row.get("backup") is None and row.get("state") is not None:
                return decide.OCF_ERR_GENERIC
        self.save_state(state=decide.STOPPED, target=None, reprotect_peer=None)
        self.set_score(None)
        self.publish_cold(None, self.load_state())
        return decide.OCF_SUCCESS

    def row_quiet(self):
        try:
            return self.row()
        except XenRemusError:
            return None

    def shutdown(self, ts):
        """Clean shutdown for 2/3 of the timeout, then destroy."""
        budget = decide.shutdown_budget(self.meta.get("timeout"))
        try:
            if ts.remus_running(self.domain):
                ts.remus_stop(self.domain)
        except XenRemusError as exc:
            self.log("remus stop: %s" % exc)
        try:
            if ts.shutdown(self.domain):
                deadline = time.time() + budget
                while time.time() < deadline:
                    r = self.row_quiet()
                    if r is None or r.get("state") is None:
                        self.log("%s shut down cleanly" % self.domain)
                        return
                    time.sleep(0.5)
        except XenRemusError as exc:
            self.log("shutdown: %s" % exc)
        self.log("destroying %s" % self.domain)
        ts.destroy(self.domain)

    def a_monitor(self, apply_code=True):
        code, msg = decide.check_params(self.params)
        if code != decide.OCF_SUCCESS:
            self.log("monitor: %s" % msg)
            return decide.OCF_ERR_CONFIGURED if apply_code else code
        st = self.load_state()
        try:
            row = self.row()
        except XenRemusError as exc:
            self.log("monitor: status unavailable: %s" % exc)
            return decide.OCF_ERR_GENERIC
        working = self.worker_pid() is not None
        cold = None
        if st.get("state") == decide.STARTED and (row is None or row.get("state") is None):
            cold = self.cold_verdict()
            if cold.reason != st.get("cold_reason"):
                self.log("monitor: %s" % cold.reason)
                self.save_state(cold_reason=cold.reason)
        d = decide.monitor(row, st.get("state"), working, cold=cold)
        self.set_score(d.score)
        self.publish_cold(decide.cold_alert(cold), st)
        if (d.code == decide.OCF_DEGRADED_PROMOTED and not working and st.get("reprotect_peer")
                and self.meta.get("interval", "0") != "0"
                and time.time() - float(st.get("reprotect_at") or 0) > 15):
            self.spawn_reprotect(st["reprotect_peer"])
        if os.environ.get("XEN_REMUS_OCF_DEBUG") or d.code not in (0, 7, 8):
            self.log("monitor: %s (%s)" % (decide.CODE_NAMES.get(d.code, d.code), d.reason))
        return d.code

    def a_promote(self):
        code, msg = self.validate(deep=False)
        if code != decide.OCF_SUCCESS:
            return code
        with self.lock():
            ts = self.toolstack()
            row = self.row()
            if row is not None and row.get("backup") is None and row.get("state") is not None:
                if row.get("state") == "paused" and not decide._journal_busy(row):
                    ts.unpause(self.domain)
                self.log("promote: %s already runs here (%s)" % (self.domain, row.get("state")))
                self.set_score(decide.SCORE_PRIMARY)
                return decide.OCF_SUCCESS
            if row is None or row.get("backup") is None:
                return self.cold_boot(ts)
            can_hold = ts.check_hold() is None
            deadline = time.time() + max(self.timeout_s() * 0.5, 3.0)
            while True:
                row = self.row()
                if row is not None and row.get("backup") is None and row.get("state") is not None:
                    break       # the toolstack resumed it on its own
                b = (row or {}).get("backup") or {}
                if can_hold and b.get("state") == "broken":
                    t0 = time.time()
                    ts.remus_takeover(self.domain)
                    self.log("promote: %s resumed from its last committed checkpoint (%d checkpoints) in %.3f s"
                             % (self.domain, b.get("checkpoints") or 0, time.time() - t0))
                    break
                if row is None or time.time() > deadline:
                    self.log("promote: the checkpoint stream of %s still runs: is the old primary fenced?"
                             % self.domain)
                    return decide.OCF_ERR_GENERIC
                time.sleep(0.1)
            self.set_score(decide.SCORE_PRIMARY)
            self.save_state(state=decide.STARTED, target=None)
        return decide.OCF_SUCCESS

    def cold_boot(self, ts):
        """promote where no copy of the domain runs: boot it from ``config``
        on this host's disk copies.  Pacemaker reaches it on a cold start
        (the guest ran nowhere; :meth:`cold_verdict` scored this node), by
        an operator's forced promote (``crm_resource --force-promote``) or
        for a promote retried after its demote shut the guest down.  Refused
        where the verdict is blocking: a copy here inconsistent, older than
        or diverged from the peer's, or the guest on the peer."""
        cfg = self.params.get("config")
        if not cfg:
            self.log("promote: no copy of %s here and no config parameter to boot it from" % self.domain)
            return decide.OCF_ERR_GENERIC
        verdict = self.cold_verdict()
        if verdict.score is decide.DELETE and verdict.blocking:
            self.log("promote: not booting %s here: %s" % (self.domain, verdict.reason))
            return decide.OCF_ERR_GENERIC
        if verdict.score is decide.DELETE:
            self.log("promote: booting %s here although %s" % (self.domain, verdict.reason))
        ts.create_from_file(cfg)
        self.log("promote: %s booted here from %s" % (self.domain, cfg))
        self.set_score(decide.SCORE_PRIMARY)
        self.save_state(state=decide.STARTED, target=None)
        return decide.OCF_SUCCESS

    def peer_node(self):
        """The clone's other node: the one other node ``hosts`` or
        ``sim_agents`` names, else the one the clone's notifications named."""
        me = self.node()
        for key in ("hosts", "sim_agents"):
            try:
                names = [n for n in decide.parse_map(self.params.get(key), "parameter " + key) if n != me]
            except ValueError:
                names = []
            if len(names) == 1:
                return names[0]
        return self.load_state().get("peer")

    def cold_verdict(self):
        """:returns: :func:`decide.cold_start` of this node, from its copies'
        generation records, the peer's (asked through the peer's disk port)
        and whether the peer's toolstack lists the domain."""
        from xen_remus_ext.failback.api import INCOMING_SUFFIX
        from xen_remus_ext.resync import meta
        peer = self.peer_node()
        cfg = self.params.get("config")
        if peer is None or not cfg:
            return decide.cold_start([], peer)
        try:
            config = self.load_config(cfg)
            ts = self.toolstack()
        except XenRemusError as exc:
            return decide.ColdVerdict(decide.DELETE, "cold start: %s" % exc, False)
        site = None
        peer_has = peer_error = None
        try:
            # a monitor must not hang on a powered-off peer: ssh gives up
            # early and never asks for a password
            site = self.site(peer, ssh=COLD_SSH)
            names = (self.domain, self.domain + INCOMING_SUFFIX)
            peer_has = any(i.name in names and i.domid != 0 for i in site.peer.list_domains())
        except XenRemusError as exc:
            peer_error = "%s" % exc
        facts = []
        try:
            for d in config.remus_disks:
                path = ts.disk_path(d.path) or d.path
                f = {"vdev": d.vdev, "exists": os.path.exists(path)}
                try:
                    m = meta.load(path) if f["exists"] else None
                    f["local"] = m.to_dict() if m is not None else None
                except XenRemusError as exc:
                    f["local_error"] = "%s" % exc
                if peer_error is None:
                    dest = site.peer.disk_path(d.path) or "%s:%s" % (self.host_of(peer), d.path)
                    try:
                        ps = site.disk_sync.peer_state(dest)
                        f["peer_exists"], f["peer"] = bool(ps.get("exists")), ps.get("meta")
                    except XenRemusError as exc:
                        f["peer_error"] = "%s" % exc
                else:
                    f["peer_error"] = peer_error
                facts.append(f)
        finally:
            if site is not None:
                site.close()
        return decide.cold_start(facts, peer, peer_has)

    def load_config(self, cfg):
        """The domain's config as a :class:`model.DomainConfig`: a sim
        JSON config (``.json``: ``name, memory, disks`` of ``{uname, vdev,
        mode}``) or a toolstack config file, as :mod:`config` reads it."""
        if not cfg.endswith(".json"):
            from xen_remus_ext import config as config_pkg
            return config_pkg.load(cfg)
        from xen_remus_ext.config.disk import parse_disk_spec
        from xen_remus_ext.model import DomainConfig
        try:
            with open(cfg) as f:
                c = json.load(f)
            disks = [parse_disk_spec("%s,%s,%s" % (d["uname"], d["vdev"], d.get("mode", "w")))
                     for d in c.get("disks", ())]
            return DomainConfig(name=c["name"], memory=int(c.get("memory", 64)), disks=disks, format="sim")
        except (IOError, OSError, ValueError) as exc:
            raise XenRemusError("parameter config: %s: %s" % (cfg, exc))
        except (KeyError, TypeError, AttributeError) as exc:
            raise XenRemusError("parameter config: %s: expected name and disks of {uname, vdev}, got: %r"
                                % (cfg, exc))

    def a_demote(self):
        self.stop_worker()
        st = self.load_state()
        target = decide.peer_of(self.node(), self.meta.get("notify_promote_uname")) or st.get("target")
        with self.lock():
            ts = self.toolstack()
            row = self.row()
            if row is None or row.get("backup") is not None or row.get("state") is None:
                self.log("demote: %s is not primary here; nothing to do" % self.domain)
                self.save_state(target=None)
                return decide.OCF_SUCCESS
            if not target:
                self.log("demote: no node to hand %s to; clean shutdown" % self.domain)
                self.shutdown(ts)
                self.set_score(None)
                return decide.OCF_SUCCESS
            from xen_remus_ext.failback import api
            if ts.remus_running(self.domain):
                ts.remus_stop(self.domain)
                self.rotate_local(ts)
            t0 = time.time()
            with self.site(target, xenstores=True) as site:
                self.wait_stream_end(site.peer, target)
                res = api.run_failback(site.toolstack, self.domain, self.host_of(target), site.peer,
                                       options=dict(self.options(), supervise=site.supervise),
                                       disk_sync=site.disk_sync, progress=self.log, clock=site.clock,
                                       xenstore=site.xenstore, peer_xenstore=site.peer_xenstore)
            self.log("demote: failback of %s to %s: %s in %.2f s (downtime %s)"
                     % (self.domain, target, res.get("state"), time.time() - t0, res.get("downtime")))
            self.save_state(target=None)
        self.set_score(decide.SCORE_BACKUP)
        return decide.OCF_SUCCESS

    def wait_stream_end(self, peer_ts, target):
        """Remus stopped here: a backup copy on ``target`` that held on a
        stream break (xl's stream has no stop record) turns from receiving
        to held once it sees the end.  Wait for that, briefly, so that the
        failback's preflight judges a held copy, not a stream in flight."""
        from xen_remus_ext.failback import preflight
        deadline = time.time() + min(30.0, max(2.0, self.timeout_s(300.0) * 0.1))
        while True:
            try:
                found = preflight.find_backup_copy(peer_ts, self.domain)
            except XenRemusError as exc:
                self.log("demote: cannot look for a backup copy of %s on %s: %s" % (self.domain, target, exc))
                return
            if found is None or found[1].get("state") != "receiving":
                if found is not None:
                    self.log("demote: %s holds a backup copy of %s (%s, stream ended)"
                             % (target, self.domain, found[0].name))
                return
            if time.time() > deadline:
                self.log("demote: the backup copy of %s on %s still receives" % (self.domain, target))
                return
            time.sleep(0.2)

    def rotate_local(self, ts):
        """Remus stopped: this copy now takes writes the peer's does not see."""
        from xen_remus_ext.resync import meta
        for d in ts.domain_config(self.domain).remus_disks:
            path = ts.disk_path(d.path) or d.path
            meta.rotate(path)

    def a_notify(self):
        st = self.load_state()
        row = None
        peer = decide.notified_peer(self.node(), self.meta)
        if peer is not None and st.get("peer") != peer:
            st = self.save_state(peer=peer)
        if self.meta.get("notify_type") == "post" and self.meta.get("notify_operation") in ("start", "promote"):
            row = self.row_quiet()
        promoted_here = bool(row) and row.get("backup") is None and row.get("state") is not None
        action, node = decide.notify_plan(self.node(), self.meta, promoted_here)
        if action == "target":
            self.save_state(target=node)
            self.log("notify: a demote here hands %s to %s" % (self.domain, node))
        elif action == "reprotect":
            self.spawn_reprotect(node)
        elif action == "forget":
            self.set_score(None, node=node)
            if st.get("reprotect_peer") == node:
                self.save_state(reprotect_peer=None)
        return decide.OCF_SUCCESS


def main(action, extra=(), env=None):
    env = dict(os.environ if env is None else env)
    if action == "meta-data":
        sys.stdout.write(decide.meta_data(__version__))
        return decide.OCF_SUCCESS
    if action not in ACTIONS:
        sys.stderr.write("xen-remus ocf: unknown action %r\n" % (action,))
        return decide.OCF_ERR_UNIMPLEMENTED
    agent = Agent(env)
    try:
        if action == "reprotect":
            return agent.do_reprotect(extra[0])
        return getattr(agent, "a_" + action.replace("-", "_"))()
    except XenRemusError as exc:
        agent.log("%s: %s" % (action, exc))
        if action == "monitor":
            return decide.OCF_ERR_GENERIC
        return decide.OCF_ERR_GENERIC
