"""failback/machine.py: the transition table, reconcile and abort rules (pure, table-driven)."""
from __future__ import absolute_import, division, print_function

import pytest

from xen_remus_ext.errors import FailbackError, ProgrammerError
from xen_remus_ext.failback import machine as m
from xen_remus_ext.failback.machine import Observation as O

FAILBACK_ORDER = [m.NEW, m.CHECKED, m.PRECOPIED, m.MIGRATED, m.DELTA_SENT, m.PROTECTED, m.DONE]
REVERSE_ORDER = [m.NEW, m.CHECKED, m.PRECOPIED, m.QUIESCED, m.DELTA_SENT, m.PROTECTED, m.DONE]


@pytest.mark.parametrize("mode,order,steps", [
    (m.FAILBACK, FAILBACK_ORDER,
     [m.PREFLIGHT, m.PRECOPY, m.MIGRATE, m.FINAL_DELTA, m.PROTECT, m.UNPAUSE]),
    (m.REVERSE, REVERSE_ORDER,
     [m.PREFLIGHT, m.PRECOPY, m.PAUSE, m.FINAL_DELTA, m.PROTECT, m.UNPAUSE]),
])
def test_plan_order(mode, order, steps):
    assert m.states_in_order(mode) == order
    assert [s for s, _ in m.plan(mode)] == steps
    assert [a for _, a in m.plan(mode)] == order[1:]
    # the plan from every state is the tail of the whole plan
    for i, st in enumerate(order):
        assert m.plan(mode, st) == m.plan(mode)[i:]


def test_every_transition_targets_a_state_of_its_mode():
    for (mode, state), (step, after) in m.TRANSITIONS.items():
        assert step in m.STEP_DOC
        assert after in m.states_in_order(mode)
        assert state in m.states_in_order(mode)


@pytest.mark.parametrize("state", [m.DONE, m.ABORTED])
def test_terminal_states_have_no_step(state):
    assert m.next_step(m.FAILBACK, state) is None


def test_foreign_state_is_refused():
    with pytest.raises(FailbackError) as exc:
        m.next_step(m.FAILBACK, m.QUIESCED)
    assert "quiesced" in str(exc.value) and exc.value.state == m.QUIESCED
    with pytest.raises(ProgrammerError):
        m.next_step("sideways", m.NEW)


# (journal state, observation) -> (state to continue from, actions)
FAILBACK_RECONCILE = [
    (m.NEW, O("running"), m.NEW, []),
    (m.CHECKED, O("running"), m.CHECKED, []),
    (m.PRECOPIED, O("running"), m.PRECOPIED, []),
    (m.PRECOPIED, O("paused"), m.PRECOPIED, [m.UNPAUSE_LOCAL]),            # xl migrate died after suspend
    (m.PRECOPIED, O("running", "paused"), m.PRECOPIED, [m.DESTROY_PEER]),  # killed mid-migration
    (m.PRECOPIED, O("paused", "paused"), m.PRECOPIED, [m.DESTROY_PEER, m.UNPAUSE_LOCAL]),
    (m.PRECOPIED, O(None, "paused"), m.MIGRATED, []),                      # killed right after migrate
    (m.PRECOPIED, O(None, "running", delta_recorded=True), m.DELTA_SENT, []),  # xend: hook sent it
    (m.MIGRATED, O(None, "paused"), m.MIGRATED, []),
    (m.MIGRATED, O(None, "paused", delta_recorded=True), m.DELTA_SENT, []),
    (m.MIGRATED, O("running"), m.PRECOPIED, []),                            # migration never happened
    (m.DELTA_SENT, O(None, "paused", delta_recorded=True), m.DELTA_SENT, []),
    (m.DELTA_SENT, O(None, "paused", peer_remus=True), m.PROTECTED, []),
    (m.PROTECTED, O(None, "paused", peer_remus=True), m.PROTECTED, []),
    (m.PROTECTED, O(None, "running", peer_remus=True), m.DONE, []),         # killed after unpause
    (m.PROTECTED, O(None, "paused"), m.DELTA_SENT, []),                     # protection fell over
    (m.DELTA_SENT, O("paused", "paused"), m.DELTA_SENT, []),                # here: a backup copy forming
    (m.PROTECTED, O("paused", "paused"), m.DELTA_SENT, []),
    (m.DONE, O(None, "running"), m.DONE, []),
]


@pytest.mark.parametrize("state,obs,want,actions", FAILBACK_RECONCILE)
def test_reconcile_failback(state, obs, want, actions):
    assert m.reconcile(m.FAILBACK, state, obs) == (want, actions)


FAILBACK_REFUSE = [
    (m.NEW, O(None, None), "neither"),
    (m.PRECOPIED, O(None, None), "neither"),
    (m.NEW, O("running", "paused"), "peer too"),
    (m.PRECOPIED, O("running", "running"), "both"),
    (m.PRECOPIED, O("paused", "running"), "refusing to choose"),
    (m.NEW, O(None, "running"), "only on the peer"),
    (m.PRECOPIED, O(None, "running"), "never recorded"),                    # stale disk there
    (m.MIGRATED, O(None, "running"), "never recorded"),
    (m.PROTECTED, O("running"), "start a new failback"),
    (m.MIGRATED, O(None, "paused", peer_remus=True), "backup copy may be stale"),
]


@pytest.mark.parametrize("state,obs,words", FAILBACK_REFUSE)
def test_reconcile_failback_refuses(state, obs, words):
    with pytest.raises(FailbackError) as exc:
        m.reconcile(m.FAILBACK, state, obs)
    assert words in str(exc.value)
    assert exc.value.state == state


REVERSE_RECONCILE = [
    (m.NEW, O("running"), m.NEW, []),
    (m.PRECOPIED, O("paused"), m.QUIESCED, []),
    (m.QUIESCED, O("paused"), m.QUIESCED, []),
    (m.QUIESCED, O("running"), m.PRECOPIED, []),           # unpaused behind our back: new delta
    (m.DELTA_SENT, O("running"), m.PRECOPIED, []),
    (m.DELTA_SENT, O("paused"), m.DELTA_SENT, []),
    (m.DELTA_SENT, O("paused", local_remus=True), m.PROTECTED, []),
    (m.PROTECTED, O("paused", local_remus=True), m.PROTECTED, []),
    (m.PROTECTED, O("running", local_remus=True), m.DONE, []),
    (m.PROTECTED, O("paused"), m.DELTA_SENT, []),           # protection fell over before unpause
]


@pytest.mark.parametrize("state,obs,want,actions", REVERSE_RECONCILE)
def test_reconcile_reverse(state, obs, want, actions):
    assert m.reconcile(m.REVERSE, state, obs) == (want, actions)


@pytest.mark.parametrize("state,obs,words", [
    (m.NEW, O(None, "running"), "on the peer"),
    (m.CHECKED, O("running", local_remus=True), "already protects"),
    (m.PRECOPIED, O("running", "paused"), "also present"),
])
def test_reconcile_reverse_refuses(state, obs, words):
    with pytest.raises(FailbackError) as exc:
        m.reconcile(m.REVERSE, state, obs)
    assert words in str(exc.value)


ABORTS = [
    (m.FAILBACK, m.NEW, O("running"), [], m.ABORTED),
    (m.FAILBACK, m.PRECOPIED, O("paused"), [m.UNPAUSE_LOCAL], m.ABORTED),
    (m.FAILBACK, m.PRECOPIED, O("running", "paused"), [m.DESTROY_PEER], m.ABORTED),
    (m.FAILBACK, m.PRECOPIED, O(None, "paused"), [m.SEND_DELTA, m.UNPAUSE_PEER], m.ABORTED),
    (m.FAILBACK, m.MIGRATED, O(None, "paused"), [m.SEND_DELTA, m.UNPAUSE_PEER], m.ABORTED),
    (m.FAILBACK, m.DELTA_SENT, O(None, "paused", delta_recorded=True), [m.UNPAUSE_PEER], m.ABORTED),
    (m.FAILBACK, m.DELTA_SENT, O(None, "paused", peer_remus=True, delta_recorded=True), [m.UNPAUSE_PEER], m.DONE),
    (m.REVERSE, m.QUIESCED, O("paused"), [m.UNPAUSE_LOCAL], m.ABORTED),
    (m.REVERSE, m.PROTECTED, O("paused", local_remus=True), [m.UNPAUSE_LOCAL], m.DONE),
    (m.FAILBACK, m.ABORTED, O("running"), [], m.ABORTED),
    (m.FAILBACK, m.DELTA_SENT, O("paused", "paused"), [m.DESTROY_LOCAL_BACKUP, m.UNPAUSE_PEER], m.ABORTED),
    (m.REVERSE, m.DELTA_SENT, O("paused", "paused"), [m.DESTROY_PEER, m.UNPAUSE_LOCAL], m.ABORTED),
]


@pytest.mark.parametrize("mode,state,obs,actions,final", ABORTS)
def test_plan_abort(mode, state, obs, actions, final):
    assert m.plan_abort(mode, state, obs) == (actions, final)


@pytest.mark.parametrize("mode,state,obs", [
    (m.FAILBACK, m.DONE, O(None, "running", peer_remus=True)),
    (m.FAILBACK, m.PROTECTED, O(None, "running", peer_remus=True)),  # observed done
    (m.REVERSE, m.PROTECTED, O("running", local_remus=True)),
])
def test_abort_after_done_refused(mode, state, obs):
    with pytest.raises(FailbackError) as exc:
        m.plan_abort(mode, state, obs)
    assert "already done" in str(exc.value)


def test_observation_validates():
    with pytest.raises(ProgrammerError):
        O("sleeping")
