"""The xl backup holder (toolstack/hold.py) as real processes: ``xen-remus
hold receive`` between a pipe (the stream from the primary) and a stand-in
for ``xl migrate-receive -r`` that records every byte it reads and, at the
end of its stdin, what it would do: fail over.  A stand-in ``xl`` on PATH
answers ``domid`` and ``destroy`` from a directory of domain files.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from xen_remus_ext.replication import synth
from xen_remus_ext.toolstack import hold
from xen_remus_ext.errors import ToolstackError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RECEIVER = textwrap.dedent("""\
    import os, sys
    out = sys.argv[1]
    got = open(out + ".bytes", "wb")
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        got.write(data)
        got.flush()
    open(out + ".failover", "w").write("failover\\n")   # xl: Remus failover, rename, unpause
    doms = os.environ["HOLD_TEST_DOMS"]
    if os.path.exists(os.path.join(doms, "vm1--incoming")):
        os.rename(os.path.join(doms, "vm1--incoming"), os.path.join(doms, "vm1"))
    """)

FAKE_XL = textwrap.dedent("""\
    #!/bin/sh
    # domid NAME | destroy NAME, on the domain files in $HOLD_TEST_DOMS
    case "$1" in
    domid) test -e "$HOLD_TEST_DOMS/$2" ;;
    destroy) echo "destroy $2" >> "$HOLD_TEST_DOMS/../xl.log"; rm "$HOLD_TEST_DOMS/$2" ;;
    *) exit 9 ;;
    esac
    """)


def wait(cond, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s" % what)


class Rig(object):
    def __init__(self, tmp_path):
        self.tmp = str(tmp_path)
        self.state = os.path.join(self.tmp, "state")
        self.doms = os.path.join(self.tmp, "doms")
        bindir = os.path.join(self.tmp, "bin")
        for d in (self.state, self.doms, bindir):
            os.makedirs(d)
        xl = os.path.join(bindir, "xl")
        with open(xl, "w") as f:
            f.write(FAKE_XL)
        os.chmod(xl, 0o755)
        self.receiver = os.path.join(self.tmp, "receiver.py")
        with open(self.receiver, "w") as f:
            f.write(RECEIVER)
        self.out = os.path.join(self.tmp, "recv")
        self.env = dict(os.environ, XEN_REMUS_STATE_DIR=self.state, HOLD_TEST_DOMS=self.doms,
                        PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
                        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = None

    def start(self, dom="vm1"):
        open(os.path.join(self.doms, dom + "--incoming"), "w").close()   # what xl's receiver creates
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xen_remus_ext", "hold", "receive", "--domain", dom, "--",
             sys.executable, self.receiver, self.out],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env, cwd=self.tmp)
        wait(lambda: self.st(dom) is not None, what="the holder's state file")
        return self.proc

    def st(self, dom="vm1"):
        return hold.load(dom, base=self.state)

    def received(self):
        try:
            with open(self.out + ".bytes", "rb") as f:
                return f.read()
        except IOError:
            return b""

    def failed_over(self):
        return os.path.exists(self.out + ".failover")

    def xl_log(self):
        try:
            with open(os.path.join(self.tmp, "xl.log")) as f:
                return f.read()
        except IOError:
            return ""

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def send_and_break(rig, checkpoints=4):
    data, marks = synth.remus_stream(checkpoints)
    # all of checkpoint 0..N-1, then half of the next checkpoint's pages
    partial = synth.page_data([900, 901])[:3000]
    rig.proc.stdin.write(data + partial)
    rig.proc.stdin.flush()
    wait(lambda: len(rig.received()) == len(data) + len(partial), what="the stream at the receiver")
    rig.proc.stdin.close()          # the primary is gone
    wait(lambda: (rig.st() or {}).get("state") == hold.HELD, what="held")
    return data + partial


def test_the_stream_reaches_the_receiver_unchanged_and_checkpoints_are_counted(rig):
    rig.start()
    data, _ = synth.remus_stream(3)
    rig.proc.stdin.write(data)
    rig.proc.stdin.flush()
    wait(lambda: rig.received() == data, what="every byte at the receiver")
    wait(lambda: rig.st()["checkpoints"] == 3, what="3 checkpoints counted")
    st = hold.backup_status("vm1", base=rig.state)
    assert st == {"state": "receiving", "checkpoints": 3, "held": False}


def test_a_broken_stream_is_held_until_release(rig):
    rig.start()
    sent = send_and_break(rig)
    time.sleep(1.5)
    assert not rig.failed_over(), "the receiver saw the end of the stream while held"
    assert rig.proc.poll() is None and rig.received() == sent
    assert hold.backup_status("vm1", base=rig.state) == {"state": "broken", "checkpoints": 4, "held": True}
    final = hold.release("vm1", base=rig.state)
    assert rig.failed_over()
    assert final["state"] == hold.RELEASED and final["rc"] == 0 and final["checkpoints"] == 4
    assert rig.proc.wait() == 0
    assert rig.xl_log() == ""       # nothing destroyed


def test_release_is_refused_while_the_stream_flows(rig):
    rig.start()
    with pytest.raises(ToolstackError, match="expected it held, got it receiving"):
        hold.release("vm1", base=rig.state)
    assert rig.proc.poll() is None


def test_discard_kills_the_receiver_without_a_failover_and_destroys_the_copy(rig):
    rig.start()
    send_and_break(rig)
    final = hold.discard("vm1", base=rig.state)
    assert final["state"] == hold.DISCARDED
    assert not rig.failed_over()
    assert rig.xl_log() == "destroy vm1--incoming\n"
    assert not os.path.exists(os.path.join(rig.doms, "vm1--incoming"))


def test_discard_while_receiving_ends_the_stream_toward_the_primary(rig):
    rig.start()
    rig.proc.stdin.write(synth.remus_stream(1)[0])
    rig.proc.stdin.flush()
    final = hold.discard("vm1", base=rig.state)
    assert final["state"] == hold.DISCARDED and not rig.failed_over()
    assert rig.proc.wait() == 0
    assert rig.proc.stdout.read() == b""     # the primary's xl reads the end of its back channel


def test_a_copy_destroyed_by_someone_else_ends_the_hold_without_a_failover(rig):
    rig.start()
    send_and_break(rig)
    os.unlink(os.path.join(rig.doms, "vm1--incoming"))
    wait(lambda: rig.st()["state"] == hold.DISCARDED, what="the holder noticing", timeout=30)
    assert not rig.failed_over()
    assert "was destroyed" in rig.st()["reason"]


def test_a_killed_holder_takes_the_receiver_with_it(rig):
    rig.start()
    send_and_break(rig)
    child = rig.st()["child"]
    os.kill(rig.proc.pid, signal.SIGKILL)
    rig.proc.wait()
    wait(lambda: not os.path.exists("/proc/%d" % child) or _zombie(child), what="the receiver's death")
    time.sleep(0.3)
    assert not rig.failed_over()
    assert hold.backup_status("vm1", base=rig.state) is None      # no live holder


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[1].split()[0] == "Z"
    except IOError:
        return True


def test_terminating_the_holder_discards(rig):
    rig.start()
    send_and_break(rig)
    rig.proc.terminate()
    assert rig.proc.wait() == 0
    assert rig.st()["state"] == hold.DISCARDED and not rig.failed_over()


def test_an_unparsable_stream_is_still_forwarded_and_held(rig):
    rig.start()
    junk = b"not a migration stream" * 100
    rig.proc.stdin.write(junk)
    rig.proc.stdin.close()
    wait(lambda: (rig.st() or {}).get("state") == hold.HELD, what="held")
    wait(lambda: rig.received() == junk, what="the junk at the receiver")
    time.sleep(0.5)
    assert not rig.failed_over()
    st = rig.st()
    assert st["checkpoints"] is None and st["stream_error"]
    hold.release("vm1", base=rig.state)
    assert rig.failed_over()


def test_a_corrupt_state_file_is_named(tmp_path):
    os.makedirs(os.path.join(str(tmp_path), "hold"))
    with open(hold.state_path("vm1", base=str(tmp_path)), "w") as f:
        f.write("{not json")
    with pytest.raises(ToolstackError, match="vm1.json: expected the holder's JSON state"):
        hold.load("vm1", base=str(tmp_path))


def test_state_of_a_recycled_pid_is_not_a_live_holder(tmp_path):
    os.makedirs(os.path.join(str(tmp_path), "hold"))
    with open(hold.state_path("vm1", base=str(tmp_path)), "w") as f:
        json.dump({"pid": os.getpid(), "state": "held", "checkpoints": 3}, f)
    assert hold.load("vm1", base=str(tmp_path))["alive"] is False
    assert hold.backup_status("vm1", base=str(tmp_path)) is None
    with pytest.raises(ToolstackError, match="expected a holder running here"):
        hold.release("vm1", base=str(tmp_path))


# -- the xl adapter's side: Toolstack.remus_takeover / remus_discard / remus_backup


class ListRunner(object):
    """``xl list [DOM]`` answered from the rig's domain files (state letters given)."""

    def __init__(self, rig, states):
        self.rig = rig
        self.states = states
        self.calls = []

    def run(self, argv, input=None, timeout=None, env=None):
        self.calls.append(list(argv))
        names = sorted(os.listdir(self.rig.doms))
        if argv[1] == "destroy":
            os.unlink(os.path.join(self.rig.doms, argv[2]))
            return 0, b"", b""
        assert argv[1] == "list", argv
        if len(argv) == 3:
            names = [n for n in names if n == argv[2]]
            if not names:
                return 1, b"", b"invalid domain identifier\n"
        rows = ["Name                                        ID   Mem VCPUs\tState\tTime(s)"]
        if len(argv) == 2:
            rows.append("Domain-0                                     0   512     1     r-----      10.0")
        rows += ["%-40s %5d %5d %5d     %s  %8.1f" % (n, 7, 96, 1, self.states.get(n, "--p---"), 1.0)
                 for n in names]
        return 0, ("\n".join(rows) + "\n").encode(), b""


def test_xl_takeover_releases_the_held_copy_and_finds_it_running(rig):
    from xen_remus_ext.toolstack.xl import XlToolstack
    rig.start()
    send_and_break(rig)
    runner = ListRunner(rig, {"vm1": "-b----"})
    xl = XlToolstack(runner, state_base=rig.state)
    assert xl.remus_backup("vm1--incoming") == {"state": "broken", "checkpoints": 4, "held": True}
    xl.remus_takeover("vm1")
    assert os.listdir(rig.doms) == ["vm1"]      # renamed by the receiver's failover
    assert rig.failed_over() and rig.st()["state"] == hold.RELEASED
    assert xl.remus_backup("vm1--incoming")["checkpoints"] is None   # no live holder any more


def test_xl_takeover_is_refused_while_the_stream_flows(rig):
    from xen_remus_ext.toolstack.xl import XlToolstack
    rig.start()
    xl = XlToolstack(ListRunner(rig, {}), state_base=rig.state)
    assert xl.remus_backup("vm1--incoming") == {"state": "receiving", "checkpoints": 0, "held": False}
    with pytest.raises(ToolstackError, match="expected it held, got it receiving"):
        xl.remus_takeover("vm1")
    assert not rig.failed_over()


def test_xl_discard_of_a_receiving_copy(rig):
    from xen_remus_ext.toolstack.xl import XlToolstack
    rig.start()
    xl = XlToolstack(ListRunner(rig, {}), state_base=rig.state)
    xl.remus_discard("vm1")
    assert rig.st()["state"] == hold.DISCARDED and not rig.failed_over()
    assert os.listdir(rig.doms) == []


def test_xl_discard_without_a_holder_destroys_the_incoming_copy(rig):
    from xen_remus_ext.toolstack.xl import XlToolstack
    open(os.path.join(rig.doms, "vm1--incoming"), "w").close()
    runner = ListRunner(rig, {})
    XlToolstack(runner, state_base=rig.state).remus_discard("vm1")
    assert ["xl", "destroy", "vm1--incoming"] in runner.calls and os.listdir(rig.doms) == []
    with pytest.raises(ToolstackError, match="expected vm1--incoming here, found none"):
        XlToolstack(runner, state_base=rig.state).remus_discard("vm1")


def test_a_peer_xl_does_not_read_this_hosts_holders(rig):
    from xen_remus_ext.toolstack.xl import XlToolstack
    rig.start()
    class PeerRunner(ListRunner):
        def run(self, argv, input=None, timeout=None, env=None):
            if argv[0] == "xen-remus":     # the peer has no holder of vm1
                self.calls.append(list(argv))
                return 1, b"null\n", b""
            return ListRunner.run(self, argv, input, timeout, env)
    runner = PeerRunner(rig, {})
    xl = XlToolstack(runner, host="hostb", state_base=rig.state)
    # the holder running HERE is not the peer's: the peer's own is asked (through the runner)
    assert xl.remus_backup("vm1--incoming") == {"state": "receiving", "checkpoints": None}
    assert runner.calls == [["xen-remus", "-q", "hold", "show", "--toolstack", "xl", "vm1"]]
    with pytest.raises(ToolstackError, match="run it on the backup hostb itself"):
        xl.remus_takeover("vm1")


def test_a_stream_that_ends_before_its_first_checkpoint_is_not_held(rig):
    rig.start()
    data, marks = synth.remus_stream(1)
    part = data[:marks[0][1]]           # the live pass and checkpoint 0's libxc part, no CHECKPOINT_END
    rig.proc.stdin.write(part)
    rig.proc.stdin.close()
    assert rig.proc.wait() == 0
    st = rig.st()
    assert st["state"] == hold.ENDED and st["checkpoints"] == 0 and "before its first checkpoint" in st["reason"]
    assert rig.received() == part and rig.failed_over()     # xl saw the end: it fails, nothing to resume


def hvm_stream(checkpoints):
    """An HVM guest's Remus stream: libxc's domain header says HVM, and each
    checkpoint carries libxl's emulator records before its CHECKPOINT_END."""
    S = synth.S
    out = synth.xl_header() + synth.libxl_header() + synth.rec(S.LIBXL_LIBXC_CONTEXT)
    out += synth.libxc_headers(guest=S.GUEST_HVM) + synth.rec(S.LIBXC_STATIC_DATA_END)
    out += synth.page_data(list(range(8)))
    for n in range(checkpoints):
        out += synth.page_data([100 + n])
        out += synth.rec(S.LIBXC_X86_TSC_INFO, b"\1" * 24) + synth.rec(S.LIBXC_HVM_CONTEXT, b"\2" * 1024)
        out += synth.rec(0xA, b"\3" * 160) + synth.rec(S.LIBXC_CHECKPOINT)
        out += synth.rec(S.LIBXL_EMULATOR_XENSTORE_DATA, b"physmap\0x\0")
        out += synth.rec(S.LIBXL_EMULATOR_CONTEXT, b"\4" * 300) + synth.rec(S.LIBXL_CHECKPOINT_END)
    return out


def test_an_hvm_guests_checkpoints_are_counted_and_it_can_be_promoted(rig):
    """Counting commits needs only libxl's CHECKPOINT_END records, whatever
    the guest type: an HVM backup with no count would never be promotable."""
    rig.start()
    data = hvm_stream(3)
    rig.proc.stdin.write(data)
    rig.proc.stdin.flush()
    wait(lambda: rig.received() == data, what="every byte at the receiver")
    wait(lambda: rig.st()["checkpoints"] == 3, what="3 checkpoints counted")
    rig.proc.stdin.close()
    wait(lambda: (rig.st() or {}).get("state") == hold.HELD, what="held")
    assert not rig.failed_over()
    assert hold.backup_status("vm1", base=rig.state) == {"state": "broken", "checkpoints": 3, "held": True}
    assert "stream_error" not in rig.st()


def test_a_second_holder_for_a_held_domain_is_refused_and_the_first_keeps_its_copy(rig):
    """A new stream for a domain whose copy is held here (the link broke,
    the primary started Remus again) must not take the holder's state
    over: the held copy would be left paused with no holder anyone can
    release or discard through ``hold``."""
    rig.start()
    send_and_break(rig)
    first = rig.st()
    second = subprocess.Popen(
        [sys.executable, "-m", "xen_remus_ext", "hold", "receive", "--domain", "vm1", "--",
         sys.executable, rig.receiver, rig.out + "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=rig.env, cwd=rig.tmp)
    try:
        second.stdin.write(synth.remus_stream(1)[0])
        second.stdin.close()
    except (IOError, OSError):
        pass                         # refused before it read
    try:
        wait(lambda: second.poll() is not None, what="the second holder's refusal")
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    err = second.stderr.read()
    assert second.returncode != 0
    assert b"vm1" in err and b"already" in err and b"Traceback" not in err, err
    assert not os.path.exists(rig.out + "2.bytes")        # no second receiver ran
    st = rig.st()
    assert st["state"] == hold.HELD and st["pid"] == first["pid"] and st["alive"]
    final = hold.release("vm1", base=rig.state)
    assert final["state"] == hold.RELEASED and rig.failed_over()
