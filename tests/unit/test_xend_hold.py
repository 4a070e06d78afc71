"""The held Remus backup on xend: the stream's mark, the record the patched
restore writes, and the xend adapter's hold capabilities (check_hold,
remus_start(hold=True), remus_backup, remus_takeover, remus_discard) against
the XML-RPC double of xend.  The patched xend code itself runs in
test_xend_hold_patch.py (Python 2.7, the release trees) and in the xend lab."""
from __future__ import absolute_import, division, print_function

import json
import logging
import os

import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.toolstack.xend import XendToolstack
from xen_remus_ext.xend import domain as xend_domain
from xen_remus_ext.xend import hold

CONFIG = ["domain", ["domid", "7"], ["name", "web1"], ["uuid", "0b6f6d5e-0000-4000-8000-000000000001"],
          ["memory", "256"], ["image", ["linux", ["kernel", "/boot/vmlinuz"]]]]


# -- the mark -------------------------------------------------------------------------

def test_the_mark_is_added_only_when_asked():
    assert hold.mark(CONFIG, {}) is CONFIG
    assert hold.mark(CONFIG, {hold.ENV: "0"}) is CONFIG
    assert hold.mark(CONFIG, {hold.ENV: ""}) is CONFIG
    marked = hold.mark(CONFIG, {hold.ENV: "1"})
    assert marked[:-1] == CONFIG and marked[-1] == [hold.MARK, "1"]
    assert CONFIG[-1] != [hold.MARK, "1"]            # the caller's list is not changed
    assert hold.mark(marked, {hold.ENV: "1"}) == marked   # once only
    assert hold.marked(marked) and not hold.marked(CONFIG)


def test_a_hold_asked_for_something_not_a_domain_config_is_an_error():
    with pytest.raises(hold.HoldMarkError) as err:
        hold.mark(["vm", ["name", "web1"]], {hold.ENV: "1"})
    assert hold.ENV in str(err.value) and "(domain ...)" in str(err.value)
    with pytest.raises(hold.HoldMarkError) as err:
        hold.mark(CONFIG, {hold.ENV: "yes"})
    assert "expected 1" in str(err.value) and "'yes'" in str(err.value)


def test_marking_wraps_makeheader_and_leaves_it_byte_identical_without_the_variable():
    seen = []

    def makeheader(dominfo):
        seen.append(dominfo)
        return repr(dominfo)
    plain = hold.marking(makeheader, {})
    assert plain(CONFIG) == makeheader(CONFIG)
    asked = hold.marking(makeheader, {hold.ENV: "1"})
    assert "xen_remus_ext_hold" in asked(CONFIG) and "xen_remus_ext_hold" not in plain(CONFIG)


def test_marked_reads_only_the_top_level_field():
    assert not hold.marked(["domain", ["image", ["linux", [hold.MARK, "1"]]]])
    assert not hold.marked(["domain", [hold.MARK, "0"]])
    assert hold.marked(["domain", [hold.MARK, 1]])
    assert not hold.marked("domain")


# -- the record the patched restore writes ------------------------------------------------

class Dominfo(object):
    def __init__(self, domid=9, name="web1"):
        self.domid, self.name = domid, name

    def getDomid(self):
        return self.domid

    def getName(self):
        return self.name

    def get_uuid(self):
        return "0b6f6d5e-0000-4000-8000-000000000001"


def test_restoring_holds_only_a_relocated_marked_stream(tmp_path):
    base = str(tmp_path)
    log = logging.getLogger("xend-test")
    assert hold.restoring(Dominfo(), CONFIG, True, log, base) is False          # no mark: a migration
    assert hold.restoring(Dominfo(), hold.mark(CONFIG, {hold.ENV: "1"}), False, log, base) is False  # xm restore
    assert hold.load("web1", base) is None
    assert hold.restoring(Dominfo(), hold.mark(CONFIG, {hold.ENV: "1"}), True, log, base) is True
    rec = hold.load("web1", base)
    assert rec["state"] == hold.RECEIVING and rec["domid"] == 9 and rec["checkpoints"] is None
    assert hold.current("web1", 9, base) is not None and hold.current("web1", 10, base) is None
    hold.restored(Dominfo(), log, base)
    rec = hold.load("web1", base)
    assert rec["state"] == hold.HELD and rec["complete"] is True and rec["held_at"] >= rec["since"]
    hold.set_state("web1", hold.RELEASED, base)
    assert hold.load("web1", base)["state"] == hold.RELEASED
    assert hold.current("web1", 9, base) is None


def test_an_unwritable_record_still_holds(tmp_path):
    blocker = tmp_path / "hold"
    blocker.write_text(u"a file where the directory should be")
    assert hold.restoring(Dominfo(), hold.mark(CONFIG, {hold.ENV: "1"}), True, logging.getLogger("t"),
                          str(tmp_path)) is True


def test_a_damaged_record_names_its_file(tmp_path):
    path = hold.record_path("web1", str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError) as err:
        hold.load("web1", str(tmp_path))
    assert path in str(err.value)
    with open(path, "w") as f:
        json.dump({"state": "resting"}, f)
    with pytest.raises(ValueError) as err:
        hold.load("web1", str(tmp_path))
    assert path in str(err.value) and "receiving/held" in str(err.value)


def test_report_sees_the_patched_modules(tmp_path):
    class Checkpoint(object):
        _remus_hold = hold

    class Bare(object):
        _remus_hold = None
    pkg = tmp_path / "remus"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(u"")

    class Package(object):
        __file__ = str(pkg / "__init__.pyc")
    (pkg / "image.py").write_text(u"def makeheader(d):\n    return d\n")
    assert hold.report(Checkpoint, Package) == {"restore": True, "mark": False}
    (pkg / "image.py").write_text(u"def makeheader(d):\n    return d\nmakeheader = _remus_hold.marking(makeheader)\n")
    assert hold.report(Bare, Package) == {"restore": False, "mark": True}
    assert hold.report(None, None) == {"restore": False, "mark": False}


def test_hooks_report_carries_the_hold():
    class Options(object):
        def get_external_migration_tool(self):
            return ""

    class Checkpoint(object):
        _remus_hold = hold
    rep = xend_domain.hooks_report(Options(), checkpoint_module=Checkpoint)
    assert rep["hold"]["restore"] is True


# -- the adapter against the xend double ------------------------------------------------------

HOLDING = {"migration_tool": "", "tool_is_ours": False, "blktap_override": ["BlktapController"],
           "hold": {"restore": True, "mark": True}}


@pytest.fixture
def xend(tmp_path, monkeypatch):
    from tests.fakes.xend_server import XendServer
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    srv = XendServer(str(tmp_path / "xmlrpc.sock"))
    srv.report = dict(HOLDING)
    srv.double.domain_remus_hooks = lambda: srv.report
    srv.start()
    yield srv
    srv.stop()


def test_check_hold_asks_the_running_xend(xend):
    ts = XendToolstack(uri=xend.uri)
    assert ts.check_hold() is None
    ts.hold_on_stream_break(True)
    for hold_rep, word in (({"restore": False, "mark": True}, "patch 0007"),
                           ({"restore": True, "mark": False}, "patch 0008"),
                           (None, "without the held backup")):
        xend.report = dict(HOLDING, hold=hold_rep)
        why = ts.check_hold()
        assert why is not None and word in why, why
        with pytest.raises(ToolstackError) as err:
            ts.hold_on_stream_break(True)
        assert word in str(err.value)
        ts.hold_on_stream_break(False)          # giving the hold back up needs nothing
    del xend.double.domain_remus_hooks          # stock xend: no remus methods at all
    why = ts.check_hold()
    assert why is not None and "resumes a Remus backup by itself" in why


class Processes(object):
    def __init__(self):
        self.started = []

    def start(self, dom, argv, env=None, match=None):
        self.started.append((dom, argv, dict(env or {})))
        return 4242


def test_remus_start_marks_the_stream_only_with_a_hold(xend):
    xend.double.add_domain("web1")
    procs = Processes()
    ts = XendToolstack(uri=xend.uri, remus=["remus"], processes=procs)
    ts.remus_start("web1", "192.0.2.2", interval_ms=100, net=False)
    ts.remus_start("web1", "192.0.2.2", interval_ms=100, net=False, hold=True)
    (_, argv0, env0), (_, argv1, env1) = procs.started
    assert argv0 == argv1 == ["remus", "-i", "100", "--no-net", "web1", "192.0.2.2"]
    assert env0[hold.ENV] == "0" and env1[hold.ENV] == "1"
    with pytest.raises(ToolstackError) as err:
        ts.remus_start("web1", "192.0.2.2", hold=True, blackhole=True)
    assert "blackhole" in str(err.value)
    xend.report = dict(HOLDING, hold={"restore": True, "mark": False})
    with pytest.raises(ToolstackError) as err:
        ts.remus_start("web1", "192.0.2.2", hold=True)
    assert "patch 0008" in str(err.value) and len(procs.started) == 2


def test_remus_start_on_a_peer_passes_hold_to_remus_sender(xend):
    from tests.fakes.xend_server import XendServer  # noqa: F401 - the double answers check_hold

    class Runner(object):
        def __init__(self):
            self.argvs = []

        def run(self, argv, timeout=None, **kw):
            self.argvs.append(argv)
            return 0, b"remus for web1 toward 192.0.2.2: pid 77\n", b""
    runner = Runner()
    ts = XendToolstack(uri=xend.uri, runner=runner, ssh=["ssh"], host="192.0.2.1")
    assert ts.remus_start("web1", "192.0.2.2", hold=True) == 77
    assert runner.argvs[-1][:6] == ["ssh", "192.0.2.1", "xen-remus", "remus-sender", "start", "--hold"]
    ts.remus_start("web1", "192.0.2.2")
    assert "--hold" not in runner.argvs[-1]


def _held(xend, state=hold.HELD, name="web1"):
    d = xend.double.add_domain(name, paused=True)
    hold.save(name, {"name": name, "domid": d.domid, "state": state, "checkpoints": None,
                     "complete": state == hold.HELD})
    return d


def test_a_held_copy_is_reported_released_by_takeover(xend):
    d = _held(xend)
    ts = XendToolstack(uri=xend.uri)
    assert ts.remus_backup("web1") == {"state": "broken", "checkpoints": None, "held": True, "complete": True}
    ts.remus_takeover("web1")
    assert not xend.double.lookup("web1").paused
    assert hold.load("web1")["state"] == hold.RELEASED
    assert ts.remus_backup("web1") is None
    with pytest.raises(ToolstackError) as err:      # nothing held any more
        ts.remus_takeover("web1")
    assert "saying released (domain %d)" % d.domid in str(err.value)


def test_takeover_refuses_a_copy_whose_stream_still_flows(xend):
    _held(xend, state=hold.RECEIVING)
    ts = XendToolstack(uri=xend.uri)
    assert ts.remus_backup("web1")["state"] == "receiving"
    with pytest.raises(ToolstackError) as err:
        ts.remus_takeover("web1")
    assert "still flows" in str(err.value)
    assert xend.double.lookup("web1").paused


def test_a_record_of_another_domid_is_not_this_domain(xend):
    """A record left by an earlier copy says nothing of a domain of that name
    that arrived later (a migration): it is neither reported nor resumed nor destroyed."""
    d = _held(xend)
    xend.double.domain_destroy(d.domid)
    xend.double.add_domain("web1", paused=True)     # e.g. a migration arriving, not yet unpaused
    ts = XendToolstack(uri=xend.uri)
    assert ts.remus_backup("web1") is None
    for action in (ts.remus_takeover, ts.remus_discard):
        with pytest.raises(ToolstackError) as err:
            action("web1")
        assert "is domain" in str(err.value)
    assert xend.double.lookup("web1").paused


def test_discard_destroys_only_a_recorded_copy(xend):
    ts = XendToolstack(uri=xend.uri)
    xend.double.add_domain("web2", paused=True)     # a paused primary, no record
    with pytest.raises(ToolstackError) as err:
        ts.remus_discard("web2")
    assert "no record" in str(err.value)
    assert xend.double.lookup("web2").paused
    _held(xend, state=hold.RECEIVING)
    ts.remus_discard("web1")
    assert "web1" not in [d.name for d in xend.double.doms.values()]
    assert hold.load("web1")["state"] == hold.DISCARDED


class PeerRunner(object):
    """``ssh HOST xen-remus -q hold VERB --toolstack xend DOM`` answered by
    this test's own state directory, as the peer would."""

    def __init__(self, xend):
        self.xend, self.argvs = xend, []

    def run(self, argv, timeout=None, **kw):
        self.argvs.append(argv)
        assert argv[:8] == ["ssh", "192.0.2.2", "xen-remus", "-q", "hold", argv[5], "--toolstack", "xend"]
        verb, dom = argv[5], argv[8]
        if verb == "show":
            rec = hold.load(dom)
            return (0 if rec else 1), json.dumps(rec).encode(), b""
        try:
            XendToolstack(uri=self.xend.uri).remus_discard(dom)
        except ToolstackError as exc:
            return 1, b"", ("xen-remus: %s\n" % exc).encode()
        return 0, b"web1: backup copy discarded\n", b""


def test_a_peers_held_copy_is_read_and_discarded_over_ssh(xend):
    """The failback preflight asks the peer whether its paused web1 is a held
    backup copy, and discards a stale one there (the record is on that host)."""
    runner = PeerRunner(xend)
    peer = XendToolstack(uri=xend.uri, ssh=["ssh"], host="192.0.2.2", runner=runner)
    assert peer.remus_backup("web1") is None            # nothing recorded there
    d = _held(xend)
    assert peer.remus_backup("web1") == {"state": "broken", "checkpoints": None, "held": True, "complete": True}
    with pytest.raises(ToolstackError) as err:
        peer.remus_takeover("web1")                      # promote runs on the backup itself
    assert "on the backup 192.0.2.2 itself" in str(err.value)
    xend.double.add_domain("web2", paused=True)
    with pytest.raises(ToolstackError) as err:
        peer.remus_discard("web2")                       # not a recorded copy: refused there
    assert "hold discard exit 1" in str(err.value) and "no record" in str(err.value)
    peer.remus_discard("web1")
    assert d.domid not in xend.double.doms and hold.load("web1")["state"] == hold.DISCARDED
    assert peer.remus_backup("web1") is None
