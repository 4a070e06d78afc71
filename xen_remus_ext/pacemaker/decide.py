"""What the OCF agent answers, decided from facts alone (no I/O).

One Remus-protected domain is a promotable clone: the promoted instance is
the running primary, the unpromoted one the backup receiving checkpoints.
:func:`monitor` maps the domain's row of ``xen-remus status --json`` on this
host (plus what the agent remembers locally) to an OCF exit code and a
promotion score; :func:`check_params` and :func:`check_clone` are
validate-all; :func:`meta_data` is the agent's XML.

Promotion scores (``crm_attribute --promotion``): :data:`SCORE_PRIMARY` for
the node running the guest, :data:`SCORE_BACKUP` for a backup holding a
complete checkpoint on a consistent disk copy.  Anything else gets NO
score (:data:`DELETE`): Pacemaker promotes an instance whose score is 0,
only a missing attribute keeps it unpromoted.
"""
from __future__ import absolute_import, division, print_function

import collections
import re

from xen_remus_ext.resync import meta as generations

# OCF exit codes (OCF 1.1; Pacemaker 2.1 names)
OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_ARGS = 2
OCF_ERR_UNIMPLEMENTED = 3
OCF_ERR_PERM = 4
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7
OCF_RUNNING_PROMOTED = 8
OCF_FAILED_PROMOTED = 9
OCF_DEGRADED = 190
OCF_DEGRADED_PROMOTED = 191

CODE_NAMES = {0: "success", 1: "generic error", 2: "invalid argument", 3: "unimplemented",
              4: "insufficient privileges", 5: "not installed", 6: "not configured",
              7: "not running", 8: "running promoted", 9: "failed promoted",
              190: "degraded", 191: "degraded promoted"}

SCORE_PRIMARY = 1000
SCORE_BACKUP = 100
DELETE = None           #: delete the promotion attribute: never promote here

# what the agent keeps about its own instance on this node (a file under
# HA_RSCTMP, gone after a reboot): "started" after start, "stopped" after stop
STARTED, STOPPED = "started", "stopped"

TERMINAL_JOURNAL = ("done", "aborted", "refused")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]+$")

Decision = collections.namedtuple("Decision", "code score reason")

#: a cold start's verdict: ``score`` (:data:`SCORE_COLD` or :data:`DELETE`),
#: ``reason``, and ``blocking``: True when booting here would start the guest
#: on an older or diverged copy (a forced promote is refused too), False
#: when the copies could not be compared (a forced promote may boot)
ColdVerdict = collections.namedtuple("ColdVerdict", "score reason blocking")
SCORE_COLD = 100


def _journal_busy(row):
    fb = (row or {}).get("failback")
    if not fb:
        return None
    if "state" not in fb:
        return "failback journal unreadable: %s" % fb.get("error")
    if fb["state"] in TERMINAL_JOURNAL:
        return None
    return "%s toward %s unfinished (state %s)" % (fb.get("mode"), fb.get("host"), fb["state"])


def _disks_consistent(row):
    """:returns: None when every remus disk copy here is consistent and has a
    generation, else the reason it is not."""
    disks = row.get("disks")
    if disks is None:
        return None
    for d in disks:
        if d.get("error"):
            return "disk %s: generation unreadable: %s" % (d.get("vdev"), d["error"])
        if d.get("consistent") is False:
            return "disk %s: copy inconsistent (an interrupted resync target)" % d.get("vdev")
        if d.get("generation") is None:
            return "disk %s: no generation recorded" % d.get("vdev")
    return None


def _gen(m):
    return ((m or {}).get("current") or "?")[:8]


def cold_start(disks, peer=None, peer_has_domain=None):
    """May this node be promoted when the guest runs nowhere (a cold start,
    e.g. after both hosts lost power)?  Only where every remus disk's copy
    is consistent and at least as new as the peer's; diverged generations
    (split brain), copies of no common history, or inconsistent copies on
    both sides promote nobody and say what the operator can do.

    :param disks: one dict per remus disk of the domain's config: ``vdev``;
        ``exists`` (this host's copy is there); ``local`` (its generation
        record as a dict, or None); ``local_error`` (text: unreadable);
        ``peer_exists`` (True, False, or None: unknown); ``peer`` (the
        peer's record, or None); ``peer_error`` (text: the peer's copy could
        not be asked).
    :param peer: the peer node's name (for the messages), None if unknown.
    :param peer_has_domain: True when the peer's toolstack lists the domain
        (running, or a backup copy), False when it does not, None unknown.
    :returns: :class:`ColdVerdict`.
    """
    who = peer or "the peer"
    if peer is None:
        return ColdVerdict(DELETE, "cold start: no peer node known yet (it is learned from the clone's "
                                   "notifications); cannot compare the copies", False)
    if not disks:
        return ColdVerdict(DELETE, "cold start: no remus disk known (the config parameter names the "
                                   "domain's disks); cannot compare the copies", False)
    if peer_has_domain:
        return ColdVerdict(DELETE, "the guest (or its backup copy) is on %s" % who, True)
    notes = []
    for d in disks:
        vdev, mine, theirs = d.get("vdev"), d.get("local"), d.get("peer")
        if d.get("local_error"):
            return ColdVerdict(DELETE, "cold start: disk %s: this copy's generation record is unreadable: %s"
                               % (vdev, d["local_error"]), True)
        if not d.get("exists"):
            return ColdVerdict(DELETE, "cold start: disk %s: no copy on this host" % vdev, True)
        if mine is not None and mine.get("consistent") is False:
            if theirs is not None and theirs.get("consistent") is False:
                return ColdVerdict(DELETE, (
                    "cold start: NO TRUSTED COPY: disk %s: both copies are inconsistent (interrupted "
                    "resyncs); neither is promoted.  Start the guest by hand on the host whose copy you "
                    "trust (the cluster then keeps it promoted there and resyncs the other), or restore "
                    "the disk" % vdev), True)
            return ColdVerdict(DELETE, "cold start: disk %s: this copy is inconsistent (an interrupted "
                                       "resync target); %s's copy is the one to start from" % (vdev, who), True)
        if d.get("peer_error"):
            return ColdVerdict(DELETE, "cold start: disk %s: %s's copy could not be asked (%s); which copy "
                                       "is newest is unknown" % (vdev, who, d["peer_error"]), False)
        if d.get("peer_exists") is False:
            notes.append("%s: the only copy" % vdev)
            continue
        if d.get("peer_exists") is None:
            return ColdVerdict(DELETE, "cold start: disk %s: whether %s holds a copy is unknown"
                               % (vdev, who), False)
        if mine is None:
            return ColdVerdict(DELETE, "cold start: disk %s: this copy has no generation record and %s "
                                       "holds one; which is newer is unknown" % (vdev, who), False)
        try:
            rel = generations.compare(mine, theirs)
        except ValueError as exc:       # a malformed record (ValidationError)
            return ColdVerdict(DELETE, "cold start: disk %s: a generation record is unreadable: %s"
                               % (vdev, exc), False)
        if rel in (generations.SPLIT_BRAIN, generations.UNRELATED):
            what = ("both copies took writes the other never saw (split brain)" if rel == generations.SPLIT_BRAIN
                    else "the copies share no history")
            return ColdVerdict(DELETE, (
                "cold start: SPLIT BRAIN: disk %s: %s: this copy %s.., %s's %s..; neither is promoted.  "
                "Name the copy that loses with `xen-remus meta invalidate DISK` on its host: the other "
                "then gets the promotion score (and the loser is resynced from it)"
                % (vdev, what, _gen(mine), who, _gen(theirs))), True)
        if rel == generations.TARGET_AHEAD:
            return ColdVerdict(DELETE, "cold start: disk %s: %s's copy is newer (%s.. after this %s..)"
                               % (vdev, who, _gen(theirs), _gen(mine)), True)
        notes.append("%s: %s" % (vdev, {generations.IDENTICAL: "the same generation as %s's" % who,
                                        generations.TARGET_BEHIND: "newer than %s's" % who,
                                        generations.TARGET_NEW: "%s's copy has no generation" % who}.get(rel, rel)))
    return ColdVerdict(SCORE_COLD, "cold start: promotable here (%s)" % "; ".join(notes), False)


#: the verdicts of a cold start that need an operator: published as a node
#: attribute (:func:`cold_attribute`) until resolved
COLD_ALERTS = ("SPLIT BRAIN", "NO TRUSTED COPY")


def cold_attribute(domain):
    """The transient node attribute (``crm_attribute -l reboot``, shown by
    ``crm_mon -A``) that says why no copy of ``domain`` is promoted after a
    cold start."""
    return "xen-remus-cold-start-%s" % domain


def cold_alert(verdict):
    """:returns: the attribute's value for a cold-start verdict that refuses
    this node for SPLIT BRAIN or NO TRUSTED COPY (the verdict up to "neither
    is promoted"), else None: no attribute."""
    if verdict is None or verdict.score is not DELETE:
        return None
    for word in COLD_ALERTS:
        at = verdict.reason.find(word + ":")
        if at >= 0:
            text = verdict.reason[at:]
            end = text.find("; neither is promoted")
            return text[:end] if end > 0 else text
    return None


def monitor(row, local_state=None, reprotecting=False, cold=None):
    """:param row: this host's status row of the domain (``status --json``),
        or None when the domain is not here.
    :param local_state: :data:`STARTED`, :data:`STOPPED` or None (never
        started since boot: a probe).
    :param reprotecting: the agent's detached resync + re-protect runs.
    :param cold: the :class:`ColdVerdict` of this node when the domain is
        not here (:func:`cold_start`), or None (not asked: no score).
    :returns: :class:`Decision` (``score`` None: delete the attribute).
    """
    if row is None or (row.get("domid") is None and not row.get("here", True)):
        if local_state == STARTED:
            if cold is not None:
                return Decision(OCF_SUCCESS, cold.score, cold.reason)
            return Decision(OCF_SUCCESS, DELETE, "ready to receive checkpoints; no backup copy yet")
        return Decision(OCF_NOT_RUNNING, DELETE, "domain not here")
    backup = row.get("backup")
    if backup is not None:
        # a Remus backup's paused shadow domain: never a running primary
        if local_state == STOPPED:
            return Decision(OCF_NOT_RUNNING, DELETE, "stopped; shadow copy kept for a later promote")
        why = _journal_busy(row) or _disks_consistent(row)
        # xend counts no checkpoints: its held copy is known complete once its stream ended
        if why is None and not backup.get("checkpoints") and not backup.get("complete"):
            why = "no complete checkpoint received yet"
        if why is not None:
            return Decision(OCF_SUCCESS, DELETE, "backup, not promotable: " + why)
        state = backup.get("state") or "receiving"
        return Decision(OCF_SUCCESS, SCORE_BACKUP,
                        "backup %s, %s checkpoints" % (state, backup.get("checkpoints")))
    if row.get("crashed"):
        return Decision(OCF_FAILED_PROMOTED, DELETE, "domain crashed")
    if row.get("state") is None:
        return Decision(OCF_NOT_RUNNING, DELETE, "domain not here")
    if reprotecting:
        return Decision(OCF_DEGRADED_PROMOTED, SCORE_PRIMARY, "primary; resync and re-protect running")
    why = _journal_busy(row)
    if why is not None:
        return Decision(OCF_DEGRADED_PROMOTED, SCORE_PRIMARY, "primary; " + why)
    if row.get("protected"):
        return Decision(OCF_RUNNING_PROMOTED, SCORE_PRIMARY, "primary, protected")
    return Decision(OCF_DEGRADED_PROMOTED, SCORE_PRIMARY, "primary, unprotected")


def parse_map(text, what="map"):
    """``"n1=A n2=B"`` (spaces or commas) -> ``{"n1": "A", "n2": "B"}``.

    :raises ValueError: an item without ``=``, naming the item.
    """
    out = {}
    for item in re.split(r"[\s,]+", (text or "").strip()):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError("%s: expected NODE=VALUE items, got %r" % (what, item))
        out[key] = value
    return out


def check_params(params):
    """validate-all's parameter checks.  :param params: OCF_RESKEY_* without
    the prefix.  :returns: ``(code, message)``; code 0 when fine."""
    domain = params.get("domain")
    if not domain:
        return OCF_ERR_CONFIGURED, "parameter domain: required, got none"
    if not _NAME_RE.match(domain) or domain in (".", ".."):
        return OCF_ERR_CONFIGURED, ("parameter domain: expected letters, digits and _.@+- only, got %r"
                                    % domain)
    ts = params.get("toolstack")
    if ts not in (None, "", "xl", "xend", "sim"):
        return OCF_ERR_CONFIGURED, "parameter toolstack: expected xl, xend or sim, got %r" % ts
    for key in ("hosts", "sim_agents"):
        try:
            parse_map(params.get(key), "parameter " + key)
        except ValueError as exc:
            return OCF_ERR_CONFIGURED, "%s" % (exc,)
    if ts == "sim" and not params.get("sim_agents"):
        return OCF_ERR_CONFIGURED, "parameter sim_agents: toolstack sim needs NODE=ADDR of every node"
    interval = params.get("interval")
    if interval not in (None, "") and (not interval.isdigit() or int(interval) <= 0):
        return OCF_ERR_CONFIGURED, "parameter interval: expected milliseconds > 0, got %r" % interval
    return OCF_SUCCESS, "ok"


def _meta(meta, *names):
    for n in names:
        if meta.get(n) not in (None, ""):
            return meta[n]
    return None


def check_clone(meta):
    """The clone's meta attributes (``CRM_meta_*`` without the prefix), as far
    as Pacemaker passes them.  :returns: ``(code, message)``."""
    want = [(("clone_max",), "2", "clone-max"),
            (("promoted_max", "master_max"), "1", "promoted-max"),
            (("clone_node_max",), "1", "clone-node-max"),
            (("promoted_node_max", "master_node_max"), "1", "promoted-node-max")]
    for names, value, label in want:
        got = _meta(meta, *names)
        if got is not None and got != value:
            return OCF_ERR_CONFIGURED, "clone: expected %s=%s, got %s" % (label, value, got)
    if _meta(meta, "clone_max") is None:
        return OCF_SUCCESS, "not run as a clone action (no clone settings to check)"
    notify = _meta(meta, "notify")
    if notify is not None and notify.lower() not in ("true", "yes", "1", "on"):
        return OCF_ERR_CONFIGURED, ("clone: expected notify=true (re-protect and demote targets need it), got %s"
                                    % notify)
    return OCF_SUCCESS, "ok"


def peer_of(me, env_unames):
    """The other node named in a space-separated uname list, or None."""
    for n in (env_unames or "").split():
        if n != me:
            return n
    return None


def notify_plan(me, meta, promoted_here):
    """What a notification asks of this node.

    :param meta: ``CRM_meta_*`` without the prefix (``notify_type``,
        ``notify_operation``, ``notify_start_uname`` ...).
    :param promoted_here: the guest runs here as primary.
    :returns: ``(action, node)``: ``("reprotect", peer)`` after the peer
        started (post-start, on the primary) or after this node was
        promoted beside an unpromoted peer (post-promote); ``("forget", peer)`` after the
        peer stopped (post-stop: drop its score); ``("target", node)``
        before a demote here (remember where the promote goes);
        ``(None, None)`` otherwise.
    """
    kind = meta.get("notify_type")
    op = meta.get("notify_operation")
    if kind == "post" and op == "start" and promoted_here:
        peer = peer_of(me, meta.get("notify_start_uname"))
        if peer:
            return "reprotect", peer
    if kind == "post" and op == "promote" and promoted_here:
        # promoted where no copy ran (a cold start): protect toward the
        # unpromoted instance, unless it is being stopped
        stopping = (meta.get("notify_stop_uname") or "").split()
        peer = peer_of(me, " ".join((meta.get(k) or "") for k in (
            "notify_unpromoted_uname", "notify_slave_uname", "notify_start_uname")))
        if peer and peer not in stopping:
            return "reprotect", peer
    if kind == "post" and op == "stop":
        peer = peer_of(me, meta.get("notify_stop_uname"))
        if peer:
            return "forget", peer
    if kind == "pre" and op in ("demote", "promote"):
        demoting = me in (meta.get("notify_demote_uname") or "").split()
        target = peer_of(me, meta.get("notify_promote_uname"))
        if demoting and target:
            return "target", target
    return None, None


def notified_peer(me, meta):
    """The other node a notification names among the clone's instances
    (active, unpromoted, promoted, starting or promoting), or None."""
    names = []
    for key in ("notify_active_uname", "notify_unpromoted_uname", "notify_slave_uname",
                "notify_promoted_uname", "notify_master_uname", "notify_start_uname", "notify_promote_uname"):
        names += (meta.get(key) or "").split()
    return peer_of(me, " ".join(names))


def shutdown_budget(timeout_ms, default_s=60.0):
    """A demote or stop without a peer shuts the guest down cleanly for 2/3
    of the operation's timeout, then destroys it.  :returns: seconds."""
    try:
        t = float(timeout_ms) / 1000.0
    except (TypeError, ValueError):
        t = default_s
    if t <= 0:
        t = default_s
    return t * 2.0 / 3.0


META_DATA = """<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="remus" version="%(version)s">
<version>1.1</version>
<longdesc lang="en">
One Xen domain protected by Remus, as a promotable clone of two instances:
the promoted instance is the running primary, the unpromoted one the backup
host receiving its checkpoints.  Monitor reads the state from xen-remus
status; promote is a failover (the backup resumes from its last committed
checkpoint, its disk generation rotated) and is only safe after fencing;
demote toward the node being promoted is a failback (live disk pre-copy,
migration with the final delta, Remus again in the other direction).
After the peer starts, the primary resyncs the peer's copy and protects
toward it again, in the background, and reports degraded until protected.
Configure it with clone-max=2, promoted-max=1, notify=true and a priority,
and with fencing.
</longdesc>
<shortdesc lang="en">Remus-protected Xen domain (promotable)</shortdesc>
<parameters>
<parameter name="domain" unique="1" required="1">
<longdesc lang="en">Name of the protected domain (as the toolstack lists it).</longdesc>
<shortdesc lang="en">domain name</shortdesc>
<content type="string"/>
</parameter>
<parameter name="config" unique="0" required="0">
<longdesc lang="en">The domain's configuration file; validate-all checks its remus disks.</longdesc>
<shortdesc lang="en">domain config file</shortdesc>
<content type="string" default=""/>
</parameter>
<parameter name="toolstack" unique="0" required="0">
<longdesc lang="en">xl, xend or sim (the simulator); empty: xl when installed, else xend.</longdesc>
<shortdesc lang="en">toolstack</shortdesc>
<content type="string" default=""/>
</parameter>
<parameter name="hosts" unique="0" required="0">
<longdesc lang="en">Cluster node name to toolstack host name (the HOST of xen-remus failback),
as NODE=HOST items separated by spaces; a node not listed is its own host name.</longdesc>
<shortdesc lang="en">node to host names</shortdesc>
<content type="string" default=""/>
</parameter>
<parameter name="sim_agents" unique="0" required="0">
<longdesc lang="en">toolstack sim only: NODE=ADDRESS of every node's simulated host agent.</longdesc>
<shortdesc lang="en">simulator agents</shortdesc>
<content type="string" default=""/>
</parameter>
<parameter name="interval" unique="0" required="0">
<longdesc lang="en">Remus checkpoint interval in milliseconds once protected.</longdesc>
<shortdesc lang="en">checkpoint interval (ms)</shortdesc>
<content type="integer" default="200"/>
</parameter>
</parameters>
<actions>
<action name="start" timeout="120s"/>
<action name="stop" timeout="120s"/>
<action name="promote" timeout="90s"/>
<action name="demote" timeout="300s"/>
<action name="notify" timeout="60s"/>
<action name="monitor" depth="0" timeout="30s" interval="10s" role="Promoted"/>
<action name="monitor" depth="0" timeout="30s" interval="11s" role="Unpromoted"/>
<action name="meta-data" timeout="5s"/>
<action name="validate-all" timeout="30s"/>
</actions>
</resource-agent>
"""


def meta_data(version):
    return META_DATA % {"version": version}
