"""The held backup copy on the PEER, seen through the xl adapter of that
host (ssh): ``remus_backup`` asks ``xen-remus hold show`` there (the
holder's state is local to the backup), ``remus_discard`` runs ``xen-remus
hold discard`` there.  Exact argv, and what each answer of the peer means."""
from __future__ import absolute_import, division, print_function

import json

import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.ports import Runner
from xen_remus_ext.toolstack.xl import XlToolstack

SSH = ["ssh", "-o", "BatchMode=yes", "--", "hostb"]


class Answers(Runner):
    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def run(self, argv, input=None, timeout=None, env=None):
        self.calls.append(list(argv))
        return self.answers.pop(0)


@pytest.fixture(autouse=True)
def _no_remote_override(monkeypatch):
    monkeypatch.delenv("XEN_REMUS_REMOTE_CMD", raising=False)


def peer(runner):
    return XlToolstack(runner, xl=SSH + ["xl"], host="hostb")


def _show(state, alive=True, checkpoints=70):
    return 0, json.dumps({"state": state, "alive": alive, "checkpoints": checkpoints, "pid": 4242}).encode(), b""


@pytest.mark.parametrize("answer,expected", [
    (_show("held"), {"state": "broken", "checkpoints": 70, "held": True}),
    (_show("receiving", checkpoints=3), {"state": "receiving", "checkpoints": 3, "held": False}),
    # a holder that is gone, or a copy received without one: cannot tell it ended
    (_show("held", alive=False), {"state": "receiving", "checkpoints": None}),
    ((1, b"null\n", b""), {"state": "receiving", "checkpoints": None}),
    ((127, b"", b"sh: xen-remus: not found\n"), {"state": "receiving", "checkpoints": None}),
    ((0, b"not json", b""), {"state": "receiving", "checkpoints": None}),
])
def test_remote_backup_state_comes_from_the_peers_holder(answer, expected):
    r = Answers(answer)
    assert peer(r).remus_backup("guest--incoming") == expected
    assert r.calls == [SSH + ["xen-remus", "-q", "hold", "show", "--toolstack", "xl", "guest"]]


def test_remote_backup_of_a_plain_domain_asks_nothing():
    r = Answers()
    assert peer(r).remus_backup("guest") is None and r.calls == []


def test_remote_discard_runs_the_holders_discard_on_the_peer(monkeypatch):
    monkeypatch.setenv("XEN_REMUS_REMOTE_CMD", "/opt/xrl/bin/xen-remus --state-dir '/var/lib/x y'")
    r = Answers((0, b"guest: backup copy discarded\n", b""))
    peer(r).remus_discard("guest")
    assert r.calls == [SSH + ["/opt/xrl/bin/xen-remus", "--state-dir", "'/var/lib/x y'", "hold", "discard",
                              "--toolstack", "xl", "guest"]]


def test_remote_discard_failure_names_the_domain_host_and_the_peers_message():
    r = Answers((1, b"", b"xen-remus: discard the backup copy of guest: expected guest--incoming here, found none\n"))
    with pytest.raises(ToolstackError) as exc:
        peer(r).remus_discard("guest")
    msg = str(exc.value)
    assert "guest" in msg and "hostb" in msg and "exit 1" in msg and "found none" in msg


def test_takeover_stays_local_only():
    with pytest.raises(ToolstackError) as exc:
        peer(Answers()).remus_takeover("guest")
    assert "run it on the backup hostb itself" in str(exc.value)
