"""`xen-remus replicate serve|relay|backup` as processes, wired the way
`xl remus -s 'xen-remus replicate relay ...'` wires them: the relay's stdin
is the pipe libxc writes into, the backup runs the receiver command xl
passes.  SIGKILL of the relay (host A gone, as the backup sees it) must
leave the backup's disk at the checkpoint the receiver resumes from."""
from __future__ import absolute_import, division, print_function

import json
import os
import signal
import subprocess
import sys
import time

from tests.adapter import replication_util as U
from tests.adapter.replication_util import CLI, HERE, TOP, env

SIZE = 8 << 20
def wait_file(path, proc=None, limit=30):
    end = time.time() + limit
    while time.time() < end:
        if os.path.exists(path):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s exited %s before %s appeared" % (proc.args, proc.returncode, path))
        time.sleep(0.02)
    raise AssertionError("%s did not appear" % path)


def test_relay_processes_fail_over_to_a_consistent_disk(tmp_path):
    run_relay_pair(tmp_path)


# the backup's end binds the address ssh reached it at (SSH_CONNECTION): loopback here
LOOPBACK_SSH = {"SSH_CONNECTION": "127.0.0.1 40000 127.0.0.1 22"}


def test_a_tcp_link_outlives_the_ssh_connection_that_started_it(tmp_path):
    """``--link tcp``: ssh only starts the backup's end; its connection
    breaking after the handoff ends nothing: checkpoints go on being
    committed over the TCP link, and the primary's death still fails over
    to a consistent disk."""
    brk = str(tmp_path / "break-ssh")
    ssh = "%s %s %s" % (sys.executable, os.path.join(HERE, "fake_ssh.py"), brk)
    state = {}

    def during(t, libxc):
        if len(libxc.snapshots) >= 3 and "broke" not in state:
            open(brk, "w").close()
            state["broke"] = len(libxc.snapshots)
        return "broke" in state and len(libxc.snapshots) >= state["broke"] + 4

    back = run_relay_pair(tmp_path, ["--link", "tcp", "--ssh", ssh], LOOPBACK_SSH, during=during)
    assert back["committed"] >= state["broke"] + 3        # committed after ssh was gone
    # the primary's death ends the TCP link with a FIN, or with a RST when the
    # killed relay left ACKs unread: either way the link's end, not the ssh break
    assert back["reason"] in ("the primary relay closed the link", "primary relay: Connection reset by peer"), back


def test_a_tcp_link_over_real_ssh_outlives_the_ssh_client(tmp_path, sshd):
    """Through a real sshd: the backup's end binds the address ssh reached
    (SSH_CONNECTION); the ssh client is then SIGKILLed (the lab's sshd drops
    clients that stall for 3 s): checkpoints go on being committed over the
    TCP link, and the primary's death fails over to a consistent disk."""
    from tests.adapter.sshd_util import Sshd
    if not Sshd.usable():
        import pytest
        pytest.skip("needs root and /usr/sbin/sshd")
    state = {}

    def during(t, libxc):
        if len(libxc.snapshots) >= 3 and "broke" not in state:
            relay = int(open(os.path.join(t, "relay.pid")).read())
            ssh = [p for p in _children(relay) if open("/proc/%d/comm" % p).read().strip() == "ssh"]
            assert len(ssh) == 1, ssh
            os.kill(ssh[0], signal.SIGKILL)
            state["broke"] = len(libxc.snapshots)
        return "broke" in state and len(libxc.snapshots) >= state["broke"] + 4

    remote = "env PYTHONPATH=%s %s" % (TOP, " ".join(CLI))
    back = run_relay_pair(tmp_path, ["--link", "tcp", "--ssh", sshd.ssh], during=during,
                          host="127.0.0.1", remote=remote)
    assert back["committed"] >= state["broke"] + 3
    # the primary's death ends the TCP link with a FIN, or with a RST when the
    # killed relay left ACKs unread: either way the link's end, not the ssh break
    assert back["reason"] in ("the primary relay closed the link", "primary relay: Connection reset by peer"), back


def test_a_wrong_token_is_refused_and_the_right_one_admitted(tmp_path, monkeypatch):
    import socket
    import threading
    from xen_remus_ext.replication import service, wire
    monkeypatch.setenv("SSH_CONNECTION", LOOPBACK_SSH["SSH_CONNECTION"])
    r, w = os.pipe()
    got = {}
    th = threading.Thread(target=lambda: got.update(sock=service.accept_link(0, 5.0, out_fd=w)))
    th.start()
    offer = wire.parse_hello(wire.Decoder("test").feed(os.read(r, 4096))[0][1], "test")
    assert offer["addr"] == "127.0.0.1" and offer["port"] > 0 and len(offer["token"]) == 32
    bad = socket.create_connection(("127.0.0.1", offer["port"]))
    bad.sendall(wire.hello_frame({"token": "0" * 32}))
    assert bad.recv(16) == b""                            # closed without a word
    bad.close()
    good = service.connect_link(offer, "ignored", 5.0)
    th.join(10)
    good.sendall(b"x")
    assert got["sock"].recv(1) == b"x"
    good.close()
    got["sock"].close()
    os.close(r)
    os.close(w)


def test_relay_with_a_held_backup_waits_for_the_release_then_fails_over_consistently(tmp_path):
    """``--hold-domain``: the backup relay's receiver is ``xen-remus hold
    receive`` in front of xl's; at failover the disk is at the committed
    checkpoint and the receiver does not see the end of the stream until
    ``hold release``."""
    from xen_remus_ext.toolstack import hold
    state = str(tmp_path / "state")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "xl").write_text(u"#!/bin/sh\ntest \"$1\" = domid\n")     # the copy exists
    os.chmod(str(bindir / "xl"), 0o755)
    extra = {"XEN_REMUS_STATE_DIR": state, "PATH": str(bindir) + os.pathsep + os.environ.get("PATH", "")}

    def held(t):
        wait_for(lambda: (hold.load("vm1", base=state) or {}).get("state") == hold.HELD, "held")
        time.sleep(1.0)
        assert not os.path.exists(os.path.join(t, "receiver.json")), "the receiver failed over while held"
        assert "receiver_exit" not in read_json(os.path.join(t, "backup.json"))   # the backup relay waits for it
        st = hold.load("vm1", base=state)
        assert st["checkpoints"] >= 1
        hold.release("vm1", base=state)
    run_relay_pair(tmp_path, ["--hold-domain", "vm1"], extra, held)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return {}


def wait_for(cond, what, limit=30):
    end = time.time() + limit
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s" % what)


def run_relay_pair(tmp_path, relay_opts=(), extra_env=None, after_kill=None, during=None, host="hostb",
                   remote=None):
    """:param during: ``during(t, libxc)`` polled while checkpoints flow; the
        primary is killed once it returns true (default: after 5 checkpoints).
    :returns: the backup's final report."""
    t = str(tmp_path)
    a_img, b_img = os.path.join(t, "a.img"), os.path.join(t, "b.img")
    for p in (a_img, b_img):
        with open(p, "wb") as f:
            f.truncate(SIZE)
    nbd, ctl = os.path.join(t, "nbd.sock"), os.path.join(t, "ctl.sock")
    serve = subprocess.Popen(CLI + ["replicate", "serve", a_img, "--nbd", "unix:" + nbd, "--control", ctl,
                                    "--ready-file", os.path.join(t, "ready")], env=env())
    relay = None
    try:
        wait_file(os.path.join(t, "ready"), serve)
        remote = remote or " ".join(CLI)
        relay = subprocess.Popen(
            CLI + ["replicate", "relay", "--control", ctl, "--backup-disk", b_img, "--baseline", "none",
                   "--ssh", "", "--remote", remote, "--timeout", "5",
                   "--attached-file", os.path.join(t, "attached"), "--report", os.path.join(t, "relay.json"),
                   "--backup-report", os.path.join(t, "backup.json"),
                   "--backup-snapshot", os.path.join(t, "snap.img")] + list(relay_opts) + [
                   host, sys.executable, os.path.join(HERE, "fake_xl_receive.py"), b_img,
                   os.path.join(t, "receiver.json")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(env(), **(extra_env or {})))
        with open(os.path.join(t, "relay.pid"), "w") as f:
            f.write(str(relay.pid))
        wait_file(os.path.join(t, "attached"), relay)
        banner = os.read(relay.stdout.fileno(), 256)
        assert banner.startswith(b"xl migration receiver ready")
        guest = U.Guest(U.NbdClient(nbd, "xvda"), pace=0.002)
        libxc = U.Libxc(relay.stdin.fileno(), guest)
        guest.thread.start()
        libxc.thread.start()
        end = time.time() + 60
        while time.time() < end and not (len(libxc.snapshots) >= 5 and guest.acked > libxc.snapshots[-1][0] + 3
                                         and (during is None or during(t, libxc))):
            assert relay.poll() is None, "relay exited %s" % relay.returncode
            time.sleep(0.01)
        assert len(libxc.snapshots) >= 5 and (during is None or during(t, libxc))
        relay.send_signal(signal.SIGKILL)          # host A is gone
        relay.wait()
        guest.stop = libxc.stop = True
        if after_kill is not None:
            after_kill(t)
        # the backup's report is rewritten at each committed checkpoint, then at its end
        wait_for(lambda: "receiver_exit" in read_json(os.path.join(t, "backup.json")), "the backup's final report")
        wait_file(os.path.join(t, "receiver.json"), limit=30)
        back = read_json(os.path.join(t, "backup.json"))
        with open(os.path.join(t, "receiver.json")) as f:
            rec = json.load(f)
        assert back["failover"] is True and back["receiver_exit"] == 0
        assert back["committed"] == rec["checkpoint"] >= 1
        assert rec["violations"] == []
        assert (rec["acked"], rec["inflight"]) == libxc.snapshots[rec["checkpoint"]]
        lost, future = U.check_disk(b_img, rec["acked"], rec["inflight"])
        assert lost == [] and future == []
        with open(b_img, "rb") as f1, open(os.path.join(t, "snap.img"), "rb") as f2:
            assert f1.read() == f2.read()        # the copy taken at failover
        assert max(U.records_on(a_img)) > rec["acked"]
        return back
    finally:
        if relay is not None and relay.poll() is None:
            relay.kill()
            relay.wait()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait() == 0


def test_bad_listen_specs_and_missing_receiver_are_clear_errors(tmp_path):
    import pytest
    from xen_remus_ext.errors import ReplicationError
    from xen_remus_ext.replication import service
    with pytest.raises(ReplicationError, match="--nbd .*nbd.sock: expected unix:PATH or tcp:HOST:PORT"):
        service.listen(str(tmp_path / "nbd.sock"))
    with pytest.raises(ReplicationError, match="--nbd tcp:127.0.0.1:x: the port must be a number from 1 to 65535"):
        service.listen("tcp:127.0.0.1:x")
    out = subprocess.Popen(CLI + ["replicate", "backup", "--disk", str(tmp_path / "b.img"), "--"],
                           stderr=subprocess.PIPE, env=env())
    _o, err = out.communicate()
    assert out.returncode == 1 and b"no receiver command" in err


def _pipe_writers(inode, pids):
    """Which of ``pids`` hold a descriptor on pipe ``inode`` opened for writing."""
    found = set()
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "pipe:[%d]" % inode:
                    continue
                with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
            except (OSError, IOError):
                continue
            if flags & 3 == os.O_WRONLY:           # O_ACCMODE (not in Python 2.7)
                found.add(pid)
    return found


def _children(pid):
    kids = set()
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
            kids.update(int(k) for k in f.read().split())
    return kids


def test_the_receiver_dies_with_the_backup_relay_and_never_reads_the_end_of_its_stream(tmp_path):
    # a backup relay that dies must not leave xl's receiver to read
    # end-of-stream and fail over on a disk it may have moved ahead; the
    # kernel closes a dying process's descriptors before it signals its
    # children, so a second process (the guard) holds the receiver's stdin
    disk = str(tmp_path / "b.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    pidfile, eoffile = str(tmp_path / "receiver.pid"), str(tmp_path / "receiver.eof")
    script = ("import os, sys\nopen(%r, 'w').write(str(os.getpid()))\n"
              "while os.read(0, 65536): pass\nopen(%r, 'w').write('eof')\n") % (pidfile, eoffile)
    proc = subprocess.Popen(CLI + ["replicate", "backup", "--disk", disk, "--timeout", "30", "--",
                                   sys.executable, "-c", script],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env())
    wait_file(pidfile, proc)
    time.sleep(0.2)
    with open(pidfile) as f:
        pid = int(f.read())
    inode = os.stat("/proc/%d/fd/0" % pid).st_ino
    kids = _children(proc.pid)
    writers = _pipe_writers(inode, kids | {proc.pid})
    guards = writers - {proc.pid}
    assert proc.pid in writers and len(guards) == 1 and guards <= kids - {pid}, (writers, kids, pid)
    proc.kill()
    proc.wait()
    end = time.time() + 10
    while time.time() < end:
        alive = [p for p in (pid,) + tuple(guards) if os.path.exists("/proc/%d" % p)]
        if not alive:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("%s outlived the backup relay" % alive)
    assert not os.path.exists(eoffile), "the receiver read the end of its stream"


def test_a_backup_relay_that_fails_kills_its_receiver_without_a_failover(tmp_path):
    # a frame the backup cannot apply (a WRITE for an epoch already cut) is an
    # error: no failover from a state the relay did not finish
    from xen_remus_ext.replication import wire
    disk = str(tmp_path / "b.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    pidfile, eoffile = str(tmp_path / "receiver.pid"), str(tmp_path / "receiver.eof")
    script = ("import os, sys\nopen(%r, 'w').write(str(os.getpid()))\n"
              "while os.read(0, 65536): pass\nopen(%r, 'w').write('eof')\n") % (pidfile, eoffile)
    proc = subprocess.Popen(CLI + ["replicate", "backup", "--disk", disk, "--timeout", "30", "--",
                                   sys.executable, "-c", script],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    wait_file(pidfile, proc)
    proc.stdin.write(wire.cut_frame(0, 0, 0) + wire.write_frame(0, 0, b"x" * 512))
    proc.stdin.flush()
    _out, err = proc.communicate()
    assert proc.returncode == 1 and b"Traceback" not in err, err
    assert b"epoch" in err, err
    time.sleep(0.5)
    assert not os.path.exists(eoffile), "the receiver read the end of its stream"
    with open(pidfile) as f:
        assert not os.path.exists("/proc/%d" % int(f.read()))


# -- replicate serve: its socket paths, its exit, its options --------------------

def _image(tmp_path, size=1 << 20):
    path = str(tmp_path / "a.img")
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _serve(tmp_path, nbd, ctl, ready=True):
    argv = CLI + ["replicate", "serve", _image(tmp_path), "--nbd", "unix:" + nbd, "--control", ctl]
    if ready:
        argv += ["--ready-file", str(tmp_path / "ready")]
    return subprocess.Popen(argv, stderr=subprocess.PIPE, env=env())


def test_serve_refuses_to_replace_what_is_not_a_stale_socket_of_ours(tmp_path):
    import socket
    nbd, ctl = str(tmp_path / "nbd.sock"), str(tmp_path / "ctl.sock")
    with open(nbd, "w") as f:
        f.write("precious")
    proc = _serve(tmp_path, nbd, ctl)
    _o, err = proc.communicate()
    assert proc.returncode == 1 and b"Traceback" not in err
    assert ("--nbd %s: exists and is not a socket; refusing to replace it" % nbd).encode() in err
    with open(nbd) as f:
        assert f.read() == "precious"
    assert not os.path.exists(ctl)
    # the control path: a regular file there; the NBD socket made first is removed again
    os.unlink(nbd)
    with open(ctl, "w") as f:
        f.write("precious too")
    proc = _serve(tmp_path, nbd, ctl)
    _o, err = proc.communicate()
    assert proc.returncode == 1 and b"Traceback" not in err
    assert ("--control %s: exists and is not a socket" % ctl).encode() in err
    with open(ctl) as f:
        assert f.read() == "precious too"
    assert not os.path.exists(nbd)
    os.unlink(ctl)
    # a directory, and a socket somebody is listening on, are refused too
    os.mkdir(nbd)
    proc = _serve(tmp_path, nbd, ctl)
    _o, err = proc.communicate()
    assert proc.returncode == 1 and b"exists and is not a socket" in err and os.path.isdir(nbd)
    os.rmdir(nbd)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(nbd)
    live.listen(1)
    try:
        proc = _serve(tmp_path, nbd, ctl)
        _o, err = proc.communicate()
        assert proc.returncode == 1
        assert ("--nbd %s: a server is listening there already" % nbd).encode() in err
        assert os.path.exists(nbd)
    finally:
        live.close()
        os.unlink(nbd)


def test_serve_replaces_a_stale_socket_and_removes_its_sockets_at_sigterm(tmp_path):
    import socket
    nbd, ctl, ready = str(tmp_path / "nbd.sock"), str(tmp_path / "ctl.sock"), str(tmp_path / "ready")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(ctl)                 # bound, never listening, then closed: stale
    dead.close()
    proc = _serve(tmp_path, nbd, ctl)
    try:
        wait_file(ready, proc)
        for path in (nbd, ctl):    # both are live sockets now
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(path)
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _o, err = proc.communicate()
    assert proc.returncode == 0, err
    assert not os.path.exists(nbd) and not os.path.exists(ctl) and not os.path.exists(ready)


def test_serve_leaves_a_socket_path_someone_else_took_over(tmp_path):
    nbd, ctl, ready = str(tmp_path / "nbd.sock"), str(tmp_path / "ctl.sock"), str(tmp_path / "ready")
    proc = _serve(tmp_path, nbd, ctl)
    try:
        wait_file(ready, proc)
        os.unlink(nbd)
        with open(nbd, "w") as f:   # not ours any more: must survive serve's exit
            f.write("other")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate()
    assert proc.returncode == 0
    with open(nbd) as f:
        assert f.read() == "other"
    assert not os.path.exists(ctl)


def test_bad_port_and_timeout_are_usage_errors_naming_option_and_value(tmp_path, capsys):
    from tests.cli_util import usage
    img = _image(tmp_path)
    for spec, why in (("tcp:127.0.0.1:99999", "the port must be a number from 1 to 65535"),
                      ("tcp:127.0.0.1:0", "the port must be a number from 1 to 65535"),
                      ("tcp::10809", "no host"), ("unix:", "expected unix:PATH or tcp:HOST:PORT")):
        err = usage(["replicate", "serve", img, "--nbd", spec, "--control", str(tmp_path / "c")], capsys)
        assert "argument --nbd: %s: %s" % (spec, why) in err, err
    assert os.listdir(str(tmp_path)) == ["a.img"]
    for bad in ("-1", "0", "nan", "inf", "1e9", "soon"):
        err = usage(["replicate", "backup", "--disk", img, "--timeout", bad, "--", "true"], capsys)
        assert "argument --timeout: expected seconds from 0.5 to 3600, got %r" % bad in err, err
        err = usage(["replicate", "relay", "--control", str(tmp_path / "c"), "--backup-disk", img,
                     "--timeout", bad, "hostb", "xl", "migrate-receive"], capsys)
        assert "argument --timeout: expected seconds from 0.5 to 3600" in err, err
    assert os.listdir(str(tmp_path)) == ["a.img"]        # no .spool, no socket


def test_backup_whose_receiver_cannot_start_leaves_no_spool(tmp_path):
    img = _image(tmp_path)
    proc = subprocess.Popen(CLI + ["replicate", "backup", "--disk", img, "--timeout", "2", "--",
                                   str(tmp_path / "no-such-xl"), "migrate-receive"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    _o, err = proc.communicate()
    assert proc.returncode == 1 and b"Traceback" not in err
    assert b"cannot start the receiver" in err and b"no-such-xl" in err
    assert os.listdir(str(tmp_path)) == ["a.img"]


def test_a_query_names_the_served_disk_without_attaching(tmp_path):
    import pytest
    from xen_remus_ext.errors import ReplicationError
    from xen_remus_ext.replication import service
    nbd, ctl, ready = str(tmp_path / "nbd.sock"), str(tmp_path / "ctl.sock"), str(tmp_path / "ready")
    proc = _serve(tmp_path, nbd, ctl)
    try:
        wait_file(ready, proc)
        for _ in range(2):       # a query leaves the server free for the next one (and a relay)
            info = service.query_server(ctl)
            assert info == {"path": str(tmp_path / "a.img"), "size": 1 << 20}
        with pytest.raises(ReplicationError, match="control socket .*nope.sock: No such file"):
            service.query_server(str(tmp_path / "nope.sock"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate()
    assert proc.returncode == 0


def test_a_backup_end_that_dies_at_once_is_named_by_the_relay(tmp_path):
    # the lab's first run: the backup's wrapper could not be executed on B
    nbd, ctl, ready = str(tmp_path / "nbd.sock"), str(tmp_path / "ctl.sock"), str(tmp_path / "ready")
    serve = _serve(tmp_path, nbd, ctl)
    try:
        wait_file(ready, serve)
        relay = subprocess.Popen(CLI + ["replicate", "relay", "--control", ctl, "--ssh", "", "--remote", "false",
                                        "hostb", "xl", "migrate-receive", "-r"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
        # xl's stream stays open (an ended stream would be a clean end the relay may see first)
        end = time.time() + 60
        while relay.poll() is None and time.time() < end:
            time.sleep(0.05)
        relay.stdin.close()
        err = relay.stderr.read()
        relay.wait()
        relay.stdout.close()
        relay.stderr.close()
        assert relay.returncode == 1, err
        assert b"Traceback" not in err and b"[Errno" not in err
        assert b"backup" in err and b"false replicate" in err, err
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate()


FAKE_SSH = """#!/bin/sh
# what ssh does with its words: options up to --, the host, then one line for the remote shell
printf '%s\\n' "$@" > "$0.argv"
while [ "$1" != "--" ]; do shift; done
shift 2
exec sh -c "$*"
"""
ECHO_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"


def test_the_backup_end_is_reached_with_ssh_split_like_a_shell_and_its_words_intact(tmp_path):
    """``--ssh`` holds shell words (an option value with a space, as in
    ``-o 'ProxyCommand=nc %h 22'``) and reaches HOST after ``--``; the
    remote words arrive unchanged, spaces and quotes included."""
    from xen_remus_ext.cli.app import build_parser
    from xen_remus_ext.cli.replicate_cmd import backup_argv
    ssh = tmp_path / "fake ssh"
    echo = tmp_path / "echo.py"
    for path, text in ((ssh, FAKE_SSH), (echo, ECHO_ARGV)):
        with open(str(path), "w") as f:
            f.write(text)
    os.chmod(str(ssh), 0o755)
    disk = str(tmp_path / "it's a disk.img")
    args = build_parser().parse_args([
        "replicate", "relay", "--control", "/nonexistent", "--ssh", "'%s' -o 'ProxyCommand=nc %%h 22'" % ssh,
        "--remote", "%s %s" % (sys.executable, echo), "--hold-domain", "vm 1",
        "hostb", "xl", "migrate-receive", "-r"])
    argv = backup_argv(args, disk)
    out = subprocess.check_output(argv, env=env())
    assert json.loads(out.decode()) == ["replicate", "backup", "--disk", disk, "--timeout", "3.0", "--",
                                        sys.executable, str(echo), "hold", "receive", "--domain", "vm 1", "--",
                                        "xl", "migrate-receive", "-r"]
    with open(str(ssh) + ".argv") as f:
        assert f.read().splitlines()[:4] == ["-o", "ProxyCommand=nc %h 22", "--", "hostb"]


def test_a_relay_host_or_ssh_command_that_ssh_would_misread_is_refused(tmp_path):
    from xen_remus_ext.cli.app import build_parser
    from xen_remus_ext.cli.replicate_cmd import backup_argv
    from xen_remus_ext.errors import XenRemusError
    import pytest
    for ssh, host, why in (("ssh", "-oProxyCommand=touch x", "no leading '-'"),
                           ("ssh -o 'unbalanced", "hostb", "expected shell words")):
        args = build_parser().parse_args(["replicate", "relay", "--control", "c", "--ssh", ssh, "--",
                                          host, "xl", "migrate-receive"])
        with pytest.raises(XenRemusError, match=why):
            backup_argv(args, "/d.img")


EOF_RECEIVER = """import os, sys
open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1] + ".pid")     # whole when it appears
while os.read(0, 65536):
    pass
open(sys.argv[1], "w").write("failover")      # xl: end of stream -> Remus failover, unpause
"""


def test_a_killed_backup_relay_never_lets_its_receiver_read_the_end_of_the_stream(tmp_path):
    """The kernel closes a dying process's descriptors before it signals
    the children that asked for PDEATHSIG: the receiver could read the end
    of its stdin in that window and fail over beside a live primary (or
    from checkpoint N-1 on disk N).  A guard keeps a copy of that stdin open
    until the receiver's SIGKILL is already pending.  Killed ten times, the
    receiver never sees the end (without the guard it saw it about every
    other time here)."""
    disk = str(tmp_path / "b.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    script = str(tmp_path / "recv.py")
    with open(script, "w") as f:
        f.write(EOF_RECEIVER)
    seen = []
    for i in range(10):
        marker = str(tmp_path / ("failover.%d" % i))
        proc = subprocess.Popen(CLI + ["replicate", "backup", "--disk", disk, "--timeout", "600", "--",
                                       sys.executable, script, marker],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env())
        wait_file(marker + ".pid", proc)
        with open(marker + ".pid") as f:
            pid = int(f.read())
        proc.kill()
        proc.wait()
        end = time.time() + 10
        while time.time() < end:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.02)
        time.sleep(0.1)
        if os.path.exists(marker):
            seen.append(i)
        proc.stdin.close()
        proc.stdout.close()
    assert seen == [], "the receiver read the end of the stream after kills %s" % seen


def _loop_device(path):
    if os.geteuid() != 0:
        return None
    try:
        return subprocess.check_output(["losetup", "--find", "--show", path]).decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def test_the_spool_of_a_block_device_is_not_put_in_dev(tmp_path, monkeypatch):
    """DISK.spool beside an image file; beside a block device it would be a
    file in /dev (devtmpfs: RAM), where a full baseline, the whole disk,
    waits before checkpoint 0 commits.  It goes to the state directory."""
    import pytest
    from xen_remus_ext.replication.replica import Replica
    from xen_remus_ext.replication.service import default_spool
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    img = _image(tmp_path)
    assert default_spool(img) == img + ".spool"
    dev = _loop_device(img)
    if dev is None:
        pytest.skip("needs root and losetup")
    try:
        spool = default_spool(dev)
        assert spool.startswith(str(tmp_path / "state") + os.sep) and spool.endswith(".spool"), spool
        replica = Replica(dev, spool)
        assert os.path.exists(spool) and not os.path.exists(dev + ".spool")
        replica.close()
    finally:
        subprocess.call(["losetup", "-d", dev])
