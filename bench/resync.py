#!/usr/bin/env python3
"""Benchmark of ``xen-remus resync`` against rsync, dd and the disk floor.

Makes a random image (``--size``, default 4G), a stale copy with ``--changed``
(default 1%) of its 64 KiB blocks rewritten at random, and times, each from
a cold page cache when root (``sync; echo 3 > /proc/sys/vm/drop_caches``):

- floor: reading both images once, at the same time (what any
  compare-both-sides tool must do); measured first and last, the best counts;
- ours: checksum (local; TCP on 127.0.0.1), tracked with the true dirty
  list, full (into a stale copy);
- rsync --inplace --no-whole-file, local and against an rsync daemon on
  127.0.0.1 (started here, stopped by its PID); dd (conv=fdatasync, as our
  full mode fsyncs too);
- extra cases: identical images, 50% changed, a sparse image (full mode);
- bdsync / blocksync-fast when they are on PATH;
- the link rows (each against rsync, or our own other setting, in the same
  run; their own table, with the targets): scattered 4 KiB writes
  (``--changed`` of the 4 KiB blocks rewritten) against rsync and rsync
  ``-B 4096``; TLS against ``--plaintext`` on 127.0.0.1; zstd against
  ``--compress none`` on random data (the runs of each of these two pairs
  take turns); a filesystem image of real files from
  /usr/share (``--fs-size``) copied to a blank disk, against ``rsync -z``;
  and a shaped link (bench/wanlink.py: 100 Mbit/s, 20 ms RTT between two
  network namespaces) for ours over TCP+TLS and over ssh against rsync over
  ssh, on the scattered-4 KiB image.

Every sync is checked with ``cmp`` afterwards.  Prints seconds (whole
command, interpreter start-up included; "engine s" is our own ``seconds``
without it), MB/s, wire bytes, ratios to rsync and to the floor, and the
peak RSS of each of our processes (sender; receiver for TCP).
Usage: ``bench/resync.py [--size 256M] [--repeat N] [--dir DIR] [--keep] [--only a,b] [--out F]
[--fs-size 512M] [--link-rate 100M] [--link-rtt 0.02]``; ``--only`` also takes
``4k``, ``tls``, ``zstd``, ``fs`` and ``wan`` for the groups of link rows, or
one row of a group by its name (``--only "wan,4k: floor (read both)"``: the
shaped link and the read floor its budget needs).
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)

from xen_remus_ext.resync.plan import parse_size  # noqa: E402

BS = 65536
#: the engine's own "seconds" of the last run of ours (no interpreter start-up)
ENGINE = [None]
MiB = 1 << 20


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


def drop_caches():
    subprocess.call(["sync"])
    if os.geteuid() == 0:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return True
        except (IOError, OSError):
            return False
    return False


def make_random(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n


def pick_blocks(size, fraction, seed):
    nblocks = size // BS
    rng = random.Random(seed)
    return sorted(rng.sample(range(nblocks), max(1, int(nblocks * fraction))))


class Stale(object):
    """A stale copy: the source with ``blocks`` holding other content.

    The stale contents are kept in memory-light form (a seed per block), so
    the copy can be put back into its stale state by rewriting only them.
    """

    def __init__(self, blocks, seed):
        self.blocks = blocks
        self.seed = seed

    def content(self, i):
        rng = random.Random(self.seed * 1000003 + i)
        return bytes(bytearray(rng.getrandbits(8) for _ in range(64))) * (BS // 64)

    def apply(self, path):
        with open(path, "r+b") as f:
            for i in self.blocks:
                f.seek(i * BS)
                f.write(self.content(i))

    def dirty_file(self, path):
        with open(path, "w") as f:
            for i in self.blocks:
                f.write("%d %d\n" % (i * BS, BS))


def cmp_ok(a, b):
    return subprocess.call(["cmp", "-s", a, b]) == 0


def timed(argv, env=None):
    """Run ``argv``; :returns: (seconds, rc, stdout, stderr, peak RSS bytes of that process)."""
    t0 = time.time()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    outs = {}
    readers = [threading.Thread(target=lambda n=n, f=f: outs.__setitem__(n, f.read()))
               for n, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers:
        t.start()
    rss = reap(p)
    sec = time.time() - t0
    for t in readers:
        t.join()
    return sec, p.returncode, outs.get("out", b""), outs.get("err", b""), rss


def reap(p):
    """Wait for ``p``; :returns: its peak RSS in bytes."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_maxrss * 1024


#: the --json result of the last run of ours
LAST = [None]


def run_ours(src, dest, extra, env=None, prefix=()):
    argv = list(prefix) + [sys.executable, "-m", "xen_remus_ext", "resync", src, dest, "--json",
                           "--no-progress"] + extra
    sec, rc, out, err, rss = timed(argv, env=env)
    if rc != 0:
        raise SystemExit("bench: ours failed: %s" % err.decode("utf-8", "replace"))
    res = json.loads(out.decode("utf-8").splitlines()[-1])
    ENGINE[0] = res["seconds"]
    LAST[0] = res
    return sec, res["bytes_sent"], rss


def floor(a, b):
    def reader(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            while os.read(fd, 4 * MiB):
                pass
        finally:
            os.close(fd)
    t0 = time.time()
    ts = [threading.Thread(target=reader, args=(p,)) for p in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.time() - t0


def rsync_stats(err_out):
    sent = re.search(r"Total bytes sent: ([\d,]+)", err_out)
    recv = re.search(r"Total bytes received: ([\d,]+)", err_out)
    if not sent:
        return None
    return int(sent.group(1).replace(",", "")) + int(recv.group(1).replace(",", ""))


class RsyncDaemon(object):
    def __init__(self, d, module_dir):
        self.d = d
        self.port = None
        self.pid = None
        self.module_dir = module_dir

    def start(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        conf = os.path.join(self.d, "rsyncd.conf")
        pidf = os.path.join(self.d, "rsyncd.pid")
        with open(conf, "w") as f:
            f.write("pid file=%s\nuse chroot=no\naddress=127.0.0.1\nport=%d\n[dst]\npath=%s\nread only=false\n"
                    "uid=root\ngid=root\n" % (pidf, self.port, self.module_dir))
        subprocess.check_call(["rsync", "--daemon", "--config=" + conf])
        for _ in range(100):
            if os.path.exists(pidf):
                with open(pidf) as f:
                    txt = f.read().strip()
                if txt:
                    self.pid = int(txt)
                    break
            time.sleep(0.05)
        time.sleep(0.2)
        return self

    def stop(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except OSError:
                pass


def ensure_rsync():
    if shutil.which("rsync"):
        return True
    if os.geteuid() == 0:
        log("installing rsync (apt-get)")
        subprocess.call(["apt-get", "install", "-y", "-qq", "rsync"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return bool(shutil.which("rsync"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="4G")
    ap.add_argument("--changed", type=float, default=0.01, help="fraction of 64 KiB blocks rewritten")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir under /var/tmp)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", default="", help="comma list of rows to run (default all)")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest is reported")
    ap.add_argument("--fs-size", default="512M", help="size of the filesystem image of real files (fs rows)")
    ap.add_argument("--link-rate", default="100M", help="shaped link rate in bit/s (wan rows)")
    ap.add_argument("--link-rtt", type=float, default=0.020, help="shaped link round-trip time in s (wan rows)")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    size -= size % MiB
    only = set(x for x in args.only.split(",") if x)
    def want(name):
        return not only or name in only or name.split(":")[0] in only
    want.only = only
    d = args.dir or tempfile.mkdtemp(prefix="xre-bench-", dir="/var/tmp")
    if not os.path.isdir(d):
        os.makedirs(d)
    env = dict(os.environ, XEN_REMUS_STATE_DIR=os.path.join(d, "state"), XEN_REMUS_LOG="",
               PYTHONPATH=TOP + os.pathsep + os.environ.get("PYTHONPATH", ""))
    os.environ.update({k: env[k] for k in ("XEN_REMUS_STATE_DIR", "XEN_REMUS_LOG", "PYTHONPATH")})
    have_rsync = ensure_rsync()
    cold = drop_caches()
    src, dst = os.path.join(d, "src.img"), os.path.join(d, "dst", "disk.img")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    t0 = time.time()
    log("making %d MiB random image in %s" % (size // MiB, d))
    make_random(src, size)
    subprocess.check_call(["cp", "--sparse=never", src, dst])
    stale = Stale(pick_blocks(size, args.changed, 1), 1)
    changed = len(stale.blocks) * BS
    dirty = os.path.join(d, "dirty.txt")
    stale.dirty_file(dirty)
    log("images ready in %.1f s; %d blocks (%d MiB) changed" % (time.time() - t0, len(stale.blocks), changed // MiB))

    rows = []

    def reset_stale():
        stale.apply(dst)
        shutil.rmtree(env["XEN_REMUS_STATE_DIR"], ignore_errors=True)

    def row(name, fn, check=True, setup=reset_stale):
        if not want(name):
            return
        if setup:
            setup()
        best = None
        for _ in range(args.repeat):
            if setup and best is not None:
                setup()
            drop_caches()
            ENGINE[0] = None
            got = fn()
            sec, wire, rss = got if len(got) == 3 else (got[0], got[1], None)
            if best is None or sec < best["seconds"]:
                best = {"name": name, "seconds": sec, "wire": wire, "rss": rss, "engine": ENGINE[0]}
        best["ok"] = cmp_ok(src, dst) if check else None
        rows.append(best)
        sec, wire, ok = best["seconds"], best["wire"], best["ok"]
        log("%-28s %7.2f s  wire %s  %s" % (name, sec, wire, "identical" if ok else ("" if ok is None else "DIFFER")))

    row("floor (read both)", lambda: (floor(src, dst), None), check=False)
    row("ours checksum local", lambda: run_ours(src, dst, ["--mode", "checksum"], env))

    if want("ours checksum tcp"):
        key = os.path.join(d, "key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, os.urandom(32).hex().encode())
        os.close(fd)
        recv = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "receive", "--listen", "127.0.0.1:0",
                                 "--key", key, "--export", "d=" + dst], stderr=subprocess.PIPE, env=env)
        line = recv.stderr.readline().decode()
        port = int(line.split("receiving on ")[1].split()[0].rsplit(":", 1)[1])
        url = "tcp://127.0.0.1:%d/d" % port
        try:
            row("ours checksum tcp", lambda: run_ours(src, url, ["--mode", "checksum", "--key", key], env))
        finally:
            recv.terminate()
            recv_rss = reap(recv)
            if rows and rows[-1]["name"] == "ours checksum tcp":
                rows[-1]["rss"] = max(rows[-1]["rss"] or 0, recv_rss)

    row("ours tracked local", lambda: run_ours(src, dst, ["--mode", "tracked", "--dirty", dirty], env))
    if have_rsync:
        def rsync_local():
            sec, rc, out, err, _ = timed(["rsync", "--inplace", "--no-whole-file", "--stats", src, dst])
            return sec, rsync_stats(out.decode())
        row("rsync local", rsync_local)
        daemon = RsyncDaemon(d, os.path.dirname(dst)).start() if want("rsync daemon") else None
        try:
            def rsync_daemon():
                sec, rc, out, err, _ = timed(["rsync", "--inplace", "--no-whole-file", "--stats", src,
                                           "rsync://127.0.0.1:%d/dst/disk.img" % daemon.port])
                return sec, rsync_stats(out.decode())
            row("rsync daemon", rsync_daemon)
        finally:
            if daemon:
                daemon.stop()
    patch = os.path.join(d, "bdsync.patch")
    for tool, argv in (
            ("bdsync", ["sh", "-c", 'bdsync --hash=sha1 --blocksize=65536 "bdsync --server" "$1" "$2" > "$3" '
                        '&& bdsync --patch="$2" < "$3"', "bdsync", src, dst, patch]),
            ("blocksync-fast", ["blocksync-fast", "-s", src, "-d", dst, "-a", "XXH128", "-b", "64K"])):
        if shutil.which(tool):
            row(tool, lambda argv=argv: (timed(argv)[0], None))
    row("ours full local", lambda: run_ours(src, dst, ["--mode", "full"], env))
    row("dd conv=fdatasync", lambda: (timed(["dd", "if=" + src, "of=" + dst, "bs=1M",
                                              "conv=notrunc,fdatasync"])[0], None))
    # other cases: identical, 50% changed, sparse
    row("ours checksum identical", lambda: run_ours(src, dst, ["--mode", "checksum"], env), setup=None)
    half = Stale(pick_blocks(size, 0.5, 2), 2)

    def reset_half():
        half.apply(dst)
        shutil.rmtree(env["XEN_REMUS_STATE_DIR"], ignore_errors=True)
    row("ours checksum 50%", lambda: run_ours(src, dst, ["--mode", "checksum"], env), setup=reset_half)
    if want("ours full sparse"):
        sparse = os.path.join(d, "sparse.img")
        with open(sparse, "wb") as f:
            f.truncate(size)
            for i in pick_blocks(size, 0.01, 3):
                f.seek(i * BS)
                f.write(os.urandom(BS))
        shutil.rmtree(env["XEN_REMUS_STATE_DIR"], ignore_errors=True)
        drop_caches()
        sec, wire, rss = run_ours(sparse, dst, ["--mode", "full"], env)
        rows.append({"name": "ours full sparse", "seconds": sec, "wire": wire, "ok": cmp_ok(sparse, dst),
                     "rss": rss, "engine": ENGINE[0]})
        log("%-28s %7.2f s  wire %s" % ("ours full sparse", sec, wire))

    link_rows = []
    key = os.path.join(d, "key")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, os.urandom(32).hex().encode())
    os.close(fd)
    link(args, d, env, src, dst, size, want, link_rows, have_rsync, key)

    if want("floor (read both)"):
        # again at the end: the first reads of fresh images also pay for the
        # host's caching of the VM disk, which would flatter every later row
        for _ in range(args.repeat):
            drop_caches()
            sec = floor(src, dst)
            first = [r for r in rows if r["name"] == "floor (read both)"][0]
            first["seconds"] = min(first["seconds"], sec)
            log("%-28s %7.2f s  (at the end)" % ("floor (read both)", sec))
    table = format_table(rows, size, changed, cold) if rows else ""
    if link_rows:
        table += ("\n\n" if table else "") + format_link(link_rows, rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    if not args.keep and not args.dir:
        shutil.rmtree(d, ignore_errors=True)
    bad = [r["name"] for r in rows + link_rows[1:] if r["ok"] is False]
    if bad:
        log("NOT IDENTICAL after: %s" % ", ".join(bad))
        return 1
    return 0


class Stale4k(object):
    """A stale copy with ``fraction`` of its 4 KiB blocks rewritten at random."""

    def __init__(self, size, fraction, seed):
        rng = random.Random(seed)
        n = size // 4096
        self.blocks = sorted(rng.sample(range(n), max(1, int(n * fraction))))
        self.seed = seed

    def apply(self, path):
        with open(path, "r+b") as f:
            for i in self.blocks:
                rng = random.Random(self.seed * 1000003 + i)
                f.seek(i * 4096)
                f.write(bytes(bytearray(rng.getrandbits(8) for _ in range(64))) * 64)


def make_fs_image(path, size, d):
    """An ext4 image of ``size`` bytes filled (about 60%) with real files from /usr/share."""
    stage = os.path.join(d, "fs-stage")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    budget, used = size * 6 // 10, 0
    for name in sorted(os.listdir("/usr/share")):
        top = os.path.join("/usr/share", name)
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        n = int(subprocess.check_output(["du", "-sb", top]).split()[0])
        if used + n > budget:
            continue
        if subprocess.call(["cp", "-al", top, stage], stderr=subprocess.DEVNULL) != 0:
            subprocess.check_call(["cp", "-a", top, stage])
        used += n
    if os.path.exists(path):
        os.unlink(path)
    subprocess.check_call(["mke2fs", "-q", "-F", "-t", "ext4", "-i", "4096", "-d", stage, path, "%dk" % (size // 1024)])
    shutil.rmtree(stage, ignore_errors=True)
    return used


def start_receiver(env, key, exports, prefix=(), listen="127.0.0.1:0", plaintext=False):
    """``xen-remus receive --listen`` (in a namespace with ``prefix``); :returns: (Popen, port)."""
    argv = list(prefix) + [sys.executable, "-m", "xen_remus_ext", "receive", "--listen", listen, "--key", key,
                           "--cert", os.path.join(os.path.dirname(key), "cert.pem")]
    for name, path in exports.items():
        argv += ["--export", "%s=%s" % (name, path)]
    if plaintext:
        argv.append("--plaintext")
    p = subprocess.Popen(argv, stderr=subprocess.PIPE, env=env)
    line = p.stderr.readline().decode()
    if "receiving on " not in line:
        p.kill()
        raise SystemExit("bench: receiver did not start: %s" % line)
    return p, int(line.split("receiving on ")[1].split()[0].rsplit(":", 1)[1])


def stop(p):
    if p is not None and p.poll() is None:
        p.terminate()
        p.wait()


def link(args, d, env, src, dst, size, want, out, have_rsync, key):
    """The link rows (see the module docstring); appends row dicts to ``out``."""
    import wanlink
    # a group runs when named, or when one of its rows is ("4k: floor (read both)")
    groups = [g for g in ("4k", "tls", "zstd", "fs", "wan")
              if want(g + ":") or any(name.startswith(g + ":") for name in want.only)]
    if not groups:
        return
    stale = Stale4k(size, 0.01 if args.changed == 0.01 else args.changed, 5)
    changed = len(stale.blocks) * 4096
    ctx = {"changed": changed, "size": size}
    out.append({"ctx": ctx})

    def setup4():
        stale.apply(dst)
        shutil.rmtree(env["XEN_REMUS_STATE_DIR"], ignore_errors=True)

    def once(name, fn, setup):
        setup()
        drop_caches()
        LAST[0] = None
        sec, wire = fn()[:2]
        res = LAST[0] or {}
        return {"name": name, "seconds": sec, "wire": wire, "digest": res.get("digest_bytes"),
                "engine": res.get("seconds"), "compress": res.get("compress")}

    def record(best):
        out.append(best)
        log("%-34s %7.2f s  wire %s  %s" % (best["name"], best["seconds"], best["wire"],
                                            "identical" if best["ok"] else "DIFFER"))
        return best

    def lrow(name, fn, setup=setup4, pair=(src, dst)):
        if not want(name):
            return None
        best = None
        for _ in range(args.repeat):
            r = once(name, fn, setup)
            if best is None or r["seconds"] < best["seconds"]:
                best = r
        best["ok"] = cmp_ok(*pair)
        return record(best)

    def lpair(rows, setup=setup4, pair=(src, dst)):
        """Two rows compared with each other: their runs take turns (A B, B A,
        A B ...), so that neither always runs first on a disk whose speed
        drifts; each run is checked with cmp."""
        rows = [(name, fn) for name, fn in rows if want(name)]
        best = {}
        for i in range(args.repeat):
            for name, fn in (rows if i % 2 == 0 else rows[::-1]):
                r = once(name, fn, setup)
                r["ok"] = cmp_ok(*pair) and best.get(name, {}).get("ok", True)
                if name not in best or r["seconds"] < best[name]["seconds"]:
                    best[name] = r
                else:
                    best[name]["ok"] = r["ok"]
        for name, _ in rows:
            record(best[name])

    def rsync(argv, prefix=()):
        def go():
            sec, rc, o, e, _ = timed(list(prefix) + ["rsync", "--inplace", "--no-whole-file", "--stats"] + argv)
            if rc != 0:
                raise SystemExit("bench: rsync failed: %s" % e.decode("utf-8", "replace"))
            return sec, rsync_stats(o.decode())
        return go

    log("link rows: %d 4 KiB blocks (%d MiB) rewritten" % (len(stale.blocks), changed >> 20))
    if "4k" in groups:
        ctx["floor"] = lrow("4k: floor (read both)", lambda: (floor(src, dst), None), setup=lambda: None,
                            pair=(src, src))
        lrow("4k: ours checksum local", lambda: run_ours(src, dst, ["--mode", "checksum"], env))
        if have_rsync:
            lrow("4k: rsync local", rsync([src, dst]))
            lrow("4k: rsync -B 4096 local", rsync(["-B", "4096", src, dst]))
    if "tls" in groups or "zstd" in groups:
        recv, port = start_receiver(env, key, {"d": dst}, plaintext=True)
        url = "tcp://127.0.0.1:%d/d" % port
        try:
            lpair([("tls: ours checksum tcp+tls",
                    lambda: run_ours(src, url, ["--mode", "checksum", "--key", key], env)),
                   ("tls: ours checksum tcp plaintext",
                    lambda: run_ours(src, url, ["--mode", "checksum", "--key", key, "--plaintext"], env))])
            lpair([("zstd: ours full tcp+tls zstd (random)",
                    lambda: run_ours(src, url, ["--mode", "full", "--key", key, "--compress", "zstd"], env)),
                   ("zstd: ours full tcp+tls none (random)",
                    lambda: run_ours(src, url, ["--mode", "full", "--key", key, "--compress", "none"], env))])
        finally:
            stop(recv)
    if "fs" in groups:
        fs_size = parse_size(args.fs_size)
        fs_src = os.path.join(d, "fs.img")
        fs_dst = os.path.join(d, "fsdst", "fs.img")
        os.makedirs(os.path.dirname(fs_dst), exist_ok=True)
        t0 = time.time()
        ctx["fs_files"] = make_fs_image(fs_src, fs_size, d)
        ctx["fs_size"] = fs_size
        log("fs image: %d MiB of files from /usr/share in a %d MiB ext4 image (%.1f s)"
            % (ctx["fs_files"] >> 20, fs_size >> 20, time.time() - t0))

        def blank():
            with open(fs_dst, "wb") as f:
                f.truncate(fs_size)
            shutil.rmtree(env["XEN_REMUS_STATE_DIR"], ignore_errors=True)
        blank()
        recv, port = start_receiver(env, key, {"fs": fs_dst})
        url = "tcp://127.0.0.1:%d/fs" % port
        try:
            lrow("fs: ours checksum tcp+tls zstd", lambda: run_ours(fs_src, url, ["--mode", "checksum", "--key", key],
                                                                    env), setup=blank, pair=(fs_src, fs_dst))
            lrow("fs: ours checksum tcp+tls none", lambda: run_ours(
                fs_src, url, ["--mode", "checksum", "--key", key, "--compress", "none"], env), setup=blank,
                pair=(fs_src, fs_dst))
        finally:
            stop(recv)
        if have_rsync:
            daemon = RsyncDaemon(d, os.path.dirname(fs_dst)).start()
            try:
                lrow("fs: rsync -z daemon", lambda: rsync(["-z", fs_src, "rsync://127.0.0.1:%d/dst/fs.img"
                                                           % daemon.port])(), setup=blank, pair=(fs_src, fs_dst))
            finally:
                daemon.stop()
    if "wan" in groups:
        rate = int(float(args.link_rate.upper().rstrip("BIT").rstrip("M")) * 1e6) \
            if args.link_rate.upper().rstrip("BIT").endswith("M") else int(float(args.link_rate))
        ln = wanlink.Link(rate_bit=rate, rtt=args.link_rtt)
        sshd = recv = None
        try:
            ln.up()
            ctx["link"] = "%s, %d Mbit/s, %.0f ms RTT" % (ln.kind, rate // 1000000, args.link_rtt * 1000)
            ctx["rate"] = rate
            log("wan link up: %s" % ctx["link"])
            a = ln.ns_exec(wanlink.NS_A)
            recv, port = start_receiver(env, key, {"d": dst}, prefix=ln.ns_exec(wanlink.NS_B),
                                        listen=wanlink.ADDR_B + ":0")
            lrow("wan: ours tcp+tls", lambda: run_ours(
                src, "tcp://%s:%d/d" % (wanlink.ADDR_B, port), ["--mode", "checksum", "--key", key], env, prefix=a))
            sshd = wanlink.sshd().start()
            remote = "env XEN_REMUS_STATE_DIR=%s XEN_REMUS_LOG= PYTHONPATH=%s %s -m xen_remus_ext" % (
                env["XEN_REMUS_STATE_DIR"], TOP, sys.executable)
            ssh_env = dict(env, XEN_REMUS_REMOTE_CMD=remote)
            lrow("wan: ours ssh", lambda: run_ours(src, "%s:%s" % (wanlink.ADDR_B, dst),
                                                   ["--mode", "checksum", "-s", sshd.ssh], ssh_env, prefix=a))
            if have_rsync:
                lrow("wan: rsync ssh", rsync(["-e", sshd.ssh, src, "%s:%s" % (wanlink.ADDR_B, dst)], prefix=a))
        finally:
            stop(recv)
            if sshd is not None:
                sshd.stop()
            ln.down()


def format_link(link_rows, rows):
    ctx = link_rows[0]["ctx"]
    by = {r["name"]: r for r in link_rows[1:]}
    changed = ctx["changed"]
    out = ["Link rows: %d MiB image, %d MiB changed as scattered 4 KiB blocks%s." % (
        ctx["size"] >> 20, changed >> 20, "; fs: %d MiB of /usr/share files in a %d MiB ext4 image, to a blank disk"
        % (ctx["fs_files"] >> 20, ctx["fs_size"] >> 20) if "fs_size" in ctx else ""), "",
        "| run | seconds | engine s | wire bytes | digest bytes | (wire - digest) / changed | identical |",
        "|---|---|---|---|---|---|---|"]
    for r in link_rows[1:]:
        data = None if r["wire"] is None else r["wire"] - (r["digest"] or 0)
        out.append("| %s | %.2f | %s | %s | %s | %s | %s |" % (
            r["name"], r["seconds"], "-" if r.get("engine") is None else "%.2f" % r["engine"],
            "-" if r["wire"] is None else "{:,}".format(r["wire"]),
            "-" if r["digest"] is None else "{:,}".format(r["digest"]),
            "-" if data is None or r["name"].startswith(("fs", "zstd")) else "%.3f" % (data / changed),
            {True: "yes", False: "NO", None: "-"}[r["ok"]]))
    out += ["", "Targets (ratios within this run):", ""]

    def ratio(a, b, what, limit, le=True):
        if a in by and b in by and by[b][what]:
            v = by[a][what] / by[b][what]
            ok = v <= limit if le else v < limit
            out.append("- %s / %s (%s): %.3f, target %s %s: %s" % (a, b, what, v, "<=" if le else "<", limit,
                                                                  "met" if ok else "NOT met"))
    r = by.get("4k: ours checksum local")
    if r:
        v = (r["wire"] - r["digest"]) / changed
        out.append("- 4k: (bytes_sent - digest_bytes) / changed = %.3f, target <= 1.1: %s"
                   % (v, "met" if v <= 1.1 else "NOT met"))
    ratio("4k: ours checksum local", "4k: floor (read both)", "seconds", 1.15)
    ratio("4k: ours checksum local", "4k: rsync local", "seconds", 1.0, le=False)
    ratio("4k: ours checksum local", "4k: rsync -B 4096 local", "wire", 1.0)
    ratio("fs: ours checksum tcp+tls zstd", "fs: rsync -z daemon", "wire", 1.0)
    ratio("zstd: ours full tcp+tls zstd (random)", "zstd: ours full tcp+tls none (random)", "seconds", 1.1)
    ratio("tls: ours checksum tcp+tls", "tls: ours checksum tcp plaintext", "seconds", 1.2)
    w = by.get("wan: ours tcp+tls")
    fl = by.get("4k: floor (read both)")
    if w and fl and ctx.get("rate"):
        budget = 1.2 * (w["wire"] * 8.0 / ctx["rate"]) + fl["seconds"]
        out.append("- wan (%s): ours tcp+tls %.2f s against 1.2 x (wire / link rate) + read floor = 1.2 x %.2f + %.2f"
                   " = %.2f s: %s" % (ctx["link"], w["seconds"], w["wire"] * 8.0 / ctx["rate"], fl["seconds"],
                                      budget, "met" if w["seconds"] <= budget else "NOT met"))
    ratio("wan: ours tcp+tls", "wan: rsync ssh", "seconds", 1.0, le=False)
    ratio("wan: ours ssh", "wan: rsync ssh", "seconds", 1.0, le=False)
    return "\n".join(out)


def format_table(rows, size, changed, cold):
    by = {r["name"]: r for r in rows}
    rs = by.get("rsync local") or by.get("rsync daemon")
    fl = by.get("floor (read both)")
    out = ["Image %d MiB, %d MiB changed in 64 KiB blocks; page cache %s before each run."
           % (size // MiB, changed // MiB, "dropped" if cold else "NOT dropped (not root)"), "",
           "| run | seconds | engine s | MB/s | wire bytes | x rsync | x floor | peak RSS MiB | identical |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| %s | %.2f | %s | %.0f | %s | %s | %s | %s | %s |" % (
            r["name"], r["seconds"], "-" if r.get("engine") is None else "%.2f" % r["engine"],
            size / r["seconds"] / 1e6, "-" if r["wire"] is None else "{:,}".format(r["wire"]),
            "%.2f" % (r["seconds"] / rs["seconds"]) if rs else "-",
            "%.2f" % (r["seconds"] / fl["seconds"]) if fl else "-",
            "%.0f" % (r["rss"] / MiB) if r["rss"] else "-",
            {True: "yes", False: "NO", None: "-"}[r["ok"]]))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
