"""The xenstored double (sim/xenstored.py) against REAL clients.

pyxs 0.4.1 (the client our adapter uses) and Debian's xenstore-utils (the C
libxenstore) talk to it over its Unix socket; a few tests speak the raw
xs_wire.h framing to check what neither client shows (error payloads,
header echo, ENOSYS).  The double stands in for the C xenstored, which cannot
start without a hypervisor.
"""
from __future__ import absolute_import, division, print_function

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from pyxs import Client, PyXSError

from xen_remus_ext.sim import xenstored as xsd

HDR = struct.Struct("=IIII")


@pytest.fixture
def sock_path():
    d = tempfile.mkdtemp(prefix="xsd")
    yield os.path.join(d, "socket")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(sock_path):
    srv = xsd.XenstoredServer(sock_path).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with Client(unix_socket_path=server.socket_path) as c:
        yield c


def raw_call(path, op, payload, req_id=7, tx_id=0, sock=None):
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(path)
    try:
        sock.sendall(HDR.pack(op, req_id, tx_id, len(payload)) + payload)
        return raw_recv(sock)
    finally:
        if own:
            sock.close()


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "xenstored closed the connection"
        buf += chunk
    return buf


def raw_recv(sock):
    op, req_id, tx_id, length = HDR.unpack(_recv_exact(sock, HDR.size))
    return op, req_id, tx_id, _recv_exact(sock, length) if length else b""


def test_seeded_tree_and_basic_ops(client):
    assert client.list(b"/") == [b"tool", b"local"]
    assert client.read(b"/local/domain/0/name") == b"Domain-0"
    client.write(b"/a/b/c", b"hello")
    assert client.read(b"/a/b/c") == b"hello"
    assert client.read(b"/a/b") == b""          # parents created empty
    assert client.list(b"/a") == [b"b"]
    client.mkdir(b"/a/b")                       # existing: value kept
    assert client.list(b"/a/b") == [b"c"]
    client.mkdir(b"/a/d/e")
    assert client.list(b"/a") == [b"b", b"d"]   # creation order
    client.delete(b"/a/b")
    assert not client.exists(b"/a/b/c")
    assert not client.exists(b"/a/b")
    client.delete(b"/a/nothing")                # missing node, parent exists: OK
    with pytest.raises(PyXSError) as err:
        client.delete(b"/nope/nothing")
    assert err.value.args[0] == 2  # ENOENT
    with pytest.raises(PyXSError) as err:
        client.read(b"/nope")
    assert err.value.args[0] == 2
    assert client.read(b"/nope", b"dflt") == b"dflt"


def test_relative_paths_are_under_the_connections_domain(client):
    client.write(b"rel/key", b"v")
    assert client.read(b"/local/domain/0/rel/key") == b"v"
    assert client.get_domain_path(0) == b"/local/domain/0"
    assert client.get_domain_path(7) == b"/local/domain/7"


def test_permissions_are_stored_and_inherited(client):
    client.write(b"/p", b"x")
    assert client.get_perms(b"/p") == [b"n0"]
    client.set_perms(b"/p", [b"b0", b"r5"])
    assert client.get_perms(b"/p") == [b"b0", b"r5"]
    client.write(b"/p/child", b"y")
    assert client.get_perms(b"/p/child") == [b"b0", b"r5"]


def test_bad_perms_and_paths_are_einval(server):
    op, _, _, payload = raw_call(server.socket_path, xsd.XS_SET_PERMS, b"/local\0x9\0")
    assert (op, payload) == (xsd.XS_ERROR, b"EINVAL\0")
    op, _, _, payload = raw_call(server.socket_path, xsd.XS_READ, b"/bad path\0")
    assert (op, payload) == (xsd.XS_ERROR, b"EINVAL\0")
    op, _, _, payload = raw_call(server.socket_path, xsd.XS_READ, b"/local/\0")
    assert (op, payload) == (xsd.XS_ERROR, b"EINVAL\0")
    op, _, _, payload = raw_call(server.socket_path, xsd.XS_RM, b"/\0")
    assert (op, payload) == (xsd.XS_ERROR, b"EINVAL\0")


def test_wire_framing(server):
    """Replies echo type, req_id and tx_id; READ has no NUL; acks are OK\\0."""
    path = server.socket_path
    assert raw_call(path, xsd.XS_WRITE, b"/w\0val\0ue", req_id=99) == (xsd.XS_WRITE, 99, 0, b"OK\0")
    assert raw_call(path, xsd.XS_READ, b"/w\0", req_id=100) == (xsd.XS_READ, 100, 0, b"val\0ue")
    assert raw_call(path, xsd.XS_DIRECTORY, b"/local/domain/0\0")[3] == b"name\0domid\0"
    assert raw_call(path, xsd.XS_READ, b"/missing\0", req_id=3) == (xsd.XS_ERROR, 3, 0, b"ENOENT\0")
    assert raw_call(path, 77, b"", req_id=4) == (xsd.XS_ERROR, 4, 0, b"ENOSYS\0")
    assert raw_call(path, xsd.XS_READ, b"/w\0", tx_id=1234) == (xsd.XS_ERROR, 7, 1234, b"ENOENT\0")


def test_empty_value_write_on_the_wire(server):
    """WRITE with nothing after the path's NUL stores an empty value (what
    our adapter sends because pyxs 0.4.1 refuses b"")."""
    path = server.socket_path
    raw_call(path, xsd.XS_WRITE, b"/e\0full")
    assert raw_call(path, xsd.XS_WRITE, b"/e\0")[3] == b"OK\0"
    assert raw_call(path, xsd.XS_READ, b"/e\0") == (xsd.XS_READ, 7, 0, b"")


def test_transaction_commit_and_eagain(server, client):
    client.write(b"/t/k", b"0")
    client.transaction()
    assert client.read(b"/t/k") == b"0"
    client.write(b"/t/k", b"tx")
    with Client(unix_socket_path=server.socket_path) as other:
        assert other.read(b"/t/k") == b"0"      # not visible before commit
        other.write(b"/t/k", b"other")
    assert client.commit() is False            # EAGAIN
    assert client.read(b"/t/k") == b"other"
    client.transaction()
    client.write(b"/t/k", b"tx2")
    client.write(b"/t/new/deep", b"1")
    assert client.commit() is True
    assert client.read(b"/t/k") == b"tx2"
    assert client.read(b"/t/new/deep") == b"1"


def test_transaction_disjoint_nodes_do_not_conflict(server, client):
    client.write(b"/d/one", b"1")
    client.write(b"/d/two", b"2")
    client.transaction()
    client.write(b"/d/one", b"tx")
    with Client(unix_socket_path=server.socket_path) as other:
        other.write(b"/d/two", b"other")
    assert client.commit() is True
    assert client.read(b"/d/one") == b"tx" and client.read(b"/d/two") == b"other"


def test_transaction_rollback_and_rm(client):
    client.write(b"/r/a/b", b"1")
    client.transaction()
    client.delete(b"/r/a")
    client.rollback()
    assert client.read(b"/r/a/b") == b"1"
    client.transaction()
    client.delete(b"/r/a")
    assert client.commit() is True
    assert client.list(b"/r") == []


def _events(monitor, n, timeout=5):
    got = []
    it = monitor.wait()
    deadline = time.time() + timeout
    while len(got) < n:
        assert time.time() < deadline, "expected %d events, got %r" % (n, got)
        if monitor.events.qsize():
            got.append(next(it))
        else:
            time.sleep(0.01)
    return got


def test_watches(server, client):
    client.write(b"/w/a/b", b"1")
    with client.monitor() as m:
        m.watch(b"/w/a", b"tok")
        assert _events(m, 1) == [(b"/w/a", b"tok")]          # fires on registration
        client.write(b"/w/a/b/c", b"2")
        client.write(b"/w/other", b"3")                       # not below /w/a
        client.set_perms(b"/w/a", [b"b0"])
        assert _events(m, 2) == [(b"/w/a/b/c", b"tok"), (b"/w/a", b"tok")]
        m.watch(b"/w/a/b/c", b"deep")
        assert _events(m, 1) == [(b"/w/a/b/c", b"deep")]
        client.delete(b"/w/a")
        got = _events(m, 2)
        assert sorted(got) == sorted([(b"/w/a", b"tok"), (b"/w/a/b/c", b"deep")])
        client.transaction()
        client.write(b"/w/a/x", b"1")
        time.sleep(0.1)
        assert m.events.qsize() == 0                          # nothing before commit
        assert client.commit() is True
        assert _events(m, 1) == [(b"/w/a/x", b"tok")]


def test_special_watches_and_domains(server, client):
    with client.monitor() as m:
        m.watch(b"@introduceDomain", b"i")
        m.watch(b"@releaseDomain", b"r")
        assert sorted(_events(m, 2)) == [(b"@introduceDomain", b"i"), (b"@releaseDomain", b"r")]
        assert client.is_domain_introduced(5) is False
        client.introduce_domain(5, 1234, 7)
        assert _events(m, 1) == [(b"@introduceDomain", b"i")]
        assert client.is_domain_introduced(5) is True
        # pyxs refuses RELEASE unless /proc/xen/capabilities says control_d
        assert raw_call(server.socket_path, xsd.XS_RELEASE, b"5\0")[3] == b"OK\0"
        assert _events(m, 1) == [(b"@releaseDomain", b"r")]
        assert client.is_domain_introduced(5) is False


def test_domain_exception_fires_release_domain_only(server, client):
    """The hypervisor's VIRQ_DOM_EXC (a domain shut down, paused, died): the
    real xenstored fires @releaseDomain, and xend sees a guest's shutdown
    only through it."""
    with client.monitor() as m:
        m.watch(b"@releaseDomain", b"r")
        m.watch(b"@introduceDomain", b"i")
        m.watch(b"/local", b"l")
        assert sorted(_events(m, 3)) == [(b"/local", b"l"), (b"@introduceDomain", b"i"),
                                         (b"@releaseDomain", b"r")]
        server.domain_exception()
        assert _events(m, 1) == [(b"@releaseDomain", b"r")]
        threads = [threading.Thread(target=server.domain_exception) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.write(b"/local/x", b"1")
        got = []
        while (b"/local/x", b"l") not in got:
            got += [tuple(e) for e in _events(m, 1)]
        # three exceptions: one to three @releaseDomain (they may coalesce), never another path
        assert 1 <= got.count((b"@releaseDomain", b"r")) <= 3
        assert set(got) == set([(b"@releaseDomain", b"r"), (b"/local/x", b"l")])


def test_duplicate_watch_is_eexist_and_unknown_unwatch_enoent(server):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(server.socket_path)
    try:
        assert raw_call(None, xsd.XS_WATCH, b"/x\0t\0", sock=s)[3] == b"OK\0"
        assert raw_recv(s) == (xsd.XS_WATCH_EVENT, 0, 0, b"/x\0t\0")
        assert raw_call(None, xsd.XS_WATCH, b"/x\0t\0", sock=s)[3] == b"EEXIST\0"
        assert raw_call(None, xsd.XS_UNWATCH, b"/y\0t\0", sock=s)[3] == b"ENOENT\0"
        assert raw_call(None, xsd.XS_UNWATCH, b"/x\0t\0", sock=s)[3] == b"OK\0"
    finally:
        s.close()


def test_a_client_that_never_reads_does_not_stall_others(server, client):
    lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lazy.connect(server.socket_path)
    try:
        lazy.sendall(HDR.pack(xsd.XS_WATCH, 1, 0, len(b"/\0t\0")) + b"/\0t\0")
        value = b"v" * 3000
        t0 = time.time()
        for i in range(300):   # ~1 MB of events queued for the lazy client
            client.write(b"/flood/k%d" % i, value)
        assert client.read(b"/flood/k299") == value
        assert time.time() - t0 < 20
    finally:
        lazy.close()


XS_UTILS = shutil.which("xenstore-write") if hasattr(shutil, "which") else None
if XS_UTILS is None and os.path.exists("/usr/bin/xenstore-write"):
    XS_UTILS = "/usr/bin/xenstore-write"


@pytest.mark.skipif(XS_UTILS is None, reason="xenstore-utils not installed (tools/host-deps.sh)")
def test_debian_xenstore_utils(server):
    env = dict(os.environ, XENSTORED_PATH=server.socket_path)

    def xs(*argv):
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out, err = proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    assert xs("xenstore-write", "/u/a", "one", "/u/empty", "")[0] == 0
    assert xs("xenstore-read", "/u/a") == (0, "one\n", "")
    assert xs("xenstore-read", "/u/empty") == (0, "\n", "")
    assert xs("xenstore-chmod", "/u/a", "b0", "r3")[0] == 0
    rc, out, _ = xs("xenstore-ls", "-f", "-p", "/u")
    assert rc == 0
    assert "/u/a = \"one\"" in out and "(b0,r3)" in out and "/u/empty = \"\"" in out
    rc, out, _ = xs("xenstore-list", "/u")
    assert out.split() == ["a", "empty"]
    assert xs("xenstore-rm", "/u/a")[0] == 0
    assert xs("xenstore-exists", "/u/a")[0] == 1
    rc, _, err = xs("xenstore-read", "/u/a")
    assert rc == 1 and "couldn't read path /u/a" in err
    watcher = subprocess.Popen(["xenstore-watch", "-n", "2", "/u"], stdout=subprocess.PIPE, env=env)
    try:
        time.sleep(0.3)
        assert xs("xenstore-write", "/u/b", "2")[0] == 0
        out, _ = watcher.communicate(timeout=10) if sys.version_info[0] > 2 else watcher.communicate()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert out.decode().split() == ["/u", "/u/b"]


@pytest.mark.parametrize("argv", [["-m", "xen_remus_ext.sim.xenstored"], ["-m", "xen_remus_ext", "sim", "xenstored"]],
                         ids=["module", "xen-remus-sim-xenstored"])
def test_foreground_main_stops_on_sigterm(sock_path, argv):
    proc = subprocess.Popen([sys.executable] + argv + ["--socket", sock_path], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 10
        while not os.path.exists(sock_path):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        with Client(unix_socket_path=sock_path) as c:
            c.write(b"/alive", b"yes")
            assert c.read(b"/alive") == b"yes"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        assert not os.path.exists(sock_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_directory_part_pages_long_lists(server, client):
    names = [b"child-%04d-%s" % (i, b"x" * 40) for i in range(200)]   # ~10 KB of names
    for n in names:
        client.write(b"/big/" + n, b"1")
    got, off, gens = [], 0, set()
    while True:
        op, _, _, payload = raw_call(server.socket_path, xsd.XS_DIRECTORY_PART, b"/big\0%d\0" % off)
        assert op == xsd.XS_DIRECTORY_PART and len(payload) <= 4096
        gen, _, rest = payload.partition(b"\0")
        gens.add(gen)
        parts = rest.split(b"\0")
        if rest.endswith(b"\0\0") or rest == b"\0":
            got.extend(p for p in parts if p)
            break
        got.extend(p for p in parts if p)
        off += len(rest)
    assert got == names and len(gens) == 1
    assert raw_call(server.socket_path, xsd.XS_DIRECTORY, b"/big\0")[3] == b"E2BIG\0"
    if XS_UTILS is not None:   # libxenstore falls back to DIRECTORY_PART on E2BIG
        env = dict(os.environ, XENSTORED_PATH=server.socket_path)
        out = subprocess.check_output(["xenstore-list", "/big"], env=env)
        assert out.split() == names
    payload = raw_call(server.socket_path, xsd.XS_DIRECTORY_PART, b"/big\0999999\0")[3]
    assert payload == gens.pop() + b"\0\0"


def test_reset_watches(server):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(server.socket_path)
    try:
        raw_call(None, xsd.XS_WATCH, b"/rw\0t\0", sock=s)
        assert raw_recv(s)[0] == xsd.XS_WATCH_EVENT
        assert raw_call(None, xsd.XS_RESET_WATCHES, b"", sock=s)[3] == b"OK\0"
        assert raw_call(None, xsd.XS_UNWATCH, b"/rw\0t\0", sock=s)[3] == b"ENOENT\0"
    finally:
        s.close()


def test_the_socket_path_appears_only_once_it_listens(sock_path, monkeypatch):
    """A client that sees the path must not be refused (bind then listen left a window)."""
    seen = []
    real = socket.socket

    class Recording(real):
        def listen(self, *a):
            seen.append(os.path.exists(sock_path))
            return real.listen(self, *a)

    monkeypatch.setattr(xsd.socket, "socket", Recording)
    server = xsd.XenstoredServer(sock_path)
    server.bind()
    try:
        assert seen == [False]
        assert os.path.exists(sock_path) and os.listdir(os.path.dirname(sock_path)) == ["socket"]
    finally:
        server.listener.close()


def test_a_stale_socket_is_replaced(sock_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()
    with xsd.XenstoredServer(sock_path):
        with Client(unix_socket_path=sock_path) as c:
            assert c.read(b"/local/domain/0/name") == b"Domain-0"


@pytest.mark.parametrize("argv", [["-m", "xen_remus_ext.sim.xenstored"], ["-m", "xen_remus_ext", "sim", "xenstored"]],
                         ids=["module", "xen-remus-sim-xenstored"])
def test_a_file_at_the_socket_path_is_refused_and_kept(sock_path, argv):
    with open(sock_path, "wb") as f:
        f.write(b"someone's data\n")
    proc = subprocess.Popen([sys.executable] + argv + ["--socket", sock_path], stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=30) if sys.version_info[0] > 2 else proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert b"expected a Unix socket (or nothing) there" in err and b"Traceback" not in err
    with open(sock_path, "rb") as f:
        assert f.read() == b"someone's data\n"
