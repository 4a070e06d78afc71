"""The failback state machine: states, steps and rules, with no side effects.

Two plans share one table (docs/conventions.md, the failback state machine):

``failback`` (the domain runs here, unprotected, after a failover; bring it
home to ``HOST`` and protect it again toward here)::

    new -preflight-> checked -precopy-> precopied -migrate-> migrated
        -final-delta-> delta-sent -protect-> protected -unpause-> done

``reverse`` (``--reverse-only``: keep the domain here, bring the peer's
stale copy up to date and protect from here toward it)::

    new -preflight-> checked -precopy-> precopied -pause-> quiesced
        -final-delta-> delta-sent -protect-> protected -unpause-> done

``migrated`` means the domain sits PAUSED on the peer with its disk delta not
yet known to be sent; ``quiesced`` means paused HERE.  ``delta-sent`` and
``protected`` keep the domain paused where it will run (the peer for a
failback, here for reverse): Remus starts while it cannot write, so the
backup's copy equals the primary's at the first checkpoint, and unpausing
is the last step.  (On xend the domain arrives running; block-remus then
holds its first write until the backup connects, docs/xen-facts.md section 5.)
``protect`` (``xen-remus protect``: the domain runs here and has never been
protected, or its protection ended; create the backup's copies that are
missing, bring them up to date and start Remus toward ``HOST``)::

    new -preflight-> checked -seed-> seeded -precopy-> precopied -pause-> quiesced
        -final-delta-> delta-sent -protect-> protected -unpause-> done

It is ``reverse`` with one more step (``seed``: each missing backup copy is
created as a sparse image) and ``failback``'s re-protect and ``protect`` run
the same ``protect`` step.  A domain that was paused when ``protect`` began
stays paused at the end, except on a toolstack whose Remus starts only on a
running domain (xl), which refuses it at the ``protect`` step.

A run refused by its ``preflight`` (nothing done yet) ends in ``refused``,
terminal like ``done`` and ``aborted``: status shows it with the reason,
and the next run starts anew without ``--abort``.  A killed run
leaves the journal at the last completed state; :func:`reconcile` turns the
journal's state and an :class:`Observation` of the world into the state to
continue from, and :func:`plan_abort` gives the actions that reach a safe
state.  The runner (orchestrator.py) performs the actions.
"""
from __future__ import absolute_import, division, print_function

import collections

from xen_remus_ext.errors import FailbackError, ProgrammerError

# modes
FAILBACK = "failback"
REVERSE = "reverse"
PROTECT_MODE = "protect"
MODES = (FAILBACK, REVERSE, PROTECT_MODE)
#: the command each mode runs under (``reverse`` is ``failback --reverse-only``)
COMMANDS = {FAILBACK: "failback", REVERSE: "failback", PROTECT_MODE: "protect"}

# states
NEW = "new"
CHECKED = "checked"
SEEDED = "seeded"
PRECOPIED = "precopied"
MIGRATED = "migrated"
QUIESCED = "quiesced"
DELTA_SENT = "delta-sent"
PROTECTED = "protected"
DONE = "done"
ABORTED = "aborted"
REFUSED = "refused"     #: the preflight refused the run: nothing was done

TERMINAL = (DONE, ABORTED, REFUSED)

# steps
PREFLIGHT = "preflight"
SEED = "seed"
PRECOPY = "precopy"
MIGRATE = "migrate"
PAUSE = "pause"
FINAL_DELTA = "final-delta"
UNPAUSE = "unpause"
PROTECT = "protect"

#: (mode, state) -> (step to run, state once it succeeded).  The only place
#: that says which step follows which.
TRANSITIONS = {
    (FAILBACK, NEW): (PREFLIGHT, CHECKED),
    (FAILBACK, CHECKED): (PRECOPY, PRECOPIED),
    (FAILBACK, PRECOPIED): (MIGRATE, MIGRATED),
    (FAILBACK, MIGRATED): (FINAL_DELTA, DELTA_SENT),
    (FAILBACK, DELTA_SENT): (PROTECT, PROTECTED),
    (FAILBACK, PROTECTED): (UNPAUSE, DONE),
    (REVERSE, NEW): (PREFLIGHT, CHECKED),
    (REVERSE, CHECKED): (PRECOPY, PRECOPIED),
    (REVERSE, PRECOPIED): (PAUSE, QUIESCED),
    (REVERSE, QUIESCED): (FINAL_DELTA, DELTA_SENT),
    (REVERSE, DELTA_SENT): (PROTECT, PROTECTED),
    (REVERSE, PROTECTED): (UNPAUSE, DONE),
    (PROTECT_MODE, NEW): (PREFLIGHT, CHECKED),
    (PROTECT_MODE, CHECKED): (SEED, SEEDED),
    (PROTECT_MODE, SEEDED): (PRECOPY, PRECOPIED),
    (PROTECT_MODE, PRECOPIED): (PAUSE, QUIESCED),
    (PROTECT_MODE, QUIESCED): (FINAL_DELTA, DELTA_SENT),
    (PROTECT_MODE, DELTA_SENT): (PROTECT, PROTECTED),
    (PROTECT_MODE, PROTECTED): (UNPAUSE, DONE),
}

#: what each step does, for --dry-run and status
STEP_DOC = {
    PREFLIGHT: "check: domain runs here unprotected, peer reachable and free memory, "
               "peer copy is an ancestor by generation, sizes match, config reverses",
    PRECOPY: "live pre-copy of every remus disk to the peer (tracker, else checksums)",
    MIGRATE: "migrate memory to the peer, leaving the domain paused there",
    PAUSE: "pause the domain here so its disks go quiet",
    FINAL_DELTA: "send the final disk delta from the now quiet disks",
    UNPAUSE: "unpause the domain",
    SEED: "create each missing backup copy on the peer as a sparse image of the disk's size",
    PROTECT: "start Remus toward the backup (config direction checked/reversed)",
}


def states_in_order(mode):
    """:returns: the states of ``mode``'s plan, first to last."""
    check_mode(mode)
    out = [NEW]
    while (mode, out[-1]) in TRANSITIONS:
        out.append(TRANSITIONS[(mode, out[-1])][1])
    return out


def check_mode(mode):
    if mode not in MODES:
        raise ProgrammerError("failback mode: expected one of %s, got %r" % (", ".join(MODES), mode))


def step_names():
    """:returns: every step a plan has, sorted (what a journal's ``step`` may name)."""
    return sorted(set(step for step, _after in TRANSITIONS.values()))


def journal_name(mode):
    """:returns: how messages name the journal of ``mode``'s operation
    (``protect journal``, ``failback journal``)."""
    return "%s journal" % COMMANDS.get(mode, "failback")


def next_step(mode, state):
    """:returns: ``(step, next_state)`` or None when ``state`` is terminal.

    :raises FailbackError: ``state`` does not belong to ``mode``'s plan.
    """
    check_mode(mode)
    if state in TERMINAL:
        return None
    try:
        return TRANSITIONS[(mode, state)]
    except KeyError:
        raise FailbackError("%s: state %r is not part of the %s plan (expected one of %s)"
                            % (journal_name(mode), state, mode, ", ".join(states_in_order(mode))), state=state)


def plan(mode, state=NEW):
    """:returns: the list of ``(step, state_after)`` still to run from ``state``."""
    out = []
    cur = state
    while True:
        nxt = next_step(mode, cur)
        if nxt is None:
            return out
        out.append(nxt)
        cur = nxt[1]


def index_of(mode, state):
    order = states_in_order(mode)
    if state in order:
        return order.index(state)
    if state in TERMINAL:
        return len(order)
    raise FailbackError("%s: unknown state %r for the %s plan" % (journal_name(mode), state, mode), state=state)


class Observation(collections.namedtuple(
        "Observation", "local peer local_remus peer_remus delta_recorded")):
    """What the runner saw before acting.

    ``local``/``peer``: None (domain absent), ``"running"`` or ``"paused"``.
    ``local_remus``/``peer_remus``: a Remus sender for the domain runs there.
    ``delta_recorded``: the journal (written by the runner or by the xend
    migration hook) says the final delta reached the peer after the domain
    stopped writing here.
    """

    __slots__ = ()

    def __new__(cls, local=None, peer=None, local_remus=False, peer_remus=False, delta_recorded=False):
        for name, val in (("local", local), ("peer", peer)):
            if val not in (None, "running", "paused"):
                raise ProgrammerError("observation %s: expected None, 'running' or 'paused', got %r"
                                      % (name, val))
        return super(Observation, cls).__new__(cls, local, peer, bool(local_remus), bool(peer_remus),
                                               bool(delta_recorded))


#: actions the reconciler or abort may ask the runner to perform first
DESTROY_PEER = "destroy-peer"      # an incoming copy on the peer that never ran
UNPAUSE_LOCAL = "unpause-local"
UNPAUSE_PEER = "unpause-peer"
DESTROY_LOCAL_BACKUP = "destroy-local-backup"   # a Remus backup copy here, its sender never started
SEND_DELTA = "send-delta"


def _refuse(msg, state, step=None):
    raise FailbackError(msg, state=state, step=step)


def reconcile(mode, state, obs):
    """Turn the journal's ``state`` and the observed world into the state the
    run continues from, plus cleanup actions to perform before it.

    :returns: ``(state, actions)``
    :raises FailbackError: the world is one no step can safely continue from.
    """
    check_mode(mode)
    if state in TERMINAL:
        return state, []
    pos = index_of(mode, state)
    if mode == FAILBACK:
        return _reconcile_failback(state, pos, obs)
    return _reconcile_reverse(state, pos, obs, mode)


def _reconcile_failback(state, pos, obs):
    order = states_in_order(FAILBACK)
    at = order.index
    if obs.local is not None and obs.peer is not None and pos >= at(MIGRATED):
        # the journal saw the domain leave: what is here now is the Remus
        # backup's copy of an interrupted protect step, not the domain
        obs = obs._replace(local=None)
    if obs.local is None and obs.peer is None:
        _refuse("domain: expected it here or on the peer, found it on neither "
                "(a migration may still be under way; check both hosts)", state)
    if obs.local is not None and obs.peer is not None:
        if pos < at(PRECOPIED):
            _refuse("domain: expected it only here before the migration, found it on the peer too (%s)"
                    % obs.peer, state)
        if obs.peer == "running" and obs.local == "running":
            _refuse("domain: runs both here and on the peer; refusing to choose", state)
        if obs.peer == "running":
            _refuse("domain: runs on the peer while a copy remains here (%s); "
                    "the migration's end is unknown, refusing to choose" % obs.local, state)
        # the peer holds an incoming copy that never ran: the source is still
        # authoritative; drop the copy and migrate again
        actions = [DESTROY_PEER]
        if obs.local == "paused":
            actions.append(UNPAUSE_LOCAL)
        return PRECOPIED, actions
    if obs.peer is None:  # only here
        if pos <= at(PRECOPIED):
            return state, ([UNPAUSE_LOCAL] if obs.local == "paused" and pos == at(PRECOPIED) else [])
        if pos == at(MIGRATED) or pos == at(DELTA_SENT):
            # journaled as gone but still here: the migration did not happen
            return PRECOPIED, ([UNPAUSE_LOCAL] if obs.local == "paused" else [])
        _refuse("domain: journal says it runs on the peer (%s), but it runs here; "
                "start a new failback" % state, state)
    # only on the peer
    if pos < at(PRECOPIED):
        _refuse("domain: expected it here, found it only on the peer (%s)" % obs.peer, state)
    sent = pos >= at(DELTA_SENT) or obs.delta_recorded
    if obs.peer_remus:
        if not sent:
            _refuse("domain: Remus protects it from the peer but the final disk delta was never "
                    "recorded as sent; its backup copy may be stale", state)
        return (PROTECTED if obs.peer == "paused" else DONE), []
    if obs.peer == "paused":
        return (DELTA_SENT if sent else MIGRATED), []
    # running on the peer, unprotected
    if sent:
        return DELTA_SENT, []   # (xend: arrived running after the hook's delta) protect next
    _refuse("domain: runs on the peer but the final disk delta was never recorded as sent; "
            "its disk there may be stale: stop it, or rerun with --abort after checking", state)


def _reconcile_reverse(state, pos, obs, mode=REVERSE):
    order = states_in_order(mode)
    at = order.index
    if obs.local is None:
        _refuse("domain: expected it here (reverse replication keeps it here), found it %s"
                % ("on the peer" if obs.peer else "nowhere"), state)
    if obs.local_remus:
        if pos < at(DELTA_SENT):
            _refuse("domain: Remus already protects it, but the peer's copy was never synced by us", state)
        return (PROTECTED if obs.local == "paused" else DONE), []
    if obs.peer is not None and pos < at(DELTA_SENT):
        _refuse("domain: also present on the peer (%s) before protection started" % obs.peer, state)
    # from delta-sent on, a copy on the peer is the Remus backup's (an
    # interrupted protect step); the protect step replaces it
    if obs.local == "paused":
        if pos == at(PRECOPIED):
            return QUIESCED, []
        if pos >= at(PROTECTED):  # protection lost after it started
            return DELTA_SENT, []
        return state, []
    # running here without Remus
    if pos >= at(QUIESCED):
        return PRECOPIED, []  # someone unpaused it: its writes need another delta
    return state, []


def plan_abort(mode, state, obs):
    """Actions that bring the world to a safe state, and the state reached.

    Before the migration the safe state is where the run started (the domain
    here, unprotected).  Once the domain sits paused on the peer there is no
    cheaper way back than forward: finish the disk delta and unpause it there
    (home, unprotected).  Once Remus protects it, abort just unpauses: that
    is the end of the run (``done``).

    :returns: ``(actions, final_state)``
    :raises FailbackError: nothing to abort (already done) or no safe state.
    """
    if state == DONE:
        _refuse("failback: already done; nothing to abort", state)
    if state in (ABORTED, REFUSED):
        return [], state
    pos = index_of(mode, state)
    stale = []
    if mode == FAILBACK and obs.local is not None and obs.peer is not None and pos >= index_of(mode, MIGRATED):
        stale = [DESTROY_LOCAL_BACKUP]
    elif mode != FAILBACK and obs.peer is not None and not obs.local_remus and pos >= index_of(mode, DELTA_SENT):
        stale = [DESTROY_PEER]
    state, actions = reconcile(mode, state, obs)
    actions = stale + list(actions)
    if state == DONE:
        _refuse("failback: already done; nothing to abort", state)
    if state == PROTECTED:   # protection already runs: finishing is the safe way out
        where = UNPAUSE_PEER if mode == FAILBACK else UNPAUSE_LOCAL
        return [a for a in actions if a != where] + [where], DONE
    if mode == FAILBACK:
        if state == MIGRATED:
            actions += [SEND_DELTA, UNPAUSE_PEER]
        elif state == DELTA_SENT:
            actions += [UNPAUSE_PEER]
        elif obs.local == "paused" and UNPAUSE_LOCAL not in actions:
            actions.append(UNPAUSE_LOCAL)
        return actions, ABORTED
    if obs.local == "paused" and UNPAUSE_LOCAL not in actions:
        actions.append(UNPAUSE_LOCAL)
    return actions, ABORTED
